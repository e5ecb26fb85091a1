"""Whole-image inference at the native size: the image is zero-padded at the bottom and right to a
multiple of the model's divisor (16 for HybridNetSeg: 999x960 -> 1008x960), run through the model in
one pass, and the output cropped back to the image's ``H x W``. Zero padding is what crop training
(``train.data.crops``) shows the model past an image's border.

    logits = forward_whole(model, images, 16, prepare)   # uint8 [N, C, H, W] -> logits [N, K, H, W]
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["pad_to_multiple", "forward_whole"]


def pad_to_multiple(x: Tensor, divisor: int) -> tuple[Tensor, tuple[int, int]]:
    """``x`` ``[..., H, W]`` zero-padded at the bottom and right so both sides divide by ``divisor``;
    returns (padded tensor, the original ``(H, W)``)."""
    if divisor < 1:
        raise ValueError(f"pad_to_multiple: divisor must be >= 1, got {divisor}")
    h, w = x.shape[-2:]
    ph, pw = -h % divisor, -w % divisor
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


def forward_whole(model: nn.Module, images: Tensor, divisor: int, prepare: Callable[[Tensor], Tensor]) -> Tensor:
    """The model's main output (logits ``[N, K, H, W]``) for uint8 images ``[N, C, H, W]`` of any size:
    padded with zeros (black) to a multiple of ``divisor``, ``prepare``d (to float, normalised, on the
    device), run in one pass and cropped back to ``H x W``."""
    padded, (h, w) = pad_to_multiple(images, divisor)
    out = model(prepare(padded))
    logits = out[0] if isinstance(out, (list, tuple)) else out
    return logits[..., :h, :w]
