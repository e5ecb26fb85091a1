"""Channels-last tensors in hybridops.deform_conv2d (issue #16: "channels-last kernels if your model
says they win"; ``python -m benchmarks.dcn_layouts`` is that model).

The op's layout rule is F.conv2d's (and mixed_depthwise_conv2d's): a channels-last input gives a
channels-last output, and each gradient of input, offset and mask takes its tensor's layout
(``result_memory_format``; grad_weight stays contiguous). On CUDA the fused kernels read and write
every tensor in its own layout (``FusedLayouts``, ``PixelLayout`` in deform_conv2d_kernel.h): no
transposing copy; the im2col path and the CPU compute in NCHW and convert. Checked here:

* every layout combination gives the bits of the NCHW call, forward and every gradient, on both
  emulated device profiles and both algorithms, fp32, fp16 (the tensor-core forward on the h100
  profile), deterministic mode, groups and offset groups, partial tiles;
* the fused path really makes no copy (the profiler sees no aten::copy_ in its forward or backward),
  while im2col does;
* the fake kernels' strides are the real ones (opcheck), on the CPU and on the emulation.
"""
from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

import hybridops
from hybridops import cuda_emulation
from tests._cuda_backends import cuda_backend, dcn_algo, needs_emulation  # noqa: F401 (fixtures)
from tests._dcn_cases import make_dcn_inputs

CL = torch.channels_last
# (input, offset, mask, grad_output) channels-last or not: all, none-but-input, and the mixes.
LAYOUTS = [(True, True, True, True), (True, False, False, False), (False, True, True, False),
           (True, False, True, True), (False, False, False, True)]


def _in_layout(t, channels_last):
    return t.contiguous(memory_format=CL) if channels_last and t is not None else t


def _outputs(args, layouts, padding=1, context=None):
    """Output and every gradient (by name) of deform_conv2d on `args` laid out as `layouts`."""
    x, offset, weight, bias, mask = [t.detach().clone() if t is not None else None for t in args]
    x, offset, mask = _in_layout(x, layouts[0]), _in_layout(offset, layouts[1]), _in_layout(mask, layouts[2])
    named = {k: t.requires_grad_() for k, t in
             dict(input=x, offset=offset, weight=weight, bias=bias, mask=mask).items() if t is not None}
    with context if context is not None else contextlib.nullcontext():
        out = hybridops.deform_conv2d(x, offset, weight, bias, 1, padding, 1, mask)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        grads = torch.autograd.grad(out, list(named.values()), _in_layout(g.to(out.dtype), layouts[3]))
    return out, dict(zip(named, grads))


def _check_layouts(out, grads, layouts):
    x_cl, off_cl, mask_cl, _ = layouts
    assert out.is_contiguous(memory_format=CL) if x_cl else out.is_contiguous()
    assert grads["input"].is_contiguous(memory_format=CL) if x_cl else grads["input"].is_contiguous()
    assert grads["offset"].is_contiguous(memory_format=CL) if off_cl else grads["offset"].is_contiguous()
    if "mask" in grads:
        assert grads["mask"].is_contiguous(memory_format=CL) if mask_cl else grads["mask"].is_contiguous()
    assert grads["weight"].is_contiguous()


def _assert_same_bits(a, b):
    out_a, grads_a = a
    out_b, grads_b = b
    assert torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        if k == "bias":  # grad_output.sum((0, 2, 3)) in the autograd formula: PyTorch's order per layout
            torch.testing.assert_close(grads_a[k], grads_b[k])
        else:
            assert torch.equal(grads_a[k], grads_b[k]), k


# ---- the CPU: NCHW kernels, results in the caller's layouts ---------------------------------------
@pytest.mark.parametrize("layouts", LAYOUTS)
@pytest.mark.parametrize("algo", ["fused", "im2col"])
def test_cpu_channels_last_same_bits_and_layouts(layouts, algo, monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", algo)
    args = make_dcn_inputs(n=2, c_in=6, c_out=5, h=7, w=9, offset_groups=2, dtype=torch.float32)
    cl = _outputs(args, layouts)
    _check_layouts(*cl, layouts)
    _assert_same_bits(cl, _outputs(args, (False,) * 4))


def _copied_shapes(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return [e.input_shapes for e in prof.events() if e.name == "aten::copy_"]


def test_cpu_fused_forward_gathers_a_channels_last_input_without_copying_it(monkeypatch):
    """The CPU's fused forward samples from NHWC: a channels-last input is read as it is (the NCHW
    input is transposed once; the output's conversion to channels-last is a copy of another shape)."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    x, offset, weight, bias, mask = make_dcn_inputs(n=2, c_in=6, c_out=5, h=7, w=9, dtype=torch.float32)
    nhwc_shape = [2, 7, 9, 6]

    def run(inp):
        return lambda: hybridops.deform_conv2d(inp, offset, weight, bias, 1, 1, 1, mask)

    assert any(nhwc_shape in shapes for shapes in _copied_shapes(run(x)))
    copied = _copied_shapes(run(_in_layout(x, True)))
    assert not any(nhwc_shape in shapes or [2, 6, 7, 9] in shapes for shapes in copied)


def test_cpu_channels_last_opcheck():
    """opcheck compares the fake kernels' strides (result_memory_format) with the real ones."""
    for use_mask, layouts in itertools.product((True, False), LAYOUTS[:3]):
        x, offset, weight, bias, mask = make_dcn_inputs(n=2, h=6, w=7, use_mask=use_mask, requires_grad=True)
        x, offset, mask = _in_layout(x, layouts[0]), _in_layout(offset, layouts[1]), _in_layout(mask, layouts[2])
        torch.library.opcheck(torch.ops.hybridops.deform_conv2d.default,
                              (x, offset, weight, mask, bias, [1, 1], [1, 1], [1, 1]))


def test_ambiguous_layouts_count_as_nchw():
    """A tensor that is both NCHW- and channels-last contiguous (one channel, a 1x1 image) is NCHW."""
    args = make_dcn_inputs(n=2, c_in=1, c_out=3, h=1, w=1, dtype=torch.float32)
    out, grads = _outputs(args, (True,) * 4)
    assert out.is_contiguous() and grads["input"].is_contiguous()


# ---- CUDA on the emulation: the fused kernels read each tensor in its layout ----------------------
@needs_emulation
@pytest.mark.parametrize("layouts", LAYOUTS)
@pytest.mark.parametrize("algo", ["fused", "im2col"])
@pytest.mark.parametrize("device", ["sm61", "h100"])
def test_emulated_channels_last_same_bits_and_layouts(device, algo, layouts, monkeypatch):
    """Two weight groups, 3 offset groups (chunks stopping at their borders), 70 output channels
    (two channel tiles, the second partial), a pixel tile past the image's end."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", algo)
    args = make_dcn_inputs(n=2, c_in=12, c_out=70, h=11, w=13, offset_groups=3, groups=2, dtype=torch.float32)
    ctx = lambda: cuda_emulation.emulated_cuda(device)  # noqa: E731
    cl = _outputs(args, layouts, context=ctx())
    _check_layouts(*cl, layouts)
    _assert_same_bits(cl, _outputs(args, (False,) * 4, context=ctx()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_channels_last_matches_nchw(dtype, cuda_backend, dcn_algo):  # noqa: F811
    """Every CUDA backend (a GPU; the emulated profiles) and algorithm: channels-last input, offset,
    mask and grad_output give the NCHW call's bits, grad_input within rounding (float atomics on a GPU
    add in any order); 16 channels in two offset groups (8-channel chunks: 128-bit fp32 gathers, and
    fp16 ones on the tensor cores of sm_80+). In gpu_verify.sh's sanitizer set (memcheck on a GPU)."""
    args = [cuda_backend.to(t.to(dtype)) if t is not None else None
            for t in make_dcn_inputs(n=2, c_in=16, c_out=8, h=9, w=10, offset_groups=2)]
    (out_cl, grads_cl), (out, grads) = (_outputs(args, layouts, context=cuda_backend.active())
                                        for layouts in ((True,) * 4, (False,) * 4))
    _check_layouts(out_cl, grads_cl, (True,) * 4)
    assert torch.equal(out_cl, out)
    for k in ("offset", "weight", "mask"):
        assert torch.equal(grads_cl[k], grads[k]), k
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for k in ("input", "bias"):
        torch.testing.assert_close(grads_cl[k], grads[k], rtol=tol, atol=tol)


@needs_emulation
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("device", ["sm61", "h100"])
def test_emulated_channels_last_dtypes_and_tensor_cores(device, dtype, monkeypatch):
    """fp16/bf16 on the h100 profile take the tensor-core forward, which reads channels-last samples
    the same way; no mask (DCNv1) and a 5x5 kernel."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = [t.to(dtype) if t is not None else None for t in
            make_dcn_inputs(n=2, c_in=8, c_out=20, h=9, w=10, kh=5, kw=5, padding=(2, 2), use_mask=False)]
    cuda_emulation.reset_counters()
    cl = _outputs(args, (True,) * 4, padding=2, context=cuda_emulation.emulated_cuda(device))
    expected_forward = ("fused_forward_tc_kernel<scalar_t>" if device == "h100" and dtype != torch.float64
                        else "fused_forward_kernel<scalar_t>")
    assert expected_forward in cuda_emulation.kernels()
    _check_layouts(*cl, (True,) * 4)
    _assert_same_bits(cl, _outputs(args, (False,) * 4, padding=2, context=cuda_emulation.emulated_cuda(device)))


@needs_emulation
@pytest.mark.parametrize("device", ["sm61", "h100"])
def test_emulated_channels_last_deterministic_reverse_order(device, monkeypatch):
    """Deterministic mode (grad_input in fixed point, in the input's layout), threads and blocks in
    reverse order: the bits of the NCHW call in forward order."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = make_dcn_inputs(n=2, c_in=6, c_out=8, h=8, w=7, offset_groups=2, dtype=torch.float32)
    torch.use_deterministic_algorithms(True)
    try:
        cl = _outputs(args, (True,) * 4, context=cuda_emulation.emulated_cuda(device, "reverse"))
        nchw = _outputs(args, (False,) * 4, context=cuda_emulation.emulated_cuda(device))
    finally:
        torch.use_deterministic_algorithms(False)
    _check_layouts(*cl, (True,) * 4)
    _assert_same_bits(cl, nchw)


def _copies(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone")]


@needs_emulation
def test_emulated_fused_path_makes_no_layout_copies(monkeypatch):
    """Channels-last input, offset, mask and grad_output: the fused forward and backward read them
    as they are (no aten::copy_ at all); the im2col path copies them to NCHW and back."""
    args = make_dcn_inputs(n=2, c_in=8, c_out=8, h=6, w=6, use_bias=False, dtype=torch.float32)
    x, offset, weight, _, mask = [_in_layout(t, t is not args[2]) for t in args]  # (a weight is copied: small)
    g = torch.randn(2, 8, 6, 6).contiguous(memory_format=CL)

    def run():
        with cuda_emulation.emulated_cuda("sm61"):
            torch.ops.hybridops_emu.deform_conv2d(x, offset, weight, mask, None, [1, 1], [1, 1], [1, 1])
            torch.ops.hybridops_emu.deform_conv2d_backward(g, x, offset, weight, mask, [1, 1], [1, 1], [1, 1])

    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    assert _copies(run) == []
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "im2col")
    assert len(_copies(run)) >= 4


@needs_emulation
def test_emulated_channels_last_opcheck(monkeypatch):
    """The emulated ops' fake kernels (the same Python) against the fused kernels' strides."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    for layouts in LAYOUTS[:3]:
        x, offset, weight, bias, mask = make_dcn_inputs(n=2, h=6, w=7, dtype=torch.float32, requires_grad=True)
        x, offset, mask = _in_layout(x, layouts[0]), _in_layout(offset, layouts[1]), _in_layout(mask, layouts[2])
        with cuda_emulation.emulated_cuda("sm61"):
            torch.library.opcheck(torch.ops.hybridops_emu.deform_conv2d.default,
                                  (x, offset, weight, mask, bias, [1, 1], [1, 1], [1, 1]))
