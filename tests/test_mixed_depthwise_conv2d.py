"""Tests of hybridops.mixed_depthwise_conv2d (MixConv) and MixedDepthwiseConv2d.

The float64 split/conv/cat composition (hybridops.reference.mixed_depthwise_conv2d) is the expected
value; CUDA tests compare against the CPU kernels and skip without a GPU.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hybridops
from hybridops import reference

from tests._mdc_cases import (AWKWARD, CUDA, DEVICES, OP, assert_close_all, check_low_precision, make_case,
                              needs_cuda, ref64, run)


@pytest.mark.parametrize("n,splits,ks,h,w,stride,dilation", AWKWARD)
def test_matches_reference_float32(n, splits, ks, h, w, stride, dilation):
    x, ws, b = make_case(n, splits, ks, h, w)
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
    out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_cpu_isa_fallbacks_match(isa, monkeypatch):
    """The baseline (SSE2) and AVX2 code paths give the same numbers as the reference (the best path
    the CPU supports is what every other test runs; HYBRIDOPS_CPU_ISA caps it)."""
    monkeypatch.setenv("HYBRIDOPS_CPU_ISA", isa)
    for n, splits, ks, h, w, stride, dilation in [(2, [3, 2, 2], (3, 5, 7), 11, 37, 2, 1),
                                                  (1, [2, 3], (9, 11), 9, 40, 1, 2)]:
        for dtype in (torch.float32, torch.float64):
            x, ws, b = make_case(n, splits, ks, h, w, dtype=dtype)
            out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
            out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
            assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-5, atol=1e-5)


EMULATED = AWKWARD + [
    pytest.param(3, [2, 1], (3, 5), 40, 70, 1, 1, id="multi-tile-s1"),
    pytest.param(2, [1, 1, 1, 1], (3, 5, 7, 9), 67, 66, 2, 1, id="multi-tile-s2-k3579"),
    pytest.param(1, [1, 1], (5, 3), 45, 37, (3, 2), (2, 3), id="multi-tile-s3x2-d2x3"),
]


@pytest.mark.parametrize("n,splits,ks,h,w,stride,dilation", EMULATED)
def test_cuda_algorithm_emulated_on_cpu(n, splits, ks, h, w, stride, dilation, monkeypatch):
    """HYBRIDOPS_MDC_EMULATE_CUDA=1 runs the CUDA kernels' tiling (32x32 tiles with halo, the
    stride-1 flipped-kernel grad_input, the stride > 1 gather, the grad_weight partials and their
    shuffle-tree / fixed-order reduction) with the same per-thread bodies, one simulated thread at a
    time: the GPU code's index math is checked here even without a GPU. Three grad_weight chunks
    (instead of the plan's one item per chunk on these small shapes) sum several items per chunk."""
    monkeypatch.setenv("HYBRIDOPS_MDC_EMULATE_CUDA", "1")
    monkeypatch.setenv("HYBRIDOPS_MDC_EMULATE_CHUNKS", "3")
    x, ws, b = make_case(n, splits, ks, h, w, dtype=torch.float64)
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
    out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
    assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-10, atol=1e-10)


def test_batch_zero():
    x, ws, b = make_case(0, [2, 3], (3, 5), 8, 8)
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 2, 1)
    assert out.shape == (0, 5, 4, 4)
    assert grads[0].shape == x.shape
    for g, w in zip(grads[1:3], ws):
        assert g.shape == w.shape and torch.count_nonzero(g) == 0


@pytest.mark.parametrize("layout", ["sliced", "channels_last", "transposed-hw"])
def test_non_contiguous_input(layout):
    x, ws, b = make_case(2, [3, 2, 3], (3, 5, 7), 13, 11)
    if layout == "sliced":
        big = torch.randn(2, 16, 13, 22)
        big[:, 1::2, :, ::2] = x
        x = big[:, 1::2, :, ::2]
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x.is_contiguous()
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 1, 1)
    out_ref, grads_ref = run(ref64, x, ws, b, 1, 1)
    assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-5, atol=1e-5)


def test_backward_op_channels_last_grad_output():
    """NCHW input with a channels-last grad_output: the NCHW kernels, same bits."""
    x, ws, _ = make_case(2, [3, 2, 3], (3, 5, 7), 9, 11)
    g = torch.randn(2, 8, 5, 6)
    bwd = torch.ops.hybridops.mixed_depthwise_conv2d_backward
    expected = bwd(g, x, ws, [2, 2], [1, 1], [True, True])
    actual = bwd(g.to(memory_format=torch.channels_last), x, ws, [2, 2], [1, 1], [True, True])
    assert_close_all([actual[0]] + list(actual[1]), [expected[0]] + list(expected[1]), rtol=0, atol=0)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), ((1, 2), (2, 1))])
def test_gradcheck_float64(stride, dilation):
    x, ws, b = make_case(2, [2, 1, 1], (3, 5, 1), 5, 4, dtype=torch.float64)
    args = [x.requires_grad_()] + [w.requires_grad_() for w in ws] + [b.requires_grad_()]
    fn = lambda x, w0, w1, w2, b: hybridops.mixed_depthwise_conv2d(x, [w0, w1, w2], b, stride, dilation)
    assert torch.autograd.gradcheck(fn, args)


def test_opcheck():
    for stride, dilation in [([1, 1], [1, 1]), ([2, 2], [1, 2])]:
        x, ws, b = make_case(2, [3, 1, 2], (3, 5, 7), 9, 8)
        torch.library.opcheck(OP, (x.requires_grad_(), [w.requires_grad_() for w in ws], b.requires_grad_(),
                                   stride, dilation))
        torch.library.opcheck(OP, (x, ws, None, stride, dilation))


def test_partial_gradients():
    """Only the weights require grad (grad_input skipped), then only the input."""
    x, ws, b = make_case(1, [2, 2], (3, 5), 7, 7)
    ws = [w.requires_grad_() for w in ws]
    hybridops.mixed_depthwise_conv2d(x, ws, None, 2).sum().backward()
    ref_ws = [w.detach().clone().requires_grad_() for w in ws]
    reference.mixed_depthwise_conv2d(x, ref_ws, None, 2).sum().backward()
    assert_close_all([w.grad for w in ws], [w.grad for w in ref_ws], rtol=1e-5, atol=1e-5)
    x.requires_grad_()
    ws = [w.detach() for w in ws]
    hybridops.mixed_depthwise_conv2d(x, ws, None, 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad(reference.mixed_depthwise_conv2d(x, ws, None, 2).sum(), x)[0])


def test_deterministic_backward():
    x, ws, b = make_case(2, [5, 4, 4], (3, 5, 7), 16, 16)
    _, g1 = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 1, 1)
    _, g2 = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 1, 1)
    for a, c in zip(g1, g2):
        assert torch.equal(a, c)


def test_double_backward_raises():
    x, ws, _ = make_case(1, [2, 2], (3, 5), 5, 5)
    x.requires_grad_()
    out = hybridops.mixed_depthwise_conv2d(x, ws)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        gx.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_vs_float64(dtype):
    """Our error vs the float64 reference is at most 2x PyTorch's own error in the same dtype."""
    x, ws, b = make_case(2, [6, 5, 5], (3, 5, 7), 16, 15, dtype=dtype)
    for stride in (1, 2):
        out, grads = check_low_precision(x, ws, b, stride)
        assert out.dtype == dtype and all(g.dtype == dtype for g in grads)


def test_autocast_cpu():
    x, ws, b = make_case(2, [3, 3], (3, 5), 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = hybridops.mixed_depthwise_conv2d(x, ws, b)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref64(x, ws, b, 1, 1), rtol=2e-2, atol=5e-2)


# ---- module --------------------------------------------------------------------------------------
def test_module_split_init_repr():
    m = hybridops.MixedDepthwiseConv2d(10, (3, 5, 7), stride=2, bias=True)
    assert m.split_channels == [4, 3, 3]
    assert [tuple(w.shape) for w in m.weights] == [(4, 1, 3, 3), (3, 1, 5, 5), (3, 1, 7, 7)]
    assert isinstance(m.weights, torch.nn.ParameterList) and m.bias.shape == (10,)
    for w, k in zip(m.weights, (3, 5, 7)):  # nn.Conv2d init: kaiming-uniform(a=sqrt(5)) -> bound 1/k
        assert w.abs().max() <= 1 / k + 1e-6
    assert m.bias[7:].abs().max() <= 1 / 7 + 1e-6
    assert m.extra_repr() == "10, kernel_sizes=(3, 5, 7), split_channels=[4, 3, 3], stride=(2, 2), bias=True"
    assert "10, kernel_sizes=(3, 5, 7)" in repr(m)
    assert hybridops.MixedDepthwiseConv2d(6, 3, dilation=2).extra_repr() == \
        "6, kernel_sizes=(3,), split_channels=[6], dilation=(2, 2)"
    x = torch.randn(2, 10, 9, 9)
    torch.testing.assert_close(m(x), reference.mixed_depthwise_conv2d(x, list(m.weights), m.bias, 2))
    torch.testing.assert_close(hybridops.mixed_depthwise_conv2d(x, m.weights, m.bias, 2), m(x))  # ParameterList


def test_module_torch_compile_fullgraph():
    torch._dynamo.reset()
    m = hybridops.MixedDepthwiseConv2d(12, (3, 5, 7), bias=True)
    x = torch.randn(2, 12, 12, 12, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.square().sum().backward()
    grads = [x.grad] + [w.grad for w in m.weights] + [m.bias.grad]
    x2 = x.detach().clone().requires_grad_()
    m.zero_grad()
    m(x2).square().sum().backward()
    torch.testing.assert_close(out, m(x2))
    assert_close_all(grads, [x2.grad] + [w.grad for w in m.weights] + [m.bias.grad])
    # The default (inductor) backend traces the op as one opaque node without a graph break.
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x))


def _timm_state_dict(splits, ks, bias=False, prefix=""):
    """A state dict laid out as timm's MixedConv2d (an nn.ModuleDict of one Conv2d per group)."""
    convs = torch.nn.ModuleDict({str(i): torch.nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=bias)
                                 for i, (c, k) in enumerate(zip(splits, ks))})
    return {prefix + key: v for key, v in convs.state_dict().items()}, convs


def test_load_timm_state_dict():
    sd, convs = _timm_state_dict([4, 3, 3], (3, 5, 7), bias=True, prefix="conv.")
    sd["other.weight"] = torch.zeros(1)
    m = hybridops.MixedDepthwiseConv2d(10, (3, 5, 7), bias=True)
    m.load_timm_state_dict(sd, prefix="conv.")
    x = torch.randn(1, 10, 8, 8)
    expected = torch.cat([conv(xi) for conv, xi in zip(convs.values(), x.split([4, 3, 3], 1))], 1)
    torch.testing.assert_close(m(x), expected)
    m2 = hybridops.MixedDepthwiseConv2d.from_timm_state_dict(sd, prefix="conv.")
    assert m2.split_channels == [4, 3, 3] and m2.kernel_sizes == (3, 5, 7) and m2.bias is not None
    torch.testing.assert_close(m2(x), expected)
    ours = hybridops.convert_timm_mixed_conv2d_state_dict(_timm_state_dict([2, 2], (3, 5))[0])
    assert sorted(ours) == ["weights.0", "weights.1"]


def test_load_timm_state_dict_errors():
    sd, _ = _timm_state_dict([4, 3, 3], (3, 5, 7))
    with pytest.raises(ValueError, match=r"'1.weight' has shape \(3, 1, 5, 5\), expected \(3, 1, 7, 7\)"):
        hybridops.MixedDepthwiseConv2d(10, (3, 7, 5)).load_timm_state_dict(sd)
    with pytest.raises(KeyError, match="no 'conv.0.weight'"):
        hybridops.MixedDepthwiseConv2d(10, (3, 5, 7)).load_timm_state_dict(sd, prefix="conv.")
    sd_b, _ = _timm_state_dict([4, 3, 3], (3, 5, 7), bias=True)
    with pytest.raises(ValueError, match="bias=False"):
        hybridops.MixedDepthwiseConv2d(10, (3, 5, 7)).load_timm_state_dict(sd_b)
    with pytest.raises(ValueError, match=r"depthwise MixedConv2d has \[C_i, 1, k, k\]"):
        hybridops.convert_timm_mixed_conv2d_state_dict({"0.weight": torch.zeros(4, 2, 3, 3)})


# ---- bad inputs ----------------------------------------------------------------------------------
def test_bad_kernel_sizes_module():
    for ks in [(3, 4), (0,), (-3,), (), (3, 2.5)]:
        with pytest.raises(ValueError, match="kernel"):
            hybridops.MixedDepthwiseConv2d(8, ks)
    with pytest.raises(ValueError, match="channels must be an int >= the number of kernel sizes"):
        hybridops.MixedDepthwiseConv2d(2, (3, 5, 7))
    with pytest.raises(ValueError, match="stride must be positive"):
        hybridops.MixedDepthwiseConv2d(8, (3, 5), stride=0)


def test_bad_inputs_functional():
    fn = hybridops.mixed_depthwise_conv2d
    x = torch.randn(1, 6, 8, 8)
    good = [torch.randn(3, 1, 3, 3), torch.randn(3, 1, 5, 5)]
    with pytest.raises(ValueError, match=r"weights\[1\] has kernel size 4; kernel sizes must be odd and positive"):
        fn(x, [good[0], torch.randn(3, 1, 4, 4)])
    with pytest.raises(ValueError, match=r"weights\[0\] has kernel size 0"):
        fn(x, [torch.randn(3, 1, 0, 0), good[1]])
    with pytest.raises(ValueError, match=r"channel split \[3, 2\] of weights sums to 5, but input has 6 channels"):
        fn(x, [good[0], torch.randn(2, 1, 5, 5)])
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \[C_i, 1, k, k\].*\(3, 2, 5, 5\)"):
        fn(x, [good[0], torch.randn(3, 2, 5, 5)])
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \[C_i, 1, k, k\].*\(3, 1, 3, 5\)"):
        fn(x, [good[0], torch.randn(3, 1, 3, 5)])
    with pytest.raises(ValueError, match=r"weights\[0\] must be 4-D, got 3-D"):
        fn(x, [torch.randn(3, 3, 3), good[1]])
    with pytest.raises(ValueError, match=r"weights\[1\] has dtype torch.float64 but input has dtype torch.float32"):
        fn(x, [good[0], good[1].double()])
    with pytest.raises(ValueError, match=r"weights\[0\] is on meta but input is on cpu"):
        fn(x, [good[0].to("meta"), good[1]])
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\), got \(5,\)"):
        fn(x, good, torch.randn(5))
    with pytest.raises(ValueError, match="bias has dtype torch.float16"):
        fn(x, good, torch.randn(6, dtype=torch.float16))
    with pytest.raises(ValueError, match="input must be a floating point tensor"):
        fn(x.long(), good)
    with pytest.raises(ValueError, match="input must be 4-D"):
        fn(x[0], good)
    with pytest.raises(ValueError, match="stride must be positive"):
        fn(x, good, stride=0)
    with pytest.raises(ValueError, match="dilation must be positive"):
        fn(x, good, dilation=(1, 0))
    with pytest.raises(ValueError, match="at least one"):
        fn(x, [])
    with pytest.raises(ValueError, match="at most 32 kernel groups"):
        fn(torch.randn(1, 33, 4, 4), [torch.randn(1, 1, 3, 3)] * 33)
    with pytest.raises(TypeError, match="weights must be a list or tuple"):
        fn(x, 3)


def test_bad_inputs_reach_cpp_checks():
    """Direct torch.ops calls (no Python checks) fail with the C++ TORCH_CHECK messages."""
    x = torch.randn(1, 6, 8, 8)
    w3, w5 = torch.randn(3, 1, 3, 3), torch.randn(3, 1, 5, 5)
    with pytest.raises(RuntimeError, match="kernel sizes must be odd and positive"):
        OP(x, [w3, torch.randn(3, 1, 4, 4)], None, [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="weights' channels sum to 5 but input has 6"):
        OP(x, [w3, torch.randn(2, 1, 5, 5)], None, [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"weights\[1\] has dtype Double but input has dtype Float"):
        OP(x, [w3, w5.double()], None, [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="bias must be"):
        OP(x, [w3, w5], torch.randn(4), [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="grad_output must be"):
        torch.ops.hybridops.mixed_depthwise_conv2d_backward(torch.randn(1, 6, 4, 4), x, [w3, w5], [1, 1], [1, 1],
                                                            [True, True])


# ---- CUDA ----------------------------------------------------------------------------------------
# Every test taking `cuda_backend` runs on a GPU when there is one, and on the CPU emulation of the
# same CUDA kernels for each device profile (tests/_cuda_backends.py).
def _on(backend, fn):
    """fn run inside the backend's context (the backward recorded there follows it)."""
    def call(*args, **kwargs):
        with backend.active():
            return fn(*args, **kwargs)
    return call


@pytest.mark.parametrize("n,splits,ks,h,w,stride,dilation", AWKWARD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(n, splits, ks, h, w, stride, dilation, dtype, cuda_backend):
    x, ws, b = make_case(n, splits, ks, h, w, dtype=dtype)
    out_cpu, grads_cpu = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
    to = cuda_backend.to
    out, grads = run(_on(cuda_backend, hybridops.mixed_depthwise_conv2d), to(x), [to(t) for t in ws], to(b), stride,
                     dilation)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert_close_all([out] + grads, [out_cpu] + grads_cpu, **tol)


@pytest.mark.parametrize("shape", [(1, 480, 32, 32, (3, 5, 7, 9), 2), (2, 144, 64, 64, (3, 5, 7), 1),
                                   (1, 240, 40, 40, (3, 5), 1), (2, 96, 48, 48, (3,), 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_hybridnetseg_shapes(shape, dtype, cuda_backend):
    n, c, h, w, ks, stride = shape
    splits = hybridops.nn.mixed_conv.split_channels(c, len(ks))
    x, ws, b = make_case(n, splits, ks, h, w, dtype=dtype, device=cuda_backend.device)
    out, grads = run(_on(cuda_backend, hybridops.mixed_depthwise_conv2d), x, ws, b, stride, 1)
    out_64, grads_64 = run(ref64, x, ws, b, stride, 1)
    if dtype == torch.float32:
        assert_close_all([out] + grads, [out_64] + grads_64, rtol=1e-4, atol=1e-4)
    else:
        out_t, grads_t = run(reference.mixed_depthwise_conv2d, x, ws, b, stride, 1)
        for ours, torchs, exact in zip([out] + grads, [out_t] + grads_t, [out_64] + grads_64):
            err = (ours.double().cpu() - exact).abs().max().item()
            err_torch = (torchs.double().cpu() - exact).abs().max().item()
            assert err <= 2 * err_torch + 1e-3 * exact.abs().max().item(), (err, err_torch)


def test_cuda_gradcheck_and_determinism(cuda_backend):
    x, ws, b = make_case(2, [2, 1, 1], (3, 5, 7), 7, 6, dtype=torch.float64, device=cuda_backend.device)
    args = [x.requires_grad_()] + [w.requires_grad_() for w in ws] + [b.requires_grad_()]
    for stride in (1, 2):
        fn = _on(cuda_backend, lambda x, w0, w1, w2, b: hybridops.mixed_depthwise_conv2d(x, [w0, w1, w2], b, stride, 1))
        assert torch.autograd.gradcheck(fn, args)
    x, ws, b = make_case(2, [40, 40], (3, 5), 64, 64, device=cuda_backend.device)
    _, g1 = run(_on(cuda_backend, hybridops.mixed_depthwise_conv2d), x, ws, b, 1, 1)
    _, g2 = run(_on(cuda_backend, hybridops.mixed_depthwise_conv2d), x, ws, b, 1, 1)
    for a, c in zip(g1, g2):
        assert torch.equal(a, c)


def test_cuda_opcheck(cuda_backend):
    x, ws, b = make_case(2, [3, 1, 2], (3, 5, 7), 9, 8, device=cuda_backend.device)
    op = torch.ops.hybridops_emu.mixed_depthwise_conv2d.default if cuda_backend.emulated else OP
    with cuda_backend.active():
        torch.library.opcheck(op, (x.requires_grad_(), [w.requires_grad_() for w in ws], b.requires_grad_(),
                                   [2, 2], [1, 1]))


@needs_cuda
def test_cuda_autocast():
    """GPU only: autocast is a dispatch key of CUDA tensors (the emulation's ops take CPU tensors)."""
    x, ws, b = make_case(2, [3, 1, 2], (3, 5, 7), 9, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out = hybridops.mixed_depthwise_conv2d(x, ws, b)
    assert out.dtype == torch.float16
