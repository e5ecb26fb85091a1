"""Pure-PyTorch versions of the fused losses: the CPU path, the test reference, the benchmark baseline.

Plain eager code, written the way a user would write it (and the way ``torch.compile`` sees it).
No argument checks here: the public functions in ``bce_dice.py``, ``mixed.py`` and
``size_adaptive_ce.py`` validate and then call these (CPU tensors) or the Triton kernels (CUDA).

Math runs in float32 for fp16/bf16/fp32 inputs and in float64 for float64 inputs; the result is
returned in the input's dtype, like ``torch.nn`` losses.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def bce_dice_loss(input: Tensor, target: Tensor, bce_weight: float = 0.5, smooth: float = 1.0,
                  from_logits: bool = True, per_image: bool = False, reduction: str = "mean") -> Tensor:
    """``bce_weight * mean(BCE) + (1 - bce_weight) * (1 - Dice)``; see ``hybridops.losses.bce_dice_loss``."""
    dt = _compute_dtype(input)
    x = input.flatten(1).to(dt)
    g = target.flatten(1).to(dt).detach()
    if from_logits:
        bce = F.binary_cross_entropy_with_logits(x, g, reduction="none")
        p = torch.sigmoid(x)
    else:
        bce = F.binary_cross_entropy(x, g, reduction="none")
        p = x
    if per_image:
        inter, sum_p, sum_g, bce_mean = (p * g).sum(1), p.sum(1), g.sum(1), bce.mean(1)
    else:
        inter, sum_p, sum_g, bce_mean = (p * g).sum(), p.sum(), g.sum(), bce.mean()
    dice = (2.0 * inter + smooth) / (sum_p + sum_g + smooth)
    loss = bce_weight * bce_mean + (1.0 - bce_weight) * (1.0 - dice)
    if per_image:
        loss = _reduce(loss, reduction)
    return loss.to(input.dtype)


def upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize to ``size`` (``align_corners=False``), in the compute dtype; identity if equal."""
    x = x.to(_compute_dtype(x))
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def mixed_loss(inputs: Sequence[Tensor], target: Tensor, weights: Optional[Sequence[float]] = None,
               mean_weight: float = 1.0, paper_scaling: bool = False, bce_weight: float = 0.5,
               smooth: float = 1.0, from_logits: bool = True, per_image: bool = False,
               reduction: str = "mean") -> Tensor:
    """``sum_i w_i L(up(f_i), g) + w_mean L(mean_i up(f_i), g)``; see ``hybridops.losses.mixed_loss``."""
    inputs = list(inputs)
    k = len(inputs)
    weights = [1.0] * k if weights is None else [float(w) for w in weights]
    size = target.shape[-2:]
    ups = [upsample(x, size) for x in inputs]
    kw = dict(bce_weight=bce_weight, smooth=smooth, from_logits=from_logits, per_image=per_image,
              reduction=reduction)
    total = None
    for w, u in zip(weights, ups):
        term = w * bce_dice_loss(u, target, **kw)
        total = term if total is None else total + term
    if mean_weight != 0.0:
        mean_map = torch.stack(ups).mean(0)
        total = total + mean_weight * bce_dice_loss(mean_map, target, **kw)
    if paper_scaling:
        total = total * (1.0 + 1.0 / k)
    return total.to(inputs[0].dtype)


def _flat_labels(target: Tensor) -> Tensor:
    """``[N, *]`` labels as ``[N, pixels]`` int64 (``[N]`` -> ``[N, 1]``)."""
    return (target.flatten(1) if target.dim() > 1 else target.unsqueeze(1)).long()


def class_areas(target: Tensor, num_classes: int, ignore_index: int, per_image: bool,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel count of every class, ``[N, C]`` (per image) or ``[1, C]`` (whole batch); ignored pixels excluded."""
    n = target.shape[0]
    t = _flat_labels(target)
    valid = t != ignore_index
    hist = torch.zeros(n, num_classes, dtype=dtype, device=target.device)
    hist.scatter_add_(1, torch.where(valid, t, 0), valid.to(dtype))
    if not per_image:
        hist = hist.sum(0, keepdim=True)
    return hist


def class_factors(hist: Tensor, alpha: float, weight: Optional[Tensor]) -> Tensor:
    """``(1 - S_c) ** alpha * weight[c]`` from class areas ``hist`` (rows: images or the batch).

    ``1 - S_c`` is computed as ``(total - count_c) / total``, so a class that fills the image gets
    exactly 0 (weight 0 for ``alpha > 0``, 1 for ``alpha == 0``: ``0 ** 0 == 1``) and no NaN appears.
    """
    total = hist.sum(1, keepdim=True)
    base = (total - hist) / total.clamp_min(1.0)
    factor = base.pow(alpha)
    if weight is not None:
        factor = factor * weight.to(factor.dtype)
    return factor


def size_adaptive_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                                alpha: float = 1.0, ignore_index: int = -100, reduction: str = "mean",
                                per_image: bool = True, normalize: str = "pixels") -> Tensor:
    """``-sum (1 - S_c) ** alpha * w_c * log_softmax(x)_c / norm``.

    See ``hybridops.losses.size_adaptive_cross_entropy``."""
    dt = _compute_dtype(input)
    n, c = input.shape[0], input.shape[1]
    x = (input.flatten(2) if input.dim() > 2 else input.unsqueeze(2)).to(dt)
    t = _flat_labels(target)
    valid = t != ignore_index
    t0 = torch.where(valid, t, 0)
    factor = class_factors(class_areas(target, c, ignore_index, per_image, dt), alpha, weight)
    factor = factor.expand(n, c)
    w_pix = factor.gather(1, t0) * valid
    nll = -torch.log_softmax(x, dim=1).gather(1, t0.unsqueeze(1)).squeeze(1)
    loss = w_pix * nll
    if reduction == "none":
        return loss.reshape(target.shape).to(input.dtype)
    total = loss.sum()
    if reduction == "mean":
        norm = valid.sum().to(dt) if normalize == "pixels" else w_pix.sum()
        total = total / torch.where(norm > 0, norm, torch.ones_like(norm))
    return total.to(input.dtype)
