"""``DeformConv2dV2``: an ``nn.Conv2d``-like modulated deformable convolution module."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from hybridops.nn._deform_conv_base import DeformConvBase
from hybridops.nn.torchvision_deform_conv import DeformConv2d
from hybridops.ops._args import IntPair, InvalidArgumentError
from hybridops.ops.deform_conv2d import deform_conv2d


class DeformConv2dV2(DeformConvBase):
    r"""Modulated deformable convolution (DCNv2) with its own offset-and-mask predictor.

    ``forward(x)`` predicts offsets and masks from ``x`` with a plain convolution
    (``offset_mask``, same kernel/stride/padding/dilation, ``3 * offset_groups * kH * kW`` output
    channels laid out as ``[dy/dx part 1, dy/dx part 2, mask logits]`` exactly as mmcv's
    ``ModulatedDeformConv2dPack``), then applies :func:`hybridops.deform_conv2d` with
    ``mask = sigmoid(mask logits)``. The predictor is zero-initialised, so a new module is a plain
    convolution whose output is scaled by ``sigmoid(0) = 0.5`` (plus bias), as in the DCNv2 paper.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as ``nn.Conv2d``.
        offset_groups: input channels are split into this many groups, each with its own offsets.

    Shapes:
        x ``[N, in_channels, H, W]`` -> ``[N, out_channels, H_out, W_out]``.
        ``forward(x, offset, mask)`` uses a given ``offset`` ``[N, 2*offset_groups*kH*kW, H_out, W_out]``
        and/or ``mask`` ``[N, offset_groups*kH*kW, H_out, W_out]`` (already in [0, 1]) instead of the
        predicted ones; the predictor runs only when one of them is missing.

    From torchvision: a ``torchvision.ops.DeformConv2d`` has no offset predictor and its
    ``forward(x, offset)`` without a mask is DCNv1, so its faithful port is
    :class:`hybridops.DeformConv2d` -- which ``DeformConv2dV2.from_torchvision(tv)`` returns. To start a
    ``DeformConv2dV2`` from torchvision weights instead, ``load_state_dict(tv.state_dict(),
    strict=False)`` (the predictor keeps its zero init).

    From mmcv / mmdet / mmseg: :meth:`load_mmcv_state_dict` loads ``ModulatedDeformConv2dPack``
    weights (``conv_offset.*`` is our ``offset_mask``; same channel layout, same numbers).

    Example:
        >>> m = hybridops.DeformConv2dV2(16, 32, 3, padding=1)
        >>> m(torch.randn(2, 16, 64, 64)).shape
        torch.Size([2, 32, 64, 64])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, offset_groups: int = 1,
                 bias: bool = True) -> None:
        name = "DeformConv2dV2"
        super().__init__(name, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if offset_groups <= 0 or in_channels % offset_groups:
            raise InvalidArgumentError(f"{name}: in_channels ({in_channels}) must be divisible by offset_groups "
                             f"({offset_groups})")
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        self.offset_mask = nn.Conv2d(in_channels, 3 * offset_groups * kh * kw, self.kernel_size, self.stride,
                                     self.padding, self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s init for weight and bias; zeros for the offset/mask predictor."""
        super().reset_parameters()
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The predicted ``offset`` ``[N, 2*OG*K, Ho, Wo]`` and ``mask`` ``[N, OG*K, Ho, Wo]`` for ``x``."""
        o1, o2, mask_logits = torch.chunk(self.offset_mask(x), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(mask_logits)

    def forward(self, x: Tensor, offset: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        if offset is None or mask is None:
            pred_offset, pred_mask = self.offsets_and_mask(x)
            offset = pred_offset if offset is None else offset
            mask = pred_mask if mask is None else mask
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    @classmethod
    def from_torchvision(cls, module: nn.Module) -> DeformConv2d:
        """The faithful port of a ``torchvision.ops.DeformConv2d``: a :class:`hybridops.DeformConv2d`
        (not a ``DeformConv2dV2``: torchvision's module has no predictor, and its forward without a
        mask is DCNv1, which a ``DeformConv2dV2`` would replace by its predicted mask)."""
        return DeformConv2d.from_torchvision(module)

    def load_mmcv_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str = "") -> None:
        """Loads the weights of an mmcv ``ModulatedDeformConv2dPack`` built with the same arguments
        (``deform_groups`` = our ``offset_groups``): ``weight``, ``bias``, ``conv_offset.weight`` and
        ``conv_offset.bias`` (``conv_offset`` is our ``offset_mask``: both output
        ``[offsets (2*OG*kH*kW) | mask logits (OG*kH*kW)]``, mask = sigmoid of the logits), so the
        module computes what mmcv's does. ``prefix`` selects one layer from a whole model's state
        dict (e.g. ``"backbone.layer2.0.conv2."``). Keys are checked strictly."""
        mapping = {"weight": "weight", "conv_offset.weight": "offset_mask.weight",
                   "conv_offset.bias": "offset_mask.bias"}
        if self.bias is not None:
            mapping["bias"] = "bias"
        found = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        missing = sorted(prefix + k for k in mapping if k not in found)
        unexpected = sorted(prefix + k for k in found if k not in mapping)
        if missing or unexpected:
            raise KeyError(f"DeformConv2dV2.load_mmcv_state_dict: missing {missing}, unexpected {unexpected} "
                           f"(expected mmcv ModulatedDeformConv2dPack keys {sorted(mapping)})")
        self.load_state_dict({ours: found[theirs] for theirs, ours in mapping.items()}, strict=True)
