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
# (input, offset, mask, grad_output) channels-last or not: every combination but all-NCHW.
LAYOUTS = [c for c in itertools.product((True, False), repeat=4) if any(c)]
LAYOUT_IDS = ["".join("C" if cl else "n" for cl in c) for c in LAYOUTS]  # e.g. "CnnC": input, grad_output CL


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
@pytest.mark.parametrize("layouts", LAYOUTS, ids=LAYOUT_IDS)
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
    for use_mask, layouts in itertools.product((True, False), LAYOUTS[::5]):
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
@pytest.mark.parametrize("layouts", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("algo", ["fused", "im2col"])
@pytest.mark.parametrize("device", ["sm61", "h100"])
def test_emulated_channels_last_same_bits_and_layouts(device, algo, layouts, monkeypatch):
    """Two weight groups, 3 offset groups (chunks stopping at their borders: 4-channel vector
    gathers and 2-channel scalar ones), 70 output channels (two channel tiles, the second partial),
    a pixel tile past the image's end."""
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
@pytest.mark.parametrize("c_in,dtype", [(6, torch.float32), (16, torch.float32), (16, torch.float16)],
                         ids=["scalar-gathers", "vector-gathers-fp32", "vector-gathers-fp16"])
@pytest.mark.parametrize("device", ["sm61", "h100"])
def test_emulated_channels_last_deterministic_reverse_order(device, c_in, dtype, monkeypatch):
    """Deterministic mode (grad_input in fixed point, in the input's layout), threads and blocks in
    reverse order: the bits of the NCHW call in forward order; 3 channels an offset group (scalar
    gathers) and 8 (vector gathers in every kernel)."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = [t.to(dtype) for t in make_dcn_inputs(n=2, c_in=c_in, c_out=8, h=8, w=7, offset_groups=2)]
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
    for layouts in LAYOUTS[::5]:
        x, offset, weight, bias, mask = make_dcn_inputs(n=2, h=6, w=7, dtype=torch.float32, requires_grad=True)
        x, offset, mask = _in_layout(x, layouts[0]), _in_layout(offset, layouts[1]), _in_layout(mask, layouts[2])
        with cuda_emulation.emulated_cuda("sm61"):
            torch.library.opcheck(torch.ops.hybridops_emu.deform_conv2d.default,
                                  (x, offset, weight, mask, bias, [1, 1], [1, 1], [1, 1]))


@needs_emulation
@pytest.mark.parametrize("layouts", [(True, True, False, True), (False, True, False, False), (True, False, False, True)],
                         ids=["CCnC", "nCnn", "CnnC"])
@pytest.mark.parametrize("device", ["sm61", "h100"])
def test_emulated_channels_last_without_mask(device, layouts, monkeypatch):
    """DCNv1 (no mask) with channels-last input, offset and grad_output mixes, 8-channel chunks."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = make_dcn_inputs(n=2, c_in=8, c_out=6, h=7, w=9, use_mask=False, dtype=torch.float32)
    cl = _outputs(args, layouts, context=cuda_emulation.emulated_cuda(device))
    _check_layouts(*cl, layouts)
    _assert_same_bits(cl, _outputs(args, (False,) * 4, context=cuda_emulation.emulated_cuda(device)))


@needs_emulation
def test_emulated_misaligned_channels_last_input_takes_scalar_gathers(monkeypatch):
    """A channels-last input one element past an aligned address (a view into a larger buffer): the
    vector gathers' alignment test sends it to scalar loads (the emulation raises on a misaligned
    vector load), same bits as NCHW."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    x, offset, weight, bias, mask = make_dcn_inputs(n=2, c_in=8, c_out=4, h=6, w=7, dtype=torch.float32)
    buf = torch.empty(x.numel() + 1)
    shifted = buf[1:].view(2, 6, 7, 8).permute(0, 3, 1, 2)
    shifted.copy_(x)
    assert shifted.is_contiguous(memory_format=CL) and shifted.storage_offset() == 1
    with cuda_emulation.emulated_cuda("h100"):
        got = hybridops.deform_conv2d(shifted, offset, weight, bias, 1, 1, 1, mask)
        expected = hybridops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask)
    assert torch.equal(got, expected) and got.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("emu", marks=needs_emulation)])
def test_channels_last_weight_is_read_as_nchw(backend, monkeypatch):
    """A channels-last weight (Module.to(memory_format=torch.channels_last)) is copied to NCHW (it is
    small): the output's layout follows the input only, and the bits are the NCHW weight's."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    x, offset, weight, bias, mask = make_dcn_inputs(n=2, c_in=8, c_out=4, h=6, w=7, dtype=torch.float32)
    ctx = cuda_emulation.emulated_cuda if backend == "emu" else contextlib.nullcontext
    leaves = [t.clone().requires_grad_() for t in (weight, _in_layout(weight, True))]
    outs = []
    for w in leaves:
        with ctx():
            out = hybridops.deform_conv2d(x, offset, w, bias, 1, 1, 1, mask)
            (gw,) = torch.autograd.grad(out, w, torch.ones_like(out))
        outs.append((out, gw))
    assert outs[1][0].is_contiguous() and torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def _fake_strides(op, args):
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        return op(*fake).stride()


@pytest.mark.parametrize("backend", ["cpu", pytest.param("emu-fused", marks=needs_emulation),
                                     pytest.param("emu-im2col", marks=needs_emulation)])
@pytest.mark.parametrize("c_out,h,w,padding", [(1, 6, 7, 1), (4, 3, 3, 0)], ids=["one-channel", "1x1-output"])
def test_output_strides_equal_the_fake_kernels_where_the_output_is_both_layouts(backend, c_out, h, w, padding,
                                                                                 monkeypatch):
    """A channels-last input whose output is both NCHW- and channels-last-contiguous (one output
    channel, a 1x1 output): every path returns the fake kernel's exact strides (opcheck skips the
    strides of size-1 dimensions)."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", backend.split("-")[-1] if backend != "cpu" else "fused")
    x, offset, weight, bias, mask = make_dcn_inputs(n=2, c_in=8, c_out=c_out, h=h, w=w, padding=(padding, padding),
                                                    dtype=torch.float32)
    args = (_in_layout(x, True), offset, weight, mask, bias, [1, 1], [padding, padding], [1, 1])
    op = torch.ops.hybridops_emu.deform_conv2d if backend != "cpu" else torch.ops.hybridops.deform_conv2d
    with cuda_emulation.emulated_cuda() if backend != "cpu" else contextlib.nullcontext():
        real = op(*args)
    assert real.stride() == _fake_strides(op, args)
