"""Modules built on the hybridops ops."""
from hybridops.nn.deform_conv import DeformConv2dV2

__all__ = ["DeformConv2dV2"]
