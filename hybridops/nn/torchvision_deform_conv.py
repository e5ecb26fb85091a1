"""``DeformConv2d``: torchvision's ``torchvision.ops.DeformConv2d``, on hybridops' kernels."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from hybridops.nn._deform_conv_base import DeformConvBase
from hybridops.ops._args import IntPair
from hybridops.ops.deform_conv2d import deform_conv2d


class DeformConv2d(DeformConvBase):
    r"""torchvision's ``DeformConv2d`` exactly: constructor, parameters, state dict and forward.

    ``forward(input, offset, mask=None)`` is DCNv1 without a mask and DCNv2 with one; the number of
    offset groups is inferred from ``offset.shape[1]`` on every call. There is no offset predictor:
    the caller supplies ``offset`` (and ``mask``), as with torchvision. (``DeformConv2dV2`` is the
    module that predicts its own offsets and masks.)

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``torchvision.ops.DeformConv2d`` (and ``nn.Conv2d``).

    Shapes:
        input ``[N, in_channels, H, W]``, offset ``[N, 2 * offset_groups * kH * kW, H_out, W_out]``,
        mask ``[N, offset_groups * kH * kW, H_out, W_out]`` or None -> ``[N, out_channels, H_out, W_out]``.

    Example:
        >>> tv = torchvision.ops.DeformConv2d(16, 32, 3, padding=1)
        >>> m = hybridops.DeformConv2d.from_torchvision(tv)      # or load_state_dict(tv.state_dict())
        >>> m(x, offset)  # == tv(x, offset)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__("DeformConv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias)
        self.reset_parameters()

    def forward(self, input: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    @classmethod
    def from_torchvision(cls, module: nn.Module) -> "DeformConv2d":
        """A ``DeformConv2d`` with the configuration, weight and bias of a
        ``torchvision.ops.DeformConv2d`` (same device and dtype): it computes the same numbers."""
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                  module.dilation, module.groups, bias=module.bias is not None)
        new = new.to(device=module.weight.device, dtype=module.weight.dtype)
        new.load_state_dict(module.state_dict())
        return new
