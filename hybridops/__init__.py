"""hybridops: fast kernels for compact medical-image segmentation networks.

Public API:
    deform_conv2d, DeformConv2dV2      modulated deformable convolution (DCNv2)
    DeformConv2d                       torchvision's DeformConv2d module on our kernels
    mixed_depthwise_conv2d, MixedDepthwiseConv2d,
    convert_timm_mixed_conv2d_state_dict   mixed-kernel depthwise convolution (MixConv)
    losses                             fused segmentation losses (BCE+Dice, mixed multi-scale,
                                       size-adaptive CE): Triton on CUDA, PyTorch on CPU
    reference                          pure-PyTorch references of every op
    build_info()                       how the compiled kernels were built
    InvalidArgumentError               what bad arguments raise (a ValueError and a RuntimeError)
"""
from hybridops._extension import build_info
from hybridops import losses, reference
from hybridops.ops import deform_conv2d
from hybridops.ops._args import InvalidArgumentError
from hybridops.ops import mixed_depthwise_conv2d
from hybridops.nn import DeformConv2d, DeformConv2dV2
from hybridops.nn import MixedDepthwiseConv2d, convert_timm_mixed_conv2d_state_dict

try:
    from hybridops._version import __version__
except ImportError:  # pragma: no cover
    __version__ = build_info()["version"]

__all__ = ["build_info", "InvalidArgumentError", "losses", "reference", "deform_conv2d", "DeformConv2d", "DeformConv2dV2", "mixed_depthwise_conv2d",
           "MixedDepthwiseConv2d", "convert_timm_mixed_conv2d_state_dict", "__version__"]
