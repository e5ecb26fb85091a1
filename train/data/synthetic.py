"""Built-in synthetic datasets (no files needed; generated deterministically from a seed).

``synthetic`` -- fundus-like RGB images, binary vessel labels:
    a circular field of view on black, an orange-red retina under uneven illumination (radial fall-off
    and a random gradient), a bright optic disc and a darker macula, and 4-6 vessel trees growing from
    the disc: random walks that bifurcate, thin out (from about 1.2% of the image size down to below
    a pixel) and darken the image most in the green channel; Gaussian noise and low-frequency texture
    on top. The label is every pixel within half a vessel's width of its centre line.

``synthetic_multiclass`` -- MRI-like grey images with 8 classes of very different sizes (background,
    then: large vertebral bodies, medium discs between them, a long spinal canal, posterior elements,
    small nerve roots, a small round vessel, and tiny dots of a few pixels), each with its own
    intensity, under a smooth bias field and noise: the case the size-adaptive loss is for.

Splits ``train`` / ``val`` / ``test`` draw from disjoint seeds; the default counts are 16 / 4 / 4
images (``count`` overrides) at 64x64 (``size`` overrides): small, so ``python -m train`` finishes in
a minute or two on a CPU.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from train.data.base import Raw, SegmentationDataset

DEFAULT_SIZE = (64, 64)
DEFAULT_COUNTS = {"train": 16, "val": 4, "test": 4}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
MULTICLASS_NAMES = ["background", "vertebra", "disc", "canal", "posterior", "root", "vessel", "dot"]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a ``cells x cells`` random grid, bicubically upsampled."""
    g = torch.from_numpy(rng.uniform(-1, 1, (1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(g, size=(h, w), mode="bicubic", align_corners=True)[0, 0].clamp(-1, 1).numpy()


def _segment_distance(yy: np.ndarray, xx: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    dy, dx = y1 - y0, x1 - x0
    L2 = dy * dy + dx * dx
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / L2, 0.0, 1.0) if L2 > 0 else 0.0
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def _vessel_tree(rng, S, cy, cx, R, disc, w_max, w_min):
    """Line segments ``(y0, x0, y1, x1, width)`` of the vessel trees growing from the optic disc."""
    segs: list[tuple] = []
    step = max(1.0, 0.015 * S)

    def grow(y, x, angle, width, length, depth):
        while length > 0 and width >= w_min and len(segs) < 4000:
            angle += rng.normal(0.0, 0.12)
            ny, nx = y + step * math.sin(angle), x + step * math.cos(angle)
            segs.append((y, x, ny, nx, width))
            y, x, length = ny, nx, length - step
            if math.hypot(y - cy, x - cx) > R * 1.02:
                return
            if depth < 6 and rng.random() < 0.09:
                side = rng.choice((-1.0, 1.0))
                grow(y, x, angle + side * rng.uniform(0.4, 1.1), width * rng.uniform(0.5, 0.8),
                     length * rng.uniform(0.4, 0.8), depth + 1)
                width *= rng.uniform(0.8, 0.95)
                angle -= side * rng.uniform(0.05, 0.3)
            width *= 0.99

    dy, dx = disc
    towards_centre = math.atan2(cy - dy, cx - dx)
    n = int(rng.integers(4, 7))
    for k in range(n):
        # Arcades leave the disc up and down, bending toward the macula side; a few go nasally.
        base = towards_centre + (1 if k % 2 else -1) * rng.uniform(0.5, 1.4) + (math.pi if k >= 4 else 0.0)
        grow(dy, dx, base, w_max * rng.uniform(0.75, 1.0), R * rng.uniform(1.2, 2.0), 0)
    return segs


def fundus(h: int, w: int, rng: np.random.Generator) -> Raw:
    """One fundus-like sample: uint8 RGB ``[h, w, 3]``, 0/1 label ``[h, w]``, bool FOV ``[h, w]``."""
    S = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cy, cx = h / 2 + rng.normal(0, 0.01 * S), w / 2 + rng.normal(0, 0.01 * S)
    R = S * rng.uniform(0.44, 0.49)
    r = np.hypot(yy - cy, xx - cx)
    fov = r <= R
    side = rng.choice((-1.0, 1.0))
    disc = (cy + rng.normal(0, 0.06) * R, cx + side * R * rng.uniform(0.45, 0.6))
    macula = (cy + rng.normal(0, 0.04) * R, cx - side * R * rng.uniform(0.0, 0.15))
    w_max = max(0.012 * S, 1.8)
    w_min = max(0.002 * S, 0.7)

    # Background retina.
    base = np.array([rng.uniform(0.7, 0.9), rng.uniform(0.3, 0.45), rng.uniform(0.1, 0.2)], np.float32)
    g_angle = rng.uniform(0, 2 * math.pi)
    grad = ((xx - cx) * math.cos(g_angle) + (yy - cy) * math.sin(g_angle)) / R
    illum = 1.0 - 0.35 * (r / R) ** 2 + 0.12 * grad + 0.05 * _smooth_noise(rng, h, w, 6)
    img = base[None, None, :] * illum[..., None]
    rd = np.hypot(yy - disc[0], xx - disc[1]) / (0.08 * S)
    img += np.exp(-rd ** 2)[..., None] * np.array([0.25, 0.45, 0.3], np.float32)
    rm = np.hypot(yy - macula[0], xx - macula[1]) / (0.12 * S)
    img *= 1.0 - 0.25 * np.exp(-rm ** 2)[..., None]

    # Vessels: label = within half a width of a centre line; image darkening with a soft edge.
    margin = np.full((h, w), np.inf, np.float32)       # min over segments of (distance - width / 2)
    dark = np.zeros((h, w), np.float32)
    for y0, x0, y1, x1, wd in _vessel_tree(rng, S, cy, cx, R, disc, w_max, w_min):
        pad = wd / 2 + 2
        ya, yb = max(int(min(y0, y1) - pad), 0), min(int(max(y0, y1) + pad) + 1, h)
        xa, xb = max(int(min(x0, x1) - pad), 0), min(int(max(x0, x1) + pad) + 1, w)
        if ya >= yb or xa >= xb:
            continue
        d = _segment_distance(yy[ya:yb, xa:xb], xx[ya:yb, xa:xb], y0, x0, y1, x1)
        np.minimum(margin[ya:yb, xa:xb], d - wd / 2, out=margin[ya:yb, xa:xb])
        contrast = 0.25 + 0.35 * min(1.0, wd / w_max)
        np.maximum(dark[ya:yb, xa:xb], contrast * np.clip(0.5 - (d - wd / 2), 0.0, 1.0), out=dark[ya:yb, xa:xb])
    img *= 1.0 - dark[..., None] * np.array([0.6, 1.0, 0.8], np.float32)
    label = (margin <= 0) & fov

    img += rng.normal(0, 0.015, img.shape).astype(np.float32)
    img = np.where(fov[..., None], img, rng.uniform(0, 0.01, img.shape).astype(np.float32))
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return Raw(image, label.astype(np.uint8), fov)


def multiclass(h: int, w: int, rng: np.random.Generator) -> Raw:
    """One MRI-like sample: uint8 grey ``[h, w, 1]``, class ids ``[h, w]`` in 0..7, FOV all ones."""
    S = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    label = np.zeros((h, w), np.uint8)

    def ellipse(cy, cx, ry, rx, angle=0.0):
        c, s = math.cos(angle), math.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        return (u / max(rx, 0.5)) ** 2 + (v / max(ry, 0.5)) ** 2 <= 1.0

    def box(cy, cx, ry, rx, p=4.0):      # rounded rectangle (superellipse)
        return (np.abs(xx - cx) / rx) ** p + (np.abs(yy - cy) / ry) ** p <= 1.0

    tilt = rng.normal(0, 0.05)
    x_mid = w * rng.uniform(0.42, 0.5)
    n_vert = int(rng.integers(4, 6))
    pitch = h / (n_vert + 0.3)
    y0 = rng.uniform(0.1, 0.3) * pitch
    for i in range(n_vert):
        cy = y0 + (i + 0.5) * pitch
        cx = x_mid + tilt * (cy - h / 2)
        label[box(cy, cx, 0.36 * pitch, 0.16 * w * rng.uniform(0.9, 1.1))] = 1                   # vertebra
        if i + 1 < n_vert:
            label[ellipse(cy + 0.5 * pitch, cx, 0.1 * pitch, 0.15 * w, tilt)] = 2                   # disc
        label[ellipse(cy, cx + 0.36 * w, 0.22 * pitch, 0.06 * w)] = 4                              # posterior
        if rng.random() < 0.8:
            label[ellipse(cy + 0.5 * pitch, cx + 0.25 * w, 0.022 * S + 0.5, 0.022 * S + 0.5)] = 5   # root
    canal_x = x_mid + 0.24 * w + tilt * (yy - h / 2)
    label[(np.abs(xx - canal_x) <= 0.035 * w) & (label == 0)] = 3                                   # canal
    label[ellipse(h * rng.uniform(0.3, 0.7), x_mid - 0.3 * w, 0.04 * S + 0.5, 0.04 * S + 0.5)] = 6  # vessel
    for _ in range(int(rng.integers(2, 5))):                                                       # dots
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.05, 0.3) * w
        label[ellipse(cy, cx, 0.008 * S + 0.6, 0.008 * S + 0.6)] = 7

    means = np.array([0.12, 0.55, 0.75, 0.9, 0.45, 0.65, 0.3, 0.95], np.float32)
    means = np.clip(means + rng.normal(0, 0.04, means.shape).astype(np.float32), 0, 1)
    img = means[label]
    img = img * (1.0 + 0.2 * _smooth_noise(rng, h, w, 4)) + rng.normal(0, 0.04, (h, w)).astype(np.float32)
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)[..., None]
    return Raw(image, label, np.ones((h, w), bool))


class SyntheticDataset(SegmentationDataset):
    """Generated samples (see the module docstring); generated at the training size, so
    :meth:`original` equals the resized sample."""

    def __init__(self, kind: str, split: str, size: Sequence[int] = DEFAULT_SIZE, count: Optional[int] = None,
                 seed: int = 0, in_chans: Optional[int] = None) -> None:
        multi = kind == "multiclass"
        native = 1 if multi else 3
        super().__init__(name="synthetic_multiclass" if multi else "synthetic", split=split, size=size,
                         in_chans=native if in_chans is None else in_chans, num_classes=8 if multi else 1,
                         class_names=MULTICLASS_NAMES if multi else None)
        self.kind, self.seed = kind, int(seed)
        n = DEFAULT_COUNTS[split] if count is None else int(count)
        self.ids = [f"{split}_{i:03d}" for i in range(n)]

    def original(self, i: int) -> Raw:
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i, 1 if self.kind == "multiclass" else 0])
        h, w = self.size
        raw = multiclass(h, w, rng) if self.kind == "multiclass" else fundus(h, w, rng)
        c = raw.image.shape[2]
        if self.in_chans != c:     # grey <-> RGB to match the model
            raw.image = (np.repeat(raw.image, self.in_chans, axis=2) if c == 1 else
                         np.round(raw.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
                         .clip(0, 255).astype(np.uint8)[..., None])
        return raw


def build(root=None, split: str = "train", size: Sequence[int] = DEFAULT_SIZE, in_chans: Optional[int] = None,
          count: Optional[int] = None, seed: int = 0, **_) -> SyntheticDataset:
    return SyntheticDataset("fundus", split, size, count, seed, in_chans)


def build_multiclass(root=None, split: str = "train", size: Sequence[int] = DEFAULT_SIZE,
                     in_chans: Optional[int] = None, count: Optional[int] = None, seed: int = 0,
                     **_) -> SyntheticDataset:
    return SyntheticDataset("multiclass", split, size, count, seed, in_chans)
