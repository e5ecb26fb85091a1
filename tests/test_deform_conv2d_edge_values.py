"""deform_conv2d at the values random tests never reach: sample points exactly on integers,
half-integers and the borders (-1, 0, H-1, H), zero offsets (a module at init), and NaN.

torchvision's rule, which we claim: a point samples 0 when y <= -1, y >= H, x <= -1 or x >= W,
and its offset gradient is the derivative of the bilinear blend of the floor cell
(``y0 = floor(y)``), i.e. the one-sided derivative from the right, with no early-out. So at
``y == -1`` (the top-row taps of a zero-offset padded conv) the value is 0 but d/dy is not.
"""
from __future__ import annotations

import pytest
import torch

import hybridops
from hybridops import reference
from hybridops.ops.deform_conv2d import out_size

tv_ops = pytest.importorskip("torchvision.ops")


def _special_offsets(n, og, kh, kw, h, w, h_out, w_out, stride, padding, dilation, seed):
    """Offsets that put every sampling point on a value picked from the borders and integers."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, h - 1.5, h - 1.0, h - 0.5, float(h), h + 0.5],
                      dtype=torch.float64)
    xs = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, w - 1.5, w - 1.0, w - 0.5, float(w), w + 0.5],
                      dtype=torch.float64)
    taps = kh * kw
    ky = (torch.arange(kh) * dilation[0]).repeat_interleave(kw).view(taps, 1, 1)
    kx = (torch.arange(kw) * dilation[1]).repeat(kh).view(taps, 1, 1)
    base_y = (torch.arange(h_out) * stride[0] - padding[0]).view(1, h_out, 1) + ky
    base_x = (torch.arange(w_out) * stride[1] - padding[1]).view(1, 1, w_out) + kx
    shape = (n, og, taps, h_out, w_out)
    ty = ys[torch.randint(len(ys), shape, generator=g)]
    tx = xs[torch.randint(len(xs), shape, generator=g)]
    off = torch.stack((ty - base_y, tx - base_x), dim=3)  # [n, og, taps, 2, h_out, w_out]
    return off.reshape(n, og * taps * 2, h_out, w_out)


CASES = [
    # name, (n, c_in, c_out, h, w, kh, kw, stride, padding, dilation, groups, offset_groups, offsets)
    ("minimal_1x1_pad1_zero", (1, 2, 2, 2, 2, 1, 1, (1, 1), (1, 1), (1, 1), 1, 1, "zero")),
    ("3x3_pad1_zero", (2, 3, 4, 5, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, "zero")),
    ("3x3_pad2_dil2_zero", (1, 4, 2, 6, 5, 3, 3, (1, 1), (2, 2), (2, 2), 2, 2, "zero")),
    ("stride2_pad3_zero", (1, 2, 3, 7, 8, 3, 2, (2, 2), (3, 3), (1, 1), 1, 1, "zero")),
    ("integer_offsets", (2, 3, 2, 5, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, "integer")),
    ("special_points", (2, 4, 3, 5, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, 2, "special")),
    ("special_points_stride2", (1, 2, 2, 6, 7, 3, 3, (2, 1), (1, 2), (1, 1), 1, 1, "special")),
    ("special_points_1px", (1, 2, 2, 1, 1, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, "special")),
]


def _inputs(spec, seed=0, use_mask=True):
    n, c_in, c_out, h, w, kh, kw, stride, padding, dilation, groups, og, kind = spec
    g = torch.Generator().manual_seed(seed)
    h_out, w_out = out_size(h, w, kh, kw, stride, padding, dilation)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    if kind == "zero":
        offset = torch.zeros(n, 2 * og * kh * kw, h_out, w_out, dtype=torch.float64)
    elif kind == "integer":
        offset = torch.randint(-3, 4, (n, 2 * og * kh * kw, h_out, w_out), generator=g).double()
    else:
        offset = _special_offsets(n, og, kh, kw, h, w, h_out, w_out, stride, padding, dilation, seed)
    mask = torch.rand(n, og * kh * kw, h_out, w_out, generator=g, dtype=torch.float64) if use_mask else None
    return (x, offset, weight, bias, mask), (stride, padding, dilation)


def _forward_and_grads(fn, tensors, conv, grad_out=None):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    x, offset, weight, bias, mask = leaves
    out = fn(x, offset, weight, bias, *conv, mask)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)
    return out, grads, grad_out


@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "no_mask"])
@pytest.mark.parametrize("name,spec", CASES, ids=[c[0] for c in CASES])
def test_matches_torchvision_on_integer_and_border_points(name, spec, use_mask):
    """Forward and all five gradients equal torchvision's where the sampling points are degenerate."""
    tensors, conv = _inputs(spec, use_mask=use_mask)
    out, grads, grad_out = _forward_and_grads(hybridops.deform_conv2d, tensors, conv)
    out_tv, grads_tv, _ = _forward_and_grads(tv_ops.deform_conv2d, tensors, conv, grad_out)
    torch.testing.assert_close(out, out_tv, rtol=1e-10, atol=1e-10)
    names = ["input", "offset", "weight", "bias", "mask"][: len(grads)]
    for label, g, gt in zip(names, grads, grads_tv):
        torch.testing.assert_close(g, gt, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad_{label}: {m}")


def _on_backend(backend, deterministic=False):
    """hybridops.deform_conv2d on the CUDA backend (GPU or emulation), CPU tensors in and out."""
    def fn(x, offset, weight, bias, stride, padding, dilation, mask):
        moved = [backend.to(t.detach()).requires_grad_(True) if t is not None else None
                 for t in (x, offset, weight, bias, mask)]
        with backend.active():
            out = hybridops.deform_conv2d(moved[0], moved[1], moved[2], moved[3], stride, padding, dilation, moved[4])
        return _BackToCpu.apply(out, *[t for t in (x, offset, weight, bias, mask) if t is not None],
                                *[t for t in moved if t is not None])
    return fn


class _BackToCpu(torch.autograd.Function):
    """Runs the device graph's backward for gradients w.r.t. the CPU leaves (same values, moved)."""

    @staticmethod
    def forward(ctx, out, *leaves):
        half = len(leaves) // 2
        ctx.out_device = out
        ctx.moved = leaves[half:]
        return out.detach().cpu()

    @staticmethod
    def backward(ctx, grad):
        grads = torch.autograd.grad(ctx.out_device, ctx.moved, grad.to(ctx.out_device.device))
        return (None, *[g.cpu() for g in grads], *[None] * len(grads))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "no_mask"])
@pytest.mark.parametrize("name,spec", CASES, ids=[c[0] for c in CASES])
def test_cuda_matches_torchvision_on_integer_and_border_points(name, spec, use_mask, deterministic, cuda_backend,
                                                              dcn_algo):
    """The CUDA kernels (GPU or emulation), both grad_input algorithms, at the degenerate points."""
    tensors, conv = _inputs(spec, use_mask=use_mask)
    torch.use_deterministic_algorithms(deterministic)
    try:
        out, grads, grad_out = _forward_and_grads(_on_backend(cuda_backend), tensors, conv)
    finally:
        torch.use_deterministic_algorithms(False)
    out_tv, grads_tv, _ = _forward_and_grads(tv_ops.deform_conv2d, tensors, conv, grad_out)
    torch.testing.assert_close(out, out_tv, rtol=1e-10, atol=1e-10)
    for g, gt in zip(grads, grads_tv):
        torch.testing.assert_close(g, gt, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,spec", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_torchvision_on_integer_and_border_points(name, spec):
    """The pure-PyTorch reference follows the same one-sided rule (its autograd gives it)."""
    tensors, conv = _inputs(spec)
    out, grads, grad_out = _forward_and_grads(reference.deform_conv2d, tensors, conv)
    out_tv, grads_tv, _ = _forward_and_grads(tv_ops.deform_conv2d, tensors, conv, grad_out)
    torch.testing.assert_close(out, out_tv, rtol=1e-10, atol=1e-10)
    for g, gt in zip(grads, grads_tv):
        torch.testing.assert_close(g, gt, rtol=1e-10, atol=1e-10)


def test_minimal_case_grad_offset():
    """The issue's minimal case: 1x2x2x2 input, 1x1 kernel, padding 1, zero offsets."""
    x = torch.arange(8, dtype=torch.float64).view(1, 2, 2, 2) + 1
    weight = torch.ones(1, 2, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    out = hybridops.deform_conv2d(x, offset, weight, padding=1)
    (g,) = torch.autograd.grad(out.sum(), offset)
    offset_tv = offset.detach().clone().requires_grad_(True)
    (g_tv,) = torch.autograd.grad(tv_ops.deform_conv2d(x, offset_tv, weight, padding=1).sum(), offset_tv)
    torch.testing.assert_close(g, g_tv, rtol=0, atol=1e-12)
    # Row 0 of the output samples y = -1: its dy gradient is the value of the row below (x[0] + x[1]).
    assert g[0, 0, 0, 1].item() == pytest.approx(float(x[0, 0, 0, 0] + x[0, 1, 0, 0]))


@pytest.mark.parametrize("kernel,padding,stride,groups", [(3, 1, 1, 1), (3, 2, 2, 2), (5, 2, 1, 1)])
def test_zero_init_module_matches_torchvision_module(kernel, padding, stride, groups):
    """A new DeformConv2dV2 (zero-initialised predictor) against torchvision's DeformConv2d fed by
    the same predictor: output and every parameter's gradient, including the predictor's."""
    torch.manual_seed(0)
    m = hybridops.DeformConv2dV2(4, 6, kernel, stride=stride, padding=padding, groups=groups).double()
    tv = tv_ops.DeformConv2d(4, 6, kernel, stride=stride, padding=padding, groups=groups).double()
    tv.load_state_dict({"weight": m.weight.detach(), "bias": m.bias.detach()})
    predictor = torch.nn.Conv2d(4, 3 * kernel * kernel, kernel, stride, padding).double()
    predictor.load_state_dict(m.offset_mask.state_dict())
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)

    def tv_forward(inp):
        o1, o2, logits = torch.chunk(predictor(inp), 3, dim=1)
        return tv(inp, torch.cat((o1, o2), 1), torch.sigmoid(logits))

    grad_out = torch.randn_like(m(x))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = torch.autograd.grad(m(xa), [xa, *m.parameters()], grad_out)
    theirs = torch.autograd.grad(tv_forward(xb), [xb, tv.weight, tv.bias, *predictor.parameters()], grad_out)
    for g, gt in zip(ours, theirs):
        torch.testing.assert_close(g, gt, rtol=1e-10, atol=1e-10)
    assert ours[3].abs().sum() > 0  # the predictor does get a gradient at init


# ------------------------------------------------------------------------------------------------- NaN


def _nan_inputs(where):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 18, 5, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 9, 5, 5, generator=g, dtype=torch.float64)
    if where == "offset_dy":
        offset[0, 2 * 4, 2, 3] = float("nan")      # tap 4 (centre), dy, output pixel (2, 3)
    elif where == "offset_dx":
        offset[0, 2 * 4 + 1, 2, 3] = float("nan")
    elif where == "mask":
        mask[0, 4, 2, 3] = float("nan")
    elif where == "mask_outside":                  # NaN mask on a tap that samples outside the image
        offset[0, 0, 2, 3] = -50.0
        mask[0, 0, 2, 3] = float("nan")
    return x, offset, weight, mask


@pytest.mark.parametrize("where", ["offset_dy", "offset_dx", "mask", "mask_outside"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_nan_offset_or_mask_propagates(where, dtype):
    """An output that reads a NaN sample is NaN (every output channel at that pixel), the others
    are untouched; the gradients of the NaN tap are NaN, nothing crashes."""
    x, offset, weight, mask = (t.to(dtype) for t in _nan_inputs(where))
    leaves = [t.clone().requires_grad_(True) for t in (x, offset, weight, mask)]
    out = hybridops.deform_conv2d(leaves[0], leaves[1], leaves[2], padding=1, mask=leaves[3])
    nan_at = torch.zeros(out.shape, dtype=torch.bool)
    nan_at[0, :, 2, 3] = True
    assert torch.equal(torch.isnan(out), nan_at)
    clean = x, offset.nan_to_num(0.0), weight, mask.nan_to_num(0.5)
    expected = reference.deform_conv2d(clean[0], clean[1], clean[2], padding=1, mask=clean[3])
    tol = 1e-10 if dtype == torch.float64 else 3e-2
    torch.testing.assert_close(out[~nan_at], expected[~nan_at], rtol=tol, atol=tol)
    grad_input, grad_offset, grad_weight, grad_mask = torch.autograd.grad(out, leaves, torch.ones_like(out))
    tap = 0 if where == "mask_outside" else 4
    assert torch.isnan(grad_offset[0, 2 * tap: 2 * tap + 2, 2, 3]).all()
    nan_weight = torch.zeros(grad_weight.shape, dtype=torch.bool)
    nan_weight[:, :, tap // 3, tap % 3] = True  # only the NaN tap's weights multiply the NaN sample
    assert torch.equal(torch.isnan(grad_weight), nan_weight)
    if where.startswith("offset"):
        assert torch.isnan(grad_mask[0, tap, 2, 3])
        assert not torch.isnan(grad_input).any()  # a NaN point has no neighbours to scatter to
    else:
        assert not torch.isnan(grad_mask).any()   # d out / d mask = the (finite) sample
    assert torch.isnan(grad_offset).sum() == 2 and torch.isnan(grad_mask).sum() <= 1


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("where", ["offset_dy", "offset_dx", "mask", "mask_outside"])
def test_cuda_nan_offset_or_mask_matches_cpu(where, deterministic, cuda_backend, dcn_algo):
    """NaN lands where it does on the CPU kernels, on the GPU kernels too (the deterministic
    fixed-point scatter marks NaN contributions instead of adding them)."""
    tensors = _nan_inputs(where)
    x, offset, weight, mask = tensors
    cpu_fn = lambda x, o, w, b, s, p, d, m: hybridops.deform_conv2d(x, o, w, b, s, p, d, m)
    conv = ((1, 1), (1, 1), (1, 1))
    expected, grads_cpu, grad_out = _forward_and_grads(cpu_fn, (x, offset, weight, None, mask), conv)
    torch.use_deterministic_algorithms(deterministic)
    try:
        out, grads, _ = _forward_and_grads(_on_backend(cuda_backend), (x, offset, weight, None, mask), conv, grad_out)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    for g, gc in zip(grads, grads_cpu):
        torch.testing.assert_close(g, gc, rtol=1e-10, atol=1e-10, equal_nan=True)


def test_inf_offset_samples_zero():
    """An infinite offset is a point far outside the image: it samples 0 (as torchvision)."""
    x, offset, weight, mask = _nan_inputs("none")
    offset[0, 8, 2, 3] = float("inf")
    offset[0, 9, 1, 1] = -float("inf")
    ours = hybridops.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    theirs = tv_ops.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
