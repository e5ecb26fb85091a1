"""Multi-scale mixed loss (HybridNetSeg Eq. 3) with fused bilinear upsampling.

The network returns K logit maps at several scales. Forward: one kernel walks the label grid once;
at every pixel it reads the full-size maps, interpolates each smaller map on the fly (bilinear,
``align_corners=False``, PyTorch's exact index/weight formulas; the small maps stay in cache), forms
the mean map and accumulates the partial sums of all K + 1 BCE+Dice terms together; the shared
finalize kernel of ``bce_dice.py`` turns them into the loss. No upsampled map is stored.

Backward: one kernel over the label grid recomputes the maps and writes dL/dz for the full-size
maps directly. For a smaller map it writes dL/d(up(f)) at label resolution into an fp32 scratch
buffer, and a second kernel applies the adjoint of bilinear upsampling as a gather (each small pixel
sums the label pixels that read it, with the same weights): deterministic, no atomics.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from hybridops.losses import _reference
from hybridops.losses._common import (cdiv, check_float_input, check_same_device, check_scalar, empty,
                                      empty_like, label_view, launch, next_pow2, tl, triton, use_triton)
from hybridops.losses.bce_dice import (_extra_repr, _prob_and_bce, _term_grad, check_bce_dice_options,
                                       finalize)

_OP = "hybridops.losses.mixed_loss"
_MAX_BLOCK = 512       # label pixels per program (power of 2; 4 per thread at 4 warps); tests lower it
_ADJ_BLOCK = 256       # small-map pixels per program in the adjoint-upsampling kernel (at most)
_ADJ_TILE = 2048       # small pixels x window columns per program in that kernel


@triton.jit
def _bilinear(base, oy, ox, h, w, scale_h, scale_w, mask):
    """Bilinear sample (align_corners=False) of a ``[h, w]`` plane at label pixel (oy, ox), in fp32."""
    sy = tl.maximum(scale_h * (oy.to(tl.float32) + 0.5) - 0.5, 0.0)
    sx = tl.maximum(scale_w * (ox.to(tl.float32) + 0.5) - 0.5, 0.0)
    y0 = tl.minimum(sy.to(tl.int32), h - 1)
    x0 = tl.minimum(sx.to(tl.int32), w - 1)
    y1 = y0 + (y0 < h - 1).to(tl.int32)
    x1 = x0 + (x0 < w - 1).to(tl.int32)
    ly = sy - y0.to(tl.float32)
    lx = sx - x0.to(tl.float32)
    hy = 1.0 - ly
    hx = 1.0 - lx
    v00 = tl.load(base + y0 * w + x0, mask=mask, other=0.0).to(tl.float32)
    v01 = tl.load(base + y0 * w + x1, mask=mask, other=0.0).to(tl.float32)
    v10 = tl.load(base + y1 * w + x0, mask=mask, other=0.0).to(tl.float32)
    v11 = tl.load(base + y1 * w + x1, mask=mask, other=0.0).to(tl.float32)
    return hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11)


@triton.jit
def _load_maps(maps, hs, ws, scales_h, scales_w, plane, offs, oy, ox, HW, mask, FULL: tl.constexpr,
               K: tl.constexpr):
    """The K maps at the block's label pixels (fp32), as a tuple, and their sum."""
    us = ()
    total = tl.zeros(offs.shape, tl.float32)
    for i in tl.static_range(K):
        if FULL[i]:
            u = tl.load(maps[i] + plane * HW + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            u = _bilinear(maps[i] + plane * (hs[i] * ws[i]), oy, ox, hs[i], ws[i], scales_h[i], scales_w[i], mask)
        us = us + (u,)
        total += u
    return us, total


@triton.jit
def _mixed_fwd_kernel(maps, hs, ws, scales_h, scales_w, g_ptr, part_ptr, H, W, P, FULL: tl.constexpr,
                      K: tl.constexpr, HAS_MEAN: tl.constexpr, FROM_LOGITS: tl.constexpr, BLOCK: tl.constexpr):
    """Program (pid, plane): partial sums of all terms for one block of one (image, channel) plane.

    part[plane, pid] = (sum g, then (sum BCE, sum p*g, sum p) for each map and the mean map).
    """
    pid = tl.program_id(0)
    plane = tl.program_id(1).to(tl.int64)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    oy = offs // W
    ox = offs % W
    g = tl.load(g_ptr + plane * HW + offs, mask=mask, other=0).to(tl.float32)
    us, total = _load_maps(maps, hs, ws, scales_h, scales_w, plane, offs, oy, ox, HW, mask, FULL, K)
    S = 1 + 3 * (K + HAS_MEAN)
    out = part_ptr + (plane * P + pid) * S
    tl.store(out, tl.sum(g, axis=0))
    for i in tl.static_range(K):
        p, bce = _prob_and_bce(us[i], g, FROM_LOGITS)
        p = tl.where(mask, p, 0.0)
        tl.store(out + 1 + 3 * i, tl.sum(tl.where(mask, bce, 0.0), axis=0))
        tl.store(out + 2 + 3 * i, tl.sum(p * g, axis=0))
        tl.store(out + 3 + 3 * i, tl.sum(p, axis=0))
    if HAS_MEAN:
        p, bce = _prob_and_bce(total * (1.0 / K), g, FROM_LOGITS)
        p = tl.where(mask, p, 0.0)
        tl.store(out + 1 + 3 * K, tl.sum(tl.where(mask, bce, 0.0), axis=0))
        tl.store(out + 2 + 3 * K, tl.sum(p * g, axis=0))
        tl.store(out + 3 + 3 * K, tl.sum(p, axis=0))


@triton.jit
def _term_grad_from_sums(z, g, row_ptr, t, go_lam, bce_scale, dice_scale, smooth, FROM_LOGITS: tl.constexpr):
    sum_g = tl.load(row_ptr)
    sum_pg = tl.load(row_ptr + 2 + 3 * t)
    sum_p = tl.load(row_ptr + 3 + 3 * t)
    p, _ = _prob_and_bce(z, g, FROM_LOGITS)
    d = _term_grad(p, g, bce_scale, dice_scale, sum_p + sum_g + smooth, 2.0 * sum_pg + smooth, FROM_LOGITS)
    return go_lam * d


@triton.jit
def _mixed_bwd_kernel(maps, hs, ws, scales_h, scales_w, outs, g_ptr, sums_ptr, go_ptr, lam, C, H, W,
                      bce_scale, dice_scale, smooth, go_scale, FULL: tl.constexpr, K: tl.constexpr,
                      HAS_MEAN: tl.constexpr, PER_IMAGE: tl.constexpr, GO_PER_IMAGE: tl.constexpr,
                      FROM_LOGITS: tl.constexpr, BLOCK: tl.constexpr):
    """dL/d(up(f_i)) at the label pixels: into grad_i for full-size maps, into fp32 scratch otherwise."""
    pid = tl.program_id(0)
    plane = tl.program_id(1).to(tl.int64)
    n = plane // C
    HW = H * W
    S = 1 + 3 * (K + HAS_MEAN)
    row_ptr = sums_ptr + (n if PER_IMAGE else 0) * S
    go = tl.load(go_ptr + (n if GO_PER_IMAGE else 0)).to(tl.float32) * go_scale
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    oy = offs // W
    ox = offs % W
    g = tl.load(g_ptr + plane * HW + offs, mask=mask, other=0).to(tl.float32)
    us, total = _load_maps(maps, hs, ws, scales_h, scales_w, plane, offs, oy, ox, HW, mask, FULL, K)
    if HAS_MEAN:
        # d(mean)/d(u_i) = 1/K for every map.
        b = _term_grad_from_sums(total * (1.0 / K), g, row_ptr, K, go * lam[K] * (1.0 / K), bce_scale,
                                 dice_scale, smooth, FROM_LOGITS)
    else:
        b = tl.zeros([BLOCK], tl.float32)
    for i in tl.static_range(K):
        d = _term_grad_from_sums(us[i], g, row_ptr, i, go * lam[i], bce_scale, dice_scale, smooth, FROM_LOGITS) + b
        tl.store(outs[i] + plane * HW + offs, d.to(outs[i].dtype.element_ty), mask=mask)


@triton.jit
def _upsample_adjoint_kernel(src_ptr, dst_ptr, H, W, h, w, scale_h, scale_w, inv_scale_h, inv_scale_w, KH,
                             KW: tl.constexpr, BLOCK: tl.constexpr):
    """dst[plane, y, x] = sum over label pixels (oy, ox) of weight(oy, ox -> y, x) * src[plane, oy, ox].

    The adjoint of ``_bilinear``, as a gather: each small pixel visits a window of KH x KW label pixels
    (every pixel whose bilinear footprint can include it, plus a margin) and recomputes the forward's
    weights, so the sum matches the forward exactly and needs no atomics. The column weights of the
    window, ``[BLOCK, KW]``, are computed once; the loop runs over the KH rows.
    """
    pid = tl.program_id(0)
    plane = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < h * w
    y = offs // w
    x = offs % w
    oy_start = tl.maximum(tl.floor((y.to(tl.float32) - 0.5) * inv_scale_h - 0.5).to(tl.int32) - 1, 0)
    ox_start = tl.maximum(tl.floor((x.to(tl.float32) - 0.5) * inv_scale_w - 0.5).to(tl.int32) - 1, 0)
    ox = ox_start[:, None] + tl.arange(0, KW)[None, :]
    sx = tl.maximum(scale_w * (ox.to(tl.float32) + 0.5) - 0.5, 0.0)
    x0 = tl.minimum(sx.to(tl.int32), w - 1)
    x1 = x0 + (x0 < w - 1).to(tl.int32)
    lx = sx - x0.to(tl.float32)
    wx = tl.where(x0 == x[:, None], 1.0 - lx, 0.0) + tl.where(x1 == x[:, None], lx, 0.0)
    wx = tl.where((ox < W) & mask[:, None], wx, 0.0)
    src = src_ptr + plane * H * W
    acc = tl.zeros([BLOCK, KW], tl.float32)
    for dy in range(KH):
        oy = oy_start + dy
        sy = tl.maximum(scale_h * (oy.to(tl.float32) + 0.5) - 0.5, 0.0)
        y0 = tl.minimum(sy.to(tl.int32), h - 1)
        y1 = y0 + (y0 < h - 1).to(tl.int32)
        ly = sy - y0.to(tl.float32)
        wy = tl.where(y0 == y, 1.0 - ly, 0.0) + tl.where(y1 == y, ly, 0.0)
        wy = tl.where(oy < H, wy, 0.0)
        wgt = wy[:, None] * wx
        v = tl.load(src + oy[:, None] * W + ox, mask=wgt != 0.0, other=0.0)
        acc += wgt * v
    tl.store(dst_ptr + plane * h * w + offs, tl.sum(acc, axis=1).to(dst_ptr.dtype.element_ty), mask=mask)


def _block_for(hw: int) -> int:
    return max(16, min(_MAX_BLOCK, next_pow2(hw)))


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
        block = _block_for(H * W)
        chunks = cdiv(H * W, block)
        k = len(maps)
        t = k + int(has_mean)
        part = empty((n * c, chunks, 1 + 3 * t), torch.float32, g.device)
        launch(_mixed_fwd_kernel, (chunks, n * c), maps, hs, ws, scales_h, scales_w, g, part, H, W, chunks,
               FULL=full, K=k, HAS_MEAN=has_mean, FROM_LOGITS=from_logits, BLOCK=block, num_warps=4)
        store_each = reduction == "none"
        out = empty((n,) if store_each else (), maps[0].dtype, g.device)
        m = c * H * W
        inv_count = 1.0 / m if per_image else 1.0 / (n * m)
        out_scale = paper_scale * (1.0 / n if (per_image and reduction == "mean") else 1.0)
        sums = finalize(part, out, lam, n, c * chunks, inv_count, bce_weight, smooth, out_scale, per_image,
                        store_each)
        ctx.save_for_backward(g, sums, *maps)
        ctx.cfg = (lam, has_mean, bce_weight, smooth, from_logits, per_image, store_each, inv_count, out_scale,
                   block)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        g, sums, *maps = ctx.saved_tensors
        lam, has_mean, bce_weight, smooth, from_logits, per_image, store_each, inv_count, out_scale, block = ctx.cfg
        n, c, H, W = g.shape
        hs, ws, scales_h, scales_w, full = _geometry(maps, H, W)
        grads = [empty_like(x) for x in maps]
        outs = tuple(gr if f else empty((n, c, H, W), torch.float32, g.device)
                     for gr, f in zip(grads, full))
        launch(_mixed_bwd_kernel, (cdiv(H * W, block), n * c), tuple(maps), hs, ws, scales_h, scales_w,
               outs, g, sums, grad_out.contiguous(), lam, c, H, W, bce_weight * inv_count, 1.0 - bce_weight,
               smooth, out_scale, FULL=full, K=len(maps), HAS_MEAN=has_mean, PER_IMAGE=per_image,
               GO_PER_IMAGE=store_each, FROM_LOGITS=from_logits, BLOCK=block, num_warps=4)
        for i, f in enumerate(full):
            if f:
                continue
            h, w = hs[i], ws[i]
            kh = math.ceil(2.0 * H / h) + 3   # window: every label row/column that can read a small one
            kw = next_pow2(math.ceil(2.0 * W / w) + 3)
            adj_block = max(16, min(_ADJ_BLOCK, _ADJ_TILE // kw, next_pow2(h * w)))
            launch(_upsample_adjoint_kernel, (cdiv(h * w, adj_block), n * c), outs[i], grads[i], H, W, h,
                   w, scales_h[i], scales_w[i], H / h, W / w, kh, KW=kw, BLOCK=adj_block, num_warps=4)
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
        return _extra_repr(self, dict(weights=None, mean_weight=1.0, paper_scaling=False, bce_weight=0.5,
                                      smooth=1.0, from_logits=True, per_image=False, reduction="mean"))
