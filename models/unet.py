"""Classic U-Net (Ronneberger et al. 2015, with BN and "same" padding): the baseline HybridNetSeg is
compared against (about 31.0M parameters with the defaults)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from models.blocks import ConvBNAct, check_spatial, stage_features
from models.registry import register_model

__all__ = ["DoubleConv", "UNetEncoder", "UNetDecoder", "UNet", "unet"]


class DoubleConv(nn.Sequential):
    """``(3x3 conv (no bias), BN, ReLU) x 2``. Shapes: ``[N, in, H, W] -> [N, out, H, W]``."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(ConvBNAct(in_chans, out_chans, 3), ConvBNAct(out_chans, out_chans, 3))


class UNetEncoder(nn.Module):
    """``DoubleConv`` at full resolution, then (2x2 max pool, ``DoubleConv``) per level.

    ``forward(x)`` returns ``[f0 @H, f1 @H/2, ..., fL @H/2^L]`` with ``widths[i]`` channels.
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (64, 128, 256, 512, 1024)) -> None:
        super().__init__()
        self.inc = DoubleConv(in_chans, widths[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(i, o))
                                   for i, o in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        return stage_features(x, self.inc, self.downs)


class UNetUp(nn.Module):
    """2x2 transposed conv (stride 2, bias) ``in -> in/2``, concat ``[skip, up]``, ``DoubleConv(in -> out)``."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_chans, in_chans // 2, 2, stride=2)
        self.conv = DoubleConv(in_chans // 2 + out_chans, out_chans)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetDecoder(nn.Module):
    """One :class:`UNetUp` per level, from the deepest feature to full resolution."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512, 1024)) -> None:
        super().__init__()
        rev = list(widths)[::-1]
        self.ups = nn.ModuleList(UNetUp(i, o) for i, o in zip(rev[:-1], rev[1:]))

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        for up, skip in zip(self.ups, feats[-2::-1]):
            x = up(x, skip)
        return x


class UNet(nn.Module):
    """Classic U-Net: widths 64-128-256-512-1024, double 3x3 conv + BN + ReLU, max-pool down,
    transposed-conv up, skip concatenation, 1x1 conv head (with bias).

    Args:
        in_chans: input channels (default 3).
        num_classes: output logit channels (default 1).
        widths: channels per level (default ``(64, 128, 256, 512, 1024)``: 31,037,633 parameters).

    Inputs:
        ``x [N, in_chans, H, W]`` with H and W divisible by ``2**(len(widths)-1)`` (16 by default), else
        ``ValueError``.

    Outputs:
        logits ``[N, num_classes, H, W]`` (train and eval alike).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1,
                 widths: Sequence[int] = (64, 128, 256, 512, 1024)) -> None:
        super().__init__()
        self.in_chans, self.num_classes, self.widths = in_chans, num_classes, tuple(widths)
        self.input_divisor = 2 ** (len(self.widths) - 1)
        self.encoder = UNetEncoder(in_chans, self.widths)
        self.decoder = UNetDecoder(self.widths)
        self.head = nn.Conv2d(self.widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_spatial(x, type(self).__name__, self.in_chans, self.input_divisor)
        return self.head(self.decoder(self.encoder(x)))

    def extra_repr(self) -> str:
        s = f"in_chans={self.in_chans}, num_classes={self.num_classes}"
        if self.widths != (64, 128, 256, 512, 1024):
            s += f", widths={self.widths}"
        return s


@register_model
def unet(**kwargs) -> UNet:
    """Classic U-Net baseline (64-1024), ~31.0M params."""
    return UNet(**kwargs)
