"""Tests of hybridops.losses: BCE+Dice, the multi-scale mixed loss, size-adaptive cross-entropy.

* The PyTorch path (``hybridops.losses.reference``, the CPU path) against hand-computed values,
  ``torch.nn`` losses, float64 ``gradcheck`` and ``torch.compile``.
* The Triton kernels (class ``TestKernels``) against that reference, gradients by comparison. Without
  a GPU they run in Triton's interpreter on CPU tensors: ``test_kernels_in_triton_interpreter``
  re-runs this file's ``TestKernels`` in a fresh process with ``TRITON_INTERPRET=1`` (it must be
  set before triton is imported, so it cannot be switched on inside this process). With a GPU they
  also run natively on CUDA here.
* Every kernel compiles for sm_90 (Triton -> PTX -> ptxas), without a GPU.
* Bad arguments raise errors that name them.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import hybridops.losses as L
from hybridops.losses import _common, bce_dice, mixed, size_adaptive_ce
from hybridops.losses import reference as R

INTERPRET = _common.interpreting()
if INTERPRET:
    KERNEL_DEVICE = "cpu"
elif torch.cuda.is_available() and L.HAS_TRITON:
    KERNEL_DEVICE = "cuda"
else:
    KERNEL_DEVICE = None


def _close(actual, expected, rtol, atol, what=""):
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ================================================================================================
# Reference (PyTorch path): hand-computed values, torch equivalences, gradcheck, torch.compile
# ================================================================================================
def test_bce_dice_hand_computed():
    # p = sigmoid(z) = [0.5, 0.75, 0.25, 0.5], g = [1, 1, 0, 0]
    z = torch.tensor([0.0, math.log(3.0), -math.log(3.0), 0.0]).reshape(1, 1, 2, 2)
    g = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    bce = (2 * math.log(2.0) + 2 * math.log(4.0 / 3.0)) / 4      # -log p or -log(1 - p)
    dice = (2 * (0.5 + 0.75) + 1.0) / (2.0 + 2.0 + 1.0)         # = 0.7
    expected = 0.5 * bce + 0.5 * (1.0 - dice)
    for fn in (R.bce_dice_loss, L.bce_dice_loss):
        assert float(fn(z, g)) == pytest.approx(expected, rel=1e-6)
    # from probabilities, other weights
    p = torch.sigmoid(z)
    expected = 0.3 * bce + 0.7 * (1 - (2 * 1.25 + 0.5) / (2 + 2 + 0.5))
    got = L.bce_dice_loss(p, g, from_logits=False, bce_weight=0.3, smooth=0.5)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_size_adaptive_ce_hand_computed():
    # one image, labels [0, 0, 0, 1], logits 0: every nll = log 2; S_0 = 3/4, S_1 = 1/4
    x = torch.zeros(1, 2, 2, 2)
    t = torch.tensor([[[0, 0], [0, 1]]])
    weighted = (3 * 0.25 + 0.75) * math.log(2.0)
    assert float(L.size_adaptive_cross_entropy(x, t)) == pytest.approx(weighted / 4, rel=1e-6)
    assert float(L.size_adaptive_cross_entropy(x, t, normalize="weights")) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(L.size_adaptive_cross_entropy(x, t, reduction="sum")) == pytest.approx(weighted, rel=1e-6)
    # alpha = 2 and a class weight
    w = torch.tensor([2.0, 1.0])
    expected = (3 * 2.0 * 0.25 ** 2 + 1.0 * 0.75 ** 2) * math.log(2.0) / 4
    got = L.size_adaptive_cross_entropy(x, t, w, alpha=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    none = L.size_adaptive_cross_entropy(x, t, reduction="none")
    assert none.shape == t.shape
    _close(none, torch.tensor([[[0.25, 0.25], [0.25, 0.75]]]) * math.log(2.0), 1e-6, 1e-7)


def test_size_adaptive_ce_batch_areas_hand_computed():
    # image 0: [0, 0, 0, 1], image 1: [1, 1, 1, 1] -> batch areas S_0 = 3/8, S_1 = 5/8
    x = torch.zeros(2, 2, 4)
    t = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1]])
    expected = (3 * (5 / 8) + 5 * (3 / 8)) * math.log(2.0) / 8
    assert float(L.size_adaptive_cross_entropy(x, t, per_image=False)) == pytest.approx(expected, rel=1e-6)
    # per image: image 1 is all one class -> weight 0
    expected = (3 * 0.25 + 0.75) * math.log(2.0) / 8
    assert float(L.size_adaptive_cross_entropy(x, t)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_size_adaptive_ce_alpha0_is_cross_entropy(weighted, ignore_index):
    x = torch.randn(3, 5, 6, 7)
    t = torch.randint(0, 5, (3, 6, 7))
    w = torch.rand(5) + 0.1 if weighted else None
    norm = "weights" if weighted else "pixels"
    for reduction in ("mean", "sum", "none"):
        got = L.size_adaptive_cross_entropy(x, t, w, alpha=0.0, ignore_index=ignore_index, reduction=reduction,
                                            normalize=norm)
        expected = F.cross_entropy(x, t, w, ignore_index=ignore_index, reduction=reduction)
        _close(got, expected, 1e-5, 1e-6, reduction)


def test_size_adaptive_ce_single_class_and_all_ignored_give_no_nan():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.full((2, 4, 4), 1)
    for normalize in ("pixels", "weights"):
        loss = L.size_adaptive_cross_entropy(x, t, normalize=normalize)
        loss.backward()
        assert float(loss.detach()) == 0.0 and torch.isfinite(x.grad).all() and (x.grad == 0).all()
        x.grad = None
    t_ignored = torch.full((2, 4, 4), -100)
    loss = L.size_adaptive_cross_entropy(x, t_ignored)
    assert float(loss.detach()) == 0.0
    # alpha = 0: 0 ** 0 == 1, plain CE
    _close(L.size_adaptive_cross_entropy(x, t, alpha=0.0), F.cross_entropy(x, t), 1e-6, 1e-7)


def test_mixed_loss_reduces_to_bce_dice():
    g = torch.rand(2, 1, 8, 8) > 0.5
    f = torch.randn(2, 1, 8, 8)
    single = L.bce_dice_loss(f, g)
    _close(L.mixed_loss([f], g), 2 * single, 1e-6, 1e-7, "map + its mean")
    _close(L.mixed_loss([f], g, mean_weight=0.0), single, 1e-6, 1e-7)
    _close(L.mixed_loss([f], g, paper_scaling=True), 4 * single, 1e-6, 1e-7, "(1 + 1/1) scaling")
    small = torch.randn(2, 1, 4, 3)
    up = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    expected = 0.5 * L.bce_dice_loss(f, g) + 2.0 * L.bce_dice_loss(up, g) + 0.25 * L.bce_dice_loss((f + up) / 2, g)
    got = L.mixed_loss([f, small], g, weights=[0.5, 2.0], mean_weight=0.25)
    _close(got, expected, 1e-6, 1e-7)


@pytest.mark.parametrize("per_image,reduction", [(False, "mean"), (True, "mean"), (True, "sum"), (True, "none")])
def test_bce_dice_per_image_reductions(per_image, reduction):
    x = torch.randn(3, 1, 5, 6)
    g = torch.rand(3, 1, 5, 6) > 0.5
    got = L.bce_dice_loss(x, g, per_image=per_image, reduction=reduction)
    if per_image:
        each = torch.stack([L.bce_dice_loss(x[i:i + 1], g[i:i + 1]) for i in range(3)])
        expected = {"mean": each.mean(), "sum": each.sum(), "none": each}[reduction]
    else:
        expected = 0.5 * F.binary_cross_entropy_with_logits(x, g.float()) + 0.5 * (
            1 - (2 * (torch.sigmoid(x) * g).sum() + 1) / (torch.sigmoid(x).sum() + g.sum() + 1))
    _close(got, expected, 1e-6, 1e-6)


def test_binary_label_dtypes_agree():
    x = torch.randn(2, 1, 5, 7)
    g = torch.rand(2, 1, 5, 7) > 0.5
    ref = L.bce_dice_loss(x, g.float())
    for lab in (g, g.to(torch.uint8), g.to(torch.int64), g.half()):
        assert torch.equal(L.bce_dice_loss(x, lab), ref)


def test_low_precision_on_cpu_returns_input_dtype():
    x = torch.randn(2, 1, 6, 6)
    g = torch.rand(2, 1, 6, 6) > 0.5
    for dt in (torch.float16, torch.bfloat16):
        out = L.bce_dice_loss(x.to(dt), g)
        assert out.dtype == dt
        _close(out, L.bce_dice_loss(x.to(dt).float(), g), 1e-2, 1e-3)


def test_gradcheck_reference():
    torch.manual_seed(0)
    kw = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 1, 3, 4, **kw)
    g = (torch.rand(2, 1, 3, 4) > 0.5).double()
    for per_image, reduction in ((False, "mean"), (True, "none")):
        assert torch.autograd.gradcheck(
            lambda z: L.bce_dice_loss(z, g, per_image=per_image, reduction=reduction), (x,))
    p = torch.rand(2, 1, 3, 4, dtype=torch.float64).clamp(0.05, 0.95).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: L.bce_dice_loss(z, g, from_logits=False), (p,))
    maps = [torch.randn(1, 1, 5, 6, **kw), torch.randn(1, 1, 3, 2, **kw), torch.randn(1, 1, 5, 3, **kw)]
    gm = (torch.rand(1, 1, 5, 6) > 0.5).double()
    assert torch.autograd.gradcheck(lambda *m: L.mixed_loss(list(m), gm, weights=[1.0, 0.5, 2.0]), maps)
    xc = torch.randn(2, 4, 3, 3, **kw)
    t = torch.randint(0, 4, (2, 3, 3))
    t[0, 0, 0] = -100
    w = torch.rand(4, dtype=torch.float64)
    for per_image, normalize in ((True, "pixels"), (False, "weights")):
        assert torch.autograd.gradcheck(
            lambda z: L.size_adaptive_cross_entropy(z, t, w, alpha=1.5, per_image=per_image, normalize=normalize),
            (xc,))


def test_torch_compile_reference():
    """The eager reference traces with torch.compile(fullgraph=True), forward and backward (backend
    aot_eager: Dynamo + AOTAutograd without Inductor's codegen, which takes ~40 s on 2 cores; the
    benchmark, ``python -m benchmarks.losses``, runs the reference under Inductor)."""
    torch._dynamo.reset()
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    g = (torch.rand(2, 1, 8, 8) > 0.5).float()
    maps = [x, torch.randn(2, 1, 4, 4, requires_grad=True)]
    xc = torch.randn(2, 4, 5, 5, requires_grad=True)
    t = torch.randint(0, 4, (2, 5, 5))
    cases = [(R.bce_dice_loss, (x, g)), (R.mixed_loss, (maps, g)), (R.size_adaptive_cross_entropy, (xc, t))]
    for fn, args in cases:
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        out = compiled(*args)
        out.backward()
        _close(out, fn(*args), 1e-6, 1e-7, fn.__name__)


def test_empty_inputs():
    """Batch 0 and empty images: no crash; the BCE mean of nothing is NaN as in torch, the CE mean is 0."""
    x = torch.randn(0, 1, 4, 4, requires_grad=True)
    assert torch.isnan(L.bce_dice_loss(x, torch.zeros(0, 1, 4, 4)))
    assert torch.isnan(L.mixed_loss([x, torch.randn(0, 1, 2, 2)], torch.zeros(0, 1, 4, 4)))
    assert L.bce_dice_loss(x, x > 0, per_image=True, reduction="none").shape == (0,)
    out = L.size_adaptive_cross_entropy(torch.randn(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long))
    assert float(out) == 0.0
    none = L.size_adaptive_cross_entropy(torch.randn(2, 3, 0), torch.zeros(2, 0, dtype=torch.long), reduction="none")
    assert none.shape == (2, 0)


def test_modules_match_functional_and_repr():
    x = torch.randn(2, 3, 4, 5)
    t = torch.randint(0, 3, (2, 4, 5))
    w = torch.rand(3)
    m = L.SizeAdaptiveCELoss(weight=w, alpha=2.0, ignore_index=1)
    assert torch.equal(m(x, t), L.size_adaptive_cross_entropy(x, t, w, alpha=2.0, ignore_index=1))
    assert "alpha=2.0" in repr(m) and "ignore_index=1" in repr(m) and "weight=<(3,)>" in repr(m)
    assert "weight" in dict(m.named_buffers())
    g = torch.rand(2, 1, 4, 5) > 0.5
    b = L.BCEDiceLoss(per_image=True, reduction="sum")
    assert torch.equal(b(x[:, :1], g), L.bce_dice_loss(x[:, :1], g, per_image=True, reduction="sum"))
    assert repr(b) == "BCEDiceLoss(per_image=True, reduction='sum')"
    mm = L.MixedLoss(weights=[1, 0.5], paper_scaling=True)
    maps = [x[:, :1], x[:, :1, :2, :3]]
    assert torch.equal(mm(maps, g), L.mixed_loss(maps, g, weights=[1, 0.5], paper_scaling=True))
    assert "paper_scaling=True" in repr(mm)


# ================================================================================================
# Bad input
# ================================================================================================
def test_bad_input_bce_dice():
    x = torch.randn(2, 1, 4, 4)
    g = torch.rand(2, 1, 4, 4) > 0.5
    with pytest.raises(ValueError, match=r"target must have the shape of input"):
        L.bce_dice_loss(x, g[:, :, :3])
    with pytest.raises(ValueError, match=r"input must have at least 2 dimensions"):
        L.bce_dice_loss(x.flatten(), g.flatten())
    with pytest.raises(TypeError, match=r"input must be a floating point tensor"):
        L.bce_dice_loss(g, g)
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor"):
        L.bce_dice_loss(x, 1.0)
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        L.bce_dice_loss(x, g, reduction="avg")
    with pytest.raises(ValueError, match=r"reduction='none' needs per_image=True"):
        L.bce_dice_loss(x, g, reduction="none")
    with pytest.raises(ValueError, match=r"bce_weight must be <= 1"):
        L.bce_dice_loss(x, g, bce_weight=1.5)
    with pytest.raises(ValueError, match=r"smooth must be >= 0"):
        L.BCEDiceLoss(smooth=-1.0)


def test_bad_input_mixed():
    g = torch.rand(2, 1, 8, 8) > 0.5
    f = torch.randn(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"inputs must be a list or tuple"):
        L.mixed_loss(f, g)
    with pytest.raises(ValueError, match=r"inputs must hold at least one"):
        L.mixed_loss([], g)
    with pytest.raises(ValueError, match=r"target must be 4-D"):
        L.mixed_loss([f], g[:, 0])
    with pytest.raises(ValueError, match=r"inputs\[1\] must be 4-D"):
        L.mixed_loss([f, f[:, 0]], g)
    with pytest.raises(ValueError, match=r"inputs\[1\] has shape \(2, 2, 4, 4\), but target"):
        L.mixed_loss([f, torch.randn(2, 2, 4, 4)], g)
    with pytest.raises(ValueError, match=r"inputs\[1\] has spatial size \(16, 8\)"):
        L.mixed_loss([f, torch.randn(2, 1, 16, 8)], g)
    with pytest.raises(ValueError, match=r"inputs\[1\] has dtype torch.float16"):
        L.mixed_loss([f, f.half()], g)
    with pytest.raises(ValueError, match=r"weights must have one entry per map \(2\), got 3"):
        L.mixed_loss([f, f], g, weights=[1, 1, 1])
    with pytest.raises(TypeError, match=r"weights\[0\] must be a number"):
        L.MixedLoss(weights=["a"])


def test_bad_input_size_adaptive_ce():
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    op = L.size_adaptive_cross_entropy
    with pytest.raises(ValueError, match=r"alpha must be >= 0"):
        op(x, t, alpha=-0.5)
    with pytest.raises(ValueError, match=r"alpha must be >= 0"):
        L.SizeAdaptiveCELoss(alpha=-1)
    with pytest.raises(ValueError, match=r"target must be 3-D"):
        op(x, t[0])
    with pytest.raises(ValueError, match=r"target must have shape \(2, 4, 4\)"):
        op(x, t[:, :3])
    with pytest.raises(TypeError, match=r"target must be an integer tensor"):
        op(x, t.float())
    with pytest.raises(ValueError, match=r"input must have at least 2 dimensions"):
        op(x[0, 0, 0], t[0, 0])
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        op(x, t, torch.ones(4))
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*ignore_index \(-100\), e.g. 3"):
        op(x, torch.where(t == 0, 3, t))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        op(x, torch.where(t == 0, -1, t))
    with pytest.raises(ValueError, match=r"normalize must be one of"):
        op(x, t, normalize="count")
    with pytest.raises(TypeError, match=r"ignore_index must be an int"):
        op(x, t, ignore_index=1.0)
    op(x, torch.where(t == 0, 255, t), ignore_index=255)  # ignore_index outside [0, C) is fine


def test_backend_env_var(monkeypatch):
    x = torch.randn(2, 1, 4, 4)
    g = torch.rand(2, 1, 4, 4) > 0.5
    monkeypatch.setenv(_common.BACKEND_ENV, "bogus")
    with pytest.raises(ValueError, match=_common.BACKEND_ENV):
        L.bce_dice_loss(x, g)
    monkeypatch.setenv(_common.BACKEND_ENV, "torch")
    L.bce_dice_loss(x, g)
    if L.HAS_TRITON and not INTERPRET:
        monkeypatch.setenv(_common.BACKEND_ENV, "triton")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            L.bce_dice_loss(x, g)


def test_imports_and_runs_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, hybridops.losses as L\n"
        "assert not L.HAS_TRITON\n"
        "x = torch.randn(2, 1, 4, 4, requires_grad=True)\n"
        "L.bce_dice_loss(x, x > 0).backward()\n"
        "L.mixed_loss([x, x[:, :, :2, :2]], x > 0)\n"
        "L.size_adaptive_cross_entropy(torch.randn(2, 3, 4), torch.randint(0, 3, (2, 4)))\n"
        "import os; os.environ['HYBRIDOPS_LOSSES_BACKEND'] = 'triton'\n"
        "try:\n    L.bce_dice_loss(x, x > 0)\n"
        "except RuntimeError as e:\n    assert 'triton is not installed' in str(e)\n"
        "else:\n    raise SystemExit('no error')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", _common.BACKEND_ENV)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


# ================================================================================================
# The Triton kernels compile for a real GPU target (no GPU needed)
# ================================================================================================
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int32: "i32",
                 torch.int64: "i64", torch.uint8: "u8", torch.int16: "i16", torch.int8: "i8"}


def _triton_type(v):
    if isinstance(v, torch.Tensor):
        return "*" + _TRITON_TYPES[v.dtype]
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        return "i32" if -2 ** 31 <= v < 2 ** 31 else "i64"
    if isinstance(v, float):
        return "fp32"
    if isinstance(v, tuple):
        return tuple(_triton_type(e) for e in v)
    raise TypeError(type(v))


@pytest.mark.skipif(not L.HAS_TRITON or INTERPRET, reason="needs triton, outside the interpreter")
def test_kernels_compile_for_sm90(monkeypatch):
    """Records every launch the three losses make (forward and backward, with and without the optional
    features), then compiles each kernel specialisation for sm_90 down to a cubin with ptxas.

    The interpreter accepts programs the compiler rejects; this catches those without a GPU."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:  # pragma: no cover - triton internals moved
        pytest.skip("this triton has no triton.compiler.ASTSource / GPUTarget")
    import triton
    monkeypatch.setenv(_common.BACKEND_ENV, "triton")
    monkeypatch.setattr(_common, "_RECORD", [])
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    g = torch.rand(2, 1, 16, 16) > 0.5
    L.bce_dice_loss(x, g).backward()
    L.bce_dice_loss(x.half(), g.float(), per_image=True, reduction="none", from_logits=False).sum().backward()
    maps = [torch.randn(2, 1, s, s, requires_grad=True) for s in (16, 16, 8, 4)]
    L.mixed_loss(maps, g).backward()
    L.mixed_loss([m.bfloat16() for m in maps[1:]], g.to(torch.uint8), mean_weight=0.0, per_image=True,
                 reduction="none").sum().backward()
    xc = torch.randn(2, 5, 8, 8, requires_grad=True)
    t = torch.randint(0, 5, (2, 8, 8))
    L.size_adaptive_cross_entropy(xc, t, torch.rand(5)).backward()
    L.size_adaptive_cross_entropy(xc.bfloat16(), t.to(torch.uint8), reduction="none", per_image=False,
                                  normalize="weights").sum().backward()
    # many rows per program ([N, 1], [N, C], small planes), class chunks (200 classes), int64 offsets
    L.bce_dice_loss(torch.randn(300, 1, requires_grad=True), torch.rand(300, 1) > 0.5, per_image=True,
                    reduction="none").sum().backward()
    L.size_adaptive_cross_entropy(torch.randn(300, 3, requires_grad=True), torch.randint(0, 3, (300,)),
                                  per_image=False).backward()
    xl = torch.randn(2, 200, 3, 3, requires_grad=True)
    tl_ = torch.randint(0, 200, (2, 3, 3))
    L.size_adaptive_cross_entropy(xl, tl_).backward()
    small_planes = [torch.randn(40, 2, 3, 5, requires_grad=True), torch.randn(40, 2, 2, 2, requires_grad=True)]
    L.mixed_loss(small_planes, torch.rand(40, 2, 3, 5) > 0.5).backward()
    monkeypatch.setattr(_common, "INT32_LIMIT", 8)
    L.mixed_loss(small_planes, torch.rand(40, 2, 3, 5) > 0.5, per_image=True).backward()
    L.size_adaptive_cross_entropy(xc, t, torch.rand(5)).backward()
    L.size_adaptive_cross_entropy(xl, tl_, reduction="none").sum().backward()
    compiled = set()
    for kernel, _grid, args, meta in _common._RECORD:
        meta = dict(meta)
        num_warps = meta.pop("num_warps", 4)
        signature = {name: _triton_type(a) for name, a in zip(kernel.arg_names, args)}
        signature.update({k: "constexpr" for k in meta})
        key = (kernel.fn.__name__, repr(signature), repr(meta), num_warps)
        if key in compiled:
            continue
        compiled.add(key)
        out = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=meta),
                             target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
        assert len(out.asm["cubin"]) > 0
    names = {k[0] for k in compiled}
    assert names == {"_bce_dice_fwd_kernel", "_bce_dice_bwd_kernel", "_finalize_kernel", "_mixed_fwd_kernel",
                     "_mixed_bwd_kernel", "_upsample_adjoint_kernel", "_sace_hist_kernel", "_sace_fwd_kernel",
                     "_sace_finalize_kernel", "_sace_bwd_kernel"}
    int64 = {k[0] for k in compiled if "'IDX64': True" in k[2]}
    assert {"_mixed_fwd_kernel", "_mixed_bwd_kernel", "_sace_fwd_kernel", "_sace_bwd_kernel"} <= int64
    chunked = {k[0] for k in compiled if "'ONE_CHUNK': False" in k[2] or "'STORE_LSE': True" in k[2]}
    assert chunked == {"_sace_fwd_kernel", "_sace_bwd_kernel"}


# ================================================================================================
# Launch geometry: every grid within CUDA's limits, bounded tiles, int64 offsets where needed
# ================================================================================================
# Constexpr arguments that are the sides of a program's tile (their product: elements per program).
_TILE_DIMS = ("R", "BLOCK", "CB", "HWP", "PL", "LB", "SB", "BR", "BP", "S_PAD", "C_PAD", "KW", "BLOCK_P")


def _grid_ok(grid) -> bool:
    """CUDA's limits: gridDim.x <= 2**31 - 1, gridDim.y and .z <= 65,535 (and every side >= 1)."""
    return (1 <= len(grid) <= 3 and all(isinstance(v, int) and v >= 1 for v in grid)
            and grid[0] <= 2 ** 31 - 1 and all(v <= 65_535 for v in grid[1:]))


def _recorded(monkeypatch, fn):
    """The launches ``fn`` makes (forward and backward), recorded instead of run."""
    monkeypatch.setenv(_common.BACKEND_ENV, "triton")
    monkeypatch.setattr(_common, "_RECORD", [])
    fn()
    return list(_common._RECORD)


def _meta(*shape, grad=True, dtype=torch.float32):
    return torch.empty(shape, device="meta", dtype=dtype, requires_grad=grad)


# name -> (fn making the launches); shapes far beyond what the interpreter could run, on the meta device
_HUGE_CASES = {
    "bce_dice [2**20, 1]": lambda: L.bce_dice_loss(_meta(2 ** 20, 1), _meta(2 ** 20, 1, grad=False)).backward(),
    "bce_dice [2**20, 1] per image": lambda: L.bce_dice_loss(
        _meta(2 ** 20, 1), _meta(2 ** 20, 1, grad=False), per_image=True, reduction="none").sum().backward(),
    "bce_dice [4, 1, 32768, 32768]": lambda: L.bce_dice_loss(
        _meta(4, 1, 32768, 32768), _meta(4, 1, 32768, 32768, grad=False)).backward(),
    "mixed [70000, 1, 4, 4]": lambda: L.mixed_loss(
        [_meta(70000, 1, 4, 4), _meta(70000, 1, 2, 2)], _meta(70000, 1, 4, 4, grad=False)).backward(),
    "mixed [2, 40000, 8, 8] per image": lambda: L.mixed_loss(
        [_meta(2, 40000, 8, 8), _meta(2, 40000, 3, 5)], _meta(2, 40000, 8, 8, grad=False), per_image=True,
        reduction="none").sum().backward(),
    "mixed 4x4 -> 2048x2048": lambda: L.mixed_loss(
        [_meta(1, 1, 2048, 2048), _meta(1, 1, 4, 4)], _meta(1, 1, 2048, 2048, grad=False)).backward(),
    "mixed [1, 1, 50000, 50000]": lambda: L.mixed_loss(
        [_meta(1, 1, 50000, 50000), _meta(1, 1, 25000, 25000)], _meta(1, 1, 50000, 50000, grad=False)).backward(),
    "sace [70000, 3]": lambda: L.size_adaptive_cross_entropy(
        _meta(70000, 3), _meta(70000, grad=False, dtype=torch.long), per_image=False).backward(),
    "sace [2**22, 19] none": lambda: L.size_adaptive_cross_entropy(
        _meta(2 ** 22, 19), _meta(2 ** 22, grad=False, dtype=torch.long), reduction="none").sum().backward(),
    "sace [1, 150, 4096, 4096]": lambda: L.size_adaptive_cross_entropy(
        _meta(1, 150, 4096, 4096), _meta(1, 4096, 4096, grad=False, dtype=torch.long)).backward(),
    "sace [4, 1024, 64, 64]": lambda: L.size_adaptive_cross_entropy(
        _meta(4, 1024, 64, 64), _meta(4, 64, 64, grad=False, dtype=torch.long), torch.ones(1024, device="meta"),
        normalize="weights").backward(),
}


@pytest.mark.skipif(not L.HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize("case", sorted(_HUGE_CASES))
def test_launch_grids_within_cuda_limits(monkeypatch, case):
    """Every launch of every loss (forward and backward) at shapes beyond CUDA's 65,535 limit on grid
    axes 1 and 2 (batch-like sizes up to 2**22, planes of 2.5e9 pixels): the grid is within CUDA's
    limits and every program's tile is bounded. Recorded, not run (meta tensors), so no GPU is needed."""
    launches = _recorded(monkeypatch, _HUGE_CASES[case])
    assert launches
    for kernel, grid, _args, meta in launches:
        name = kernel.fn.__name__
        assert _grid_ok(grid), f"{case}: {name} grid {grid} exceeds CUDA's limits"
        elems = math.prod(v for k, v in meta.items() if k in _TILE_DIMS)
        assert elems <= 16384, f"{case}: {name} tile {meta} holds {elems} elements"
        if name in ("_sace_fwd_kernel", "_sace_bwd_kernel"):
            assert elems <= size_adaptive_ce._MAX_TILE and meta["CB"] <= size_adaptive_ce._CLASS_CHUNK
        if name == "_upsample_adjoint_kernel":
            assert elems <= mixed._ADJ_TILE


def _idx64(launches, kernel_name):
    return {meta["IDX64"] for kernel, _g, _a, meta in launches if kernel.fn.__name__ == kernel_name}


@pytest.mark.skipif(not L.HAS_TRITON, reason="needs triton")
def test_int64_offsets_planned_where_int32_wraps(monkeypatch):
    """The launchers pick the int64 index variants exactly where an offset passes 2**31: logits
    [1, 150, 4096, 4096] ((C - 1) * H * W >= 2**31) and a 50000**2 label plane; int32 elsewhere."""
    big = _recorded(monkeypatch, _HUGE_CASES["sace [1, 150, 4096, 4096]"])
    for name in ("_sace_fwd_kernel", "_sace_bwd_kernel"):
        assert _idx64(big, name) == {True}, name
    rows = _recorded(monkeypatch, _HUGE_CASES["sace [70000, 3]"])
    assert _idx64(rows, "_sace_fwd_kernel") == {False}
    plane = _recorded(monkeypatch, _HUGE_CASES["mixed [1, 1, 50000, 50000]"])
    assert _idx64(plane, "_mixed_fwd_kernel") == _idx64(plane, "_mixed_bwd_kernel") == {True}
    small = _recorded(monkeypatch, _HUGE_CASES["mixed 4x4 -> 2048x2048"])
    assert _idx64(small, "_mixed_fwd_kernel") == {False}
    # the planner itself, at the limit
    assert size_adaptive_ce._plan(1, 150, 4096 * 4096, size_adaptive_ce._MAX_TILE)[2]
    assert not size_adaptive_ce._plan(8, 19, 512 * 512, size_adaptive_ce._MAX_TILE)[2]
    assert _common.needs_int64(2 ** 31) and not _common.needs_int64(2 ** 31 - 1)


def test_tiling_helper():
    t = _common.tile(70000, 1, 1024, 2048)             # [N, 1]: 2048 rows of one element per program
    assert (t.rows_per, t.cols_per, t.grid) == (2048, 1, (35,))
    t = _common.tile(3, 70000, 2048, 2048)             # long rows: one row, 2048 columns per program
    assert (t.rows_per, t.cols_per, t.col_blocks, t.grid) == (1, 2048, 35, (105,))
    t = _common.tile(5, 100, 1024, 4096)               # whole rows fit: 128 columns, all 5 rows (of 8)
    assert (t.rows_per, t.cols_per, t.row_blocks, t.col_blocks) == (8, 128, 1, 1)
    t = _common.tile(2 ** 40, 1, 1, 1)
    with pytest.raises(ValueError, match=r"exceed CUDA's grid limit"):
        t.grid


# ================================================================================================
# The Triton kernels against the reference (interpreter on CPU, or CUDA)
# ================================================================================================
@pytest.mark.skipif(INTERPRET or not L.HAS_TRITON, reason="spawns the interpreter run; needs triton")
def test_kernels_in_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", **{_common.BACKEND_ENV: "triton"})
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", "TestKernels"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, f"interpreter run failed:\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    assert " passed" in res.stdout and " failed" not in res.stdout


def _dtypes():
    return [torch.float32, torch.float16] + ([torch.bfloat16] if KERNEL_DEVICE == "cuda" else [])


# (rtol, atol) of the kernel against the reference run on the same (rounded) inputs
_TOL = {torch.float32: (1e-5, 1e-6), torch.float16: (2e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-4)}


def _check_pair(kernel_out, ref_out, kernel_grads, ref_grads, dtype, what):
    rtol, atol = _TOL[dtype]
    assert kernel_out.dtype == ref_out.dtype and kernel_out.shape == ref_out.shape, what
    _close(kernel_out, ref_out, rtol, atol, f"{what} loss")
    for i, (a, b) in enumerate(zip(kernel_grads, ref_grads)):
        assert a.dtype == b.dtype and a.shape == b.shape
        scale = float(b.float().abs().max()) + 1e-12
        _close(a, b, rtol, atol * 10 + rtol * scale, f"{what} grad[{i}]")


def _run_both(fn, ref_fn, tensors, grad_scale=1.7, go=None):
    """Runs ``fn`` (kernels) and ``ref_fn`` (PyTorch) on copies of ``tensors``; a grad_output != 1 (``go``
    when given)."""
    a_in = [t.detach().clone().requires_grad_() for t in tensors]
    b_in = [t.detach().clone().requires_grad_() for t in tensors]
    a = fn(a_in)
    b = ref_fn(b_in)
    if go is None:
        go = torch.rand(b.shape, device=b.device, dtype=torch.float32).to(b.dtype) + grad_scale
    a.backward(go)
    b.backward(go)
    return a, b, [t.grad for t in a_in], [t.grad for t in b_in]


_LAUNCH = _common.launch


def _check_grids(monkeypatch):
    """Every launch checks its grid against CUDA's limits first (the interpreter has none)."""
    def checked(kernel, grid, *args, **meta):
        assert _grid_ok(grid), f"{kernel.fn.__name__}: grid {grid} exceeds CUDA's limits"
        return _LAUNCH(kernel, grid, *args, **meta)
    for module in (bce_dice, mixed, size_adaptive_ce):
        monkeypatch.setattr(module, "launch", checked)


def _default_blocks(monkeypatch):
    """Back to the production block sizes (undoes the class fixture), still on the kernels."""
    monkeypatch.undo()
    monkeypatch.setenv(_common.BACKEND_ENV, "triton")
    monkeypatch.setattr(_common, "_POISON", True)
    _check_grids(monkeypatch)


if L.HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _logit_offsets_probe(out_ptr, c0, CHW, HW, IDX64: tl.constexpr, CB: tl.constexpr):
        """Stores size_adaptive_ce._logit_offsets for classes c0 + [0, CB), one image, pixel 0."""
        cls = c0 + tl.arange(0, CB)
        r = tl.arange(0, 1)
        q = tl.arange(0, 1)
        off = size_adaptive_ce._logit_offsets(cls, r, q, CHW, HW, IDX64)
        tl.store(out_ptr + tl.arange(0, CB)[:, None, None] + r[None, :, None] + q[None, None, :], off.to(tl.int64))


@pytest.mark.skipif(KERNEL_DEVICE is None,
                    reason="needs CUDA, or TRITON_INTERPRET=1 (see test_kernels_in_triton_interpreter)")
class TestKernels:
    @pytest.fixture(autouse=True)
    def _kernel_backend(self, monkeypatch):
        monkeypatch.setenv(_common.BACKEND_ENV, "triton")
        monkeypatch.setattr(_common, "_POISON", True)   # outputs start as NaN: every element must be written
        # Small blocks: several blocks per image and partially masked last blocks on tiny tensors.
        monkeypatch.setattr(bce_dice, "_MAX_BLOCK", 64)
        monkeypatch.setattr(bce_dice, "_FINALIZE_BLOCK", 16)
        monkeypatch.setattr(mixed, "_MAX_BLOCK", 64)
        monkeypatch.setattr(mixed, "_ADJ_BLOCK", 32)
        monkeypatch.setattr(size_adaptive_ce, "_MAX_BLOCK", 32)
        monkeypatch.setattr(size_adaptive_ce, "_FINALIZE_BLOCK", 4)
        _check_grids(monkeypatch)
        torch.manual_seed(1234)

    @pytest.mark.parametrize("dtype", _dtypes())
    @pytest.mark.parametrize("per_image,reduction,from_logits", [
        (False, "mean", True), (True, "mean", True), (True, "none", True), (True, "sum", False),
        (False, "mean", False)])
    def test_bce_dice(self, dtype, per_image, reduction, from_logits):
        x = (torch.randn(3, 2, 9, 13) * 3).to(KERNEL_DEVICE, dtype)
        if not from_logits:
            x = torch.sigmoid(x.float()).clamp(0.02, 0.98).to(dtype)
        g = torch.rand(3, 2, 9, 13, device=KERNEL_DEVICE) > 0.6
        kw = dict(per_image=per_image, reduction=reduction, from_logits=from_logits, bce_weight=0.3, smooth=0.5)
        res = _run_both(lambda t: L.bce_dice_loss(t[0], g, **kw), lambda t: R.bce_dice_loss(t[0], g, **kw), [x])
        _check_pair(*res, dtype, f"bce_dice {kw}")

    @pytest.mark.parametrize("label_dtype", [torch.bool, torch.uint8, torch.float32, torch.float16])
    def test_bce_dice_label_dtypes_and_determinism(self, label_dtype):
        x = torch.randn(2, 1, 7, 11, device=KERNEL_DEVICE)
        g = (torch.rand(2, 1, 7, 11, device=KERNEL_DEVICE) > 0.5).to(label_dtype)
        a = L.bce_dice_loss(x, g)
        assert torch.equal(a, L.bce_dice_loss(x, g)), "not deterministic"
        _close(a, R.bce_dice_loss(x, g.float()), 1e-5, 1e-6)

    @pytest.mark.parametrize("dtype,case", [(torch.float32, "default"), (torch.float32, "weighted_per_image_none"),
                                            (torch.float32, "no_mean_scaled"), (torch.float16, "default")] + (
        [(dt, cs) for dt in (torch.float16, torch.bfloat16) for cs in ("weighted_per_image_none", "no_mean_scaled")]
        + [(torch.bfloat16, "default")] if KERNEL_DEVICE == "cuda" else []))
    def test_mixed(self, dtype, case):
        n, c, H, W = 2, 1, 11, 13
        sizes = [(H, W), (6, 7), (3, 4), (H, 5)]          # full, ~1/2, ~1/4, one axis only
        if case == "default":
            kw = {}
        elif case == "weighted_per_image_none":
            kw = dict(weights=[1.0, 0.5, 2.0, 0.0], mean_weight=0.7, per_image=True, reduction="none", smooth=0.0)
        else:
            kw = dict(mean_weight=0.0, paper_scaling=True, bce_weight=0.8)
            sizes, c = sizes[1:], 2                          # no full-size map, two channels
        maps = [torch.randn(n, c, h, w).to(KERNEL_DEVICE, dtype) * 2 for h, w in sizes]
        g = torch.rand(n, c, H, W, device=KERNEL_DEVICE) > 0.5
        res = _run_both(lambda t: L.mixed_loss(t, g, **kw), lambda t: R.mixed_loss(t, g, **kw), maps)
        _check_pair(*res, dtype, f"mixed {case}")

    def test_mixed_large_ratio_deterministic(self):
        g = torch.rand(1, 1, 24, 20, device=KERNEL_DEVICE) > 0.5
        maps = [torch.randn(1, 1, 3, 2, device=KERNEL_DEVICE), torch.randn(1, 1, 5, 20, device=KERNEL_DEVICE)]
        res = _run_both(lambda t: L.mixed_loss(t, g), lambda t: R.mixed_loss(t, g), maps)
        _check_pair(*res, torch.float32, "mixed x8")
        grads = []
        for _ in range(2):
            leaves = [m.clone().requires_grad_() for m in maps]
            L.mixed_loss(leaves, g).backward()
            grads.append([m.grad for m in leaves])
        for a, b in zip(*grads):
            assert torch.equal(a, b), "mixed backward is not deterministic"

    @pytest.mark.parametrize("dtype", _dtypes())
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("per_image,normalize,weighted,alpha", [
        (True, "pixels", False, 1.0), (False, "weights", True, 2.5), (True, "weights", True, 0.0)])
    def test_size_adaptive_ce(self, dtype, reduction, per_image, normalize, weighted, alpha):
        n, c, h, w = 3, 5, 7, 9
        x = (torch.randn(n, c, h, w) * 2).to(KERNEL_DEVICE, dtype)
        t = torch.randint(0, c, (n, h, w))
        t[0, :2] = -100            # ignored pixels
        t[1] = 2                   # an image that is all one class (plus one ignored pixel)
        t[1, 0, 0] = -100
        t = t.to(KERNEL_DEVICE)
        wt = (torch.rand(c) + 0.2).to(KERNEL_DEVICE) if weighted else None
        kw = dict(alpha=alpha, reduction=reduction, per_image=per_image, normalize=normalize)
        res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, wt, **kw),
                        lambda z: R.size_adaptive_cross_entropy(z[0], t, wt, **kw), [x])
        _check_pair(*res, dtype, f"sace {kw}")

    def test_size_adaptive_ce_odd_shapes_and_label_dtypes(self):
        x = torch.randn(2, 3, 37, device=KERNEL_DEVICE)           # [N, C, L], 3 classes (padded to 4)
        t = torch.randint(0, 3, (2, 37), device=KERNEL_DEVICE)
        t[0, 5] = 255
        for lab in (t, t.to(torch.uint8), t.to(torch.int32)):
            res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], lab, ignore_index=255),
                            lambda z: R.size_adaptive_cross_entropy(z[0], lab, ignore_index=255), [x])
            _check_pair(*res, torch.float32, f"sace {lab.dtype}")
        x2 = torch.randn(2, 1, 4, 4, device=KERNEL_DEVICE)        # one class: every weight 0, loss 0
        t2 = torch.zeros(2, 4, 4, dtype=torch.long, device=KERNEL_DEVICE)
        res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t2),
                        lambda z: R.size_adaptive_cross_entropy(z[0], t2), [x2])
        assert float(res[0].detach()) == 0.0 and (res[2][0] == 0).all()

    def test_non_contiguous_inputs(self):
        x = torch.randn(2, 1, 13, 9, device=KERNEL_DEVICE).transpose(2, 3)        # [2, 1, 9, 13], strided
        g = (torch.rand(2, 1, 13, 9, device=KERNEL_DEVICE) > 0.5).transpose(2, 3)
        res = _run_both(lambda t: L.bce_dice_loss(t[0], g), lambda t: R.bce_dice_loss(t[0], g), [x])
        _check_pair(*res, torch.float32, "bce_dice strided")
        maps = [x, torch.randn(2, 1, 7, 5, device=KERNEL_DEVICE).transpose(2, 3)]
        res = _run_both(lambda t: L.mixed_loss(t, g), lambda t: R.mixed_loss(t, g), maps)
        _check_pair(*res, torch.float32, "mixed strided")
        xc = torch.randn(2, 6, 5, 4, device=KERNEL_DEVICE).permute(0, 3, 1, 2)    # [2, 4, 6, 5], channels last
        t = torch.randint(0, 4, (2, 5, 6), device=KERNEL_DEVICE).transpose(1, 2)
        res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t),
                        lambda z: R.size_adaptive_cross_entropy(z[0], t), [xc])
        _check_pair(*res, torch.float32, "sace strided")
        go = torch.rand(1, device=KERNEL_DEVICE).expand(2)            # a stride-0 grad_output (reduction='none')
        kw = dict(per_image=True, reduction="none")
        res = _run_both(lambda t: L.bce_dice_loss(t[0], g, **kw), lambda t: R.bce_dice_loss(t[0], g, **kw), [x], go=go)
        _check_pair(*res, torch.float32, "bce_dice stride-0 grad_output")
        res = _run_both(lambda t: L.mixed_loss(t, g, **kw), lambda t: R.mixed_loss(t, g, **kw), maps, go=go)
        _check_pair(*res, torch.float32, "mixed stride-0 grad_output")

    def test_size_adaptive_ce_bad_labels_without_sync(self):
        x = torch.randn(2, 3, 4, 4, device=KERNEL_DEVICE, requires_grad=True)
        t = torch.randint(0, 3, (2, 4, 4), device=KERNEL_DEVICE)
        t[1, 2, 3] = 3
        loss = L.size_adaptive_cross_entropy(x, t)
        assert torch.isnan(loss)
        loss.backward()
        assert torch.isnan(x.grad[1, :, 2, 3]).all() and torch.isfinite(x.grad[0]).all()
        none = L.size_adaptive_cross_entropy(x, t, reduction="none")
        assert torch.isnan(none[1, 2, 3]) and torch.isfinite(none[0]).all()
        with pytest.raises(ValueError, match=r"target holds 1 class indices outside \[0, 3\)"):
            L.size_adaptive_cross_entropy(x, t, check_labels=True)
        t[1, 2, 3] = -7
        with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
            L.size_adaptive_cross_entropy(x, t, check_labels=True)

    def test_default_blocks(self, monkeypatch):
        """The production block sizes, with a few blocks per image."""
        _default_blocks(monkeypatch)
        x = torch.randn(2, 1, 48, 96, device=KERNEL_DEVICE)
        g = torch.rand(2, 1, 48, 96, device=KERNEL_DEVICE) > 0.5
        res = _run_both(lambda t: L.bce_dice_loss(t[0], g), lambda t: R.bce_dice_loss(t[0], g), [x])
        _check_pair(*res, torch.float32, "bce_dice default blocks")
        maps = [x, torch.randn(2, 1, 24, 48, device=KERNEL_DEVICE)]
        res = _run_both(lambda t: L.mixed_loss(t, g), lambda t: R.mixed_loss(t, g), maps)
        _check_pair(*res, torch.float32, "mixed default blocks")
        xc = torch.randn(2, 3, 48, 48, device=KERNEL_DEVICE)
        t = torch.randint(0, 3, (2, 48, 48), device=KERNEL_DEVICE)
        res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t),
                        lambda z: R.size_adaptive_cross_entropy(z[0], t), [xc])
        _check_pair(*res, torch.float32, "sace default blocks")


    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_size_adaptive_ce_strided_weight(self, reduction):
        """A class weight that is a strided view: loss and gradient as the reference and as
        nn.CrossEntropyLoss (alpha = 0, normalize='weights'); a stride-0 grad_output for 'none'."""
        w = torch.tensor([1.0, 100.0, 2.0, 200.0, 3.0, 300.0, 4.0, 400.0], device=KERNEL_DEVICE)[::2]
        assert not w.is_contiguous()
        x = torch.randn(2, 4, 5, 3, device=KERNEL_DEVICE)
        t = torch.randint(0, 4, (2, 5, 3), device=KERNEL_DEVICE)
        t[0, 0, 0] = -100
        for alpha, ref in ((1.0, lambda z: R.size_adaptive_cross_entropy(z[0], t, w, 1.0, reduction=reduction,
                                                                           normalize="weights")),
                           (0.0, lambda z: F.cross_entropy(z[0], t, w, reduction=reduction))):
            kw = dict(alpha=alpha, reduction=reduction, normalize="weights")
            res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, w, **kw), ref, [x])
            _check_pair(*res, torch.float32, f"sace strided weight alpha={alpha}")
        if reduction == "none":
            go = torch.rand(1, device=KERNEL_DEVICE).expand(t.shape)          # stride 0
            res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, w, reduction="none"),
                            lambda z: R.size_adaptive_cross_entropy(z[0], t, w, reduction="none"), [x], go=go)
            _check_pair(*res, torch.float32, "sace stride-0 grad_output")

    def test_size_adaptive_ce_70000_rows(self, monkeypatch):
        """[70000, 3] logits (pixels flattened): 70000 > 65,535 images, one pixel each."""
        _default_blocks(monkeypatch)
        x = torch.randn(70000, 3, device=KERNEL_DEVICE) * 2
        t = torch.randint(0, 3, (70000,), device=KERNEL_DEVICE)
        t[::97] = -100
        w = torch.tensor([0.5, 2.0, 1.0], device=KERNEL_DEVICE)
        cases = [(None, dict(per_image=False)),
                 (w, dict(per_image=True, reduction="sum"))]    # one pixel per image: every weight 0
        for wt, kw in cases:
            res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, wt, **kw),
                            lambda z: R.size_adaptive_cross_entropy(z[0], t, wt, **kw), [x])
            _check_pair(*res, torch.float32, f"sace [70000, 3] {kw}")
        res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, w, alpha=0.0, normalize="weights"),
                        lambda z: F.cross_entropy(z[0], t, w), [x])            # nn.CrossEntropyLoss(weight=w)
        _check_pair(*res, torch.float32, "sace [70000, 3] against F.cross_entropy")

    @pytest.mark.parametrize("reduction,per_image", [("mean", True), ("none", False)])
    def test_size_adaptive_ce_1024_classes(self, reduction, per_image):
        """1024 classes: 8 chunks of 128 with an online log-sum-exp (forward), the saved LSE (backward)."""
        x = torch.randn(2, 1024, 3, 5, device=KERNEL_DEVICE) * 3
        x[:, 700] += 12.0                                        # the max in a late chunk
        t = torch.randint(0, 1024, (2, 3, 5), device=KERNEL_DEVICE)
        t[0, 0] = 1023
        t[1, 1, 1] = -100
        w = torch.rand(1024, device=KERNEL_DEVICE) + 0.5
        kw = dict(reduction=reduction, per_image=per_image, normalize="weights")
        res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, w, **kw),
                        lambda z: R.size_adaptive_cross_entropy(z[0], t, w, **kw), [x])
        _check_pair(*res, torch.float32, f"sace 1024 classes {kw}")

    def test_size_adaptive_ce_class_chunks_and_int64(self, monkeypatch):
        """Chunked classes (chunk lowered to 4, 11 classes) and the int64 index variants (limit lowered)."""
        monkeypatch.setattr(size_adaptive_ce, "_CLASS_CHUNK", 4)
        x = torch.randn(3, 11, 6, 7, device=KERNEL_DEVICE)
        t = torch.randint(0, 11, (3, 6, 7), device=KERNEL_DEVICE)
        t[2, :3] = 255
        for limit in (2 ** 31, 64):
            monkeypatch.setattr(_common, "INT32_LIMIT", limit)
            for kw in (dict(ignore_index=255), dict(ignore_index=255, reduction="none", per_image=False)):
                res = _run_both(lambda z: L.size_adaptive_cross_entropy(z[0], t, **kw),
                                lambda z: R.size_adaptive_cross_entropy(z[0], t, **kw), [x])
                _check_pair(*res, torch.float32, f"sace chunks of 4, limit {limit}, {kw}")

    def test_logit_offsets_do_not_wrap(self):
        """The logits offset of class c in a [1, 150, 4096, 4096] image, c * H * W, passes 2**31 from class
        128 on: the IDX64 variant computes it exactly, the int32 one wraps (why the planner picks IDX64)."""
        hw = 4096 * 4096
        out = torch.zeros(32, dtype=torch.int64, device=KERNEL_DEVICE)
        _logit_offsets_probe[(1,)](out, 118, 150 * hw, hw, IDX64=True, CB=32)
        assert out.tolist() == [c * hw for c in range(118, 150)]
        _logit_offsets_probe[(1,)](out, 118, 150 * hw, hw, IDX64=False, CB=32)
        assert out.tolist() != [c * hw for c in range(118, 150)]

    @pytest.mark.parametrize("per_image,reduction", [(False, "mean"), (True, "none"), (True, "mean")])
    def test_bce_dice_many_small_rows(self, per_image, reduction, monkeypatch):
        """[1000, 1] and [300, 3]: many rows per program; per image, 1000 one-pixel images."""
        monkeypatch.setattr(bce_dice, "_FINALIZE_BLOCK", 256)   # 64 rows per finalize step (the interpreter is slow)
        for shape in ((1000, 1), (300, 3)):
            x = torch.randn(*shape, device=KERNEL_DEVICE) * 2
            g = torch.rand(*shape, device=KERNEL_DEVICE) > 0.5
            kw = dict(per_image=per_image, reduction=reduction)
            res = _run_both(lambda z: L.bce_dice_loss(z[0], g, **kw), lambda z: R.bce_dice_loss(z[0], g, **kw), [x])
            _check_pair(*res, torch.float32, f"bce_dice {shape} {kw}")

    def test_mixed_many_planes_and_int64(self, monkeypatch):
        """40 x 2 planes of 3 x 5 (several planes per program), with the int32 and the int64 index variants."""
        g = torch.rand(40, 2, 3, 5, device=KERNEL_DEVICE) > 0.5
        maps = [torch.randn(40, 2, 3, 5, device=KERNEL_DEVICE), torch.randn(40, 2, 2, 2, device=KERNEL_DEVICE)]
        for limit, kw in ((2 ** 31, dict()), (8, dict(per_image=True, reduction="none", weights=[0.5, 2.0]))):
            monkeypatch.setattr(_common, "INT32_LIMIT", limit)
            res = _run_both(lambda t: L.mixed_loss(t, g, **kw), lambda t: R.mixed_loss(t, g, **kw), maps)
            _check_pair(*res, torch.float32, f"mixed planes, limit {limit}, {kw}")

    def test_mixed_extreme_upsampling(self, monkeypatch):
        """A 4 x 4 map upsampled to 128 x 96 and a 128 x 3 map (ratio 32: windows of 67 label rows or
        columns per small pixel): the adjoint's tiles stay within _ADJ_TILE whatever the ratio (the window
        is a loop; checked on the recorded launches) and the gradients match the reference."""
        _default_blocks(monkeypatch)
        g = torch.rand(1, 1, 128, 96, device=KERNEL_DEVICE) > 0.5
        maps = [torch.randn(1, 1, 4, 4, device=KERNEL_DEVICE), torch.randn(1, 1, 128, 3, device=KERNEL_DEVICE)]
        res = _run_both(lambda t: L.mixed_loss(t, g), lambda t: R.mixed_loss(t, g), maps)
        _check_pair(*res, torch.float32, "mixed 4x4 -> 128x96")
        adj = [m for k, _g, _a, m in _recorded(monkeypatch, lambda: L.mixed_loss(
            [m.detach().requires_grad_() for m in maps], g).backward()) if k.fn.__name__ == "_upsample_adjoint_kernel"]
        assert len(adj) == 3 and all(m["LB"] * m["SB"] <= mixed._ADJ_TILE for m in adj)

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not L.HAS_TRITON or INTERPRET, reason="needs CUDA and triton")
def test_cuda_matches_cpu_at_benchmark_shape():
    """Same numbers on CPU (PyTorch path) and CUDA (kernels) at a realistic size."""
    torch.manual_seed(0)
    g = torch.rand(2, 1, 256, 256) > 0.5
    maps = [torch.randn(2, 1, s, s, requires_grad=True) for s in (256, 256, 128, 64, 32)]
    cpu = L.mixed_loss(maps, g)
    cpu.backward()
    maps_cuda = [m.detach().cuda().requires_grad_() for m in maps]
    gpu = L.mixed_loss(maps_cuda, g.cuda())
    gpu.backward()
    _close(gpu.cpu(), cpu, 1e-5, 1e-6)
    for a, b in zip(maps_cuda, maps):
        _close(a.grad.cpu(), b.grad, 1e-4, 1e-8)
    x = torch.randn(4, 8, 128, 128)
    t = torch.randint(0, 8, (4, 128, 128))
    _close(L.size_adaptive_cross_entropy(x.cuda(), t.cuda()).cpu(), L.size_adaptive_cross_entropy(x, t), 1e-5, 1e-6)


def test_size_adaptive_ce_weight_requiring_grad_takes_the_torch_path(monkeypatch):
    """The Triton kernels give `weight` no gradient; a weight that needs one must not go there
    (it would silently get None while the PyTorch path gives the real gradient)."""
    from hybridops.losses import size_adaptive_ce as sace

    def refuse(*args, **kwargs):
        raise AssertionError("took the Triton path")

    monkeypatch.setattr(sace, "use_triton", lambda x, op: True)
    monkeypatch.setattr(sace._SizeAdaptiveCEFunction, "apply", refuse)
    logits = torch.randn(2, 3, 5, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 4))
    weight = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    loss = sace.size_adaptive_cross_entropy(logits, target, weight)
    (gw,) = torch.autograd.grad(loss, weight)
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0
    with pytest.raises(AssertionError, match="took the Triton path"):
        sace.size_adaptive_cross_entropy(logits, target, weight.detach())
