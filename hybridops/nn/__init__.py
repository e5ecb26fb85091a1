"""Modules built on the hybridops ops."""
from hybridops.nn.deform_conv import DeformConv2dV2
from hybridops.nn.torchvision_deform_conv import DeformConv2d
from hybridops.nn.mixed_conv import MixedDepthwiseConv2d, convert_timm_mixed_conv2d_state_dict

__all__ = ["DeformConv2d", "DeformConv2dV2", "MixedDepthwiseConv2d", "convert_timm_mixed_conv2d_state_dict"]
