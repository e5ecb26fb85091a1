"""HRF (Budai et al. 2013): 45 fundus photographs (3504x2336), 15 each of healthy (h), diabetic
retinopathy (dr) and glaucoma (g)::

    images/01_dr.JPG  images/01_g.jpg  images/01_h.jpg ...
    manual1/01_dr.tif ...
    mask/01_dr_mask.tif ...

Split (HybridNetSeg): the first 5 images of each category train (15), the other 30 test. Folder
names and extensions are matched case-insensitively. Default input size 784x1168 (H x W, the paper's).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from cli.errors import DatasetError
from train.data.base import FileDataset, Record, index_dir
from train.data.drive import subdir

DEFAULT_SIZE = (784, 1168)
N_TRAIN_PER_CATEGORY = 5
CATEGORIES = ("dr", "g", "h")


def build(root: Path, split: str, size: Sequence[int] = DEFAULT_SIZE, in_chans: int = 3, **_) -> FileDataset:
    what = "HRF (--data-root)"
    root = Path(root)
    images = index_dir(subdir(root, "images", what), what)
    manual = index_dir(subdir(root, "manual1", what), what)
    masks = index_dir(subdir(root, "mask", what), what)
    pat = re.compile(r"^(\d+)_(dr|g|h)$")
    by_cat: dict[str, list[Record]] = {c: [] for c in CATEGORIES}
    missing = []
    for stem, path in images.items():
        m = pat.match(stem)
        if not m:
            continue
        label, fov = manual.get(stem), masks.get(f"{stem}_mask")
        if label is None:
            missing.append(f"{path.name} (no manual1/{stem}.tif)")
        if fov is None:
            missing.append(f"{path.name} (no mask/{stem}_mask.tif)")
        by_cat[m.group(2)].append(Record(id=path.stem, image=path, label=label, fov=fov))
    if not any(by_cat.values()):
        raise DatasetError(f"{what}: no NN_dr/NN_g/NN_h images in {str(root / 'images')!r}")
    if missing:
        raise DatasetError(f"{what}: files missing for {len(missing)} image(s): " + ", ".join(missing[:5]))
    records = []
    for cat in CATEGORIES:
        recs = sorted(by_cat[cat], key=lambda r: int(r.id.split("_")[0]))
        records += recs[:N_TRAIN_PER_CATEGORY] if split == "train" else recs[N_TRAIN_PER_CATEGORY:]
    if not records:
        raise DatasetError(f"{what}: no {split} images (the first {N_TRAIN_PER_CATEGORY} of each category train, "
                           "the rest test)")
    return FileDataset(records, fov_mode="file", name="hrf", split=split, size=size, in_chans=in_chans,
                       num_classes=1)
