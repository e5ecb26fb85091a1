"""BCE + Dice loss (HybridNetSeg Eq. 4): Triton kernels, host launcher, autograd.Function, module.

Forward: one kernel reads the logits and labels once and writes, per block of pixels, the partial
sums (sum g, sum BCE, sum p*g, sum p); one single-program kernel reduces them in a fixed order
(deterministic), forms the loss and keeps the global sums for the backward. Backward: one
element-wise kernel computes dL/dz from z, g and the saved sums. The shared device helpers and the
finalize kernel are also used by the multi-scale mixed loss (``mixed.py``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from hybridops.losses import _reference
from hybridops.losses._common import (cdiv, check_binary_target, check_float_input, check_reduction,
                                      check_scalar, empty, empty_like, label_view, launch, next_pow2,
                                      num_warps_for, tl, triton, use_triton)

_OP = "hybridops.losses.bce_dice_loss"
# Largest number of elements one program reduces (a power of 2). Tests lower it to cover several
# blocks per image on tiny tensors.
_MAX_BLOCK = 2048
_FINALIZE_BLOCK = 128


# ----------------------------------------------------------------------------------------------
# Device helpers (shared with mixed.py)
# ----------------------------------------------------------------------------------------------
@triton.jit
def _prob_and_bce(z, g, FROM_LOGITS: tl.constexpr):
    """p and the element-wise BCE, in fp32; stable from logits, torch's log clamp (-100) from p."""
    if FROM_LOGITS:
        e = tl.exp(-tl.abs(z))
        log1pe = tl.where(e < 1e-4, e * (1.0 - 0.5 * e), tl.log(1.0 + e))
        bce = tl.maximum(z, 0.0) - z * g + log1pe
        inv = 1.0 / (1.0 + e)
        p = tl.where(z >= 0, inv, e * inv)
    else:
        p = z
        bce = -(g * tl.maximum(tl.log(p), -100.0) + (1.0 - g) * tl.maximum(tl.log(1.0 - p), -100.0))
    return p, bce


@triton.jit
def _term_grad(p, g, bce_scale, dice_scale, U, V, FROM_LOGITS: tl.constexpr):
    """d/dz of ``bce_scale * sum(BCE) + dice_scale * (1 - V / U)`` with V = 2 sum(pg) + s, U = sum(p) + sum(g) + s."""
    d_dice = dice_scale * (V - 2.0 * g * U) / (U * U)
    if FROM_LOGITS:
        return bce_scale * (p - g) + d_dice * (p * (1.0 - p))
    else:
        return bce_scale * (p - g) / tl.maximum(p * (1.0 - p), 1e-12) + d_dice


@triton.jit
def _pick(vec, cols, j):
    return tl.sum(tl.where(cols == j, vec, 0.0), axis=0)


@triton.jit
def _combine(s, cols, lam, inv_count, bce_w, smooth, T: tl.constexpr):
    """sum_t lam[t] * (bce_w * mean BCE_t + (1 - bce_w) * (1 - Dice_t)) from the sums vector ``s``."""
    sum_g = _pick(s, cols, 0)
    loss = tl.full([], 0.0, tl.float32)
    for t in tl.static_range(T):
        sum_bce = _pick(s, cols, 1 + 3 * t)
        sum_pg = _pick(s, cols, 2 + 3 * t)
        sum_p = _pick(s, cols, 3 + 3 * t)
        dice = (2.0 * sum_pg + smooth) / (sum_p + sum_g + smooth)
        loss += lam[t] * (bce_w * sum_bce * inv_count + (1.0 - bce_w) * (1.0 - dice))
    return loss


@triton.jit
def _finalize_kernel(part_ptr, sums_ptr, out_ptr, lam, N, P, inv_count, bce_w, smooth, out_scale,
                     T: tl.constexpr, S_PAD: tl.constexpr, PER_IMAGE: tl.constexpr, STORE_EACH: tl.constexpr,
                     BLOCK_P: tl.constexpr):
    """One program: partial sums ``[N, P, S]`` (S = 1 + 3T) -> sums (``[N or 1, S]``) and the loss.

    Reduces in a fixed order, so the result is deterministic.
    """
    S = 1 + 3 * T
    cols = tl.arange(0, S_PAD)
    rows = tl.arange(0, BLOCK_P)
    col_ok = cols < S
    total = tl.full([], 0.0, tl.float32)
    batch = tl.zeros([S_PAD], tl.float32)
    for n in range(N):
        acc = tl.zeros([BLOCK_P, S_PAD], tl.float32)
        for p0 in range(0, P, BLOCK_P):
            r = p0 + rows
            ptrs = part_ptr + (n * P + r)[:, None] * S + cols[None, :]
            acc += tl.load(ptrs, mask=(r < P)[:, None] & col_ok[None, :], other=0.0)
        s = tl.sum(acc, axis=0)
        if PER_IMAGE:
            tl.store(sums_ptr + n * S + cols, s, mask=col_ok)
            loss_n = _combine(s, cols, lam, inv_count, bce_w, smooth, T)
            if STORE_EACH:
                tl.store(out_ptr + n, (loss_n * out_scale).to(out_ptr.dtype.element_ty))
            total += loss_n
        else:
            batch += s
    if not PER_IMAGE:
        tl.store(sums_ptr + cols, batch, mask=col_ok)
        total = _combine(batch, cols, lam, inv_count, bce_w, smooth, T)
    if not STORE_EACH:
        tl.store(out_ptr, (total * out_scale).to(out_ptr.dtype.element_ty))


def finalize(part: Tensor, out: Tensor, lam: tuple, n: int, chunks: int, inv_count: float, bce_weight: float,
             smooth: float, out_scale: float, per_image: bool, store_each: bool) -> Tensor:
    """Launches ``_finalize_kernel``; returns the sums buffer ``[N or 1, 1 + 3T]`` (fp32)."""
    t = len(lam)
    s = 1 + 3 * t
    sums = empty((n if per_image else 1, s), torch.float32, part.device)
    launch(_finalize_kernel, (1,), part, sums, out, lam, n, chunks, inv_count, bce_weight, smooth, out_scale,
           T=t, S_PAD=next_pow2(s), PER_IMAGE=per_image, STORE_EACH=store_each,
           BLOCK_P=_FINALIZE_BLOCK, num_warps=4)
    return sums


# ----------------------------------------------------------------------------------------------
# BCE + Dice kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _bce_dice_fwd_kernel(x_ptr, g_ptr, part_ptr, M, P, FROM_LOGITS: tl.constexpr, BLOCK: tl.constexpr):
    """Program (pid, n): partial sums (g, BCE, p*g, p) of one block of image n, written to part[n, pid]."""
    pid = tl.program_id(0)
    n = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    base = n.to(tl.int64) * M
    z = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + base + offs, mask=mask, other=0).to(tl.float32)
    p, bce = _prob_and_bce(z, g, FROM_LOGITS)
    p = tl.where(mask, p, 0.0)
    out = part_ptr + (n.to(tl.int64) * P + pid) * 4
    tl.store(out, tl.sum(g, axis=0))
    tl.store(out + 1, tl.sum(tl.where(mask, bce, 0.0), axis=0))
    tl.store(out + 2, tl.sum(p * g, axis=0))
    tl.store(out + 3, tl.sum(p, axis=0))


@triton.jit
def _bce_dice_bwd_kernel(x_ptr, g_ptr, sums_ptr, go_ptr, dx_ptr, M, bce_scale, dice_scale, smooth, go_scale,
                         PER_IMAGE: tl.constexpr, GO_PER_IMAGE: tl.constexpr, FROM_LOGITS: tl.constexpr,
                         BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    row = n if PER_IMAGE else 0
    sum_g = tl.load(sums_ptr + row * 4)
    sum_pg = tl.load(sums_ptr + row * 4 + 2)
    sum_p = tl.load(sums_ptr + row * 4 + 3)
    U = sum_p + sum_g + smooth
    V = 2.0 * sum_pg + smooth
    go = tl.load(go_ptr + (n if GO_PER_IMAGE else 0)).to(tl.float32) * go_scale
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    base = n.to(tl.int64) * M
    z = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + base + offs, mask=mask, other=0).to(tl.float32)
    p, _ = _prob_and_bce(z, g, FROM_LOGITS)
    d = _term_grad(p, g, bce_scale, dice_scale, U, V, FROM_LOGITS)
    tl.store(dx_ptr + base + offs, (go * d).to(dx_ptr.dtype.element_ty), mask=mask)


def _block_for(m: int) -> int:
    return max(16, min(_MAX_BLOCK, next_pow2(m)))


class _BCEDiceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, bce_weight: float, smooth: float, from_logits: bool,
                per_image: bool, reduction: str) -> Tensor:
        x = input.contiguous()
        g = label_view(target)
        n = x.shape[0]
        m = x.numel() // n
        block = _block_for(m)
        chunks = cdiv(m, block)
        part = empty((n, chunks, 4), torch.float32, x.device)
        launch(_bce_dice_fwd_kernel, (chunks, n), x, g, part, m, chunks, FROM_LOGITS=from_logits, BLOCK=block,
               num_warps=num_warps_for(block))
        store_each = reduction == "none"
        out = empty((n,) if store_each else (), input.dtype, x.device)
        inv_count = 1.0 / m if per_image else 1.0 / (n * m)
        out_scale = 1.0 / n if (per_image and reduction == "mean") else 1.0
        sums = finalize(part, out, (1.0,), n, chunks, inv_count, bce_weight, smooth, out_scale, per_image,
                        store_each)
        ctx.save_for_backward(x, g, sums)
        ctx.cfg = (bce_weight, smooth, from_logits, per_image, store_each, inv_count, out_scale, block)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, g, sums = ctx.saved_tensors
        bce_weight, smooth, from_logits, per_image, store_each, inv_count, out_scale, block = ctx.cfg
        n = x.shape[0]
        m = x.numel() // n
        dx = empty_like(x)
        launch(_bce_dice_bwd_kernel, (cdiv(m, block), n), x, g, sums, grad_out.contiguous(), dx, m,
               bce_weight * inv_count, 1.0 - bce_weight, smooth, out_scale, PER_IMAGE=per_image,
               GO_PER_IMAGE=store_each, FROM_LOGITS=from_logits, BLOCK=block, num_warps=num_warps_for(block))
        return dx, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def check_bce_dice_options(bce_weight, smooth, per_image, reduction, op):
    bce_weight = check_scalar(bce_weight, "bce_weight", op, 0.0, 1.0)
    smooth = check_scalar(smooth, "smooth", op, 0.0)
    check_reduction(reduction, op)
    if not per_image and reduction != "mean":
        raise ValueError(f"{op}: reduction={reduction!r} needs per_image=True: with per_image=False the Dice "
                         "term is one value for the whole batch, so the loss is a single number (use "
                         "reduction='mean')")
    return bce_weight, smooth


def bce_dice_loss(input: Tensor, target: Tensor, *, bce_weight: float = 0.5, smooth: float = 1.0,
                  from_logits: bool = True, per_image: bool = False, reduction: str = "mean") -> Tensor:
    r"""BCE + Dice loss of HybridNetSeg (Eq. 4), fused.

    With ``p = sigmoid(input)`` (or ``p = input`` when ``from_logits=False``) and labels ``g``::

        L = bce_weight * mean(BCE(p, g)) + (1 - bce_weight) * (1 - (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth))

    BCE is computed stably from the logits (as :func:`torch.nn.functional.binary_cross_entropy_with_logits`;
    from probabilities with torch's log clamp at -100).

    Args:
        input: ``[N, *]`` logits (or probabilities with ``from_logits=False``), typically ``[N, 1, H, W]``;
            fp32, fp16, bf16 (math in fp32) or fp64.
        target: same shape as ``input``; binary (or soft) labels as float, bool or uint8/integer tensor.
            No gradient flows to it.
        bce_weight: ``w`` above (0.5 in the paper); the Dice term gets ``1 - w``.
        smooth: Laplace smoothing ``s`` in numerator and denominator of Dice (1 in the paper).
        from_logits: ``input`` holds logits (default) or probabilities in [0, 1].
        per_image: False (default, the authors' code): Dice and the BCE mean over the whole batch;
            True: the loss per image (BCE mean and Dice of each image), then ``reduction`` over images.
        reduction: ``'mean'`` | ``'sum'`` | ``'none'`` over the per-image losses (``'none'`` gives
            ``[N]``); with ``per_image=False`` only ``'mean'``.

    Returns:
        A scalar (``[N]`` for ``reduction='none'``) in the dtype of ``input``.

    CUDA tensors run the Triton kernels (one read of input and target in the forward, one in the
    backward; deterministic); CPU tensors the same math in PyTorch (``hybridops.losses._reference``).

    Example:
        >>> logits = torch.randn(2, 1, 64, 64, requires_grad=True)
        >>> labels = torch.rand(2, 1, 64, 64) > 0.5
        >>> loss = hybridops.losses.bce_dice_loss(logits, labels)
        >>> loss.backward()
    """
    check_float_input(input, "input", _OP, 2)
    check_binary_target(target, input, _OP)
    bce_weight, smooth = check_bce_dice_options(bce_weight, smooth, per_image, reduction, _OP)
    if use_triton(input, _OP):
        return _BCEDiceFunction.apply(input, target, bce_weight, smooth, bool(from_logits), bool(per_image),
                                      reduction)
    return _reference.bce_dice_loss(input, target, bce_weight, smooth, bool(from_logits), bool(per_image),
                                    reduction)


class BCEDiceLoss(nn.Module):
    """Module form of :func:`bce_dice_loss` (same arguments); ``forward(input, target)``.

    Example:
        >>> criterion = hybridops.losses.BCEDiceLoss()
        >>> loss = criterion(torch.randn(2, 1, 64, 64), torch.rand(2, 1, 64, 64) > 0.5)
    """

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0, from_logits: bool = True,
                 per_image: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        self.bce_weight, self.smooth = check_bce_dice_options(bce_weight, smooth, per_image, reduction,
                                                              "hybridops.losses.BCEDiceLoss")
        self.from_logits = from_logits
        self.per_image = per_image
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return bce_dice_loss(input, target, bce_weight=self.bce_weight, smooth=self.smooth,
                             from_logits=self.from_logits, per_image=self.per_image, reduction=self.reduction)

    def extra_repr(self) -> str:
        return _extra_repr(self, dict(bce_weight=0.5, smooth=1.0, from_logits=True, per_image=False,
                                      reduction="mean"))


def _extra_repr(module: nn.Module, defaults: dict, extra: Optional[dict] = None) -> str:
    parts = [f"{k}={getattr(module, k)!r}" for k, d in defaults.items() if getattr(module, k) != d]
    parts += [f"{k}={v}" for k, v in (extra or {}).items()]
    return ", ".join(parts)
