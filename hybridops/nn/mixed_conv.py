"""``MixedDepthwiseConv2d``: a drop-in for timm's depthwise ``MixedConv2d`` on the fused op."""
from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from hybridops.nn._repr import settings_repr
from hybridops.ops._args import IntPair, InvalidArgumentError, pair
from hybridops.ops.mixed_depthwise_conv2d import MAX_GROUPS, mixed_depthwise_conv2d

_NAME = "MixedDepthwiseConv2d"


def split_channels(channels: int, num_groups: int) -> list[int]:
    """timm's channel split: ``channels // num_groups`` each, the remainder to the first group."""
    split = [channels // num_groups] * num_groups
    split[0] += channels - sum(split)
    return split


class MixedDepthwiseConv2d(nn.Module):
    r"""Mixed-kernel depthwise convolution (MixConv): channel groups with different kernel sizes.

    The ``channels`` are split as timm's ``MixedConv2d`` splits them (equal groups, the remainder to
    the first); group ``i`` is convolved depthwise with a ``k_i x k_i`` kernel and timm's padding
    ``((stride - 1) + dilation * (k_i - 1)) // 2``, all groups in one fused kernel
    (:func:`hybridops.mixed_depthwise_conv2d`). Same numbers as
    ``timm.layers.MixedConv2d(channels, channels, kernel_sizes, stride, dilation=dilation,
    depthwise=True)``.

    Args:
        channels: input and output channels.
        kernel_sizes: odd kernel size per group (an int is one group), e.g. ``(3, 5, 7)``.
        stride: int or (h, w) pair.
        dilation: int or (h, w) pair.
        bias: add a learnable ``[channels]`` bias.

    Attributes:
        split_channels (list[int]): channels per group.
        weights (nn.ParameterList): ``[C_i, 1, k_i, k_i]`` per group.
        bias (nn.Parameter or None): ``[channels]``.

    Shapes:
        ``[N, channels, H, W]`` -> ``[N, channels, H_out, W_out]``,
        ``H_out = (H - 1 + 2 * ((stride_h - 1) // 2)) // stride_h + 1`` (``ceil(H / stride_h)`` at
        strides 1 and 2), as timm.

    Loading timm weights: :meth:`load_timm_state_dict` (keys ``0.weight``, ``1.weight``, ... as a
    timm ``MixedConv2d`` saves them, optionally under a prefix such as ``conv_dw.``),
    :meth:`from_timm_state_dict` (builds the module from such a state dict) and
    :func:`convert_timm_mixed_conv2d_state_dict`.

    Example:
        >>> m = hybridops.MixedDepthwiseConv2d(144, (3, 5, 7))
        >>> m.split_channels
        [48, 48, 48]
        >>> m(torch.randn(2, 144, 64, 64)).shape
        torch.Size([2, 144, 64, 64])
    """

    def __init__(self, channels: int, kernel_sizes: Union[int, Sequence[int]] = (3, 5, 7), stride: IntPair = 1,
                 dilation: IntPair = 1, bias: bool = False) -> None:
        super().__init__()
        if isinstance(kernel_sizes, bool) or not isinstance(kernel_sizes, (int, Sequence)):
            raise TypeError(f"{_NAME}: kernel_sizes must be an int or a sequence of ints, got {kernel_sizes!r}")
        kernel_sizes = (kernel_sizes,) if isinstance(kernel_sizes, int) else tuple(kernel_sizes)
        if not kernel_sizes:
            raise InvalidArgumentError(f"{_NAME}: kernel_sizes must not be empty")
        for k in kernel_sizes:
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0 or k % 2 == 0:
                raise InvalidArgumentError(f"{_NAME}: kernel sizes must be odd positive ints (\"same\" padding), got "
                                 f"{kernel_sizes}")
        if len(kernel_sizes) > MAX_GROUPS:
            raise InvalidArgumentError(f"{_NAME}: at most {MAX_GROUPS} kernel sizes are supported, got {len(kernel_sizes)}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < len(kernel_sizes):
            raise InvalidArgumentError(f"{_NAME}: channels must be an int >= the number of kernel sizes "
                             f"({len(kernel_sizes)}) so every group gets a channel, got {channels!r}")
        self.channels = channels
        self.in_channels = channels
        self.out_channels = channels
        self.kernel_sizes = kernel_sizes
        self.stride = tuple(pair(stride, "stride", _NAME, 1))
        self.dilation = tuple(pair(dilation, "dilation", _NAME, 1))
        self.split_channels = split_channels(channels, len(kernel_sizes))
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(c, 1, k, k)) for c, k in zip(self.split_channels, kernel_sizes)])
        if bias:
            self.bias = nn.Parameter(torch.empty(channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s init for each group: kaiming-uniform(a=sqrt(5)) weights, and a bias uniform
        in ``+-1/sqrt(fan_in)`` with that group's ``fan_in = k_i * k_i``."""
        for w in self.weights:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            with torch.no_grad():
                for b, k in zip(torch.split(self.bias, self.split_channels), self.kernel_sizes):
                    bound = 1 / math.sqrt(k * k)
                    b.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return mixed_depthwise_conv2d(x, list(self.weights), self.bias, self.stride, self.dilation)

    def extra_repr(self) -> str:
        first = [str(self.channels), f"kernel_sizes={self.kernel_sizes}", f"split_channels={self.split_channels}"]
        return settings_repr(self, {"stride": (1, 1), "dilation": (1, 1)}, first,
                             extra={"bias": "True"} if self.bias is not None else None)

    # ---- timm interop -------------------------------------------------------------------------
    def load_timm_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str = "", strict: bool = True):
        """Loads the weights of a timm ``MixedConv2d`` (depthwise) state dict.

        timm's ``MixedConv2d`` is an ``nn.ModuleDict`` of one ``Conv2d`` per group, so its keys are
        ``{prefix}0.weight``, ``{prefix}1.weight``, ... (``[C_i, 1, k_i, k_i]``) and, with bias,
        ``{prefix}0.bias``, ... ``prefix`` selects the module inside a model's state dict (e.g.
        ``"blocks.1.0.conv_dw."``); keys outside it are ignored. Shapes must match this module's
        split and kernel sizes. Returns what :meth:`nn.Module.load_state_dict` returns.

        Note: timm's TF-ported models (``tf_mixnet_*``) pad stride-2 convolutions asymmetrically
        ("SAME"); this module pads symmetrically as timm's native models do, so those weights give
        different numbers at stride 2.
        """
        ours = convert_timm_mixed_conv2d_state_dict(state_dict, prefix)
        for i, (c, k) in enumerate(zip(self.split_channels, self.kernel_sizes)):
            key = f"weights.{i}"
            if key not in ours:
                raise KeyError(f"{_NAME}.load_timm_state_dict: no '{prefix}{i}.weight' in the state dict "
                               f"(expected {len(self.kernel_sizes)} groups)")
            if tuple(ours[key].shape) != (c, 1, k, k):
                raise InvalidArgumentError(f"{_NAME}.load_timm_state_dict: '{prefix}{i}.weight' has shape "
                                 f"{tuple(ours[key].shape)}, expected {(c, 1, k, k)} (split "
                                 f"{self.split_channels}, kernel sizes {self.kernel_sizes})")
        extra = len([key for key in ours if key.startswith("weights.")]) - len(self.kernel_sizes)
        if extra > 0:
            raise InvalidArgumentError(f"{_NAME}.load_timm_state_dict: the state dict has {len(self.kernel_sizes) + extra} "
                             f"groups, this module {len(self.kernel_sizes)}")
        if "bias" in ours and self.bias is None:
            raise InvalidArgumentError(f"{_NAME}.load_timm_state_dict: the state dict has biases but this module was built "
                             "with bias=False")
        return self.load_state_dict(ours, strict=strict)

    @classmethod
    def from_timm_state_dict(cls, state_dict: Mapping[str, Tensor], prefix: str = "", stride: IntPair = 1,
                             dilation: IntPair = 1) -> "MixedDepthwiseConv2d":
        """A module built from a timm ``MixedConv2d`` state dict (channels, kernel sizes and bias are
        read from the shapes; stride and dilation are not stored in a state dict, so pass them)."""
        ours = convert_timm_mixed_conv2d_state_dict(state_dict, prefix)
        n = len([key for key in ours if key.startswith("weights.")])
        if n == 0:
            raise KeyError(f"{_NAME}.from_timm_state_dict: no '{prefix}<i>.weight' keys in the state dict")
        ws = [ours[f"weights.{i}"] for i in range(n)]
        channels = sum(w.shape[0] for w in ws)
        module = cls(channels, tuple(int(w.shape[-1]) for w in ws), stride, dilation, bias="bias" in ours)
        module = module.to(device=ws[0].device, dtype=ws[0].dtype)
        module.load_timm_state_dict(state_dict, prefix)
        return module


_TIMM_KEY = re.compile(r"^(\d+)\.(weight|bias)$")


def convert_timm_mixed_conv2d_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "") -> dict:
    """Converts a timm ``MixedConv2d`` state dict to :class:`MixedDepthwiseConv2d` keys.

    ``{prefix}{i}.weight`` -> ``weights.{i}``; the per-group ``{prefix}{i}.bias`` (if any) are
    concatenated in group order into ``bias``. Keys not under ``prefix`` are ignored.
    """
    weights: dict[int, Tensor] = {}
    biases: dict[int, Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        m = _TIMM_KEY.match(key[len(prefix):])
        if m is None:
            continue
        (weights if m.group(2) == "weight" else biases)[int(m.group(1))] = value
    n = len(weights)
    if sorted(weights) != list(range(n)):
        raise KeyError(f"convert_timm_mixed_conv2d_state_dict: group indices under prefix {prefix!r} must be "
                       f"0..{n - 1}, got {sorted(weights)}")
    for i, w in weights.items():
        if w.dim() != 4 or w.shape[1] != 1 or w.shape[2] != w.shape[3]:
            raise InvalidArgumentError(f"convert_timm_mixed_conv2d_state_dict: '{prefix}{i}.weight' has shape "
                             f"{tuple(w.shape)}; a depthwise MixedConv2d has [C_i, 1, k, k] weights")
    out = {f"weights.{i}": weights[i] for i in range(n)}
    if biases:
        if sorted(biases) != list(range(n)):
            raise KeyError(f"convert_timm_mixed_conv2d_state_dict: biases under prefix {prefix!r} for groups "
                           f"{sorted(biases)}, expected all of 0..{n - 1}")
        out["bias"] = torch.cat([biases[i] for i in range(n)])
    return out
