"""The deterministic CUDA grad_input algorithm (a scatter in 64-bit fixed point, FixedPointAdd),
run on the CPU through ``HYBRIDOPS_DCN_CPU_COL2IM=fixed_point``: the same per-element code and
host driver as the CUDA path, with the scatter spread over CPU threads in any order."""
from __future__ import annotations

import pytest
import torch

import hybridops
from tests._dcn_cases import make_dcn_inputs

CASES = [
    dict(),
    dict(use_mask=False, offset_scale=4.0),
    dict(c_in=8, c_out=4, groups=2, offset_groups=2, stride=(2, 1), h=13, w=10),
    dict(h=1, w=1, padding=(1, 1)),
    dict(n=3, c_in=5, c_out=7, h=17, w=15, dilation=(2, 1), padding=(2, 1)),
]


def _grads(args, cfg, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in args]
    x, offset, weight, bias, mask = leaves
    out = hybridops.deform_conv2d(x, offset, weight, bias, cfg.get("stride", 1), cfg.get("padding", (1, 1)),
                                  cfg.get("dilation", 1), mask)
    return torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)


def _fixed_point(monkeypatch, fn):
    monkeypatch.setenv("HYBRIDOPS_DCN_CPU_COL2IM", "fixed_point")
    try:
        return fn()
    finally:
        monkeypatch.delenv("HYBRIDOPS_DCN_CPU_COL2IM")


@pytest.mark.parametrize("cfg", CASES)
def test_fixed_point_grad_input_matches_default(cfg, monkeypatch):
    args = make_dcn_inputs(**cfg)
    x, offset, weight, bias, mask = args
    h_out, w_out = offset.shape[2:]
    grad_out = torch.randn(x.shape[0], weight.shape[0], h_out, w_out, dtype=torch.float64)
    expected = _grads(args, cfg, grad_out)
    got = _fixed_point(monkeypatch, lambda: _grads(args, cfg, grad_out))
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)  # grad_input
    for g, e in zip(got[1:], expected[1:]):  # the other gradients do not use the scatter
        assert torch.equal(g, e)


def test_fixed_point_bits_do_not_depend_on_thread_count_or_run(monkeypatch):
    args = make_dcn_inputs(n=2, c_in=8, c_out=8, h=24, w=23, dtype=torch.float32, offset_scale=3.0)
    grad_out = torch.randn(2, 8, 24, 23)
    threads = torch.get_num_threads()
    results = []
    try:
        for n_threads in (1, 2, 2, 1):
            torch.set_num_threads(n_threads)
            results.append(_fixed_point(monkeypatch, lambda: _grads(args, {}, grad_out))[0])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(r, results[0]) for r in results[1:])
    torch.testing.assert_close(results[0], _grads(args, {}, grad_out)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fixed_point_low_precision(dtype, monkeypatch):
    args = make_dcn_inputs(n=1, c_in=4, c_out=4, h=9, w=8, dtype=dtype)
    grad_out = torch.randn(1, 4, 9, 8).to(dtype)
    expected = _grads(args, {}, grad_out)[0]
    got = _fixed_point(monkeypatch, lambda: _grads(args, {}, grad_out))[0]
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_fixed_point_non_finite_gradient_becomes_nan_where_it_lands(monkeypatch):
    """A NaN or infinite contribution cannot be a fixed-point integer: its pixels become NaN (the
    default path gives NaN there too, or +-inf for an infinity), every other pixel stays exact."""
    args = make_dcn_inputs(n=1, c_in=2, c_out=2, h=7, w=7, offset_scale=0.7)
    grad_out = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    grad_out[0, 1, 3, 3] = float("nan")
    grad_out[0, 0, 5, 1] = float("inf")
    expected = _grads(args, {}, grad_out)[0]
    got = _fixed_point(monkeypatch, lambda: _grads(args, {}, grad_out))[0]
    assert torch.equal(torch.isnan(got), ~torch.isfinite(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_fixed_point_wide_dynamic_range(monkeypatch):
    """One huge gradient sets the scale; the small ones keep ~2^-42 of it as absolute precision."""
    args = make_dcn_inputs(n=1, c_in=2, c_out=2, h=6, w=6)
    grad_out = torch.randn(1, 2, 6, 6, dtype=torch.float64) * 1e-3
    grad_out[0, 0, 0, 0] = 1e6
    expected = _grads(args, {}, grad_out)[0]
    got = _fixed_point(monkeypatch, lambda: _grads(args, {}, grad_out))[0]
    # scale ~ 2^61 / (K * P * max|gcol|) ~ 2^61 / 2^30 here: each add is rounded to ~2^-31.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (got - expected).abs().max() > 0  # the rounding is real (this is not the default path)
