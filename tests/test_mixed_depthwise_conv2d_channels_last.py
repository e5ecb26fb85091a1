"""Channels-last inputs of hybridops.mixed_depthwise_conv2d.

On the CPU a channels-last input runs its own kernels (vectorised over channels, no transposes),
so they get the same coverage as the NCHW ones: every shape of the awkward set, channel counts
that exercise every vector width (full blocks, single vectors, a half vector, single channels), all
ISA paths, dtypes, determinism across thread counts, the fake kernel's strides and torch.compile.
The op returns channels-last for channels-last input, like F.conv2d (CUDA converts to match).
"""
from __future__ import annotations

import pytest
import torch

import hybridops
from tests._mdc_cases import AWKWARD, DEVICES, OP, assert_close_all, check_low_precision, make_case, ref64, run

CL = torch.channels_last

# Channel splits that hit every channel step at every ISA width (AVX-512 fp32: 32-channel blocks,
# 16, 8, then singles; AVX2: 16, 8, 4, singles; fp64 halves those).
WIDE = [
    pytest.param(2, [37, 19, 8], (3, 5, 7), 13, 11, 1, 1, id="wide-s1"),
    pytest.param(1, [45, 3], (5, 9), 9, 14, 2, 1, id="wide-s2"),
    pytest.param(1, [33, 17], (3, 7), 12, 9, (1, 2), (2, 1), id="wide-s1x2-d2x1"),
    pytest.param(1, [24, 9], (1, 11), 5, 23, 1, 1, id="wide-k1-k11-runtime-k"),
]


def channels_last(x):
    return x.contiguous(memory_format=CL)


def check_layouts(out, grad_input):
    assert out.is_contiguous(memory_format=CL)
    assert grad_input.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,splits,ks,h,w,stride,dilation", AWKWARD + WIDE)
def test_channels_last_matches_reference(n, splits, ks, h, w, stride, dilation, dtype):
    x, ws, b = make_case(n, splits, ks, h, w, dtype=dtype)
    x = channels_last(x)
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
    out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
    if x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:  # else channels-last is also NCHW-contiguous
        assert not x.is_contiguous()
        check_layouts(out, grads[0])
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,splits,ks,h,w,stride,dilation", AWKWARD + WIDE)
def test_cuda_channels_last_matches_reference(n, splits, ks, h, w, stride, dilation, dtype, cuda_backend):
    """The CUDA kernels (GPU, or the emulation of each profile) on channels-last input."""
    x, ws, b = make_case(n, splits, ks, h, w, dtype=dtype, device=cuda_backend.device)
    x = channels_last(x)

    def on_backend(*args):
        with cuda_backend.active():
            return hybridops.mixed_depthwise_conv2d(*args)

    out, grads = run(on_backend, x, ws, b, stride, dilation)
    out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
    if x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
        check_layouts(out, grads[0])
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_channels_last_isa_fallbacks_match(isa, monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_CPU_ISA", isa)
    for n, splits, ks, h, w, stride, dilation in [(2, [37, 19, 8], (3, 5, 7), 11, 13, 2, 1),
                                                  (1, [21, 6], (9, 11), 9, 20, 1, 2)]:
        for dtype in (torch.float32, torch.float64):
            x, ws, b = make_case(n, splits, ks, h, w, dtype=dtype)
            out, grads = run(hybridops.mixed_depthwise_conv2d, channels_last(x), ws, b, stride, dilation)
            out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
            assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-5, atol=1e-5)


def test_channels_last_backward_is_deterministic_across_thread_counts():
    """grad_weight partial sums are chunked by shape only: 1 thread and 2 threads agree bit for bit."""
    x, ws, b = make_case(2, [40, 24], (3, 5), 24, 20)
    x = channels_last(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, g1 = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 1, 1)
        torch.set_num_threads(2)
        _, g2 = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 1, 1)
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(g1, g2):
        assert torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_channels_last_low_precision_vs_float64(dtype):
    """Error vs the float64 reference at most 2x PyTorch's own channels-last error in the dtype."""
    x, ws, b = make_case(2, [20, 7, 5], (3, 5, 7), 16, 15, dtype=dtype)
    x = channels_last(x)
    for stride in (1, 2):
        out, _ = check_low_precision(x, ws, b, stride)
        assert out.dtype == dtype and out.is_contiguous(memory_format=CL)


def test_channels_last_batch_zero():
    x, ws, b = make_case(0, [2, 3], (3, 5), 8, 8)
    out, grads = run(hybridops.mixed_depthwise_conv2d, channels_last(x), ws, b, 2, 1)
    assert out.shape == (0, 5, 4, 4) and grads[0].shape == x.shape
    for g, w in zip(grads[1:3], ws):
        assert g.shape == w.shape and torch.count_nonzero(g) == 0


def test_backward_op_mixed_layouts():
    """The backward op takes any layout of grad_output; grad_input follows the input's layout."""
    x, ws, _ = make_case(2, [9, 6, 7], (3, 5, 7), 9, 11)
    g = torch.randn(2, 22, 5, 6)
    bwd = torch.ops.hybridops.mixed_depthwise_conv2d_backward
    expected = bwd(g, x, ws, [2, 2], [1, 1], [True, True])
    for g_layout in (g, channels_last(g), g.transpose(2, 3).contiguous().transpose(2, 3)):
        gi, gws = bwd(g_layout, channels_last(x), ws, [2, 2], [1, 1], [True, True])
        assert gi.is_contiguous(memory_format=CL)
        assert_close_all([gi] + list(gws), [expected[0]] + list(expected[1]), rtol=1e-5, atol=1e-5)
    gi, gws = bwd(g, channels_last(x), ws, [2, 2], [1, 1], [False, True])
    assert gi.numel() == 0 and len(gws) == 3
    gi, gws = bwd(g, channels_last(x), ws, [2, 2], [1, 1], [True, False])
    assert gws == [] and gi.is_contiguous(memory_format=CL)


def test_channels_last_opcheck():
    """opcheck compares the fake kernel's output strides with the real ones."""
    for stride in ([1, 1], [2, 2]):
        x, ws, b = make_case(2, [5, 3, 4], (3, 5, 7), 9, 8)
        x = channels_last(x)
        torch.library.opcheck(OP, (x.requires_grad_(), [w.requires_grad_() for w in ws], b.requires_grad_(),
                                   stride, [1, 1]))


def test_channels_last_module_compile_fullgraph():
    torch._dynamo.reset()
    m = hybridops.MixedDepthwiseConv2d(24, (3, 5, 7), stride=2, bias=True)
    x = channels_last(torch.randn(2, 24, 17, 16))
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    expected = m(x)
    assert out.is_contiguous(memory_format=CL) and expected.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, expected)
    out.sum().backward()


@pytest.mark.parametrize("isa", ["base", "avx2", "best"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_channels_last_low_precision_loads_are_exact(dtype, isa, monkeypatch):
    """fp16/bf16 channels-last inputs are widened to float as the kernels load them (full vectors,
    half vectors and single channels): an identity kernel returns every bit pattern unchanged --
    subnormals, extremes, infinities and NaNs with k=1 (generic body), every finite value with a
    centre-only 3x3 kernel (sliding-window body)."""
    if isa != "best":
        monkeypatch.setenv("HYBRIDOPS_CPU_ISA", isa)
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    c = 61  # 32 + 16 + 8 + 4 + 1: every channel step of every ISA
    for k, keep in ((1, torch.ones_like(values, dtype=torch.bool)), (3, torch.isfinite(values))):
        v = values[keep]
        rows = (v.numel() + 64 * c - 1) // (64 * c)
        v = torch.cat([v, torch.zeros(rows * 64 * c - v.numel(), dtype=dtype)])
        x = v.view(1, rows, 64, c).permute(0, 3, 1, 2)  # [1, c, rows, 64] channels-last
        assert x.is_contiguous(memory_format=CL)
        w = torch.zeros(c, 1, k, k, dtype=dtype)
        w[:, :, k // 2, k // 2] = 1
        out = hybridops.mixed_depthwise_conv2d(x, [w])
        nan = torch.isnan(x)
        assert torch.equal(torch.isnan(out), nan)
        assert torch.equal(out[~nan], x[~nan])
