"""Shared DCN test inputs (tests and benchmarks build their inputs the same way)."""
from __future__ import annotations

import torch

from hybridops.ops.deform_conv2d import out_size


def make_dcn_inputs(n=2, c_in=6, c_out=4, h=9, w=11, kh=3, kw=3, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                    groups=1, offset_groups=1, use_mask=True, use_bias=True, dtype=torch.float64, device="cpu",
                    offset_scale=2.0, requires_grad=False, seed=0):
    """Random (input, offset, weight, bias, mask) with non-integer offsets that push some samples outside."""
    g = torch.Generator().manual_seed(seed)
    h_out, w_out = out_size(h, w, kh, kw, stride, padding, dilation)
    k = kh * kw

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    x = rnd(n, c_in, h, w)
    weight = rnd(c_out, c_in // groups, kh, kw, scale=0.5)
    offset = rnd(n, 2 * offset_groups * k, h_out, w_out, scale=offset_scale)
    mask = torch.rand(n, offset_groups * k, h_out, w_out, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) if use_mask else None
    bias = rnd(c_out) if use_bias else None
    tensors = [x, offset, weight, bias, mask]
    if requires_grad:
        for t in tensors:
            if t is not None:
                t.requires_grad_(True)
    return x, offset, weight, bias, mask
