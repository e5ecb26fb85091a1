"""``hybridops.deform_conv2d``: modulated deformable convolution (DCNv2), torchvision's semantics.

The op is ``torch.ops.hybridops.deform_conv2d`` (C++/CUDA kernels in ``csrc/deform_conv2d/``);
this module holds its Python wrapper, fake (meta) kernel and autograd registration.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hybridops.ops._autograd import forbid_double_backward
from hybridops.ops._fx import fx_leaf
from hybridops.ops._library import ops_library
from hybridops.ops._args import (IntPair, InvalidArgumentError, check_same_device, check_same_device_and_dtype,
                                 check_tensor, pair, result_memory_format)

_OP = "hybridops.deform_conv2d"


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    r"""Modulated deformable 2-D convolution (DCNv2; DCNv1 when ``mask`` is None).

    A drop-in for :func:`torchvision.ops.deform_conv2d`: same arguments, order, layouts and
    numbers. Each output pixel ``p`` and kernel tap ``k`` samples the input bilinearly at
    ``p * stride - padding + k * dilation + offset[p, k]`` (zero outside the image), scales the
    sample by ``mask[p, k]``, and the samples are contracted with ``weight`` as in a convolution.

    Args:
        input: ``[N, C_in, H, W]``.
        offset: ``[N, 2 * offset_groups * kH * kW, H_out, W_out]``, (dy, dx) pairs per offset
            group and tap (tap-major: channel ``2 * (g * kH * kW + k)`` is dy of group g, tap k).
        weight: ``[C_out, C_in / groups, kH, kW]``; ``groups`` is inferred from ``weight.shape[1]``.
        bias: ``[C_out]`` or None.
        stride, padding, dilation: int or (h, w) pair.
        mask: ``[N, offset_groups * kH * kW, H_out, W_out]`` modulation scalars, or None (DCNv1).

    Returns:
        ``[N, C_out, H_out, W_out]`` with ``H_out = (H + 2 * pad_h - dil_h * (kH - 1) - 1) // stride_h + 1``
        (likewise ``W_out``), in the dtype of ``input``; channels-last when ``input`` is channels-last
        (and not also NCHW contiguous), else contiguous, as ``F.conv2d`` returns. The gradients of
        input, offset and mask take the layout of their tensor the same way.

    All float dtypes are supported (fp16/bf16 accumulate in fp32); under ``torch.autocast`` the op
    runs in the autocast dtype. Gradients flow to input, offset, weight, mask and bias. The CPU
    backward is deterministic; on CUDA set ``torch.use_deterministic_algorithms(True)`` for a
    deterministic grad_input. Under ``torch.fx`` symbolic tracing the function is one leaf node.

    Example:
        >>> x = torch.randn(2, 16, 64, 64)
        >>> w = torch.randn(32, 16, 3, 3)
        >>> offset = torch.randn(2, 2 * 9, 64, 64)
        >>> mask = torch.rand(2, 9, 64, 64)
        >>> hybridops.deform_conv2d(x, offset, w, padding=1, mask=mask).shape
        torch.Size([2, 32, 64, 64])
    """
    traced = fx_leaf(deform_conv2d, input, offset, weight, bias, stride, padding, dilation, mask)
    if traced is not None:  # torch.fx symbolic tracing: one leaf node, checked when the graph runs
        return traced
    stride_, padding_, dilation_ = check_deform_conv2d_args(input, offset, weight, bias, stride, padding,
                                                            dilation, mask)
    return ops_library().deform_conv2d(input, offset, weight, mask, bias, stride_, padding_, dilation_)


def check_deform_conv2d_args(input, offset, weight, bias, stride, padding, dilation, mask):
    """Validates the arguments with messages that name them; returns (stride, padding, dilation)."""
    check_tensor(input, "input", _OP, 4)
    if not input.is_floating_point():
        raise InvalidArgumentError(f"{_OP}: input must be a floating point tensor, got {input.dtype}")
    if input.shape[1] == 0:
        raise InvalidArgumentError(f"{_OP}: input must have at least one channel, got shape {tuple(input.shape)}")
    check_tensor(weight, "weight", _OP, 4)
    check_tensor(offset, "offset", _OP, 4)
    if mask is not None:
        check_tensor(mask, "mask", _OP, 4)
    if bias is not None:
        check_tensor(bias, "bias", _OP, 1)
    stride_ = pair(stride, "stride", _OP, 1)
    padding_ = pair(padding, "padding", _OP, 0)
    dilation_ = pair(dilation, "dilation", _OP, 1)
    n, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if kh == 0 or kw == 0:
        raise InvalidArgumentError(f"{_OP}: weight has an empty kernel, shape {tuple(weight.shape)}")
    if c_per_group == 0 or c_in % c_per_group != 0:
        raise InvalidArgumentError(f"{_OP}: input channels ({c_in}) must be divisible by weight.shape[1] "
                         f"({c_per_group}), the channels per group")
    groups = c_in // c_per_group
    if c_out % groups != 0:
        raise InvalidArgumentError(f"{_OP}: weight.shape[0] ({c_out}) must be divisible by groups ({groups})")
    h_out, w_out = out_size(h, w, kh, kw, stride_, padding_, dilation_)
    if h_out <= 0 or w_out <= 0:
        raise InvalidArgumentError(f"{_OP}: input {h}x{w} is too small for a {kh}x{kw} kernel with padding "
                         f"{tuple(padding_)} and dilation {tuple(dilation_)} (output {h_out}x{w_out})")
    taps = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise InvalidArgumentError(f"{_OP}: offset must have 2 * offset_groups * kH * kW channels (a multiple of "
                         f"{2 * taps}), got {offset.shape[1]}")
    offset_groups = offset.shape[1] // (2 * taps)
    if c_in % offset_groups != 0:
        raise InvalidArgumentError(f"{_OP}: input channels ({c_in}) must be divisible by offset_groups "
                         f"({offset_groups}, from offset.shape[1])")
    expected = (n, offset.shape[1], h_out, w_out)
    if tuple(offset.shape) != expected:
        raise InvalidArgumentError(f"{_OP}: offset must have shape {expected} (batch and output size), got "
                         f"{tuple(offset.shape)}")
    if mask is not None:
        expected = (n, offset_groups * taps, h_out, w_out)
        if tuple(mask.shape) != expected:
            raise InvalidArgumentError(f"{_OP}: mask must have shape {expected} (offset_groups * kH * kW channels), "
                             f"got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise InvalidArgumentError(f"{_OP}: bias must have shape ({c_out},), got {tuple(bias.shape)}")
    # Shapes first, then devices and dtypes (torchvision's order).
    check_same_device_and_dtype(_OP, input, weight=weight, offset=offset, mask=mask, bias=bias)
    return stride_, padding_, dilation_


def out_size(h: int, w: int, kh: int, kw: int, stride, padding, dilation) -> tuple[int, int]:
    """Output height and width of a convolution."""
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return h_out, w_out


def _deform_conv2d_fake(input, offset, weight, mask, bias, stride, padding, dilation):
    check_same_device(_OP, input, offset=offset, weight=weight, mask=mask, bias=bias)
    h_out, w_out = out_size(input.shape[2], input.shape[3], weight.shape[2], weight.shape[3], stride, padding,
                            dilation)
    return input.new_empty((input.shape[0], weight.shape[0], h_out, w_out)).contiguous(
        memory_format=result_memory_format(input))


def _empty_gradient(t: Tensor) -> Tensor:
    """The gradient of ``t`` as the kernels return it: its shape, in ``result_memory_format(t)``."""
    return t.new_empty(t.shape).contiguous(memory_format=result_memory_format(t))


def _deform_conv2d_backward_fake(grad_output, input, offset, weight, mask, stride, padding, dilation):
    check_same_device(_OP + "_backward", input, grad_output=grad_output, offset=offset, weight=weight, mask=mask)
    grad_mask = _empty_gradient(mask) if mask is not None else offset.new_empty((0,))
    return _empty_gradient(input), _empty_gradient(offset), weight.new_empty(weight.shape), grad_mask


def _setup_context(ctx, inputs, output):
    input, offset, weight, mask, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(input, offset, weight, mask)
    ctx.has_bias = bias is not None
    ctx.conv_args = (stride, padding, dilation)


def register_python_parts(namespace: str) -> None:
    """Fake kernels and autograd for ``torch.ops.<namespace>.deform_conv2d`` (``hybridops``, and the
    CUDA emulation's ``hybridops_emu``, whose backward is the emulated backward op)."""
    library = getattr(torch.ops, namespace)

    def backward(ctx, grad_output):
        input, offset, weight, mask = ctx.saved_tensors
        grad_input, grad_offset, grad_weight, grad_mask = library.deform_conv2d_backward(
            grad_output, input, offset, weight, mask, *ctx.conv_args)
        grad_bias = grad_output.sum((0, 2, 3)) if ctx.has_bias else None
        return (grad_input, grad_offset, grad_weight, (grad_mask if mask is not None else None), grad_bias,
                None, None, None)

    torch.library.register_fake(f"{namespace}::deform_conv2d")(_deform_conv2d_fake)
    torch.library.register_fake(f"{namespace}::deform_conv2d_backward")(_deform_conv2d_backward_fake)
    torch.library.register_autograd(f"{namespace}::deform_conv2d", backward, setup_context=_setup_context)
    forbid_double_backward("deform_conv2d", namespace)


register_python_parts("hybridops")
