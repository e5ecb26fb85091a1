"""hybridops: fast kernels for compact medical-image segmentation networks.

Public API:
    deform_conv2d, DeformConv2dV2      modulated deformable convolution (DCNv2)
    reference                          pure-PyTorch references of every op
    build_info()                       how the compiled kernels were built
"""
from hybridops._extension import build_info
from hybridops import reference
from hybridops.ops import deform_conv2d
from hybridops.nn import DeformConv2dV2

try:
    from hybridops._version import __version__
except ImportError:  # pragma: no cover
    __version__ = build_info()["version"]

__all__ = ["build_info", "reference", "deform_conv2d", "DeformConv2dV2", "__version__"]
