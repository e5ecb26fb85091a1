"""``DeformConv2dV2``: an ``nn.Conv2d``-like modulated deformable convolution module."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from hybridops.ops._args import IntPair, pair
from hybridops.ops.deform_conv2d import deform_conv2d


class DeformConv2dV2(nn.Module):
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

    Loading a ``torchvision.ops.DeformConv2d``: its ``weight`` and ``bias`` have the same shapes as
    ours, so ``DeformConv2dV2.from_torchvision(tv)`` (or ``load_state_dict(tv.state_dict(),
    strict=False)``) copies them; the offset predictor, which torchvision leaves to the caller,
    stays at its zero init unless you load it too.

    Example:
        >>> m = hybridops.DeformConv2dV2(16, 32, 3, padding=1)
        >>> m(torch.randn(2, 16, 64, 64)).shape
        torch.Size([2, 32, 64, 64])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, offset_groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        name = "DeformConv2dV2"
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"{name}: in_channels and out_channels must be positive, got "
                             f"{in_channels} and {out_channels}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        if offset_groups <= 0 or in_channels % offset_groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by offset_groups "
                             f"({offset_groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(pair(kernel_size, "kernel_size", name, 1))
        self.stride = tuple(pair(stride, "stride", name, 1))
        self.padding = tuple(pair(padding, "padding", name, 0))
        self.dilation = tuple(pair(dilation, "dilation", name, 1))
        self.groups = groups
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.offset_mask = nn.Conv2d(in_channels, 3 * offset_groups * kh * kw, self.kernel_size, self.stride,
                                     self.padding, self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s init for weight and bias; zeros for the offset/mask predictor."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
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
    def from_torchvision(cls, module: nn.Module) -> "DeformConv2dV2":
        """A ``DeformConv2dV2`` with the weight and bias of a ``torchvision.ops.DeformConv2d``."""
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                  module.dilation, module.groups, offset_groups=1, bias=module.bias is not None)
        new = new.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(module.weight)
            if module.bias is not None:
                new.bias.copy_(module.bias)
        return new

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.offset_groups != 1:
            s += f", offset_groups={self.offset_groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
