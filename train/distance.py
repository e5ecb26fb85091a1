"""Euclidean distances and local vessel width on pixel grids, in torch (no scipy), for the error analysis.

    d = distance_to(mask, radius)          # bool [H, W] -> float [H, W]: distance to the nearest True pixel
    w = vessel_width(label, max_width)     # bool [H, W] -> int64 [H, W]: local width of each vessel pixel

:func:`distance_to` is exact (Euclidean, between pixel centres) up to ``radius`` and ``inf`` beyond: a
column pass (the vertical gap to the nearest True pixel, over the ``2 * radius`` vertical offsets) and a
row pass (``min over dx of gap(x + dx)^2 + dx^2`` over the ``2 * radius`` horizontal offsets), in int16,
so it costs ``4 * radius`` passes over the image (``radius`` <= :data:`MAX_RADIUS`).

:func:`vessel_width` is the *local thickness* (Hildebrand & Ruegsegger 1997): a vessel pixel's width is
the diameter of the widest disc that fits inside the vessel and covers the pixel. So every pixel of a
vessel cross-section, its edge pixels included, gets the width of the vessel there (not twice its own
distance to the background, which is small at the edge), and a thin branch keeps its own width next to
a wide trunk. It is computed on the label upsampled 2x (each pixel a 2x2 block), where the axis of an
even-width vessel falls on a pixel centre: a straight vessel of ``w`` pixels, horizontal or vertical,
gets width ``w`` exactly (1, 2, 3, ...); oblique ones get the width of their pixel cross-section's
inscribed disc, within about a pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distance_to", "vessel_width", "MAX_RADIUS"]

MAX_RADIUS = 127          # (radius + 1)^2 + radius^2 fits in int16, the row pass's type (4x faster than float32)


def _min_shifted(out: Tensor, src: Tensor, step: int, cost: int, dim: int) -> None:
    """``out[i] = min(out[i], src[i - step] + cost, src[i + step] + cost)`` along ``dim`` (in place)."""
    n = out.shape[dim]
    if step >= n:
        return
    for a, b in ((slice(step, n), slice(0, n - step)), (slice(0, n - step), slice(step, n))):
        o = out[a] if dim == 0 else out[:, a]
        torch.minimum(o, (src[b] if dim == 0 else src[:, b]) + cost, out=o)


def _squared_distance(target: Tensor, radius: int, border: bool) -> Tensor:
    """int16 ``[H, W]``: the squared distance to the nearest True pixel of bool ``target`` ``[H, W]``,
    exact where it is <= ``radius ** 2``, some value > ``radius ** 2`` beyond (see :func:`distance_to`)."""
    t = F.pad(target[None].float(), (1, 1, 1, 1), value=1.0)[0].bool() if border else target
    far = radius + 1                                       # any gap beyond the radius reads radius + 1
    none = torch.where(t.cpu(), 0, far).to(torch.int16)      # [H, W] 0 on targets
    gap = none.clone()                                      # column pass: |y - y'| to the nearest target
    for dy in range(1, radius + 1):
        _min_shifted(gap, none, dy, dy, 0)
    gap2 = gap.square_()                                    # squares fit in int16 (radius <= MAX_RADIUS)
    best = gap2.clone()                                     # row pass: min over dx of gap2(x + dx) + dx^2
    for dx in range(1, radius + 1):
        _min_shifted(best, gap2, dx, dx * dx, 1)
    return best[1:-1, 1:-1] if border else best


def distance_to(target: Tensor, radius: int, border: bool = False) -> Tensor:
    """Euclidean distance from each pixel to the nearest True pixel of ``target`` (bool ``[H, W]``), as
    float32 ``[H, W]``: 0 on ``target``, exact up to ``radius`` (pixels), ``inf`` beyond.

    ``border=True`` also counts the ring of pixels just outside the image as targets, so the frame is
    "background" (a vessel or a field of view cut by the image's edge ends there).
    """
    if target.dim() != 2 or target.dtype != torch.bool:
        raise ValueError(f"distance_to: target must be a bool [H, W] tensor, got {target.dtype} {tuple(target.shape)}")
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"distance_to: radius must be in 0..{MAX_RADIUS}, got {radius}")
    d2 = _squared_distance(target, radius, border)
    return d2.float().sqrt_().masked_fill_(d2 > radius * radius, float("inf"))


def vessel_width(label: Tensor, max_width: int = 12) -> Tensor:
    """Local vessel width in pixels (int64 ``[H, W]``) of each True pixel of ``label`` (bool ``[H, W]``),
    0 elsewhere; widths of ``max_width`` or more read ``max_width``. See the module docstring.

    On the 2x grid (``d``: distance to the nearest background pixel, the image's frame included), a
    pixel has width >= ``r`` when it lies within distance < ``r`` of a centre with ``d >= r``: a disc of
    ``r`` half-pixels' radius around that centre lies inside the vessel and covers ``r`` original pixels
    across.
    """
    if max_width < 1:
        raise ValueError(f"vessel_width: max_width must be >= 1, got {max_width}")
    h, w = label.shape
    up = label.cpu().bool().repeat_interleave(2, 0).repeat_interleave(2, 1)                    # [2H, 2W]
    d2 = _squared_distance(~up, max_width, border=True)       # squared distance to the background
    width = up.long()
    for r in range(2, max_width + 1):
        centres = d2 >= r * r
        if not bool(centres.any()):
            break
        width.masked_fill_(_squared_distance(centres, r - 1, False) < r * r, r)   # covered: vessel pixels
    return width.view(h, 2, w, 2).amax((1, 3))
