"""Pure-PyTorch references of every hybridops op.

Slow and readable: tests compare the kernels against them and benchmarks use them as the
"plain PyTorch" baseline. They take the same arguments as the public ops and support autograd
(including double backward) through ordinary PyTorch operations.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hybridops.ops._args import IntPair, pair
from hybridops.ops.deform_conv2d import out_size
from hybridops.ops.mixed_depthwise_conv2d import same_padding

__all__ = ["deform_conv2d", "bilinear_sample_zero_padded", "mixed_depthwise_conv2d"]


def bilinear_sample_zero_padded(planes: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Bilinear samples of ``planes`` at fractional pixel coordinates, zero outside the image.

    Args:
        planes: ``[B, C, H, W]``.
        y, x: ``[B, S]`` row and column coordinates (pixel units, 0 = first pixel centre).

    Returns:
        ``[B, C, S]``. A point with ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W`` samples 0;
        neighbours outside the image read as 0 (torchvision's deform_conv2d convention). The
        derivative with respect to the point is that of the floor cell's blend (one-sided from the
        right), so on the lines ``y == -1`` / ``x == -1`` the value is 0 but the derivative is not,
        as in torchvision. A NaN coordinate samples NaN; an infinite one samples 0.
    """
    b, c, h, w = planes.shape
    flat = planes.reshape(b, c, h * w)
    # Closed on the left: on y == -1 the row-0 weights are ly = 0 (value 0) but d/dy is not.
    domain = (y >= -1) & (y < h) & (x >= -1) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    out = planes.new_zeros((b, c, y.shape[1]))
    for dy, dx, weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                           (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        valid = domain & (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        index = torch.where(valid, yy * w + xx, 0).long()
        values = torch.gather(flat, 2, index.unsqueeze(1).expand(b, c, index.shape[1]))
        out = out + values * torch.where(valid, weight, 0).unsqueeze(1)
    nan_point = torch.isnan(y) | torch.isnan(x)
    return out + torch.where(nan_point, float("nan"), 0.0).to(out.dtype).unsqueeze(1)


# hybridops.deform_conv2d's signature, repeated on purpose for a drop-in (test_reference_takes_the_ops_arguments).
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
    """Reference of :func:`hybridops.deform_conv2d` (same arguments, shapes and semantics).

    Builds the deformed columns ``[N, C_in, kH*kW, H_out*W_out]`` explicitly with
    :func:`bilinear_sample_zero_padded` and contracts them with the weight per group.
    """
    stride, padding, dilation = (pair(stride, "stride", "reference.deform_conv2d", 1),
                                 pair(padding, "padding", "reference.deform_conv2d", 0),
                                 pair(dilation, "dilation", "reference.deform_conv2d", 1))
    n, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c_in // c_per_group
    taps = kh * kw
    h_out, w_out = out_size(h, w, kh, kw, stride, padding, dilation)
    offset_groups = offset.shape[1] // (2 * taps)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    dev = input.device

    # Undeformed sampling positions of every tap: [taps, H_out, W_out].
    tap_y = (torch.arange(kh, device=dev) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=dev) * dilation[1]).repeat(kh)
    base_y = (torch.arange(h_out, device=dev) * stride[0] - padding[0]).view(1, h_out, 1) + tap_y.view(taps, 1, 1)
    base_x = (torch.arange(w_out, device=dev) * stride[1] - padding[1]).view(1, 1, w_out) + tap_x.view(taps, 1, 1)

    off = offset.to(acc).view(n, offset_groups, taps, 2, h_out, w_out)
    y = (base_y.to(acc) + off[:, :, :, 0]).reshape(n * offset_groups, taps * h_out * w_out)
    x = (base_x.to(acc) + off[:, :, :, 1]).reshape(n * offset_groups, taps * h_out * w_out)
    planes = input.to(acc).reshape(n * offset_groups, c_in // offset_groups, h, w)
    columns = bilinear_sample_zero_padded(planes, y, x)  # [N*OG, C/OG, taps*P]
    if mask is not None:
        columns = columns * mask.to(acc).reshape(n * offset_groups, 1, taps * h_out * w_out)
    columns = columns.reshape(n, groups, c_per_group * taps, h_out * w_out)
    w_g = weight.to(acc).reshape(groups, c_out // groups, c_per_group * taps)
    out = torch.einsum("goi,ngip->ngop", w_g, columns).reshape(n, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.to(acc).view(1, c_out, 1, 1)
    return out.to(input.dtype)


def mixed_depthwise_conv2d(
    input: Tensor,
    weights: Sequence[Tensor],
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    dilation: IntPair = 1,
) -> Tensor:
    """Reference of :func:`hybridops.mixed_depthwise_conv2d`: the split/conv/cat composition.

    This is what timm's ``MixedConv2d`` (depthwise) computes: split the channels by
    ``[w.shape[0] for w in weights]``, run one depthwise ``F.conv2d`` per group with timm's
    padding ``((stride - 1) + dilation * (k - 1)) // 2`` per dimension (``timm.layers.get_padding``),
    concatenate, add the bias. Runs in the dtype of ``input``.
    """
    if isinstance(weights, Tensor):
        weights = [weights]
    stride = pair(stride, "stride", "reference.mixed_depthwise_conv2d", 1)
    dilation = pair(dilation, "dilation", "reference.mixed_depthwise_conv2d", 1)
    splits = [w.shape[0] for w in weights]
    outs = []
    for x_i, w in zip(torch.split(input, splits, dim=1), weights):
        k = w.shape[-1]
        padding = tuple(same_padding(k, s, d) for s, d in zip(stride, dilation))
        outs.append(F.conv2d(x_i, w, None, stride, padding, dilation, groups=w.shape[0]))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
