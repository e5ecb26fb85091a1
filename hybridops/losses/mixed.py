"""Multi-scale mixed loss (HybridNetSeg Eq. 3) with fused bilinear upsampling.

The network returns K logit maps at several scales. Forward: one kernel walks the label grid once;
at every pixel it reads the full-size maps, interpolates each smaller map on the fly (bilinear,
``align_corners=False``, PyTorch's exact index/weight formulas; the small maps stay in cache), forms
the mean map and accumulates the partial sums of all K + 1 BCE+Dice terms together; the shared
finalize kernel of ``bce_dice.py`` turns them into the loss. No upsampled map is stored.

Backward: one kernel over the label grid recomputes the maps and writes dL/dz for the full-size
maps directly. For a smaller map it writes dL/d(up(f)) at label resolution into an fp32 scratch
buffer; the adjoint of bilinear upsampling is then applied one axis at a time (the interpolation is
separable: first along W, into ``[planes, H, w]``, then along H), each pass a gather in which every
small position sums the label positions that read it, with the forward's weights: deterministic, no
atomics, and a fixed tile per program whatever the upsampling ratio (the window is a loop).

Launch geometry: programs are numbered on grid axis 0 (``_common.tile``); a program covers a block of
one (image, channel) plane, or several whole planes when they are small. Offsets inside a plane use
int32 unless a plane has 2**31 pixels or more (the ``IDX64`` variant).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from hybridops.losses import _reference
from hybridops.losses._common import (Tiling, check_float_input, check_same_device, check_scalar, empty,
                                      empty_like, label_view, launch, needs_int64, program_tile, tile, tile_ids,
                                      tl, triton, use_triton)
from hybridops.losses.bce_dice import _prob_and_bce, _term_grad, check_bce_dice_options, finalize
from hybridops.nn._repr import settings_repr

_OP = "hybridops.losses.mixed_loss"
_MAX_BLOCK = 512       # label pixels per program (power of 2; 4 per thread at 4 warps); tests lower it
_ADJ_BLOCK = 256       # small-map positions per program in the adjoint kernel (at most)
_ADJ_TILE = 2048       # outputs (lines x small positions) per program in the adjoint kernel (at most)
_ADJ_WORK = 1 << 15    # and at most this many outputs x window steps: long windows use more, smaller programs


@triton.jit
def _plane_tile(PLANES, HW, W, COL_BLOCKS, IDX64: tl.constexpr, PL: tl.constexpr, BLOCK: tl.constexpr):
    """This program's tile of the ``[PLANES, H*W]`` label grid (``_common.tile_ids``), with the pixels'
    rows and columns: first plane, plane offsets, pixels, rows, columns, mask, column block."""
    first, r, pix, mask, cb = tile_ids(PLANES, HW, COL_BLOCKS, IDX64, PL, BLOCK)
    return first, r, pix, pix // W, pix % W, mask, cb


@triton.jit
def _bilinear(base, roff, oy, ox, h, w, scale_h, scale_w, mask, IDX64: tl.constexpr):
    """Bilinear sample (align_corners=False) of ``[h, w]`` planes at label pixels (oy, ox), in fp32.

    ``base`` points at the tile's first plane, ``roff`` (``[PL, 1]``) are the planes' offsets from it;
    the coordinates and weights are computed once per pixel (``[BLOCK]``) for all planes.
    """
    sy = tl.maximum(scale_h * (oy.to(tl.float32) + 0.5) - 0.5, 0.0)
    sx = tl.maximum(scale_w * (ox.to(tl.float32) + 0.5) - 0.5, 0.0)
    y0 = tl.minimum(sy.to(tl.int32), h - 1)
    x0 = tl.minimum(sx.to(tl.int32), w - 1)
    y1 = y0 + (y0 < h - 1).to(tl.int32)
    x1 = x0 + (x0 < w - 1).to(tl.int32)
    ly = (sy - y0.to(tl.float32))[None, :]
    lx = (sx - x0.to(tl.float32))[None, :]
    hy = 1.0 - ly
    hx = 1.0 - lx
    if IDX64:
        y0 = y0.to(tl.int64)
        y1 = y1.to(tl.int64)
    v00 = tl.load(base + roff + (y0 * w + x0)[None, :], mask=mask, other=0.0).to(tl.float32)
    v01 = tl.load(base + roff + (y0 * w + x1)[None, :], mask=mask, other=0.0).to(tl.float32)
    v10 = tl.load(base + roff + (y1 * w + x0)[None, :], mask=mask, other=0.0).to(tl.float32)
    v11 = tl.load(base + roff + (y1 * w + x1)[None, :], mask=mask, other=0.0).to(tl.float32)
    return hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11)


@triton.jit
def _load_maps(maps, hs, ws, scales_h, scales_w, first, r, pix, oy, ox, HW, mask, FULL: tl.constexpr,
               K: tl.constexpr, IDX64: tl.constexpr):
    """The K maps at the tile's label pixels (fp32, ``[PL, BLOCK]``), as a tuple, and their sum."""
    us = ()
    total = tl.zeros(mask.shape, tl.float32)
    for i in tl.static_range(K):
        if FULL[i]:
            u = tl.load(maps[i] + first * HW + (r[:, None] * HW + pix[None, :]), mask=mask, other=0.0).to(tl.float32)
        else:
            u = _bilinear(maps[i] + first * hs[i] * ws[i], r[:, None] * hs[i] * ws[i], oy, ox, hs[i], ws[i],
                          scales_h[i], scales_w[i], mask, IDX64)
        us = us + (u,)
        total += u
    return us, total


@triton.jit
def _mixed_fwd_kernel(maps, hs, ws, scales_h, scales_w, g_ptr, part_ptr, PLANES, HW, W, COL_BLOCKS,
                      FULL: tl.constexpr, K: tl.constexpr, HAS_MEAN: tl.constexpr, FROM_LOGITS: tl.constexpr,
                      IDX64: tl.constexpr, PL: tl.constexpr, BLOCK: tl.constexpr):
    """Partial sums of all terms for each plane of this program's tile.

    part[plane, column block] = (sum g, then (sum BCE, sum p*g, sum p) for each map and the mean map).
    """
    first, r, pix, oy, ox, mask, cb = _plane_tile(PLANES, HW, W, COL_BLOCKS, IDX64, PL, BLOCK)
    g = tl.load(g_ptr + first * HW + (r[:, None] * HW + pix[None, :]), mask=mask, other=0).to(tl.float32)
    us, total = _load_maps(maps, hs, ws, scales_h, scales_w, first, r, pix, oy, ox, HW, mask, FULL, K, IDX64)
    S = 1 + 3 * (K + HAS_MEAN)
    plane_ok = first + r < PLANES
    out = part_ptr + ((first + r) * COL_BLOCKS + cb) * S
    tl.store(out, tl.sum(g, axis=1), mask=plane_ok)
    for i in tl.static_range(K + HAS_MEAN):
        if i < K:
            z = us[i]
        else:
            z = total * (1.0 / K)
        p, bce = _prob_and_bce(z, g, FROM_LOGITS)
        p = tl.where(mask, p, 0.0)
        tl.store(out + 1 + 3 * i, tl.sum(tl.where(mask, bce, 0.0), axis=1), mask=plane_ok)
        tl.store(out + 2 + 3 * i, tl.sum(p * g, axis=1), mask=plane_ok)
        tl.store(out + 3 + 3 * i, tl.sum(p, axis=1), mask=plane_ok)


@triton.jit
def _term_grad_from_sums(z, g, row_ptr, t, go_lam, bce_scale, dice_scale, smooth, FROM_LOGITS: tl.constexpr):
    sum_g = tl.load(row_ptr)
    sum_pg = tl.load(row_ptr + 2 + 3 * t)
    sum_p = tl.load(row_ptr + 3 + 3 * t)
    p, _ = _prob_and_bce(z, g, FROM_LOGITS)
    d = _term_grad(p, g, bce_scale, dice_scale, sum_p + sum_g + smooth, 2.0 * sum_pg + smooth, FROM_LOGITS)
    return go_lam * d


@triton.jit
def _mixed_bwd_kernel(maps, hs, ws, scales_h, scales_w, outs, g_ptr, sums_ptr, go_ptr, lam, PLANES, C, HW, W,
                      COL_BLOCKS, bce_scale, dice_scale, smooth, go_scale, FULL: tl.constexpr, K: tl.constexpr,
                      HAS_MEAN: tl.constexpr, PER_IMAGE: tl.constexpr, GO_PER_IMAGE: tl.constexpr,
                      FROM_LOGITS: tl.constexpr, IDX64: tl.constexpr, PL: tl.constexpr, BLOCK: tl.constexpr):
    """dL/d(up(f_i)) at the label pixels: into grad_i for full-size maps, into fp32 scratch otherwise."""
    first, r, pix, oy, ox, mask, _ = _plane_tile(PLANES, HW, W, COL_BLOCKS, IDX64, PL, BLOCK)
    img = (tl.minimum(first + r, PLANES - 1) // C)[:, None]   # clamped: rows past the end read image N-1
    S = 1 + 3 * (K + HAS_MEAN)
    if PER_IMAGE:
        row_ptr = sums_ptr + img * S
    else:
        row_ptr = sums_ptr
    if GO_PER_IMAGE:
        go = tl.load(go_ptr + img).to(tl.float32) * go_scale
    else:
        go = tl.load(go_ptr).to(tl.float32) * go_scale
    base = first * HW                       # the tile's first label pixel (int64)
    offs = r[:, None] * HW + pix[None, :]   # from there (int32 unless IDX64)
    g = tl.load(g_ptr + base + offs, mask=mask, other=0).to(tl.float32)
    us, total = _load_maps(maps, hs, ws, scales_h, scales_w, first, r, pix, oy, ox, HW, mask, FULL, K, IDX64)
    if HAS_MEAN:
        # d(mean)/d(u_i) = 1/K for every map.
        b = _term_grad_from_sums(total * (1.0 / K), g, row_ptr, K, go * lam[K] * (1.0 / K), bce_scale,
                                 dice_scale, smooth, FROM_LOGITS)
    else:
        b = tl.zeros(mask.shape, tl.float32)
    for i in tl.static_range(K):
        d = _term_grad_from_sums(us[i], g, row_ptr, i, go * lam[i], bce_scale, dice_scale, smooth, FROM_LOGITS) + b
        tl.store(outs[i] + base + offs, d.to(outs[i].dtype.element_ty), mask=mask)


@triton.jit
def _upsample_adjoint_kernel(src_ptr, dst_ptr, LINES, INNER, src_outer, dst_outer, step, big, small, scale,
                             inv_scale, WINDOW, COL_BLOCKS, LB: tl.constexpr, SB: tl.constexpr):
    """The adjoint of 1-D bilinear upsampling (``small`` -> ``big`` positions) along one axis, as a gather.

    For each line ``l`` (outer index ``l // INNER``, inner index ``l % INNER``) and small position ``i``::

        dst[l, i] = sum over big positions o of weight(o -> i) * src[l, o]

    where element (l, o) of ``src`` is at ``(l // INNER) * src_outer + l % INNER + o * step`` (``dst``
    likewise with ``dst_outer``). Each small position visits the ``WINDOW`` big positions that can read
    it (plus a margin) and recomputes the forward's weights; the window is a loop, so the tile
    (``[LB lines, SB positions]``) does not grow with the upsampling ratio. Offsets are int64.
    """
    lb, sb = program_tile(COL_BLOCKS)
    line = lb * LB + tl.arange(0, LB)
    i = sb * SB + tl.arange(0, SB)
    line_ok = line < LINES
    i_ok = i < small
    outer = (line // INNER).to(tl.int64)
    src_line = outer * src_outer + line % INNER
    o_start = tl.maximum(tl.floor((i.to(tl.float32) - 0.5) * inv_scale - 0.5).to(tl.int32) - 1, 0)
    acc = tl.zeros([LB, SB], tl.float32)
    for k in range(WINDOW):
        o = o_start + k
        s = tl.maximum(scale * (o.to(tl.float32) + 0.5) - 0.5, 0.0)
        i0 = tl.minimum(s.to(tl.int32), small - 1)
        i1 = i0 + (i0 < small - 1).to(tl.int32)
        frac = s - i0.to(tl.float32)
        wgt = tl.where(i0 == i, 1.0 - frac, 0.0) + tl.where(i1 == i, frac, 0.0)
        wgt = tl.where((o < big) & i_ok, wgt, 0.0)
        v = tl.load(src_ptr + src_line[:, None] + (o.to(tl.int64) * step)[None, :],
                    mask=line_ok[:, None] & (wgt != 0.0)[None, :], other=0.0)
        acc += wgt[None, :] * v
    dst = dst_ptr + (outer * dst_outer + line % INNER)[:, None] + (i.to(tl.int64) * step)[None, :]
    tl.store(dst, acc.to(dst_ptr.dtype.element_ty), mask=line_ok[:, None] & i_ok[None, :])


def _plan(planes: int, H: int, W: int) -> Tuple[Tiling, bool]:
    """Tiling of the ``[planes, H*W]`` label grid and whether its offsets need int64 (a plane of 2**31 pixels)."""
    t = tile(planes, H * W, _MAX_BLOCK, _MAX_BLOCK)
    return t, needs_int64(t.rows_per * H * W + t.cols_per)


def _adjoint_pass(src: Tensor, dst: Tensor, lines: int, inner: int, src_outer: int, dst_outer: int, step: int,
                  big: int, small: int, scale: float) -> None:
    """One launch of ``_upsample_adjoint_kernel`` (see there for the arguments)."""
    window = math.ceil(2.0 * big / small) + 3    # every big position that can read a small one, plus a margin
    t = tile(lines, small, _ADJ_BLOCK, min(_ADJ_TILE, max(1, _ADJ_WORK // window)))
    launch(_upsample_adjoint_kernel, t.grid, src, dst, lines, inner, src_outer, dst_outer, step, big, small, scale,
           big / small, window, t.col_blocks, LB=t.rows_per, SB=t.cols_per, num_warps=4)


def _upsample_adjoint(grad_up: Tensor, grad: Tensor, planes: int, H: int, W: int, h: int, w: int,
                      scale_h: float, scale_w: float) -> None:
    """grad (``[planes, h, w]``) = the adjoint of bilinear upsampling to ``[H, W]`` applied to grad_up
    (``[planes, H, W]``, fp32): along W into ``[planes, H, w]``, then along H (a pass is skipped when that
    axis is not upsampled)."""
    src = grad_up
    if w < W:
        mid = grad if h == H else empty((planes, H, w), torch.float32, grad_up.device)
        _adjoint_pass(src, mid, planes * H, 1, W, w, 1, W, w, scale_w)
        src = mid
    if h < H:
        _adjoint_pass(src, grad, planes * w, w, H * w, h * w, w, H, h, scale_h)


def _geometry(maps, H, W):
    hs = tuple(int(m.shape[2]) for m in maps)
    ws = tuple(int(m.shape[3]) for m in maps)
    # PyTorch's scale for a given output size (align_corners=False): input_size / output_size, in fp32.
    scales_h = tuple(h / H for h in hs)
    scales_w = tuple(w / W for w in ws)
    full = tuple(h == H and w == W for h, w in zip(hs, ws))
    return hs, ws, scales_h, scales_w, full


class _MixedLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, target: Tensor, cfg: tuple, *inputs: Tensor) -> Tensor:
        lam, has_mean, bce_weight, smooth, from_logits, per_image, reduction, paper_scale = cfg
        maps = tuple(x.contiguous() for x in inputs)
        g = label_view(target)
        n, c, H, W = target.shape
        hs, ws, scales_h, scales_w, full = _geometry(maps, H, W)
        plan, idx64 = _plan(n * c, H, W)
        k = len(maps)
        t = k + int(has_mean)
        part = empty((n * c, plan.col_blocks, 1 + 3 * t), torch.float32, g.device)
        launch(_mixed_fwd_kernel, plan.grid, maps, hs, ws, scales_h, scales_w, g, part, n * c, H * W, W,
               plan.col_blocks, FULL=full, K=k, HAS_MEAN=has_mean, FROM_LOGITS=from_logits, IDX64=idx64,
               PL=plan.rows_per, BLOCK=plan.cols_per, num_warps=4)
        store_each = reduction == "none"
        out = empty((n,) if store_each else (), maps[0].dtype, g.device)
        m = c * H * W
        inv_count = 1.0 / m if per_image else 1.0 / (n * m)
        out_scale = paper_scale * (1.0 / n if (per_image and reduction == "mean") else 1.0)
        rows = n if per_image else 1                      # the partials of an image are contiguous
        sums = finalize(part, out, lam, rows, n * c * plan.col_blocks // rows, inv_count, bce_weight, smooth,
                        out_scale, store_each)
        ctx.save_for_backward(g, sums, *maps)
        ctx.cfg = (lam, has_mean, bce_weight, smooth, from_logits, per_image, store_each, inv_count, out_scale,
                   plan, idx64)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        g, sums, *maps = ctx.saved_tensors
        (lam, has_mean, bce_weight, smooth, from_logits, per_image, store_each, inv_count, out_scale, plan,
         idx64) = ctx.cfg
        n, c, H, W = g.shape
        hs, ws, scales_h, scales_w, full = _geometry(maps, H, W)
        grads = [empty_like(x) for x in maps]
        outs = tuple(gr if f else empty((n, c, H, W), torch.float32, g.device)
                     for gr, f in zip(grads, full))
        launch(_mixed_bwd_kernel, plan.grid, tuple(maps), hs, ws, scales_h, scales_w, outs, g, sums,
               grad_out.contiguous(), lam, n * c, c, H * W, W, plan.col_blocks, bce_weight * inv_count,
               1.0 - bce_weight, smooth, out_scale, FULL=full, K=len(maps), HAS_MEAN=has_mean, PER_IMAGE=per_image,
               GO_PER_IMAGE=store_each, FROM_LOGITS=from_logits, IDX64=idx64, PL=plan.rows_per,
               BLOCK=plan.cols_per, num_warps=4)
        for i, f in enumerate(full):
            if not f:
                _upsample_adjoint(outs[i], grads[i], n * c, H, W, hs[i], ws[i], scales_h[i], scales_w[i])
        return (None, None, *grads)


def _check_mixed_args(inputs, target, weights, mean_weight, op):
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError(f"{op}: inputs must be a list or tuple of [N, C, h, w] logit maps, got "
                        f"{type(inputs).__name__}")
    if len(inputs) == 0:
        raise ValueError(f"{op}: inputs must hold at least one logit map")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.dim() != 4:
        raise ValueError(f"{op}: target must be 4-D [N, C, H, W], got {target.dim()}-D with shape "
                         f"{tuple(target.shape)}")
    n, c, H, W = target.shape
    first = inputs[0]
    for i, x in enumerate(inputs):
        name = f"inputs[{i}]"
        check_float_input(x, name, op, 0)
        if x.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D [N, C, h, w], got {x.dim()}-D with shape {tuple(x.shape)}")
        if x.shape[0] != n or x.shape[1] != c:
            raise ValueError(f"{op}: {name} has shape {tuple(x.shape)}, but target {tuple(target.shape)} needs "
                             f"batch {n} and {c} channel(s)")
        if x.shape[2] > H or x.shape[3] > W or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{op}: {name} has spatial size {tuple(x.shape[2:])}; each map must be non-empty and "
                             f"at most the label size {(H, W)} (smaller maps are upsampled)")
        check_same_device(x, name, first, op, "inputs[0]")
        if x.dtype != first.dtype:
            raise ValueError(f"{op}: {name} has dtype {x.dtype} but inputs[0] has dtype {first.dtype}")
    check_same_device(target, "target", first, op, "inputs[0]")
    if target.is_complex():
        raise TypeError(f"{op}: target must hold real labels, got {target.dtype}")
    k = len(inputs)
    if weights is None:
        weights = (1.0,) * k
    else:
        weights = tuple(check_scalar(w, f"weights[{i}]", op) for i, w in enumerate(weights))
        if len(weights) != k:
            raise ValueError(f"{op}: weights must have one entry per map ({k}), got {len(weights)}")
    mean_weight = check_scalar(mean_weight, "mean_weight", op)
    return weights, mean_weight


def mixed_loss(inputs: Sequence[Tensor], target: Tensor, *, weights: Optional[Sequence[float]] = None,
               mean_weight: float = 1.0, paper_scaling: bool = False, bce_weight: float = 0.5,
               smooth: float = 1.0, from_logits: bool = True, per_image: bool = False,
               reduction: str = "mean") -> Tensor:
    r"""Multi-scale mixed loss of HybridNetSeg (Eq. 3), with the upsampling fused into the kernel.

    For logit maps ``f_1 .. f_K`` (e.g. fused output, final decoder output, three side outputs) and
    labels ``g``::

        L = sum_i weights[i] * L_bd(up(f_i), g) + mean_weight * L_bd(mean_i up(f_i), g)

    where ``up`` is bilinear upsampling to the label size (``align_corners=False``, exactly
    ``F.interpolate``; identity for maps already at the label size) and ``L_bd`` is
    :func:`bce_dice_loss` with the given ``bce_weight``, ``smooth``, ``from_logits``, ``per_image``
    and ``reduction``. The mean is taken over the (upsampled) logit maps, the "fused" output of the
    authors' code. ``paper_scaling=True`` multiplies the total by ``(1 + 1/K)``, the factor of the
    paper's Eq. 3.

    Args:
        inputs: list/tuple of K ``[N, C, h_i, w_i]`` logit maps, same N, C, dtype and device, each
            ``h_i <= H`` and ``w_i <= W`` (any ratio; not necessarily a power of two).
        target: ``[N, C, H, W]`` binary labels (float, bool or uint8).
        weights: the K lambdas (default all 1).
        mean_weight: lambda of the mean-map term (default 1; 0 drops the term).
        paper_scaling: multiply the loss by ``1 + 1/K``.
        bce_weight, smooth, from_logits, per_image, reduction: as in :func:`bce_dice_loss`.

    Returns:
        A scalar (``[N]`` for ``reduction='none'``) in the dtype of the maps. Gradients flow to every map
        (for upsampled maps: the adjoint of bilinear upsampling).

    Example:
        >>> target = torch.rand(2, 1, 512, 512) > 0.5
        >>> maps = [torch.randn(2, 1, s, s, requires_grad=True) for s in (512, 512, 256, 128, 64)]
        >>> loss = hybridops.losses.mixed_loss(maps, target)
    """
    weights, mean_weight = _check_mixed_args(inputs, target, weights, mean_weight, _OP)
    bce_weight, smooth = check_bce_dice_options(bce_weight, smooth, per_image, reduction, _OP)
    inputs = list(inputs)
    if use_triton(inputs[0], _OP) and target.numel() > 0:
        has_mean = mean_weight != 0.0
        lam = tuple(weights) + ((mean_weight,) if has_mean else ())
        paper_scale = 1.0 + 1.0 / len(inputs) if paper_scaling else 1.0
        cfg = (lam, has_mean, bce_weight, smooth, bool(from_logits), bool(per_image), reduction, paper_scale)
        return _MixedLossFunction.apply(target, cfg, *inputs)
    return _reference.mixed_loss(inputs, target, weights, mean_weight, bool(paper_scaling), bce_weight, smooth,
                                 bool(from_logits), bool(per_image), reduction)


class MixedLoss(nn.Module):
    """Module form of :func:`mixed_loss` (same arguments); ``forward(inputs, target)``.

    Example:
        >>> criterion = hybridops.losses.MixedLoss(weights=[1, 1, 0.5, 0.5, 0.5])
        >>> loss = criterion([fused, final, side1, side2, side3], labels)
    """

    def __init__(self, weights: Optional[Sequence[float]] = None, mean_weight: float = 1.0,
                 paper_scaling: bool = False, bce_weight: float = 0.5, smooth: float = 1.0,
                 from_logits: bool = True, per_image: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        op = "hybridops.losses.MixedLoss"
        self.weights = None if weights is None else tuple(check_scalar(w, f"weights[{i}]", op)
                                                           for i, w in enumerate(weights))
        self.mean_weight = check_scalar(mean_weight, "mean_weight", op)
        self.paper_scaling = paper_scaling
        self.bce_weight, self.smooth = check_bce_dice_options(bce_weight, smooth, per_image, reduction, op)
        self.from_logits = from_logits
        self.per_image = per_image
        self.reduction = reduction

    def forward(self, inputs: Sequence[Tensor], target: Tensor) -> Tensor:
        return mixed_loss(inputs, target, weights=self.weights, mean_weight=self.mean_weight,
                          paper_scaling=self.paper_scaling, bce_weight=self.bce_weight, smooth=self.smooth,
                          from_logits=self.from_logits, per_image=self.per_image, reduction=self.reduction)

    def extra_repr(self) -> str:
        return settings_repr(self, dict(weights=None, mean_weight=1.0, paper_scaling=False, bce_weight=0.5,
                                        smooth=1.0, from_logits=True, per_image=False, reduction="mean"))
