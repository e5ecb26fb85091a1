"""What torchvision's ``DeformConv2d`` and our ``DeformConv2dV2`` share: arguments, the
``weight``/``bias`` parameters with ``nn.Conv2d``'s init, and the repr."""
from __future__ import annotations

import math

import torch
from torch import nn

from hybridops.nn._repr import settings_repr
from hybridops.ops._args import IntPair, InvalidArgumentError, pair


class DeformConvBase(nn.Module):
    """``weight`` ``[out_channels, in_channels // groups, kH, kW]`` and ``bias`` ``[out_channels]``
    (or None), laid out and initialised as ``nn.Conv2d`` and torchvision's ``DeformConv2d``."""

    def __init__(self, name: str, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair,
                 padding: IntPair, dilation: IntPair, groups: int, bias: bool) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise InvalidArgumentError(f"{name}: in_channels and out_channels must be positive, got "
                             f"{in_channels} and {out_channels}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise InvalidArgumentError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(pair(kernel_size, "kernel_size", name, 1))
        self.stride = tuple(pair(stride, "stride", name, 1))
        self.padding = tuple(pair(padding, "padding", name, 0))
        self.dilation = tuple(pair(dilation, "dilation", name, 1))
        self.groups = groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s (and torchvision's) init of weight and bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        """torchvision's ``DeformConv2d`` repr: channels, kernel size and stride, then what is not default."""
        first = [str(self.in_channels), str(self.out_channels), f"kernel_size={self.kernel_size}",
                 f"stride={self.stride}"]
        return settings_repr(self, {"padding": (0, 0), "dilation": (1, 1), "groups": 1, "offset_groups": 1},
                             first, extra={"bias": "False"} if self.bias is None else None)
