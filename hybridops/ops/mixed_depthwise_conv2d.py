"""``hybridops.mixed_depthwise_conv2d``: mixed-kernel depthwise convolution (MixConv) in one launch.

The op is ``torch.ops.hybridops.mixed_depthwise_conv2d`` (C++/CUDA kernels in
``csrc/mixed_depthwise_conv2d/``); this module holds its Python wrapper, fake (meta) kernels and
autograd registration.

Schema::

    mixed_depthwise_conv2d(Tensor input, Tensor[] weights, Tensor? bias, int[2] stride,
                           int[2] dilation) -> Tensor
    mixed_depthwise_conv2d_backward(Tensor grad_output, Tensor input, Tensor[] weights,
                                    int[2] stride, int[2] dilation, bool[2] output_mask)
                                    -> (Tensor grad_input, Tensor[] grad_weights)

The weights travel as a ``Tensor[]`` -- one ``[C_i, 1, k_i, k_i]`` tensor per channel group, the
same tensors a ``MixedDepthwiseConv2d`` holds -- rather than one flat tensor plus a list of kernel
sizes: the group table (channel split and kernel sizes) is read off the shapes, so it can never
disagree with the weights, no concatenation runs before every call, and autograd hands each
parameter its own gradient without a split. The kernels read every group's weights in place.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
from torch import Tensor

from hybridops.ops._autograd import forbid_double_backward
from hybridops.ops._args import (IntPair, InvalidArgumentError, check_same_device_and_dtype, check_tensor, pair,
                                 result_memory_format)
from hybridops.ops._fx import fx_leaf
from hybridops.ops._library import ops_library

_OP = "hybridops.mixed_depthwise_conv2d"

#: Most channel groups one call supports (the group table is passed to the kernels by value).
MAX_GROUPS = 32
#: Most channels (the kernels' group table holds int32 channel offsets).
MAX_CHANNELS = 2**31 - 1
#: Largest kernel size, and the bound on stride, dilation and ``dilation * (k - 1)`` (int indices).
MAX_KERNEL = 32767
MAX_REACH = 2**30


def mixed_depthwise_conv2d(
    input: Tensor,
    weights: Union[Iterable[Tensor], Tensor],
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    dilation: IntPair = 1,
) -> Tensor:
    r"""Mixed-kernel depthwise 2-D convolution (MixConv, Tan & Le 2019), fused into one kernel.

    The channels of ``input`` are split into consecutive groups, one per tensor in ``weights``;
    group ``i`` (``C_i`` channels) is convolved depthwise with its own ``k_i x k_i`` kernel and
    timm's padding ``((stride - 1) + dilation * (k_i - 1)) // 2`` per dimension ("same" padding
    ``dilation * (k_i - 1) // 2`` at strides 1 and 2). The result equals the split/conv/cat
    composition (:func:`hybridops.reference.mixed_depthwise_conv2d`), i.e. timm's ``MixedConv2d``::

        torch.cat([F.conv2d(x_i, w_i, stride=stride,
                            padding=((stride - 1) + dilation * (k_i - 1)) // 2,
                            dilation=dilation, groups=C_i)
                   for x_i, w_i in zip(input.split([C_0, C_1, ...], 1), weights)], 1) + bias

    but runs as one kernel launch per pass (forward, grad-input, grad-weight) whatever the number
    of groups, with no copy for the concatenation.

    Args:
        input: ``[N, C, H, W]``, any float dtype (fp16/bf16 accumulate in fp32), NCHW or
            channels-last. On the CPU a channels-last input runs channels-last kernels (vectorised
            over channels, no transposes); on CUDA it is converted to NCHW and back. Other strided
            inputs are copied to contiguous NCHW first.
        weights: list, tuple or ``nn.ParameterList`` of ``[C_i, 1, k_i, k_i]`` tensors, in channel
            order: odd ``k_i >= 1``, ``sum(C_i) == C``, at most 32 groups. A single tensor is one
            group (plain depthwise convolution with "same" padding).
        bias: ``[C]`` or None.
        stride: int or (h, w) pair, >= 1.
        dilation: int or (h, w) pair, >= 1.

    Returns:
        ``[N, C, H_out, W_out]`` with ``H_out = (H - 1 + 2 * ((stride_h - 1) // 2)) // stride_h + 1``
        (``ceil(H / stride_h)`` at strides 1 and 2; 17 -> 7 at stride 3, as timm), likewise
        ``W_out``, in the dtype of ``input``; channels-last
        when ``input`` is channels-last (like ``F.conv2d``), else contiguous NCHW. The input
        gradient has the same layout as ``input`` under the same rule.

    Gradients flow to input, every weight and bias; the backward is deterministic on CPU and CUDA
    (no atomics). Double backward is not supported (use the reference). Under ``torch.autocast``
    the op runs in the autocast dtype. The output size does not depend on the kernel sizes, since
    every group pads by the same rule. On CUDA, each block stages an input tile with its halo in
    shared memory: 32 x 32 outputs, else 16 x 32, 8 x 32, 8 x 16 or 8 x 8, the largest that fits
    the GPU's real per-block limit (48 KiB on Pascal, up to 227 KiB on Hopper), so every dtype runs
    on every GPU; only a ``dilation * (k - 1)`` so large that even the 8 x 8 tile does not fit
    (above about 100 at stride 1 in fp32 on Pascal, 230 on Hopper) raises an error there. The CPU
    kernels have no such limit: their tiles only span the taps that reach the image, whatever the
    dilation.

    Example:
        >>> x = torch.randn(2, 12, 32, 32)
        >>> ws = [torch.randn(4, 1, k, k) for k in (3, 5, 7)]
        >>> hybridops.mixed_depthwise_conv2d(x, ws, stride=2).shape
        torch.Size([2, 12, 16, 16])
    """
    traced = fx_leaf(mixed_depthwise_conv2d, input, weights, bias, stride, dilation)
    if traced is not None:  # torch.fx symbolic tracing: one leaf node, checked when the graph runs
        return traced
    weights = _as_weight_list(weights)
    stride_, dilation_ = check_mixed_depthwise_conv2d_args(input, weights, bias, stride, dilation)
    return ops_library().mixed_depthwise_conv2d(input, weights, bias, stride_, dilation_)


def _as_weight_list(weights) -> list:
    """``weights`` as a list: a sequence or ``nn.ParameterList`` of tensors, or one tensor."""
    if isinstance(weights, Tensor):
        return [weights]
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise TypeError(f"{_OP}: weights must be a list or tuple of [C_i, 1, k_i, k_i] tensors, got "
                        f"{type(weights).__name__}")
    return list(weights)


def check_mixed_depthwise_conv2d_args(input, weights, bias, stride, dilation):
    """Validates the arguments with messages that name them; returns (stride, dilation)."""
    check_tensor(input, "input", _OP, 4)
    if not input.is_floating_point():
        raise InvalidArgumentError(f"{_OP}: input must be a floating point tensor, got {input.dtype}")
    stride_ = pair(stride, "stride", _OP, 1)
    dilation_ = pair(dilation, "dilation", _OP, 1)
    for name, value in (("stride", stride_), ("dilation", dilation_)):
        if max(value) >= MAX_REACH:
            raise InvalidArgumentError(f"{_OP}: {name} must be below 2^30, got {tuple(value)}")
    if input.shape[1] > MAX_CHANNELS:
        raise InvalidArgumentError(f"{_OP}: input has {input.shape[1]} channels; at most {MAX_CHANNELS} are supported")
    if len(weights) == 0:
        raise InvalidArgumentError(f"{_OP}: weights must hold at least one [C_i, 1, k_i, k_i] tensor, got none")
    if len(weights) > MAX_GROUPS:
        raise InvalidArgumentError(f"{_OP}: at most {MAX_GROUPS} kernel groups are supported, got {len(weights)}")
    total = 0
    for i, w in enumerate(weights):
        name = f"weights[{i}]"
        check_tensor(w, name, _OP, 4)
        c_i, one, kh, kw = w.shape
        if one != 1 or kh != kw:
            raise InvalidArgumentError(f"{_OP}: {name} must have shape [C_i, 1, k, k] (depthwise, square kernel), "
                             f"got {tuple(w.shape)}")
        if kh <= 0 or kh % 2 == 0:
            raise InvalidArgumentError(f"{_OP}: {name} has kernel size {kh}; kernel sizes must be odd and positive "
                             f"(\"same\" padding needs an odd kernel)")
        if kh > MAX_KERNEL:
            raise InvalidArgumentError(f"{_OP}: {name} has kernel size {kh}; at most {MAX_KERNEL} is supported")
        if max(dilation_) * (kh - 1) >= MAX_REACH:
            raise InvalidArgumentError(f"{_OP}: dilation * (kernel_size - 1) must be below 2^30, got dilation "
                             f"{tuple(dilation_)} with {name} of kernel size {kh}")
        if c_i == 0:
            raise InvalidArgumentError(f"{_OP}: {name} has no channels (shape {tuple(w.shape)})")
        total += c_i
    channels = input.shape[1]
    if total != channels:
        splits = [int(w.shape[0]) for w in weights]
        raise InvalidArgumentError(f"{_OP}: the channel split {splits} of weights sums to {total}, but input has "
                         f"{channels} channels")
    if bias is not None:
        check_tensor(bias, "bias", _OP, 1)
        if tuple(bias.shape) != (channels,):
            raise InvalidArgumentError(f"{_OP}: bias must have shape ({channels},), got {tuple(bias.shape)}")
    # Shapes first, then devices and dtypes (torchvision's order, as in deform_conv2d).
    check_same_device_and_dtype(_OP, input, bias=bias, **{f"weights[{i}]": w for i, w in enumerate(weights)})
    return stride_, dilation_


def same_padding(k: int, stride: int, dilation: int) -> int:
    """timm's padding of a size-``k`` kernel (``timm.layers.get_padding``):
    ``((stride - 1) + dilation * (k - 1)) // 2``; equals ``dilation * (k - 1) // 2`` at strides 1, 2."""
    return ((stride - 1) + dilation * (k - 1)) // 2


def out_extent(n: int, stride: int) -> int:
    """Output length of an ``n``-long dimension under :func:`same_padding` (the same for every odd
    ``k``): ``(n - 1 + 2 * ((stride - 1) // 2)) // stride + 1``, i.e. ``ceil(n / stride)`` at strides
    1 and 2; 0 when ``n == 0``."""
    return (n - 1 + 2 * ((stride - 1) // 2)) // stride + 1 if n > 0 else 0


def out_size(h, w, stride) -> tuple:
    """Output height and width for every group (:func:`out_extent` per dimension)."""
    return out_extent(h, stride[0]), out_extent(w, stride[1])


# The fake kernels check the arguments as the real ones do: beside shape propagation under
# torch.compile, the dispatcher also picks them for a direct torch.ops call that mixes a meta tensor
# with real ones, which must raise (naming the argument), not return uninitialised memory.
def _mixed_depthwise_conv2d_fake(input, weights, bias, stride, dilation):
    stride = check_mixed_depthwise_conv2d_args(input, list(weights), bias, stride, dilation)[0]
    h_out, w_out = out_size(input.shape[2], input.shape[3], stride)
    return input.new_empty((input.shape[0], input.shape[1], h_out, w_out)).contiguous(
        memory_format=result_memory_format(input))


def _mixed_depthwise_conv2d_backward_fake(grad_output, input, weights, stride, dilation, output_mask):
    stride = check_mixed_depthwise_conv2d_args(input, list(weights), None, stride, dilation)[0]
    check_tensor(grad_output, "grad_output", _OP + "_backward", 4)
    expected = (input.shape[0], input.shape[1], *out_size(input.shape[2], input.shape[3], stride))
    if tuple(grad_output.shape) != expected:
        raise InvalidArgumentError(f"{_OP}_backward: grad_output must have shape {expected}, "
                                   f"got {tuple(grad_output.shape)}")
    check_same_device_and_dtype(_OP + "_backward", input, grad_output=grad_output)
    if output_mask[0]:
        grad_input = input.new_empty(input.shape).contiguous(memory_format=result_memory_format(input))
    else:
        grad_input = input.new_empty((0,))
    grad_weights = [w.new_empty(w.shape) for w in weights] if output_mask[1] else []
    return grad_input, grad_weights


def _setup_context(ctx, inputs, output):
    input, weights, bias, stride, dilation = inputs
    ctx.save_for_backward(input, *weights)
    ctx.has_bias = bias is not None
    ctx.conv_args = (stride, dilation)


def register_python_parts(namespace: str) -> None:
    """Fake kernels and autograd for ``torch.ops.<namespace>.mixed_depthwise_conv2d`` (``hybridops``,
    and the CUDA emulation's ``hybridops_emu``, whose backward is the emulated backward op)."""
    library = getattr(torch.ops, namespace)

    def backward(ctx, grad_output):
        input, *weights = ctx.saved_tensors
        need_input, need_weights, need_bias = ctx.needs_input_grad[:3]
        if isinstance(need_weights, (list, tuple)):
            need_weights = any(need_weights)
        grad_input, grad_weights = library.mixed_depthwise_conv2d_backward(
            grad_output, input, weights, *ctx.conv_args, [bool(need_input), bool(need_weights)])
        grad_bias = grad_output.sum((0, 2, 3)) if ctx.has_bias and need_bias else None
        grad_weights = list(grad_weights) if need_weights else [None] * len(weights)
        return grad_input if need_input else None, grad_weights, grad_bias, None, None

    torch.library.register_fake(f"{namespace}::mixed_depthwise_conv2d")(_mixed_depthwise_conv2d_fake)
    torch.library.register_fake(f"{namespace}::mixed_depthwise_conv2d_backward")(
        _mixed_depthwise_conv2d_backward_fake)
    torch.library.register_autograd(f"{namespace}::mixed_depthwise_conv2d", backward, setup_context=_setup_context)
    forbid_double_backward("mixed_depthwise_conv2d", namespace)


register_python_parts("hybridops")
