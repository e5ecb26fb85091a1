"""Shared cases and helpers of the MixConv tests (NCHW and channels-last)."""
from __future__ import annotations

import pytest
import torch

import hybridops
from hybridops import reference

CUDA = torch.cuda.is_available() and hybridops.build_info()["built_with_cuda"]
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a GPU and hybridops built with CUDA")
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])

OP = torch.ops.hybridops.mixed_depthwise_conv2d.default


def make_case(n, splits, ks, h, w, dtype=torch.float32, device="cpu", bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = sum(splits)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    ws = [torch.randn(ci, 1, k, k, generator=g, dtype=torch.float64) / k for ci, k in zip(splits, ks)]
    b = torch.randn(c, generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return cast(x), [cast(t) for t in ws], cast(b)


def run(fn, x, ws, b, stride, dilation, grad_out_seed=1):
    """Output and gradients (input, each weight, bias) for a random grad_output."""
    x = x.detach().clone().requires_grad_()
    ws = [w.detach().clone().requires_grad_() for w in ws]
    b = None if b is None else b.detach().clone().requires_grad_()
    out = fn(x, ws, b, stride, dilation)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed), dtype=torch.float64)
    out.backward(g.to(device=out.device, dtype=out.dtype))
    grads = [x.grad] + [w.grad for w in ws] + ([b.grad] if b is not None else [])
    return out.detach(), grads


def ref64(x, ws, b, stride, dilation):
    up = lambda t: None if t is None else t.double().cpu()
    return reference.mixed_depthwise_conv2d(up(x), [up(w) for w in ws], up(b), stride, dilation)


def assert_close_all(actual, expected, **tol):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.double().cpu(), e.double().cpu(), **tol)


def check_low_precision(x, ws, b, stride):
    """flash-attention's rule for a low dtype: our error against the float64 reference is at most 2x
    PyTorch's own error in that dtype (plus 1e-3 of the largest value), for the output and every
    gradient. Returns our (output, gradients) for the caller's dtype and layout checks."""
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, 1)
    out_t, grads_t = run(reference.mixed_depthwise_conv2d, x, ws, b, stride, 1)
    out_64, grads_64 = run(ref64, x, ws, b, stride, 1)
    for ours, torchs, exact in zip([out] + grads, [out_t] + grads_t, [out_64] + grads_64):
        scale = exact.abs().max().item()
        err = (ours.double() - exact).abs().max().item()
        err_torch = (torchs.double() - exact).abs().max().item()
        assert err <= 2 * err_torch + 1e-3 * scale, (err, err_torch, scale)
    return out, grads


# (batch, splits, kernel sizes, H, W, stride, dilation)
AWKWARD = [
    pytest.param(2, [1, 1, 1], (3, 5, 7), 9, 7, 1, 1, id="one-channel-per-group"),
    pytest.param(2, [5, 2, 1], (3, 5, 9), 12, 10, 1, 1, id="unequal-split"),
    pytest.param(1, [2, 3], (7, 9), 2, 3, 1, 1, id="smaller-than-kernel"),
    pytest.param(2, [3, 2, 2], (3, 5, 7), 11, 9, 2, 1, id="stride2-odd"),
    pytest.param(1, [2, 2], (3, 5), 5, 13, (2, 1), 1, id="stride-2x1"),
    pytest.param(1, [3, 1], (3, 5), 10, 9, 1, 2, id="dilation2"),
    pytest.param(2, [2, 2], (5, 3), 9, 12, 2, (1, 3), id="stride2-dilation-1x3"),
    pytest.param(1, [3, 2], (1, 11), 6, 70, 1, 1, id="k1-k11-long-row"),
    pytest.param(1, [2, 2, 2, 2], (3, 5, 7, 9), 17, 37, 2, 1, id="hybridnetseg-k3579-s2"),
    pytest.param(1, [4], (3,), 3, 1, 3, 1, id="single-group-stride3-w1"),
]
