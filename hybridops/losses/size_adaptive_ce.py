"""Size-adaptive cross-entropy (lumbar paper Eq. 3): Triton kernels, host launcher, autograd.Function, module.

Forward, four launches and one read of the logits:
1. a memset of the class-area buffer;
2. ``_sace_hist_kernel``: per-image (or per-batch) class pixel counts from the labels only, one
   integer atomic per class per program (integer sums are order-independent: deterministic), and a
   count of labels out of range;
3. ``_sace_fwd_kernel``: one pass over the logits ``[C, block of pixels]``: log-sum-exp, the NLL of the
   label, the pixel weight ``(1 - S_c) ** alpha * weight[c]`` from the counts, per-block partial sums
   (and the per-pixel loss for ``reduction='none'``);
4. ``_sace_finalize_kernel``: sums the partials in a fixed order and divides by the normaliser.

Backward, one pass: ``_sace_bwd_kernel`` recomputes the softmax from the logits and writes
``w * (softmax - onehot) * grad_output / norm``. (Liger-Kernel writes the gradient during the forward
instead; that costs an extra write and read of a logits-sized tensor whenever ``grad_output`` may
differ from 1, which cannot be known without a device sync, and holds that tensor in memory.)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from hybridops.losses import _reference
from hybridops.losses._common import (cdiv, check_float_input, check_reduction, check_same_device,
                                      check_scalar, empty, empty_like, launch, next_pow2, tl, triton,
                                      use_triton)
from hybridops.losses.bce_dice import _extra_repr

_OP = "hybridops.losses.size_adaptive_cross_entropy"
NORMALIZE = ("pixels", "weights")
_MAX_CLASSES = 1024       # more classes than this run the PyTorch path
_MAX_TILE = 8192          # logits per program in the main kernels (C_PAD x BLOCK)
_MAX_BLOCK = 1024         # pixels per program (power of 2); tests lower it
_FINALIZE_BLOCK = 256


@triton.jit
def _labels(t_ptr, base, offs, pmask, C, ignore_index):
    """Labels of a block as int32 class ids (0 where not a valid class) with the valid/bad masks."""
    t = tl.load(t_ptr + base + offs, mask=pmask, other=0).to(tl.int64)
    valid = pmask & (t != ignore_index)
    good = valid & (t >= 0) & (t < C)
    bad = valid & ((t < 0) | (t >= C))
    return tl.where(good, t, 0).to(tl.int32), good, bad


@triton.jit
def _class_factors(hist_ptr, w_ptr, row, C, alpha, cls, cmask, HAS_WEIGHT: tl.constexpr):
    """``(1 - S_c) ** alpha * weight[c]`` for one row of class counts; ``1 - S_c = (total - n_c) / total``."""
    cnt = tl.load(hist_ptr + row * C + cls, mask=cmask, other=0).to(tl.float32)
    total = tl.sum(cnt, axis=0)
    base = (total - cnt) / tl.maximum(total, 1.0)
    zero_pow = tl.where(alpha == 0.0, 1.0, 0.0)  # 0 ** alpha (0 ** 0 == 1)
    f = tl.where(base > 0.0, tl.exp2(alpha * tl.log2(tl.maximum(base, 1e-30))), zero_pow)
    if HAS_WEIGHT:
        f = f * tl.load(w_ptr + cls, mask=cmask, other=0.0).to(tl.float32)
    return f


@triton.jit
def _sace_hist_kernel(t_ptr, hist_ptr, bad_ptr, HW, C, ignore_index, PER_IMAGE: tl.constexpr,
                      C_PAD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < HW
    t, good, bad = _labels(t_ptr, n.to(tl.int64) * HW, offs, pmask, C, ignore_index)
    cls = tl.arange(0, C_PAD)
    onehot = (cls[:, None] == t[None, :]) & good[None, :]
    counts = tl.sum(onehot.to(tl.int32), axis=1)
    row = n if PER_IMAGE else 0
    tl.atomic_add(hist_ptr + row * C + cls, counts, mask=(cls < C) & (counts > 0))
    n_bad = tl.sum(bad.to(tl.int32), axis=0)
    tl.atomic_add(bad_ptr, n_bad, mask=n_bad > 0)


@triton.jit
def _logits_block(x_ptr, n, C, HW, cls, cmask, offs, pmask):
    ptrs = x_ptr + n.to(tl.int64) * C * HW + cls[:, None] * HW + offs[None, :]
    x = tl.load(ptrs, mask=cmask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
    x = tl.where(cmask[:, None], x, float("-inf"))
    mx = tl.max(x, axis=0)
    e = tl.exp(x - mx[None, :])
    return x, mx, e, tl.sum(e, axis=0)


@triton.jit
def _sace_fwd_kernel(x_ptr, t_ptr, hist_ptr, w_ptr, part_ptr, loss_ptr, HW, C, ignore_index, alpha, P,
                     HAS_WEIGHT: tl.constexpr, PER_IMAGE: tl.constexpr, STORE_PIX: tl.constexpr,
                     C_PAD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    cls = tl.arange(0, C_PAD)
    cmask = cls < C
    factor = _class_factors(hist_ptr, w_ptr, n if PER_IMAGE else 0, C, alpha, cls, cmask, HAS_WEIGHT)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < HW
    t, good, bad = _labels(t_ptr, n.to(tl.int64) * HW, offs, pmask, C, ignore_index)
    x, mx, e, se = _logits_block(x_ptr, n, C, HW, cls, cmask, offs, pmask)
    onehot = cls[:, None] == t[None, :]
    x_t = tl.sum(tl.where(onehot, x, 0.0), axis=0)
    w_t = tl.sum(tl.where(onehot, factor[:, None], 0.0), axis=0)
    loss = tl.where(good, w_t * (mx + tl.log(se) - x_t), 0.0)
    loss = tl.where(bad, float("nan"), loss)
    if STORE_PIX:
        tl.store(loss_ptr + n.to(tl.int64) * HW + offs, loss.to(loss_ptr.dtype.element_ty), mask=pmask)
    else:
        tl.store(part_ptr + n.to(tl.int64) * P + pid, tl.sum(loss, axis=0))


@triton.jit
def _sace_finalize_kernel(part_ptr, hist_ptr, w_ptr, bad_ptr, out_ptr, norm_ptr, n_part, rows, C, alpha,
                          MEAN: tl.constexpr, BY_WEIGHT: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                          C_PAD: tl.constexpr, BLOCK_P: tl.constexpr):
    r = tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_P], tl.float32)
    for p0 in range(0, n_part, BLOCK_P):
        acc += tl.load(part_ptr + p0 + r, mask=p0 + r < n_part, other=0.0)
    total = tl.sum(acc, axis=0)
    norm = tl.full([], 1.0, tl.float32)
    if MEAN:
        cls = tl.arange(0, C_PAD)
        cmask = cls < C
        nv = tl.zeros([C_PAD], tl.float32)
        for row in range(rows):
            cnt = tl.load(hist_ptr + row * C + cls, mask=cmask, other=0).to(tl.float32)
            if BY_WEIGHT:
                cnt = cnt * _class_factors(hist_ptr, w_ptr, row, C, alpha, cls, cmask, HAS_WEIGHT)
            nv += cnt
        norm = tl.sum(nv, axis=0)
        norm = tl.where(norm > 0.0, norm, 1.0)  # nothing to average: the sum is 0, so is the loss
    loss = total / norm
    loss = tl.where(tl.load(bad_ptr) > 0, float("nan"), loss)
    tl.store(out_ptr, loss.to(out_ptr.dtype.element_ty))
    tl.store(norm_ptr, norm)


@triton.jit
def _sace_bwd_kernel(x_ptr, t_ptr, hist_ptr, w_ptr, norm_ptr, go_ptr, dx_ptr, HW, C, ignore_index, alpha,
                     HAS_WEIGHT: tl.constexpr, PER_IMAGE: tl.constexpr, GO_PER_PIXEL: tl.constexpr,
                     C_PAD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    cls = tl.arange(0, C_PAD)
    cmask = cls < C
    factor = _class_factors(hist_ptr, w_ptr, n if PER_IMAGE else 0, C, alpha, cls, cmask, HAS_WEIGHT)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < HW
    t, good, bad = _labels(t_ptr, n.to(tl.int64) * HW, offs, pmask, C, ignore_index)
    x, mx, e, se = _logits_block(x_ptr, n, C, HW, cls, cmask, offs, pmask)
    onehot = cls[:, None] == t[None, :]
    w_t = tl.sum(tl.where(onehot, factor[:, None], 0.0), axis=0)
    if GO_PER_PIXEL:
        go = tl.load(go_ptr + n.to(tl.int64) * HW + offs, mask=pmask, other=0.0).to(tl.float32)
    else:
        go = tl.load(go_ptr).to(tl.float32) / tl.load(norm_ptr)
    coef = tl.where(good, w_t * go, 0.0)
    coef = tl.where(bad, float("nan"), coef)
    d = (e / se[None, :] - onehot.to(tl.float32)) * coef[None, :]
    ptrs = dx_ptr + n.to(tl.int64) * C * HW + cls[:, None] * HW + offs[None, :]
    tl.store(ptrs, d.to(dx_ptr.dtype.element_ty), mask=cmask[:, None] & pmask[None, :])


def _tiling(c: int, hw: int):
    c_pad = next_pow2(c)
    block = max(16, min(_MAX_BLOCK, _MAX_TILE // c_pad, next_pow2(hw)))
    num_warps = 8 if c_pad * block >= 4096 else 4
    return c_pad, block, num_warps


class _SizeAdaptiveCEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, weight: Optional[Tensor], alpha: float, ignore_index: int,
                reduction: str, per_image: bool, normalize: str, check_labels: bool) -> Tensor:
        x = input.contiguous()
        t = target.contiguous()
        n, c = x.shape[0], x.shape[1]
        hw = x.numel() // (n * c)
        c_pad, block, num_warps = _tiling(c, hw)
        chunks = cdiv(hw, block)
        rows = n if per_image else 1
        has_weight = weight is not None
        w = weight.contiguous() if has_weight else x  # dummy pointer when there is no weight
        buf = torch.zeros(rows * c + 1, dtype=torch.int32, device=x.device)
        hist, bad = buf[:-1], buf[-1:]
        hist_block = max(16, min(2048, 16384 // c_pad, next_pow2(hw)))
        launch(_sace_hist_kernel, (cdiv(hw, hist_block), n), t, hist, bad, hw, c, ignore_index,
               PER_IMAGE=per_image, C_PAD=c_pad, BLOCK=hist_block, num_warps=4)
        if check_labels and int(bad.item()) > 0:  # one device sync, only when asked for
            raise ValueError(f"{_OP}: target holds {int(bad.item())} class indices outside [0, {c}) that are "
                             f"not ignore_index ({ignore_index})")
        store_pix = reduction == "none"
        if store_pix:
            out = empty(t.shape, input.dtype, x.device)
            part = out  # unused
        else:
            out = empty((), input.dtype, x.device)
            part = empty(n * chunks, torch.float32, x.device)
        launch(_sace_fwd_kernel, (chunks, n), x, t, hist, w, part, out, hw, c, ignore_index, alpha, chunks,
               HAS_WEIGHT=has_weight, PER_IMAGE=per_image, STORE_PIX=store_pix, C_PAD=c_pad, BLOCK=block,
               num_warps=num_warps)
        norm = empty(1, torch.float32, x.device)
        if not store_pix:
            launch(_sace_finalize_kernel, (1,), part, hist, w, bad, out, norm, n * chunks, rows, c, alpha,
                   MEAN=reduction == "mean", BY_WEIGHT=normalize == "weights", HAS_WEIGHT=has_weight,
                   C_PAD=c_pad, BLOCK_P=_FINALIZE_BLOCK, num_warps=4)
        ctx.save_for_backward(x, t, hist, norm, weight if has_weight else None)
        ctx.cfg = (alpha, ignore_index, per_image, store_pix, has_weight)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, t, hist, norm, weight = ctx.saved_tensors
        alpha, ignore_index, per_image, store_pix, has_weight = ctx.cfg
        n, c = x.shape[0], x.shape[1]
        hw = x.numel() // (n * c)
        c_pad, block, num_warps = _tiling(c, hw)
        dx = empty_like(x)
        launch(_sace_bwd_kernel, (cdiv(hw, block), n), x, t, hist, weight if has_weight else x, norm,
               grad_out.contiguous(), dx, hw, c, ignore_index, alpha, HAS_WEIGHT=has_weight, PER_IMAGE=per_image,
               GO_PER_PIXEL=store_pix, C_PAD=c_pad, BLOCK=block, num_warps=num_warps)
        return dx, None, None, None, None, None, None, None, None


def _check_sace_args(input, target, weight, alpha, ignore_index, reduction, normalize, op):
    check_float_input(input, "input", op, 2)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{op}: target must be an integer tensor of class indices, got {target.dtype}")
    if target.dim() != input.dim() - 1:
        raise ValueError(f"{op}: target must be {input.dim() - 1}-D (input without the class dimension), got "
                         f"{target.dim()}-D with shape {tuple(target.shape)}")
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"{op}: target must have shape {expected} (input {tuple(input.shape)} without dim 1), got "
                         f"{tuple(target.shape)}")
    check_same_device(target, "target", input, op)
    if input.shape[1] == 0:
        raise ValueError(f"{op}: input must have at least one class (dim 1), got shape {tuple(input.shape)}")
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"{op}: weight must be a torch.Tensor or None, got {type(weight).__name__}")
        if not weight.is_floating_point():
            raise TypeError(f"{op}: weight must be a floating point tensor, got {weight.dtype}")
        if tuple(weight.shape) != (input.shape[1],):
            raise ValueError(f"{op}: weight must have shape ({input.shape[1]},), one entry per class, got "
                             f"{tuple(weight.shape)}")
        check_same_device(weight, "weight", input, op)
    alpha = check_scalar(alpha, "alpha", op, 0.0)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"{op}: ignore_index must be an int, got {type(ignore_index).__name__}")
    check_reduction(reduction, op)
    if normalize not in NORMALIZE:
        raise ValueError(f"{op}: normalize must be one of {NORMALIZE}, got {normalize!r}")
    return alpha


def _check_label_range(input: Tensor, target: Tensor, ignore_index: int, op: str) -> None:
    c = input.shape[1]
    t = target[target != ignore_index]
    bad = t[(t < 0) | (t >= c)]
    if bad.numel() > 0:
        raise ValueError(f"{op}: target holds {bad.numel()} class indices outside [0, {c}) that are not "
                         f"ignore_index ({ignore_index}), e.g. {int(bad[0])}")


def size_adaptive_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, *,
                                alpha: float = 1.0, ignore_index: int = -100, reduction: str = "mean",
                                per_image: bool = True, normalize: str = "pixels",
                                check_labels: bool = False) -> Tensor:
    r"""Size-adaptive cross-entropy (lumbar paper, Eq. 3), fused.

    Every pixel's cross-entropy is weighted by how small its class is::

        w_pix = (1 - S_c) ** alpha * weight[c]       c = the pixel's label
        S_c   = (pixels labelled c) / (pixels not ignored)   of the pixel's image (per_image=True)
                                                             or of the whole batch (per_image=False)
        L     = sum_pix w_pix * (-log_softmax(input)[c]) / norm

    ``1 - S_c`` is computed as ``(total - count_c) / total``, so a class that fills an image gets
    weight exactly 0 for ``alpha > 0`` (and 1 for ``alpha == 0``): an image that is all one class
    contributes 0, never NaN. ``alpha = 0`` without ``weight`` is plain cross-entropy.

    Normalisation (``reduction='mean'``): ``normalize='pixels'`` (default, the paper's ``1/N_pix``)
    divides by the number of non-ignored pixels in the batch, so ``alpha = 0`` equals
    :func:`torch.nn.functional.cross_entropy` without ``weight``; ``normalize='weights'`` divides by
    the sum of the pixel weights ``w_pix``, as ``nn.CrossEntropyLoss`` does with ``weight`` (so
    ``alpha = 0`` equals it with ``weight`` too). When the normaliser is 0 (every pixel ignored, or
    every weight 0) the loss is 0 (``nn.CrossEntropyLoss`` would return NaN).

    Args:
        input: ``[N, C, *]`` logits (``[N, C, H, W]`` for images); fp32, fp16, bf16 (math in fp32) or fp64.
        target: ``[N, *]`` integer class indices in ``[0, C)`` or ``ignore_index``.
        weight: optional ``[C]`` class weights, multiplied into ``w_pix``.
        alpha: the exponent (>= 0; 1 in the paper).
        ignore_index: label excluded from the class areas, the loss and the normaliser.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` (``'none'`` gives the weighted loss per pixel, ``[N, *]``).
        per_image: class areas per image (default) or over the whole batch.
        normalize: ``'pixels'`` | ``'weights'``, see above.
        check_labels: see "Label checks".

    Returns:
        A scalar (``[N, *]`` for ``reduction='none'``) in the dtype of ``input``.

    Label checks and device syncs: shapes, dtypes, ranks, ``alpha`` and the other arguments are
    checked on the host from metadata (no sync). On CPU tensors labels outside ``[0, C)`` that are
    not ``ignore_index`` raise ``ValueError``. On CUDA the kernels never read out of bounds and count
    such labels on the device without a sync: the loss (and the gradient of those pixels) becomes
    NaN; pass ``check_labels=True`` to raise ``ValueError`` instead, at the cost of one device sync.

    CUDA tensors with at most 1024 classes run the Triton kernels (logits read once in the forward and
    once in the backward; deterministic); CPU tensors the same math in PyTorch.

    Example:
        >>> logits = torch.randn(4, 8, 128, 128, requires_grad=True)
        >>> labels = torch.randint(0, 8, (4, 128, 128))
        >>> loss = hybridops.losses.size_adaptive_cross_entropy(logits, labels, alpha=1.0)
        >>> loss.backward()
    """
    alpha = _check_sace_args(input, target, weight, alpha, ignore_index, reduction, normalize, _OP)
    if use_triton(input, _OP) and input.shape[1] <= _MAX_CLASSES:
        return _SizeAdaptiveCEFunction.apply(input, target, weight, alpha, ignore_index, reduction, bool(per_image),
                                             normalize, bool(check_labels))
    _check_label_range(input, target, ignore_index, _OP)
    return _reference.size_adaptive_cross_entropy(input, target, weight, alpha, ignore_index, reduction,
                                                  bool(per_image), normalize)


class SizeAdaptiveCELoss(nn.Module):
    """Module form of :func:`size_adaptive_cross_entropy` (same arguments; ``weight`` is a buffer, like
    ``nn.CrossEntropyLoss``); ``forward(input, target)``.

    Example:
        >>> criterion = hybridops.losses.SizeAdaptiveCELoss(alpha=1.0, ignore_index=255)
        >>> loss = criterion(torch.randn(4, 8, 128, 128), torch.randint(0, 8, (4, 128, 128)))
    """

    def __init__(self, weight: Optional[Tensor] = None, alpha: float = 1.0, ignore_index: int = -100,
                 reduction: str = "mean", per_image: bool = True, normalize: str = "pixels",
                 check_labels: bool = False) -> None:
        super().__init__()
        op = "hybridops.losses.SizeAdaptiveCELoss"
        self.alpha = check_scalar(alpha, "alpha", op, 0.0)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"{op}: ignore_index must be an int, got {type(ignore_index).__name__}")
        check_reduction(reduction, op)
        if normalize not in NORMALIZE:
            raise ValueError(f"{op}: normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.per_image = per_image
        self.normalize = normalize
        self.check_labels = check_labels

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return size_adaptive_cross_entropy(input, target, self.weight, alpha=self.alpha,
                                           ignore_index=self.ignore_index, reduction=self.reduction,
                                           per_image=self.per_image, normalize=self.normalize,
                                           check_labels=self.check_labels)

    def extra_repr(self) -> str:
        extra = {"weight": f"<{tuple(self.weight.shape)}>"} if self.weight is not None else {}
        return _extra_repr(self, dict(alpha=1.0, ignore_index=-100, reduction="mean", per_image=True,
                                      normalize="pixels", check_labels=False), extra)
