"""DRIVE (Staal et al. 2004): 40 fundus photographs (565x584), 20 train / 20 test::

    training/images/21_training.tif   training/1st_manual/21_manual1.gif   training/mask/21_training_mask.gif
    test/images/01_test.tif           test/1st_manual/01_manual1.gif       test/mask/01_test_mask.gif

Folder names and extensions are matched case-insensitively. The FOV masks are used when present
(the training ones are optional: derived from the image like CHASE_DB1's when missing).
Default input size 512x512 (the paper's).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from cli.errors import DatasetError
from train.data.base import FileDataset, Record, index_dir, require_dir

DEFAULT_SIZE = (512, 512)
_FOLDERS = {"train": "training", "test": "test"}


def subdir(root: Path, name: str, what: str, required: bool = True):
    """``root/name`` matched case-insensitively (None when absent and not ``required``)."""
    root = require_dir(root, what)
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    if required:
        raise DatasetError(f"{what}: no {name}/ folder in {str(root)!r}")
    return None


def build(root: Path, split: str, size: Sequence[int] = DEFAULT_SIZE, in_chans: int = 3, **_) -> FileDataset:
    what = "DRIVE (--data-root)"
    base = subdir(Path(root), _FOLDERS[split], what)
    images = index_dir(subdir(base, "images", what), what)
    manual = index_dir(subdir(base, "1st_manual", what), what)
    mask_dir = subdir(base, "mask", what, required=(split == "test"))
    masks = index_dir(mask_dir, what) if mask_dir is not None else {}
    pat = re.compile(r"^(\d+)_(training|test)$")
    records, missing = [], []
    for stem, path in images.items():
        m = pat.match(stem)
        if not m:
            continue
        num = m.group(1)
        label = manual.get(f"{num}_manual1")
        if label is None:
            missing.append(f"{path.name} (no 1st_manual/{num}_manual1.gif)")
        fov = masks.get(f"{stem}_mask")
        if fov is None and split == "test":
            missing.append(f"{path.name} (no mask/{stem}_mask.gif)")
        records.append(Record(id=num, image=path, label=label, fov=fov))
    if not records:
        raise DatasetError(f"{what}: no NN_{_FOLDERS[split]}.tif images in {str(base / 'images')!r}")
    if missing:
        raise DatasetError(f"{what}: files missing for {len(missing)} image(s): " + ", ".join(missing[:5]))
    records.sort(key=lambda r: int(r.id))
    return FileDataset(records, fov_mode="file", name="drive", split=split, size=size, in_chans=in_chans,
                       num_classes=1)
