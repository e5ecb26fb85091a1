"""Size-adaptive cross-entropy (lumbar paper Eq. 3): Triton kernels, host launcher, autograd.Function, module.

Forward, four launches and one read of the logits:
1. a memset of the class-area buffer;
2. ``_sace_hist_kernel``: per-image (or per-batch) class pixel counts and valid-pixel totals from the
   labels only, integer atomics after a reduction inside the program (integer sums are
   order-independent: deterministic), and a count of labels out of range;
3. ``_sace_fwd_kernel``: one pass over the logits: log-sum-exp, the NLL of the label, the pixel weight
   ``(1 - S_c) ** alpha * weight[c]`` from the counts, per-program partial sums of the loss, the
   weights and the pixels (or the per-pixel loss for ``reduction='none'``);
4. ``_sace_finalize_kernel``: sums the partials in a fixed order and divides by the normaliser.

Backward, one pass: ``_sace_bwd_kernel`` recomputes the softmax from the logits and writes
``w * (softmax - onehot) * grad_output / norm``. (Liger-Kernel writes the gradient during the forward
instead; that costs an extra write and read of a logits-sized tensor whenever ``grad_output`` may
differ from 1, which cannot be known without a device sync, and holds that tensor in memory.)

Launch geometry: a program covers ``[classes, R images, HWP pixels]``: a block of pixels of one image,
or several whole images when they are small (``[N, C]`` logits: one pixel per image, thousands of
images per program). Programs are numbered on grid axis 0 (``_common.tile``). More than
``_CLASS_CHUNK`` classes are streamed in chunks with an online log-sum-exp; the forward then saves the
log-sum-exp per pixel so the backward still reads the logits once. Logit offsets are int32 unless
they can reach 2**31 (``(C - 1) * H * W`` for ``[1, 150, 4096, 4096]``), then int64 (``IDX64``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from hybridops.losses import _reference
from hybridops.losses._common import (Tiling, check_float_input, check_reduction, check_same_device,
                                      check_scalar, empty, empty_like, launch, needs_int64, next_pow2,
                                      prev_pow2, tile, tile_ids, tl, triton, use_triton)
from hybridops.nn._repr import settings_repr

_OP = "hybridops.losses.size_adaptive_cross_entropy"
NORMALIZE = ("pixels", "weights")
_MAX_TILE = 8192          # logits per program and class step in the main kernels (classes x pixels)
_MAX_BLOCK = 1024         # pixels per program (power of 2); tests lower it
_CLASS_CHUNK = 128        # classes per step; more are streamed with an online log-sum-exp; tests lower it
_HIST_TILE = 16384        # labels x classes per step in the histogram kernel
_FINALIZE_BLOCK = 256


@triton.jit
def _labels(t_ptr, pix, pmask, C, ignore_index):
    """Labels at ``t_ptr + pix`` as int32 class ids (0 where not a valid class), with the valid/bad masks."""
    t = tl.load(t_ptr + pix, mask=pmask, other=0).to(tl.int64)
    valid = pmask & (t != ignore_index)
    good = valid & (t >= 0) & (t < C)
    bad = valid & ((t < 0) | (t >= C))
    return tl.where(good, t, 0).to(tl.int32), good, bad


@triton.jit
def _logit_offsets(cls, r, q, CHW, HW, IDX64: tl.constexpr):
    """Offsets ``r * C*H*W + cls * H*W + q`` of logits ``[classes, images, pixels]`` from the tile's first
    image; int64 with ``IDX64`` (``cls * H*W`` alone passes 2**31 at 150 classes of 4096 x 4096)."""
    if IDX64:
        cls = cls.to(tl.int64)
        r = r.to(tl.int64)
    return r[None, :, None] * CHW + cls[:, None, None] * HW + q[None, None, :]


@triton.jit
def _load_logits(x_tile, cls, r, q, C, CHW, HW, pmask, IDX64: tl.constexpr):
    """Logits of classes ``cls`` at the tile's pixels, fp32 ``[CB, R, HWP]``; -inf for classes >= C."""
    cmask = (cls < C)[:, None, None]
    x = tl.load(x_tile + _logit_offsets(cls, r, q, CHW, HW, IDX64), mask=cmask & pmask[None, :, :],
                other=0.0).to(tl.float32)
    return tl.where(cmask, x, float("-inf"))


@triton.jit
def _pixel_weight(cnt_ptr, tot_ptr, w_ptr, img, t, good, C, alpha, HAS_WEIGHT: tl.constexpr,
                  PER_IMAGE: tl.constexpr):
    """``(1 - S_t) ** alpha * weight[t]`` per pixel (label ``t``, image ``img``: ``[R, 1]``, int64), 0 where
    not ``good``; ``1 - S_t = (total - n_t) / total`` from the class counts of the image (or batch)."""
    if PER_IMAGE:
        row = img
    else:
        row = 0
    cnt = tl.load(cnt_ptr + row * C + t, mask=good, other=0).to(tl.float32)
    total = tl.load(tot_ptr + row).to(tl.float32)
    base = (total - cnt) / tl.maximum(total, 1.0)
    zero_pow = tl.where(alpha == 0.0, 1.0, 0.0)  # 0 ** alpha (0 ** 0 == 1)
    f = tl.where(base > 0.0, tl.exp2(alpha * tl.log2(tl.maximum(base, 1e-30))), zero_pow)
    if HAS_WEIGHT:
        f = f * tl.load(w_ptr + t, mask=good, other=0.0).to(tl.float32)
    return tl.where(good, f, 0.0)


@triton.jit
def _tile_labels(t_ptr, cnt_ptr, tot_ptr, w_ptr, N, C, HW, COL_BLOCKS, ignore_index, alpha, HAS_WEIGHT: tl.constexpr,
                 PER_IMAGE: tl.constexpr, IDX64: tl.constexpr, R: tl.constexpr, HWP: tl.constexpr):
    """This program's pixels (``_common.tile_ids``: first image, image offsets ``r``, pixels ``q``, mask),
    the offset of its first pixel (int64) and the pixel offsets from it (``[R, HWP]``, int32 unless
    IDX64), the labels with their good/bad masks, and the pixel weights ``w_pix``."""
    first, r, q, pmask, _ = tile_ids(N, HW, COL_BLOCKS, IDX64, R, HWP)
    base = first * HW
    pix = r[:, None] * HW + q[None, :]
    t, good, bad = _labels(t_ptr + base, pix, pmask, C, ignore_index)
    img = tl.minimum(first + r, N - 1)[:, None]   # clamped: images past the end read image N - 1
    w_pix = _pixel_weight(cnt_ptr, tot_ptr, w_ptr, img, t, good, C, alpha, HAS_WEIGHT, PER_IMAGE)
    return first, r, q, pmask, base, pix, t, good, bad, w_pix


@triton.jit
def _sace_hist_kernel(t_ptr, cnt_ptr, tot_ptr, bad_ptr, N, HW, C, COL_BLOCKS, ignore_index,
                      PER_IMAGE: tl.constexpr, IDX64: tl.constexpr, CB: tl.constexpr, R: tl.constexpr,
                      HWP: tl.constexpr):
    first, r, q, pmask, _ = tile_ids(N, HW, COL_BLOCKS, IDX64, R, HWP)
    t, good, bad = _labels(t_ptr + first * HW, r[:, None] * HW + q[None, :], pmask, C, ignore_index)
    img = first + r
    for c0 in range(0, C, CB):
        cls = c0 + tl.arange(0, CB)
        onehot = ((cls[:, None, None] == t[None, :, :]) & good[None, :, :]).to(tl.int32)
        if PER_IMAGE:
            counts = tl.sum(onehot, axis=2)
            tl.atomic_add(cnt_ptr + img[None, :] * C + cls[:, None], counts.to(tl.int64), mask=counts > 0)
        else:
            counts = tl.sum(tl.sum(onehot, axis=2), axis=1)
            tl.atomic_add(cnt_ptr + cls, counts.to(tl.int64), mask=counts > 0)
    n_good = tl.sum(good.to(tl.int32), axis=1)
    if PER_IMAGE:
        tl.atomic_add(tot_ptr + img, n_good.to(tl.int64), mask=n_good > 0)
    else:
        n_all = tl.sum(n_good, axis=0)
        tl.atomic_add(tot_ptr, n_all.to(tl.int64), mask=n_all > 0)
    n_bad = tl.sum(tl.sum(bad.to(tl.int32), axis=1), axis=0)
    tl.atomic_add(bad_ptr, n_bad.to(tl.int64), mask=n_bad > 0)


@triton.jit
def _sace_fwd_kernel(x_ptr, t_ptr, cnt_ptr, tot_ptr, w_ptr, part_ptr, loss_ptr, lse_ptr, N, C, HW, CHW, COL_BLOCKS,
                     ignore_index, alpha, HAS_WEIGHT: tl.constexpr, PER_IMAGE: tl.constexpr, STORE_PIX: tl.constexpr,
                     STORE_LSE: tl.constexpr, IDX64: tl.constexpr, CB: tl.constexpr, R: tl.constexpr,
                     HWP: tl.constexpr):
    first, r, q, pmask, base, pix, t, good, bad, w_pix = _tile_labels(
        t_ptr, cnt_ptr, tot_ptr, w_ptr, N, C, HW, COL_BLOCKS, ignore_index, alpha, HAS_WEIGHT, PER_IMAGE, IDX64, R, HWP)
    x_tile = x_ptr + first * CHW
    m = tl.full([R, HWP], float("-inf"), tl.float32)   # online log-sum-exp over class chunks
    se = tl.zeros([R, HWP], tl.float32)
    x_t = tl.zeros([R, HWP], tl.float32)
    for c0 in range(0, C, CB):
        cls = c0 + tl.arange(0, CB)
        x = _load_logits(x_tile, cls, r, q, C, CHW, HW, pmask, IDX64)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        se = se * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[None, :, :]), axis=0)
        m = m_new
        x_t += tl.sum(tl.where(cls[:, None, None] == t[None, :, :], x, 0.0), axis=0)
    lse = m + tl.log(se)
    loss = tl.where(good, w_pix * (lse - x_t), 0.0)
    loss = tl.where(bad, float("nan"), loss)
    if STORE_LSE:
        tl.store(lse_ptr + base + pix, lse, mask=pmask)
    if STORE_PIX:
        tl.store(loss_ptr + base + pix, loss.to(loss_ptr.dtype.element_ty), mask=pmask)
    else:
        out = part_ptr + tl.program_id(0).to(tl.int64) * 3
        tl.store(out, tl.sum(tl.sum(loss, axis=1), axis=0))
        tl.store(out + 1, tl.sum(tl.sum(w_pix, axis=1), axis=0))
        tl.store(out + 2, tl.sum(tl.sum(good.to(tl.float32), axis=1), axis=0))


@triton.jit
def _sace_finalize_kernel(part_ptr, bad_ptr, out_ptr, norm_ptr, n_part, MEAN: tl.constexpr,
                          BY_WEIGHT: tl.constexpr, BLOCK_P: tl.constexpr):
    """Partials ``[n_part, 3]`` (loss, weight, pixel sums), added in a fixed order -> loss and normaliser."""
    p = tl.arange(0, BLOCK_P)
    cols = tl.arange(0, 4)
    acc = tl.zeros([BLOCK_P, 4], tl.float32)
    for p0 in range(0, n_part, BLOCK_P):
        rows = p0 + p
        acc += tl.load(part_ptr + rows.to(tl.int64)[:, None] * 3 + cols[None, :],
                       mask=(rows < n_part)[:, None] & (cols < 3)[None, :], other=0.0)
    sums = tl.sum(acc, axis=0)
    total = tl.sum(tl.where(cols == 0, sums, 0.0), axis=0)
    norm = tl.full([], 1.0, tl.float32)
    if MEAN:
        if BY_WEIGHT:
            norm = tl.sum(tl.where(cols == 1, sums, 0.0), axis=0)
        else:
            norm = tl.sum(tl.where(cols == 2, sums, 0.0), axis=0)
        norm = tl.where(norm > 0.0, norm, 1.0)  # nothing to average: the sum is 0, so is the loss
    loss = total / norm
    loss = tl.where(tl.load(bad_ptr) > 0, float("nan"), loss)
    tl.store(out_ptr, loss.to(out_ptr.dtype.element_ty))
    tl.store(norm_ptr, norm)


@triton.jit
def _store_grad(dx_tile, prob, cls, t, coef, r, q, C, CHW, HW, pmask, IDX64: tl.constexpr):
    d = (prob - (cls[:, None, None] == t[None, :, :]).to(tl.float32)) * coef[None, :, :]
    tl.store(dx_tile + _logit_offsets(cls, r, q, CHW, HW, IDX64), d.to(dx_tile.dtype.element_ty),
             mask=(cls < C)[:, None, None] & pmask[None, :, :])


@triton.jit
def _sace_bwd_kernel(x_ptr, t_ptr, cnt_ptr, tot_ptr, w_ptr, norm_ptr, go_ptr, lse_ptr, dx_ptr, N, C, HW, CHW,
                     COL_BLOCKS, ignore_index, alpha, HAS_WEIGHT: tl.constexpr, PER_IMAGE: tl.constexpr,
                     GO_PER_PIXEL: tl.constexpr, ONE_CHUNK: tl.constexpr, IDX64: tl.constexpr, CB: tl.constexpr,
                     R: tl.constexpr, HWP: tl.constexpr):
    first, r, q, pmask, base, pix, t, good, bad, w_pix = _tile_labels(
        t_ptr, cnt_ptr, tot_ptr, w_ptr, N, C, HW, COL_BLOCKS, ignore_index, alpha, HAS_WEIGHT, PER_IMAGE, IDX64, R, HWP)
    if GO_PER_PIXEL:
        go = tl.load(go_ptr + base + pix, mask=pmask, other=0.0).to(tl.float32)
    else:
        go = tl.load(go_ptr).to(tl.float32) / tl.load(norm_ptr)
    coef = tl.where(good, w_pix * go, 0.0)
    coef = tl.where(bad, float("nan"), coef)
    x_tile = x_ptr + first * CHW
    dx_tile = dx_ptr + first * CHW
    if ONE_CHUNK:   # every class in one step: the softmax from the tile itself
        cls = tl.arange(0, CB)
        x = _load_logits(x_tile, cls, r, q, C, CHW, HW, pmask, IDX64)
        e = tl.exp(x - tl.max(x, axis=0)[None, :, :])
        _store_grad(dx_tile, e / tl.sum(e, axis=0)[None, :, :], cls, t, coef, r, q, C, CHW, HW, pmask, IDX64)
    else:           # class chunks: the softmax from the log-sum-exp the forward saved
        lse = tl.load(lse_ptr + base + pix, mask=pmask, other=0.0)
        for c0 in range(0, C, CB):
            cls = c0 + tl.arange(0, CB)
            x = _load_logits(x_tile, cls, r, q, C, CHW, HW, pmask, IDX64)
            _store_grad(dx_tile, tl.exp(x - lse[None, :, :]), cls, t, coef, r, q, C, CHW, HW, pmask, IDX64)


def _plan(n: int, c: int, hw: int, max_tile: int) -> Tuple[int, Tiling, bool]:
    """Classes per step, the pixel tiling (at most ``max_tile`` logits per step) and whether logit
    offsets inside a tile (up to ``R * C * H * W``) need int64."""
    cb = min(next_pow2(c), prev_pow2(_CLASS_CHUNK))
    t = tile(n, hw, _MAX_BLOCK, max(1, max_tile // cb))
    return cb, t, needs_int64(t.rows_per * c * hw + t.cols_per)


def _num_warps(cb: int, t: Tiling) -> int:
    return 8 if cb * t.size >= 4096 else 4


class _SizeAdaptiveCEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, target: Tensor, weight: Optional[Tensor], alpha: float, ignore_index: int,
                reduction: str, per_image: bool, normalize: str, check_labels: bool) -> Tensor:
        x = input.contiguous()
        t = target.contiguous()
        n, c = x.shape[0], x.shape[1]
        hw = x.numel() // (n * c)
        rows = n if per_image else 1
        # The kernels index the weight as a dense [C] vector: forward and backward use this one copy.
        w = weight.contiguous() if weight is not None else None
        buf = torch.zeros(rows * c + rows + 1, dtype=torch.int64, device=x.device)
        cnt, tot, bad = buf[:rows * c], buf[rows * c:-1], buf[-1:]
        hcb, hist, _ = _plan(n, c, hw, _HIST_TILE)
        launch(_sace_hist_kernel, hist.grid, t, cnt, tot, bad, n, hw, c, hist.col_blocks, ignore_index,
               PER_IMAGE=per_image, IDX64=needs_int64(hist.rows_per * hw + hist.cols_per), CB=hcb,
               R=hist.rows_per, HWP=hist.cols_per, num_warps=4)
        if check_labels and int(bad.item()) > 0:  # one device sync, only when asked for
            raise ValueError(f"{_OP}: target holds {int(bad.item())} class indices outside [0, {c}) that are "
                             f"not ignore_index ({ignore_index})")
        plan = _plan(n, c, hw, _MAX_TILE)
        cb, tiles, idx64 = plan
        store_pix = reduction == "none"
        store_lse = c > cb and ctx.needs_input_grad[0]   # class chunks: keep the LSE for the backward
        lse = empty((n, hw), torch.float32, x.device) if store_lse else x
        programs = tiles.row_blocks * tiles.col_blocks
        if store_pix:
            out = empty(t.shape, input.dtype, x.device)
            part = out  # unused
        else:
            out = empty((), input.dtype, x.device)
            part = empty((programs, 3), torch.float32, x.device)
        launch(_sace_fwd_kernel, tiles.grid, x, t, cnt, tot, w if w is not None else x, part, out, lse, n, c, hw,
               c * hw, tiles.col_blocks, ignore_index, alpha, HAS_WEIGHT=w is not None, PER_IMAGE=per_image,
               STORE_PIX=store_pix, STORE_LSE=store_lse, IDX64=idx64, CB=cb, R=tiles.rows_per, HWP=tiles.cols_per,
               num_warps=_num_warps(cb, tiles))
        norm = empty(1, torch.float32, x.device)
        if not store_pix:
            launch(_sace_finalize_kernel, (1,), part, bad, out, norm, programs, MEAN=reduction == "mean",
                   BY_WEIGHT=normalize == "weights", BLOCK_P=_FINALIZE_BLOCK, num_warps=4)
        ctx.save_for_backward(x, t, cnt, tot, norm, lse if store_lse else None, w)
        ctx.cfg = (alpha, ignore_index, per_image, store_pix, plan)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, t, cnt, tot, norm, lse, w = ctx.saved_tensors
        alpha, ignore_index, per_image, store_pix, (cb, tiles, idx64) = ctx.cfg
        n, c = x.shape[0], x.shape[1]
        hw = x.numel() // (n * c)
        dx = empty_like(x)
        launch(_sace_bwd_kernel, tiles.grid, x, t, cnt, tot, w if w is not None else x, norm, grad_out.contiguous(),
               lse if lse is not None else x, dx, n, c, hw, c * hw, tiles.col_blocks, ignore_index, alpha,
               HAS_WEIGHT=w is not None, PER_IMAGE=per_image, GO_PER_PIXEL=store_pix, ONE_CHUNK=c <= cb,
               IDX64=idx64, CB=cb, R=tiles.rows_per, HWP=tiles.cols_per, num_warps=_num_warps(cb, tiles))
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

    CUDA tensors run the Triton kernels (logits read once in the forward and once in the backward;
    deterministic; any number of classes: beyond 128 they are streamed in chunks); CPU tensors the
    same math in PyTorch.

    Example:
        >>> logits = torch.randn(4, 8, 128, 128, requires_grad=True)
        >>> labels = torch.randint(0, 8, (4, 128, 128))
        >>> loss = hybridops.losses.size_adaptive_cross_entropy(logits, labels, alpha=1.0)
        >>> loss.backward()
    """
    alpha = _check_sace_args(input, target, weight, alpha, ignore_index, reduction, normalize, _OP)
    # The kernels give no gradient to `weight`: a weight that needs one takes the PyTorch path.
    weight_needs_grad = weight is not None and weight.requires_grad and torch.is_grad_enabled()
    if use_triton(input, _OP) and not weight_needs_grad:
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
        return settings_repr(self, dict(alpha=1.0, ignore_index=-100, reduction="mean", per_image=True,
                                        normalize="pixels", check_labels=False), extra=extra)
