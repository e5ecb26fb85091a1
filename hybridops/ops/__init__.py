"""Functional wrappers of the ``torch.ops.hybridops`` ops (importing registers fake kernels and autograd)."""
from hybridops.ops.deform_conv2d import deform_conv2d

__all__ = ["deform_conv2d"]
