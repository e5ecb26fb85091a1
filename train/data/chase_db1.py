"""CHASE_DB1 (Fraz et al. 2012): 28 fundus photographs (999x960) of 14 children, flat folder::

    Image_01L.jpg  Image_01L_1stHO.png  Image_01L_2ndHO.png  ...  Image_14R.jpg ...

Labels: the first observer (``_1stHO``) is the ground truth (``observer=2`` picks ``_2ndHO``).
Split (HybridNetSeg, Fraz et al.): the first 8 images (Image_01L .. Image_04R) train, the last 20 test.
The release has no field-of-view masks: they are derived from the image (``train.data.base.derive_fov``:
red channel > 15, 7x7 opening, row/column span fill, no erosion).
Default input size 960x960 (the paper's).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from cli.errors import DatasetError
from train.data.base import FileDataset, Record, index_dir

DEFAULT_SIZE = (960, 960)
N_TRAIN = 8
_NAME = re.compile(r"^image_(\d+)([lr])$")


def build(root: Path, split: str, size: Sequence[int] = DEFAULT_SIZE, in_chans: int = 3, observer: int = 1,
          **_) -> FileDataset:
    files = index_dir(Path(root), "CHASE_DB1 (--data-root)")
    stems = sorted((s for s in files if _NAME.match(s)), key=lambda s: (int(_NAME.match(s).group(1)), s[-1]))
    if not stems:
        raise DatasetError(f"CHASE_DB1: no Image_NNL/R.jpg files in {str(root)!r} (expected the flat release "
                           "layout: Image_01L.jpg, Image_01L_1stHO.png, ...)")
    suffix = {1: "_1stho", 2: "_2ndho"}.get(observer)
    if suffix is None:
        raise DatasetError(f"CHASE_DB1: observer must be 1 or 2, got {observer}")
    records, missing = [], []
    for s in stems:
        label = files.get(s + suffix)
        if label is None:
            missing.append(f"{files[s].name} (no {files[s].stem}{suffix.replace('ho', 'HO')}.png)")
        records.append(Record(id=files[s].stem, image=files[s], label=label))
    if missing:
        raise DatasetError(f"CHASE_DB1: labels missing for {len(missing)} image(s) in {str(root)!r}: "
                           + ", ".join(missing[:5]))
    if len(records) <= N_TRAIN:
        raise DatasetError(f"CHASE_DB1: found {len(records)} images in {str(root)!r}; the protocol needs more than "
                           f"{N_TRAIN} (8 train, 20 test)")
    records = records[:N_TRAIN] if split == "train" else records[N_TRAIN:]
    return FileDataset(records, fov_mode="derive", name="chase_db1", split=split, size=size, in_chans=in_chans,
                       num_classes=1)
