"""The dataset base class, file helpers and the field-of-view (FOV) derivation shared by the loaders.

Every dataset yields, per sample (all at the training size ``H x W``)::

    {"image": uint8 [C, H, W], "label": uint8 [H, W], "fov": bool [H, W], "index": int}

``label`` holds 0/1 for binary datasets (``num_classes == 1``) and class ids ``0 .. C-1`` for
multi-class ones. Images stay uint8 until they reach the training device (less to copy); the training
loop turns them into floats there and augments them on the device (``train.augment``).

``dataset.original(i)`` gives the sample at its original size (numpy arrays), which evaluation uses to
score predictions at the resolution the labels were drawn at.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cli.errors import DatasetError

__all__ = ["IMAGE_EXTS", "Raw", "Record", "SegmentationDataset", "FileDataset", "index_dir", "require_dir",
           "read_image", "read_label", "read_mask", "derive_fov", "resize_image", "resize_label", "resize_mask",
           "check_size"]

# Extensions matched case-insensitively (DRIVE ships .tif/.gif, CHASE .jpg/.png, HRF .JPG/.jpg/.tif).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm", ".pgm", ".webp")


@dataclass
class Raw:
    """One sample at its original size: ``image`` uint8 [h, w, C], ``label`` uint8 [h, w] (or None),
    ``fov`` bool [h, w]."""
    image: np.ndarray
    label: Optional[np.ndarray]
    fov: np.ndarray


@dataclass
class Record:
    """Where one sample's files are. ``fov=None``: derived from the image or all-ones (see the dataset)."""
    id: str
    image: Path
    label: Optional[Path] = None
    fov: Optional[Path] = None


# ------------------------------------------------------------------------------------------ files


def require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {str(path)!r} does not exist")
    return path


def index_dir(path: Path, what: str) -> dict[str, Path]:
    """The image files of a folder keyed by lower-case stem (extensions matched case-insensitively).

    Two files with the same stem (``a.png`` and ``a.jpg``) are an error: we could not tell which is meant.
    """
    path = require_dir(path, what)
    out: dict[str, Path] = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() not in IMAGE_EXTS:
            continue
        key = stem.lower()
        if key in out:
            raise DatasetError(f"{what}: {out[key].name!r} and {entry.name!r} in {str(path)!r} have the same name; "
                               "keep one of them")
        out[key] = Path(entry.path)
    return out


def _open(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise DatasetError(f"{what} {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read {what} {str(path)!r}: {e}") from None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """High-bit-depth grey images (16-bit PNG MRI, float TIFF) min-max scaled to 0..255."""
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: Path, in_chans: int = 3) -> np.ndarray:
    """uint8 ``[h, w, in_chans]`` (RGB for 3 channels, grey for 1)."""
    img = _open(path, "image")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = _to_uint8(np.asarray(img))
        a = grey[..., None] if in_chans == 1 else np.repeat(grey[..., None], in_chans, axis=2)
    elif in_chans == 1:
        a = np.asarray(img.convert("L"))[..., None]
    elif in_chans == 3:
        a = np.asarray(img.convert("RGB"))
    else:
        raise DatasetError(f"images can be read with 1 or 3 channels, not {in_chans}")
    return np.array(a)          # a writable copy (PIL's arrays are read-only)


def read_label(path: Path, num_classes: int = 1) -> np.ndarray:
    """uint8 ``[h, w]``: 0/1 for binary labels (``num_classes == 1``), class ids for multi-class ones.

    Binary labels may be stored as 0/1 or 0/255 (any grey image: values above 127 are vessel; a
    0/1 image is read as is). Multi-class labels must be single-channel integer images (grey or
    palette PNG, whose raw indices are the classes) with every value below ``num_classes``.
    """
    img = _open(path, "label")
    if num_classes <= 1:
        if img.mode == "1":
            return np.asarray(img).astype(np.uint8)
        a = np.asarray(img.convert("L")) if img.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F") else np.asarray(img)
        return (a > 127).astype(np.uint8) if a.max() > 1 else (a > 0).astype(np.uint8)
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise DatasetError(f"label {str(path)!r} is a {img.mode} image; multi-class labels must be single-channel "
                           f"integer images (grey or palette PNG) holding class ids 0..{num_classes - 1}")
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    bad = a >= num_classes
    if (a < 0).any() or bad.any():
        vals = np.unique(a[bad | (a < 0)])
        raise DatasetError(f"label {str(path)!r} holds values {vals[:8].tolist()} outside 0..{num_classes - 1} "
                           f"(num_classes={num_classes}); pass --num-classes or fix the labels")
    return a.astype(np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """bool ``[h, w]`` field-of-view mask (non-zero / above 127 is inside)."""
    img = _open(path, "FOV mask")
    a = np.asarray(img.convert("L")) if img.mode not in ("1", "L") else np.asarray(img)
    if a.dtype == bool:
        return a
    return a > 127 if a.max() > 1 else a > 0


def derive_fov(image: np.ndarray, threshold: int = 15, open_size: int = 7, erode: int = 0) -> np.ndarray:
    """Field-of-view mask of a fundus photograph (bool ``[h, w]``) for datasets without one (CHASE_DB1).

    Fundus images show the retina as a bright disc on a black background, and the red channel is the
    brightest inside, so:

    1. threshold the red channel (the grey image for 1-channel input) at ``threshold`` (15 of 255);
    2. a morphological opening with a ``open_size`` square (7x7) removes JPEG specks and text outside;
    3. each row is filled between its leftmost and rightmost FOV pixel and each column between its
       top and bottom one, and the two are intersected: this fills dark vessels, the dark macula
       and any hole inside the disc (the FOV is convex) without touching the outside;
    4. optionally an erosion by ``erode`` pixels (default 0: the CHASE_DB1 observers drew vessels up to
       the visible rim; eroding by 2 pixels would put 3x more labelled vessel pixels outside the FOV).

    On CHASE_DB1 this gives a disc covering 64-70% of the 999x960 frame (clipped at the top and
    bottom edges), like the masks published with DRIVE and HRF; 0.02-0.4% of each image's labelled
    vessel pixels fall outside it (on the dim rim).
    """
    chan = image[..., 0] if image.ndim == 3 else image
    m = torch.from_numpy(np.ascontiguousarray(chan > threshold)).float()[None, None]
    if open_size > 1:
        pad = open_size // 2
        m = _dilate(-_dilate(-m, pad), pad)                # opening: erosion (= -dilate(-m)), then dilation
    m = m[0, 0] > 0.5

    def span(x: torch.Tensor, dim: int) -> torch.Tensor:
        fwd = x.int().cumsum(dim) > 0
        bwd = x.flip(dim).int().cumsum(dim).flip(dim) > 0
        return fwd & bwd

    m = span(m, 1) & span(m, 0)
    if erode > 0:
        m = -_dilate(-m.float()[None, None], erode)[0, 0] > 0.5
    return m.numpy()


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    """Max filter with a (2r+1) square, as two separable 1-D passes (``m`` is [1, 1, h, w] float)."""
    m = F.max_pool2d(m, (2 * r + 1, 1), 1, (r, 0))
    return F.max_pool2d(m, (1, 2 * r + 1), 1, (0, r))


# ------------------------------------------------------------------------------------------ resizing


def check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or int(s) <= 0 for s in size):
        raise DatasetError(f"size must be two positive integers (H W), got {tuple(size)}")
    return int(size[0]), int(size[1])


def resize_image(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[h, w, C]`` numpy -> uint8 ``[C, H, W]`` tensor (bilinear, antialiased when shrinking)."""
    t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    f = F.interpolate(t[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return f[0].round_().clamp_(0, 255).to(torch.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """bool/0-1 ``[h, w]`` -> bool ``[H, W]``: area-weighted (antialiased bilinear) resampling, then >= 0.5."""
    t = torch.from_numpy(np.ascontiguousarray(mask)).to(torch.uint8)
    if tuple(t.shape) == tuple(size):
        return t.bool()
    f = F.interpolate(t[None, None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return f[0, 0] >= 0.5


def resize_label(label: np.ndarray, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """uint8 ``[h, w]`` -> uint8 ``[H, W]``: binary labels as :func:`resize_mask`, class ids by nearest."""
    if num_classes <= 1:
        return resize_mask(label, size).to(torch.uint8)
    t = torch.from_numpy(np.ascontiguousarray(label))
    if tuple(t.shape) == tuple(size):
        return t
    return F.interpolate(t[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(torch.uint8)


# ------------------------------------------------------------------------------------------ datasets


class SegmentationDataset(Dataset):
    """Base class: subclasses give ``ids`` and implement :meth:`original`; this class resizes to ``size``
    and caches the resized uint8 tensors (the datasets of this field are small: 20-45 images).

    Attributes: ``name``, ``split``, ``size`` (H, W), ``in_chans``, ``num_classes`` (1 = binary),
    ``class_names``, ``ids``.
    """

    def __init__(self, *, name: str, split: str, size: Sequence[int], in_chans: int = 3, num_classes: int = 1,
                 class_names: Optional[Sequence[str]] = None, cache: bool = True) -> None:
        self.name, self.split = name, split
        self.size = check_size(size)
        self.in_chans, self.num_classes = int(in_chans), int(num_classes)
        if class_names is None:
            class_names = ["vessel"] if self.num_classes == 1 else ["background"] + [
                f"class{c}" for c in range(1, self.num_classes)]
        self.class_names = list(class_names)
        self.ids: list[str] = []
        self._cache: Optional[dict[int, dict]] = {} if cache else None

    def __len__(self) -> int:
        return len(self.ids)

    def original(self, i: int) -> Raw:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        raw = self.original(i)
        item = {
            "image": resize_image(raw.image, self.size),
            "label": (resize_label(raw.label, self.size, self.num_classes) if raw.label is not None
                      else torch.zeros(self.size, dtype=torch.uint8)),
            "fov": resize_mask(raw.fov, self.size),
            "index": i,
        }
        if self._cache is not None:
            self._cache[i] = item
        return item

    def truncate(self, n: int) -> "SegmentationDataset":
        """Keeps the first ``n`` samples (``--limit``: quick runs on part of a dataset)."""
        self.ids = self.ids[:n]
        if hasattr(self, "records"):
            self.records = self.records[:n]
        return self

    def describe(self) -> str:
        kind = "binary" if self.num_classes == 1 else f"{self.num_classes} classes"
        return f"{self.name}/{self.split}: {len(self)} images, {self.size[0]}x{self.size[1]}, {kind}"


class FileDataset(SegmentationDataset):
    """A dataset of :class:`Record` files. ``fov_mode``: ``"file"`` (each record names its mask;
    records without one derive it), ``"derive"`` (always :func:`derive_fov`), ``"none"`` (all pixels)."""

    def __init__(self, records: Sequence[Record], *, fov_mode: str = "file", **kwargs) -> None:
        super().__init__(**kwargs)
        self.records = list(records)
        self.ids = [r.id for r in self.records]
        self.fov_mode = fov_mode

    def original(self, i: int) -> Raw:
        rec = self.records[i]
        image = read_image(rec.image, self.in_chans)
        label = read_label(rec.label, self.num_classes) if rec.label is not None else None
        h, w = image.shape[:2]
        if label is not None and label.shape != (h, w):
            raise DatasetError(f"label {str(rec.label)!r} is {label.shape[1]}x{label.shape[0]} (WxH) but image "
                               f"{str(rec.image)!r} is {w}x{h}")
        if self.fov_mode == "none":
            fov = np.ones((h, w), bool)
        elif rec.fov is not None and self.fov_mode == "file":
            fov = read_mask(rec.fov)
            if fov.shape != (h, w):
                raise DatasetError(f"FOV mask {str(rec.fov)!r} is {fov.shape[1]}x{fov.shape[0]} (WxH) but image "
                                   f"{str(rec.image)!r} is {w}x{h}")
        else:
            fov = derive_fov(image)
        return Raw(image, label, fov)
