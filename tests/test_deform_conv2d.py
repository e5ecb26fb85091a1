"""Tests of hybridops.deform_conv2d / DeformConv2dV2 against the reference, torchvision and F.conv2d."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hybridops
from hybridops import reference
from tests._dcn_cases import make_dcn_inputs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
cuda_build = pytest.mark.skipif(not hybridops.build_info()["built_with_cuda"], reason="CUDA kernels not built")

# (name, kwargs for make_dcn_inputs)
CONFIGS = [
    ("basic", {}),
    ("no_mask_no_bias", dict(use_mask=False, use_bias=False)),
    ("stride2_odd", dict(h=13, w=10, stride=(2, 2))),
    ("stride_mixed_pad0", dict(h=12, w=9, stride=(2, 1), padding=(0, 2))),
    ("dilation", dict(h=12, w=13, dilation=(2, 3), padding=(2, 3))),
    ("groups", dict(c_in=8, c_out=6, groups=2)),
    ("depthwise", dict(c_in=6, c_out=6, groups=6)),
    ("offset_groups", dict(c_in=8, c_out=4, offset_groups=4)),
    ("groups_and_offset_groups", dict(c_in=8, c_out=4, groups=2, offset_groups=2)),
    ("non_square_kernel", dict(kh=1, kw=3, padding=(0, 1))),
    ("kernel_5x2", dict(kh=5, kw=2, padding=(2, 0), h=7, w=6)),
    ("one_pixel", dict(h=1, w=1, padding=(1, 1))),
    ("tiny_input_large_offsets", dict(h=2, w=3, offset_scale=5.0)),
    ("batch3_large", dict(n=3, c_in=5, c_out=7, h=17, w=15)),
]


def _ours(x, offset, weight, bias, mask, cfg):
    return hybridops.deform_conv2d(x, offset, weight, bias, cfg.get("stride", 1), cfg.get("padding", (1, 1)),
                                   cfg.get("dilation", 1), mask)


def _ref(x, offset, weight, bias, mask, cfg):
    return reference.deform_conv2d(x, offset, weight, bias, cfg.get("stride", 1), cfg.get("padding", (1, 1)),
                                   cfg.get("dilation", 1), mask)


@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_reference_forward_and_backward(name, cfg):
    args = make_dcn_inputs(**cfg, requires_grad=True)
    out = _ours(*args, cfg)
    expected = _ref(*args, cfg)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out)  # grad_output != 1
    leaves = [t for t in args if t is not None]
    grads = torch.autograd.grad(out, leaves, grad_out)
    grads_ref = torch.autograd.grad(expected, leaves, grad_out)
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torchvision(name, cfg):
    tv_ops = pytest.importorskip("torchvision.ops")
    args = make_dcn_inputs(**cfg, requires_grad=True)
    x, offset, weight, bias, mask = args
    out = _ours(*args, cfg)
    expected = tv_ops.deform_conv2d(x, offset, weight, bias, cfg.get("stride", 1), cfg.get("padding", (1, 1)),
                                    cfg.get("dilation", 1), mask)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out)
    leaves = [t for t in args if t is not None]
    for g, gt in zip(torch.autograd.grad(out, leaves, grad_out), torch.autograd.grad(expected, leaves, grad_out)):
        torch.testing.assert_close(g, gt, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cfg", [dict(), dict(use_mask=False), dict(stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
                                 dict(c_in=4, c_out=4, groups=2, offset_groups=2)])
def test_gradcheck(cfg):
    args = make_dcn_inputs(n=1, c_in=cfg.pop("c_in", 2), c_out=cfg.pop("c_out", 2), h=4, w=5, offset_scale=1.3,
                           requires_grad=True, seed=3, **cfg)
    stride, padding, dilation = cfg.get("stride", 1), cfg.get("padding", (1, 1)), cfg.get("dilation", 1)

    def fn(x, offset, weight, bias, mask):
        return hybridops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_opcheck():
    for use_mask in (True, False):
        x, offset, weight, bias, mask = make_dcn_inputs(n=2, h=6, w=7, use_mask=use_mask, requires_grad=True)
        torch.library.opcheck(torch.ops.hybridops.deform_conv2d.default,
                              (x, offset, weight, mask, bias, [1, 1], [1, 1], [1, 1]))
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, h=5, w=5, stride=(2, 2), dtype=torch.float32)
    grad = torch.randn(1, weight.shape[0], 3, 3)
    torch.library.opcheck(torch.ops.hybridops.deform_conv2d_backward.default,
                          (grad, x, offset, weight, mask, [2, 2], [1, 1], [1, 1]))


def test_double_backward_raises_clear_error():
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, h=4, w=4, requires_grad=True)
    out = hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        gx.sum().backward()


def test_batch_zero():
    x, offset, weight, bias, mask = make_dcn_inputs(n=0, requires_grad=True)
    out = hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert out.shape == (0, weight.shape[0], 9, 11)
    out.sum().backward()
    assert x.grad.shape == x.shape and offset.grad.shape == offset.shape
    assert torch.count_nonzero(weight.grad) == 0 and torch.count_nonzero(bias.grad) == 0


def test_non_contiguous_and_channels_last_inputs():
    x, offset, weight, bias, mask = make_dcn_inputs(n=2, c_in=4, c_out=3, h=8, w=10)
    expected = hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    # transposed views (non-contiguous) carrying the same values
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)
    offset_t = offset.transpose(0, 1).contiguous().transpose(0, 1)
    weight_t = weight.transpose(2, 3).contiguous().transpose(2, 3)
    mask_t = mask.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_t.is_contiguous() and not offset_t.is_contiguous()
    torch.testing.assert_close(hybridops.deform_conv2d(x_t, offset_t, weight_t, bias, padding=1, mask=mask_t),
                               expected, rtol=0, atol=0)
    x_cl = x.to(memory_format=torch.channels_last)
    offset_cl = offset.to(memory_format=torch.channels_last)
    torch.testing.assert_close(hybridops.deform_conv2d(x_cl, offset_cl, weight, bias, padding=1, mask=mask),
                               expected, rtol=0, atol=0)
    # every other image of a larger batch (strided along N)
    def interleaved(t):
        return torch.stack([t, torch.zeros_like(t)], 1)[:, 0]

    x2, off2, mask2 = interleaved(x), interleaved(offset), interleaved(mask)
    assert not x2.is_contiguous()
    torch.testing.assert_close(hybridops.deform_conv2d(x2, off2, weight, bias, padding=1, mask=mask2),
                               expected, rtol=0, atol=0)


def test_zero_offsets_unit_mask_equal_conv2d():
    for kwargs in (dict(stride=1, padding=1, dilation=1), dict(stride=2, padding=2, dilation=2)):
        for groups in (1, 2):
            x = torch.randn(2, 8, 15, 14, dtype=torch.float64)
            w = torch.randn(6, 8 // groups, 3, 3, dtype=torch.float64)
            b = torch.randn(6, dtype=torch.float64)
            expected = F.conv2d(x, w, b, groups=groups, **kwargs)
            offset = torch.zeros(2, 18, *expected.shape[2:], dtype=torch.float64)
            mask = torch.ones(2, 9, *expected.shape[2:], dtype=torch.float64)
            out = hybridops.deform_conv2d(x, offset, w, b, mask=mask, **kwargs)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
            out_v1 = hybridops.deform_conv2d(x, offset, w, b, **kwargs)
            torch.testing.assert_close(out_v1, expected, rtol=1e-12, atol=1e-12)
    # float32: the same numbers within float32 GEMM rounding
    x = torch.randn(2, 16, 32, 32)
    w = torch.randn(16, 16, 3, 3)
    out = hybridops.deform_conv2d(x, torch.zeros(2, 18, 32, 32), w, padding=1, mask=torch.ones(2, 9, 32, 32))
    torch.testing.assert_close(out, F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 4e-2), (torch.float32, 1e-5)])
def test_low_precision_against_float64(dtype, tol):
    args64 = make_dcn_inputs(n=2, c_in=16, c_out=8, h=12, w=12)
    # Round the inputs to the low dtype first so the comparison measures the kernel's own error.
    args_low = [t.to(dtype) if t is not None else None for t in args64]
    args_ref = [t.to(torch.float64) if t is not None else None for t in args_low]
    out = hybridops.deform_conv2d(*args_low[:4], padding=1, mask=args_low[4])
    assert out.dtype == dtype
    expected = reference.deform_conv2d(*args_ref[:4], padding=1, mask=args_ref[4])
    scale = expected.abs().max()
    assert (out.double() - expected).abs().max() <= tol * scale
    # gradients, float accumulation
    leaves = [t.detach().requires_grad_() for t in args_low if t is not None]
    out = hybridops.deform_conv2d(leaves[0], leaves[1], leaves[2], leaves[3], padding=1, mask=leaves[4])
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, grad_out.to(dtype))
    leaves_ref = [t.detach().double().requires_grad_() for t in leaves]
    out_ref = reference.deform_conv2d(leaves_ref[0], leaves_ref[1], leaves_ref[2], leaves_ref[3], padding=1,
                                      mask=leaves_ref[4])
    grads_ref = torch.autograd.grad(out_ref, leaves_ref, grad_out.to(dtype).double())
    for g, gr in zip(grads, grads_ref):
        assert g.dtype == dtype
        assert (g.double() - gr).abs().max() <= 2 * tol * gr.abs().max() + 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_runs_in_low_precision(dtype):
    x, offset, weight, bias, mask = make_dcn_inputs(dtype=torch.float32, h=8, w=8)
    with torch.autocast("cpu", dtype=dtype):
        out = hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert out.dtype == dtype
    expected = hybridops.deform_conv2d(*[t.to(dtype) for t in (x, offset, weight, bias)], padding=1, mask=mask.to(dtype))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_cpu_backward_deterministic():
    args = make_dcn_inputs(n=2, c_in=8, c_out=8, h=16, w=16, dtype=torch.float32, requires_grad=True)
    leaves = [t for t in args if t is not None]

    def grads():
        out = hybridops.deform_conv2d(*args[:4], padding=1, mask=args[4])
        return torch.autograd.grad(out, leaves, torch.ones_like(out))

    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        first, second = grads(), grads()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    module = hybridops.DeformConv2dV2(4, 6, 3, padding=1)
    with torch.no_grad():
        module.offset_mask.weight.normal_(0, 0.1)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 10, 10, requires_grad=True)
    out = compiled(x)
    expected = module(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and module.offset_mask.weight.grad is not None


def test_torch_compile_inductor_functional():
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def f(x, offset, weight, mask):
        return torch.relu(hybridops.deform_conv2d(x, offset, weight, padding=1, mask=mask)) * 2

    x, offset, weight, _, mask = make_dcn_inputs(dtype=torch.float32)
    expected = torch.relu(hybridops.deform_conv2d(x, offset, weight, padding=1, mask=mask)) * 2
    torch.testing.assert_close(f(x, offset, weight, mask), expected)


# --------------------------------------------------------------------------------------------- module


def test_module_at_init_is_half_a_conv():
    m = hybridops.DeformConv2dV2(6, 5, 3, padding=1).double()
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    expected = F.conv2d(x, m.weight, padding=1) * 0.5 + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)
    assert m.offset_mask.out_channels == 27
    assert "kernel_size=(3, 3)" in repr(m) and "padding=(1, 1)" in repr(m)


def test_module_given_offset_and_mask_and_stride():
    m = hybridops.DeformConv2dV2(4, 4, (3, 3), stride=2, padding=1, groups=2, offset_groups=2, bias=False).double()
    x = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    offset = torch.randn(1, 36, 5, 5, dtype=torch.float64)
    mask = torch.rand(1, 18, 5, 5, dtype=torch.float64)
    out = m(x, offset, mask)
    torch.testing.assert_close(out, reference.deform_conv2d(x, offset, m.weight, None, 2, 1, 1, mask))
    assert "groups=2" in repr(m) and "offset_groups=2" in repr(m) and "bias=False" in repr(m)


def test_module_from_torchvision():
    tv_ops = pytest.importorskip("torchvision.ops")
    tv = tv_ops.DeformConv2d(6, 4, 3, padding=1, groups=2)
    m = hybridops.DeformConv2dV2.from_torchvision(tv)
    x = torch.randn(1, 6, 7, 7)
    offset = torch.randn(1, 18, 7, 7)
    mask = torch.rand(1, 9, 7, 7)
    torch.testing.assert_close(m(x, offset, mask), tv(x, offset, mask), rtol=1e-5, atol=1e-5)
    m2 = hybridops.DeformConv2dV2(6, 4, 3, padding=1, groups=2)
    missing, unexpected = m2.load_state_dict(tv.state_dict(), strict=False)
    assert set(missing) == {"offset_mask.weight", "offset_mask.bias"} and not unexpected


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="divisible by groups"):
        hybridops.DeformConv2dV2(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="offset_groups"):
        hybridops.DeformConv2dV2(6, 6, 3, offset_groups=4)
    with pytest.raises(ValueError, match="stride must be positive"):
        hybridops.DeformConv2dV2(6, 6, 3, stride=0)


# ------------------------------------------------------------------------------------------ bad input

def _good():
    return make_dcn_inputs(n=1, c_in=4, c_out=4, h=6, w=6, dtype=torch.float32)


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda a: a.update(x=a["x"][0]), ValueError, r"input must be 4-D, got 3-D"),
    (lambda a: a.update(weight=a["weight"][0]), ValueError, r"weight must be 4-D"),
    (lambda a: a.update(offset=a["offset"][:, :17]), ValueError, r"offset must have 2 \* offset_groups \* kH \* kW channels"),
    (lambda a: a.update(offset=a["offset"][:, :, :5]), ValueError, r"offset must have shape \(1, 18, 6, 6\)"),
    (lambda a: a.update(mask=a["mask"][:, :8]), ValueError, r"mask must have shape \(1, 9, 6, 6\)"),
    (lambda a: a.update(mask=a["mask"][..., :3]), ValueError, r"mask must have shape"),
    (lambda a: a.update(weight=torch.randn(4, 3, 3, 3)), ValueError, r"input channels \(4\) must be divisible by weight.shape\[1\] \(3\)"),
    (lambda a: a.update(weight=torch.randn(3, 2, 3, 3)), ValueError, r"weight.shape\[0\] \(3\) must be divisible by groups \(2\)"),
    (lambda a: a.update(offset=torch.randn(1, 6 * 9, 6, 6)), ValueError, r"divisible by offset_groups \(3"),
    (lambda a: a.update(weight=torch.randn(4, 4, 0, 3)), ValueError, r"empty kernel"),
    (lambda a: a.update(stride=0), ValueError, r"stride must be positive"),
    (lambda a: a.update(dilation=(1, -1)), ValueError, r"dilation must be positive"),
    (lambda a: a.update(padding=-1), ValueError, r"padding must be non-negative"),
    (lambda a: a.update(stride=(1, 2, 3)), ValueError, r"stride must have 2 values"),
    (lambda a: a.update(weight=torch.randn(4, 4, 9, 9)), ValueError, r"too small"),
    (lambda a: a.update(offset=a["offset"].double()), ValueError, r"offset has dtype torch.float64 but input has dtype torch.float32"),
    (lambda a: a.update(mask=a["mask"].half()), ValueError, r"mask has dtype"),
    (lambda a: a.update(bias=torch.randn(5)), ValueError, r"bias must have shape \(4,\)"),
    (lambda a: a.update(x=a["x"].long()), ValueError, r"input must be a floating point tensor"),
    (lambda a: a.update(offset=[1, 2]), TypeError, r"offset must be a torch.Tensor"),
])
def test_bad_inputs(mutate, exc, match):
    x, offset, weight, bias, mask = _good()
    a = dict(x=x, offset=offset, weight=weight, bias=bias, mask=mask, stride=1, padding=1, dilation=1)
    mutate(a)
    with pytest.raises(exc, match=match):
        hybridops.deform_conv2d(a["x"], a["offset"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"],
                                a["mask"])


def test_direct_op_call_checks_in_cpp():
    """torch.ops.* bypasses the Python checks: the C++ TORCH_CHECKs must still refuse bad shapes."""
    x, offset, weight, bias, mask = _good()
    with pytest.raises(RuntimeError, match=r"offset must be \[1, 18, 6, 6\]"):
        torch.ops.hybridops.deform_conv2d(x, offset[:, :, :5], weight, mask, bias, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"mask must be \[1, 9, 6, 6\]"):
        torch.ops.hybridops.deform_conv2d(x, offset, weight, mask[:, :4], bias, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"stride must be positive"):
        torch.ops.hybridops.deform_conv2d(x, offset, weight, mask, bias, [0, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"bias must be \[4\]"):
        torch.ops.hybridops.deform_conv2d(x, offset, weight, mask, bias[:2], [1, 1], [1, 1], [1, 1])


def test_build_info():
    info = hybridops.build_info()
    assert info["version"] == hybridops.__version__
    assert info["torch"] == torch.__version__
    assert isinstance(info["built_with_cuda"], bool) and isinstance(info["cuda_archs"], list)
    with pytest.warns(DeprecationWarning, match=r"renamed build_info\(\)\[\"built_with_cuda\"\]"):
        assert info["cuda"] == info["built_with_cuda"]  # the old name, for one release


# ----------------------------------------------------------------------------------------------- CUDA

# Every test taking `cuda_backend` runs on a GPU when there is one, and on the CPU emulation of the
# same CUDA kernels for each device profile (tests/_cuda_backends.py).

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_cuda_matches_cpu(name, cfg, dtype, cuda_backend, dcn_algo):
    args = make_dcn_inputs(**cfg, dtype=dtype, requires_grad=True)
    args_cuda = [cuda_backend.to(t.detach()).requires_grad_() if t is not None else None for t in args]
    out = _ours(*args, cfg)
    with cuda_backend.active():
        out_cuda = _ours(*args_cuda, cfg)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out_cuda.cpu(), out, rtol=tol, atol=tol)
    grad_out = torch.randn_like(out)
    leaves = [t for t in args if t is not None]
    leaves_cuda = [t for t in args_cuda if t is not None]
    for g, gc in zip(torch.autograd.grad(out, leaves, grad_out),
                     torch.autograd.grad(out_cuda, leaves_cuda, cuda_backend.to(grad_out))):
        torch.testing.assert_close(gc.cpu(), g, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 4e-2)])
def test_cuda_low_precision(dtype, tol, cuda_backend, dcn_algo):
    args = make_dcn_inputs(n=2, c_in=16, c_out=16, h=20, w=20, dtype=dtype, device=cuda_backend.device,
                           requires_grad=True)
    with cuda_backend.active():
        out = hybridops.deform_conv2d(*args[:4], padding=1, mask=args[4])
    assert out.dtype == dtype
    ref = reference.deform_conv2d(*[t.detach().double() for t in args[:4]], padding=1, mask=args[4].detach().double())
    assert (out.double() - ref).abs().max() <= tol * ref.abs().max()
    out.float().pow(2).sum().backward()
    for t in args:
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_cuda_deterministic_mode_gives_identical_grads(cuda_backend, dcn_algo):
    args = make_dcn_inputs(n=2, c_in=8, c_out=8, h=24, w=24, dtype=torch.float32, device=cuda_backend.device,
                           requires_grad=True)
    leaves = [t for t in args if t is not None]

    def grads(order="forward"):
        with cuda_backend.active(order):
            out = hybridops.deform_conv2d(*args[:4], padding=1, mask=args[4])
        return torch.autograd.grad(out, leaves, torch.ones_like(out))

    default = grads()
    torch.use_deterministic_algorithms(True)
    try:
        # On the emulation the second run takes the threads and blocks in the reverse order.
        first, second = grads(), grads("reverse" if cuda_backend.emulated else "forward")
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b, d in zip(first, second, default):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, d, rtol=1e-4, atol=1e-4)


@cuda
@cuda_build
def test_cuda_autocast_runs_in_half():
    """GPU only: autocast is a dispatch key of CUDA tensors (the emulation's ops take CPU tensors)."""
    args = make_dcn_inputs(dtype=torch.float32, device="cuda")
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            out = hybridops.deform_conv2d(*args[:4], padding=1, mask=args[4])
        assert out.dtype == dtype


@cuda
@cuda_build
@pytest.mark.slow
def test_cuda_64bit_indexing():
    """An input of more than 2^30 elements takes the 64-bit index path; its far end must be right.
    (GPU only: the emulation runs the 64-bit kernels on small shapes, forced by
    HYBRIDOPS_FORCE_INT64_INDEX, in tests/test_cuda_emulation.py.)"""
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    h, w = 2, 2**29 + 7  # 1-pixel-high planes keep offset/mask small relative to the input
    x = torch.randn(1, 1, h, w, device="cuda", dtype=torch.float16)
    offset = torch.zeros(1, 2, h, w, device="cuda", dtype=torch.float16)
    offset[0, 1, :, -3:] = 0.5  # shift the last samples half a pixel right
    weight = torch.full((1, 1, 1, 1), 2.0, device="cuda", dtype=torch.float16)
    out = hybridops.deform_conv2d(x, offset, weight)
    torch.testing.assert_close(out[..., :-3], 2 * x[..., :-3])
    tail = x[0, 0, :, -4:].float()
    expected = torch.stack([tail[:, 1] * 0.5 + tail[:, 2] * 0.5, tail[:, 2] * 0.5 + tail[:, 3] * 0.5, tail[:, 3] * 0.5], 1)
    torch.testing.assert_close(out[0, 0, :, -3:].float(), 2 * expected, rtol=2e-3, atol=2e-3)
