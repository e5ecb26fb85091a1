"""``folder``: your own data, as a pair of folders matched by file stem::

    ROOT/images/case001.png   ROOT/masks/case001.png      (also accepted: masks/case001_mask.png)
    ROOT/fov/case001.png      (optional field-of-view masks; without them every pixel counts)

or one such pair per split: ``ROOT/train/{images,masks}``, ``ROOT/test/{images,masks}`` and optionally
``ROOT/val/{images,masks}`` (used for validation instead of a hold-out from train). Without split
folders the one pair serves every split (say so with ``--val holdout``; the test metrics are then on
the training images).

Labels: binary (0/1 or 0/255 grey images) or multi-class (single-channel integer PNGs holding class ids
``0 .. C-1``; grey or palette). ``--num-classes`` says which (1 = binary); without it the training
labels are scanned: only {0, 1} or {0, 255} -> binary, else ``max + 1`` classes. Images are read as
grey or RGB to match the model's input channels (16-bit MRI slices are min-max scaled to 8 bits).
Default input size 512x512.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cli.errors import DatasetError
from train.data.base import FileDataset, Record, _open, index_dir
from train.data.drive import subdir

DEFAULT_SIZE = (512, 512)
_LABEL_DIRS = ("masks", "labels")


def split_dir(root: Path, split: str) -> Path:
    """The folder holding ``images/`` for ``split``: ``ROOT/split`` when it exists, else ``ROOT``."""
    root = Path(root)
    d = subdir(root, split, "folder dataset (--data-root)", required=False)
    if d is not None and subdir(d, "images", "folder", required=False) is not None:
        return d
    return root


def splits(root: Path) -> set[str]:
    """The splits with their own folders (empty when ROOT/images serves all)."""
    out = set()
    for s in ("train", "val", "test"):
        if split_dir(root, s) != Path(root):
            out.add(s)
    return out


def records(root: Path, split: str) -> list[Record]:
    what = "folder dataset (--data-root)"
    base = split_dir(root, split)
    img_dir = subdir(base, "images", what)
    lab_dir = None
    for name in _LABEL_DIRS:
        lab_dir = subdir(base, name, what, required=False)
        if lab_dir is not None:
            break
    if lab_dir is None:
        raise DatasetError(f"{what}: no masks/ (or labels/) folder next to {str(img_dir)!r}")
    images, labels = index_dir(img_dir, what), index_dir(lab_dir, what)
    fov_dir = subdir(base, "fov", what, required=False)
    fovs = index_dir(fov_dir, what) if fov_dir is not None else {}
    if not images:
        raise DatasetError(f"{what}: no image files in {str(img_dir)!r}")
    recs, missing, used = [], [], set()
    for stem, path in images.items():
        key = next((k for k in (stem, stem + "_mask", stem + "_label") if k in labels), None)
        if key is None:
            missing.append(path.name)
            continue
        used.add(key)
        fov = fovs.get(stem) or fovs.get(stem + "_mask")
        if fov_dir is not None and fov is None:
            raise DatasetError(f"{what}: {str(fov_dir)!r} has no FOV mask for {path.name}")
        recs.append(Record(id=path.stem, image=path, label=labels[key], fov=fov))
    if missing:
        raise DatasetError(f"{what}: {len(missing)} image(s) in {str(img_dir)!r} have no mask with the same name in "
                           f"{str(lab_dir)!r}: {', '.join(missing[:5])}")
    orphans = sorted(set(labels) - used)
    if orphans:
        raise DatasetError(f"{what}: {len(orphans)} mask(s) in {str(lab_dir)!r} have no image with the same name in "
                           f"{str(img_dir)!r}: {', '.join(labels[k].name for k in orphans[:5])}")
    return recs


def infer_num_classes(recs: Sequence[Record]) -> int:
    """1 when every label holds only {0, 1} or only {0, 255}; else the largest value + 1."""
    values: set[int] = set()
    for r in recs:
        img = _open(r.label, "label")
        if img.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
            img = img.convert("L")
        values.update(np.unique(np.asarray(img)).astype(np.int64).tolist())
    if values <= {0, 1} or values <= {0, 255}:
        return 1
    return int(max(values)) + 1


def build(root: Path, split: str, size: Sequence[int] = DEFAULT_SIZE, in_chans: int = 3,
          num_classes: Optional[int] = None, **_) -> FileDataset:
    recs = records(Path(root), split)
    if num_classes is None:
        num_classes = infer_num_classes(recs)
    if num_classes < 1:
        raise DatasetError(f"folder dataset: num_classes must be >= 1, got {num_classes}")
    return FileDataset(recs, fov_mode="file" if any(r.fov for r in recs) else "none", name="folder", split=split,
                       size=size, in_chans=in_chans, num_classes=num_classes)
