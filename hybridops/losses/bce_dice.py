"""BCE + Dice loss (HybridNetSeg Eq. 4): Triton kernels, host launcher, autograd.Function, module.

Forward: one kernel reads the logits and labels once and writes, per tile, the partial sums
(sum g, sum BCE, sum p*g, sum p) of each row it covers; one single-program kernel reduces them in a
fixed order (deterministic), forms the loss and keeps the global sums for the backward. Backward: one
element-wise kernel computes dL/dz from z, g and the saved sums. The shared device helpers and the
finalize kernel are also used by the multi-scale mixed loss (``mixed.py``).

Rows: with ``per_image=True`` each image is a row; otherwise the whole batch is one row (one Dice
over the batch), so ``[N, 1]`` inputs form one long row. Small rows are packed several to a program
(``_common.tile``); programs are numbered on grid axis 0 only (no 65,535 limit on the batch).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hybridops.losses import _reference
from hybridops.losses._common import (Tiling, check_binary_target, check_float_input, check_reduction,
                                      check_scalar, empty, empty_like, label_view, launch, next_pow2,
                                      num_warps_for, program_tile, tile, tl, triton, use_triton)
from hybridops.nn._repr import settings_repr

_OP = "hybridops.losses.bce_dice_loss"
# Largest number of elements one program reduces (a power of 2). Tests lower it to cover several
# blocks per image on tiny tensors.
_MAX_BLOCK = 2048
# Partial-sum entries (rows x partials x sums, padded) the finalize kernel adds per step; tests lower it.
_FINALIZE_BLOCK = 4096


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
def _pick(s, cols, j):
    """Column ``j`` of the ``[rows, S_PAD]`` sums ``s``: ``[rows]``."""
    return tl.sum(tl.where(cols[None, :] == j, s, 0.0), axis=1)


@triton.jit
def _combine(s, cols, lam, inv_count, bce_w, smooth, T: tl.constexpr):
    """sum_t lam[t] * (bce_w * mean BCE_t + (1 - bce_w) * (1 - Dice_t)) for each row of the sums ``s``."""
    sum_g = _pick(s, cols, 0)
    loss = tl.zeros(sum_g.shape, tl.float32)
    for t in tl.static_range(T):
        sum_bce = _pick(s, cols, 1 + 3 * t)
        sum_pg = _pick(s, cols, 2 + 3 * t)
        sum_p = _pick(s, cols, 3 + 3 * t)
        dice = (2.0 * sum_pg + smooth) / (sum_p + sum_g + smooth)
        loss += lam[t] * (bce_w * sum_bce * inv_count + (1.0 - bce_w) * (1.0 - dice))
    return loss


@triton.jit
def _finalize_kernel(part_ptr, sums_ptr, out_ptr, lam, ROWS, P, inv_count, bce_w, smooth, out_scale,
                     T: tl.constexpr, S_PAD: tl.constexpr, STORE_EACH: tl.constexpr, BR: tl.constexpr,
                     BP: tl.constexpr):
    """One program: partial sums ``[ROWS, P, S]`` (S = 1 + 3T) -> sums ``[ROWS, S]`` and the loss.

    Adds ``[BR rows, BP partials]`` at a time, in a fixed order, so the result is deterministic. The
    loss is the sum over rows of each row's loss (stored per row with ``STORE_EACH``), times ``out_scale``.
    """
    S = 1 + 3 * T
    cols = tl.arange(0, S_PAD)
    col_ok = cols < S
    total = tl.full([], 0.0, tl.float32)
    for r0 in range(0, ROWS, BR):
        row = r0 + tl.arange(0, BR)
        row_ok = row < ROWS
        acc = tl.zeros([BR, BP, S_PAD], tl.float32)
        for p0 in range(0, P, BP):
            p = p0 + tl.arange(0, BP)
            idx = (row.to(tl.int64)[:, None, None] * P + p[None, :, None]) * S + cols[None, None, :]
            ok = row_ok[:, None, None] & (p < P)[None, :, None] & col_ok[None, None, :]
            acc += tl.load(part_ptr + idx, mask=ok, other=0.0)
        s = tl.sum(acc, axis=1)
        tl.store(sums_ptr + row.to(tl.int64)[:, None] * S + cols[None, :], s,
                 mask=row_ok[:, None] & col_ok[None, :])
        loss = tl.where(row_ok, _combine(s, cols, lam, inv_count, bce_w, smooth, T), 0.0)
        if STORE_EACH:
            tl.store(out_ptr + row, (loss * out_scale).to(out_ptr.dtype.element_ty), mask=row_ok)
        total += tl.sum(loss, axis=0)
    if not STORE_EACH:
        tl.store(out_ptr, (total * out_scale).to(out_ptr.dtype.element_ty))


def finalize(part: Tensor, out: Tensor, lam: tuple, rows: int, chunks: int, inv_count: float, bce_weight: float,
             smooth: float, out_scale: float, store_each: bool) -> Tensor:
    """Launches ``_finalize_kernel`` on the partials ``[rows, chunks, 1 + 3T]``; returns the sums ``[rows, 1 + 3T]``."""
    t = len(lam)
    s = 1 + 3 * t
    s_pad = next_pow2(s)
    sums = empty((rows, s), torch.float32, part.device)
    step = max(1, _FINALIZE_BLOCK // s_pad)
    fin = tile(rows, chunks, step, step)
    launch(_finalize_kernel, (1,), part, sums, out, lam, rows, chunks, inv_count, bce_weight, smooth, out_scale,
           T=t, S_PAD=s_pad, STORE_EACH=store_each, BR=fin.rows_per, BP=fin.cols_per, num_warps=4)
    return sums


# ----------------------------------------------------------------------------------------------
# BCE + Dice kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _row_tile(x_ptr, g_ptr, ROWS, M, COL_BLOCKS, R: tl.constexpr, BLOCK: tl.constexpr):
    """This program's tile of the ``[ROWS, M]`` view: z and g (fp32, ``[R, BLOCK]``), its mask, its rows,
    the offset of its first element (int64) and the offsets from there (int32 unless M >= 2**31)."""
    rb, cb = program_tile(COL_BLOCKS)
    row = rb * R + tl.arange(0, R)
    col0 = cb.to(tl.int64) * BLOCK
    start = (rb * R).to(tl.int64) * M + col0
    col_left = tl.minimum(M - col0, BLOCK).to(tl.int32)
    mask = (row < ROWS)[:, None] & (tl.arange(0, BLOCK) < col_left)[None, :]
    offs = tl.arange(0, R)[:, None] * M + tl.arange(0, BLOCK)[None, :]
    z = tl.load(x_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + start + offs, mask=mask, other=0).to(tl.float32)
    return z, g, mask, row, start, offs, cb


@triton.jit
def _bce_dice_fwd_kernel(x_ptr, g_ptr, part_ptr, ROWS, M, COL_BLOCKS, FROM_LOGITS: tl.constexpr, R: tl.constexpr,
                         BLOCK: tl.constexpr):
    """Partial sums (g, BCE, p*g, p) of each row of this program's tile, written to part[row, column block]."""
    z, g, mask, row, _, _, cb = _row_tile(x_ptr, g_ptr, ROWS, M, COL_BLOCKS, R, BLOCK)
    p, bce = _prob_and_bce(z, g, FROM_LOGITS)
    p = tl.where(mask, p, 0.0)
    out = part_ptr + (row.to(tl.int64) * COL_BLOCKS + cb) * 4
    row_ok = row < ROWS
    tl.store(out, tl.sum(g, axis=1), mask=row_ok)
    tl.store(out + 1, tl.sum(tl.where(mask, bce, 0.0), axis=1), mask=row_ok)
    tl.store(out + 2, tl.sum(p * g, axis=1), mask=row_ok)
    tl.store(out + 3, tl.sum(p, axis=1), mask=row_ok)


@triton.jit
def _bce_dice_bwd_kernel(x_ptr, g_ptr, sums_ptr, go_ptr, dx_ptr, ROWS, M, COL_BLOCKS, bce_scale, dice_scale, smooth,
                         go_scale, GO_PER_ROW: tl.constexpr, FROM_LOGITS: tl.constexpr, R: tl.constexpr,
                         BLOCK: tl.constexpr):
    z, g, mask, row, start, offs, _ = _row_tile(x_ptr, g_ptr, ROWS, M, COL_BLOCKS, R, BLOCK)
    row_ok = row < ROWS
    srow = sums_ptr + row.to(tl.int64) * 4
    sum_g = tl.load(srow, mask=row_ok, other=0.0)
    sum_pg = tl.load(srow + 2, mask=row_ok, other=0.0)
    sum_p = tl.load(srow + 3, mask=row_ok, other=0.0)
    U = (sum_p + sum_g + smooth)[:, None]
    V = (2.0 * sum_pg + smooth)[:, None]
    if GO_PER_ROW:
        go = tl.load(go_ptr + row, mask=row_ok, other=0.0).to(tl.float32)[:, None] * go_scale
    else:
        go = tl.load(go_ptr).to(tl.float32) * go_scale
    p, _ = _prob_and_bce(z, g, FROM_LOGITS)
    d = _term_grad(p, g, bce_scale, dice_scale, U, V, FROM_LOGITS)
    tl.store(dx_ptr + start + offs, (go * d).to(dx_ptr.dtype.element_ty), mask=mask)


def _plan(n: int, m: int, per_image: bool) -> Tiling:
    """Rows (images, or the whole batch as one row) and their tiling."""
    rows, cols = (n, m) if per_image else (1, n * m)
    return tile(rows, cols, _MAX_BLOCK, _MAX_BLOCK)


class _BCEDiceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, bce_weight: float, smooth: float, from_logits: bool,
                per_image: bool, reduction: str) -> Tensor:
        x = input.contiguous()
        g = label_view(target)
        n = x.shape[0]
        plan = _plan(n, x.numel() // n, per_image)
        part = empty((plan.rows, plan.col_blocks, 4), torch.float32, x.device)
        launch(_bce_dice_fwd_kernel, plan.grid, x, g, part, plan.rows, plan.cols, plan.col_blocks,
               FROM_LOGITS=from_logits, R=plan.rows_per, BLOCK=plan.cols_per, num_warps=num_warps_for(plan.size))
        store_each = reduction == "none"
        out = empty((n,) if store_each else (), input.dtype, x.device)
        inv_count = 1.0 / plan.cols                     # 1 / elements of an image, or of the batch
        out_scale = 1.0 / n if (per_image and reduction == "mean") else 1.0
        sums = finalize(part, out, (1.0,), plan.rows, plan.col_blocks, inv_count, bce_weight, smooth, out_scale,
                        store_each)
        ctx.save_for_backward(x, g, sums)
        ctx.cfg = (bce_weight, smooth, from_logits, store_each, inv_count, out_scale, plan)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, g, sums = ctx.saved_tensors
        bce_weight, smooth, from_logits, store_each, inv_count, out_scale, plan = ctx.cfg
        dx = empty_like(x)
        launch(_bce_dice_bwd_kernel, plan.grid, x, g, sums, grad_out.contiguous(), dx, plan.rows, plan.cols,
               plan.col_blocks, bce_weight * inv_count, 1.0 - bce_weight, smooth, out_scale, GO_PER_ROW=store_each,
               FROM_LOGITS=from_logits, R=plan.rows_per, BLOCK=plan.cols_per, num_warps=num_warps_for(plan.size))
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
        return settings_repr(self, dict(bce_weight=0.5, smooth=1.0, from_logits=True, per_image=False,
                                        reduction="mean"))
