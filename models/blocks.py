"""Building blocks shared by the models: conv-BN-act, grouped 1x1 convs, mixed depthwise convs,
squeeze-and-excitation, MixNet's MNBlock, M2U-Net's inverted-residual decoder blocks, and the
switch between the compiled hybridops ops and their pure-PyTorch references.

Every block is made of ``nn.Module`` leaves (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU``,
``nn.Upsample``, ...) so :func:`models.complexity` can count it with forward hooks.

The ``ops`` switch: ``ops="hybridops"`` builds :class:`hybridops.DeformConv2dV2` and
:class:`hybridops.MixedDepthwiseConv2d` (compiled kernels); ``ops="reference"`` builds subclasses
with the *same parameters and state-dict keys* whose forward runs the pure-PyTorch references
(:func:`hybridops.reference.deform_conv2d`, :func:`hybridops.reference.mixed_depthwise_conv2d`).
A state dict saved in one mode loads into the other. A mapping picks per op, e.g.
``ops={"deform_conv": "hybridops", "mixconv": "reference"}`` (to time one op's kernel in a whole model).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hybridops
from hybridops import reference as _reference

__all__ = [
    "OPS", "OP_NAMES", "check_ops", "resolve_ops", "ops_repr", "split_channels", "ConvBNAct", "GroupedConv1x1",
    "ReferenceMixedDepthwiseConv2d", "ReferenceDeformConv2dV2", "TorchvisionDeformConv2dV2", "mixed_depthwise_conv", "deform_conv",
    "SqueezeExcite", "MNBlock", "InvertedResidual", "Resize", "DecoderBlock", "check_spatial", "stage_features",
]

OPS = ("hybridops", "reference", "torchvision")
OP_NAMES = ("deform_conv", "mixconv")
OpsArg = Union[str, Mapping[str, str]]


def check_ops(ops: str, op_name: str = "deform_conv") -> str:
    """Validates one op's implementation choice: "hybridops", "reference", or (DCN only)
    "torchvision" (``torchvision.ops.deform_conv2d``, the peer the benchmarks compare against)."""
    if ops not in OPS:
        raise ValueError(f"ops must be one of {OPS}, got {ops!r}")
    if ops == "torchvision" and op_name != "deform_conv":
        raise ValueError(f"ops: torchvision has no {op_name} op; use 'reference' (split/conv/cat) for {op_name}")
    return ops


def resolve_ops(ops: OpsArg) -> dict[str, str]:
    """The ``ops`` argument as ``{"deform_conv": impl, "mixconv": impl}``.

    ``ops`` is "hybridops", "reference", or a mapping from op names in ``OP_NAMES`` to either
    (ops left out use "hybridops").
    """
    if isinstance(ops, str):
        return {name: check_ops(ops, name) for name in OP_NAMES}
    if not isinstance(ops, Mapping):
        raise TypeError(f"ops must be a str or a mapping, got {type(ops).__name__}")
    unknown = set(ops) - set(OP_NAMES)
    if unknown:
        raise ValueError(f"ops: unknown op names {sorted(unknown)}; expected some of {OP_NAMES}")
    return {name: check_ops(ops.get(name, "hybridops"), name) for name in OP_NAMES}


def ops_repr(ops: Mapping[str, str]) -> Union[str, dict[str, str]]:
    """The resolved ``ops`` in its shortest form (a str when every op uses the same implementation)."""
    values = set(ops.values())
    return values.pop() if len(values) == 1 else dict(ops)


def check_spatial(x: Tensor, name: str, in_chans: int, factor: int) -> None:
    """Raises a clear error unless ``x`` is ``[N, in_chans, H, W]`` with H and W divisible by ``factor``.

    Under torch.fx symbolic tracing (e.g. torchvision's ``create_feature_extractor``) shapes are
    unknown: nothing is checked there (the traced graph's ops check their own inputs)."""
    if isinstance(x, torch.fx.Proxy):
        return
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D input [N, {in_chans}, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{name}: expected {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    h, w = x.shape[-2], x.shape[-1]
    if h % factor != 0 or w % factor != 0:
        raise ValueError(f"{name}: input height and width must be divisible by {factor}, got H={h}, W={w} "
                         f"(pad or resize to e.g. {math.ceil(h / factor) * factor}x{math.ceil(w / factor) * factor})")


def split_channels(channels: int, groups: int) -> list[int]:
    """timm's equal split of ``channels`` into ``groups`` parts, the remainder going to the first part."""
    if groups <= 0 or channels < groups:
        raise ValueError(f"cannot split {channels} channels into {groups} groups")
    split = [channels // groups] * groups
    split[0] += channels - sum(split)
    return split


def stage_features(x: Tensor, stem: nn.Module, stages: Sequence[nn.Module]) -> list[Tensor]:
    """An encoder's skips: ``[stem(x), stages[0](stem(x)), stages[1](...), ...]``, each stage fed the
    output of the one before (U-Net's ``inc`` and ``downs``, HybridNetSeg's stem and stages)."""
    feats = [stem(x)]
    for stage in stages:
        feats.append(stage(feats[-1]))
    return feats


class ConvBNAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> act`` (``act=None`` for no activation).

    Shapes: ``[N, in_chans, H, W] -> [N, out_chans, H/stride, W/stride]`` (``padding = dilation*(k-1)//2``).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 dilation: int = 1, act: Optional[type[nn.Module]] = nn.ReLU) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers = [nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, dilation, groups, bias=False),
                  nn.BatchNorm2d(out_chans)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class GroupedConv1x1(nn.Module):
    """A 1x1 convolution split into ``groups`` independent convs (MixNet's "grouped" pointwise conv).

    Input and output channels are split with :func:`split_channels` (equal parts, remainder to the
    first); part ``i`` of the input maps to part ``i`` of the output. ``groups=1`` is a plain 1x1 conv.
    Params: ``sum(in_i * out_i)`` (+ ``out`` with bias). State-dict keys: ``convs.<i>.weight``.

    Shapes: ``[N, in_chans, H, W] -> [N, out_chans, H, W]``.
    """

    def __init__(self, in_chans: int, out_chans: int, groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.in_chans, self.out_chans, self.groups = in_chans, out_chans, groups
        self.in_splits = split_channels(in_chans, groups)
        self.out_splits = split_channels(out_chans, groups)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 1, bias=bias) for i, o in zip(self.in_splits, self.out_splits))

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return self.convs[0](x)
        parts = torch.split(x, self.in_splits, dim=1)  # indexed, not iterated: torch.fx can trace it
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], dim=1)

    def extra_repr(self) -> str:
        return f"{self.in_chans}, {self.out_chans}, groups={self.groups}"


class ReferenceMixedDepthwiseConv2d(hybridops.MixedDepthwiseConv2d):
    """:class:`hybridops.MixedDepthwiseConv2d` whose forward runs
    :func:`hybridops.reference.mixed_depthwise_conv2d` (per-group ``F.conv2d`` split/conv/cat): same
    constructor, attributes (``split_channels``, ``weights`` = ``nn.ParameterList`` of
    ``[C_i, 1, k_i, k_i]``, ``bias``), init and state dict.

    Shapes: ``[N, channels, H, W] -> [N, channels, ceil(H / stride), ceil(W / stride)]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return _reference.mixed_depthwise_conv2d(x, list(self.weights), self.bias, self.stride, self.dilation)


class ReferenceDeformConv2dV2(hybridops.DeformConv2dV2):
    """:class:`hybridops.DeformConv2dV2` whose forward runs :func:`hybridops.reference.deform_conv2d`
    (same parameters, offset/mask predictor and state dict)."""

    @staticmethod
    def _deform_conv2d(*args) -> Tensor:
        return _reference.deform_conv2d(*args)

    def forward(self, x: Tensor, offset: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        if offset is None or mask is None:
            pred_offset, pred_mask = self.offsets_and_mask(x)
            offset = pred_offset if offset is None else offset
            mask = pred_mask if mask is None else mask
        return self._deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


class TorchvisionDeformConv2dV2(ReferenceDeformConv2dV2):
    """:class:`hybridops.DeformConv2dV2` whose forward runs ``torchvision.ops.deform_conv2d`` (the
    peer op in benchmarks; same parameters and state dict). Needs torchvision."""

    @staticmethod
    def _deform_conv2d(*args) -> Tensor:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        return tv_deform_conv2d(*args)


def mixed_depthwise_conv(channels: int, kernel_sizes: Sequence[int], stride: int = 1, ops: str = "hybridops"
                         ) -> nn.Module:
    """A MixConv depthwise conv (no bias) from the ``ops`` implementation."""
    cls = ReferenceMixedDepthwiseConv2d if check_ops(ops, "mixconv") == "reference" else hybridops.MixedDepthwiseConv2d
    return cls(channels, tuple(kernel_sizes), stride=stride, bias=False)


def deform_conv(channels: int, ops: str = "hybridops") -> nn.Module:
    """``DeformConv2dV2(c, c, 3, padding=1, bias=False)`` from the ``ops`` implementation."""
    cls = {"hybridops": hybridops.DeformConv2dV2, "reference": ReferenceDeformConv2dV2,
           "torchvision": TorchvisionDeformConv2dV2}[check_ops(ops, "deform_conv")]
    return cls(channels, channels, 3, padding=1, bias=False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global mean -> 1x1 conv (bias) to ``reduced`` -> ReLU -> 1x1 conv (bias)
    back -> sigmoid -> multiply. Shapes: ``[N, channels, H, W] -> [N, channels, H, W]``."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.gate(self.conv_expand(self.act(self.conv_reduce(self.pool(x)))))
        return x * s


class MNBlock(nn.Module):
    """MixNet block: grouped 1x1 expansion, MixConv depthwise, optional SE, grouped 1x1 projection.

    Args:
        in_chans, out_chans: channels in and out.
        kernel_sizes: MixConv kernel sizes, e.g. ``(3, 5, 7)`` (equal channel split, remainder to the first).
        exp_groups: number of groups of the expansion 1x1 conv (the ``[1, 1]`` list of the spec = 2).
        proj_groups: number of groups of the projection 1x1 conv.
        stride: stride of the depthwise conv.
        expand: expansion ratio; the hidden width is ``in_chans * expand``.
        se: SE ratio; the SE bottleneck has ``int(in_chans * se)`` channels (of the *input*); 0 = no SE.
        ops: "hybridops" or "reference" MixConv.

    The residual add is used when ``stride == 1 and in_chans == out_chans``.
    Shapes: ``[N, in_chans, H, W] -> [N, out_chans, H/stride, W/stride]``.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_sizes: Sequence[int] = (3,), exp_groups: int = 1,
                 proj_groups: int = 1, stride: int = 1, expand: int = 6, se: float = 0.0,
                 ops: str = "hybridops") -> None:
        super().__init__()
        hidden = in_chans * expand
        self.in_chans, self.out_chans, self.stride, self.expand, self.se_ratio = in_chans, out_chans, stride, expand, se
        self.kernel_sizes = tuple(kernel_sizes)
        self.has_residual = stride == 1 and in_chans == out_chans
        self.conv_pw = GroupedConv1x1(in_chans, hidden, exp_groups)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_dw = mixed_depthwise_conv(hidden, kernel_sizes, stride, ops)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(hidden, int(in_chans * se)) if se > 0 else nn.Identity()
        self.conv_pwl = GroupedConv1x1(hidden, out_chans, proj_groups)
        self.bn3 = nn.BatchNorm2d(out_chans)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        out = self.se(out)
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_residual else out

    def extra_repr(self) -> str:
        s = (f"{self.in_chans}, {self.out_chans}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, "
             f"expand={self.expand}")
        if self.se_ratio:
            s += f", se={self.se_ratio}"
        return s + (", residual" if self.has_residual else "")


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual as in M2U-Net's decoder: 1x1 to ``round(in*expand_ratio)``, BN,
    ReLU6; 3x3 depthwise, BN, ReLU6; 1x1 to ``out``, BN (no activation). Residual when ``in == out``.

    Shapes: ``[N, in_chans, H, W] -> [N, out_chans, H, W]``.
    """

    def __init__(self, in_chans: int, out_chans: int, expand_ratio: float = 0.15) -> None:
        super().__init__()
        hidden = round(in_chans * expand_ratio)
        self.in_chans, self.out_chans, self.hidden = in_chans, out_chans, hidden
        self.has_residual = in_chans == out_chans
        self.conv = nn.Sequential(
            ConvBNAct(in_chans, hidden, 1, act=nn.ReLU6),
            ConvBNAct(hidden, hidden, 3, groups=hidden, act=nn.ReLU6),
            ConvBNAct(hidden, out_chans, 1, act=None),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return out + x if self.has_residual else out

    def extra_repr(self) -> str:
        return f"{self.in_chans}, {self.out_chans}, hidden={self.hidden}"


class Resize(nn.Module):
    """Bilinear resize (``align_corners=False``) of ``x`` to ``size``; a module so it can be counted.

    Shapes: ``[N, C, h, w] -> [N, C, *size]``.
    """

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class DecoderBlock(nn.Module):
    """M2U-Net decoder block: bilinear x2 upsampling (``align_corners=False``) of ``up``, concat
    ``[up, skip]``, then :class:`InvertedResidual` to ``out_chans``.

    Shapes: ``up [N, up_chans, h, w]``, ``skip [N, skip_chans, 2h, 2w] -> [N, out_chans, 2h, 2w]``.
    """

    def __init__(self, up_chans: int, skip_chans: int, out_chans: int, expand_ratio: float = 0.15) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.ir = InvertedResidual(up_chans + skip_chans, out_chans, expand_ratio)

    def forward(self, up: Tensor, skip: Tensor) -> Tensor:
        return self.ir(torch.cat([self.upsample(up), skip], dim=1))
