"""Functional wrappers of the ``torch.ops.hybridops`` ops (importing registers fake kernels and autograd)."""
from hybridops.ops.deform_conv2d import deform_conv2d
from hybridops.ops.mixed_depthwise_conv2d import mixed_depthwise_conv2d

__all__ = ["deform_conv2d", "mixed_depthwise_conv2d"]
