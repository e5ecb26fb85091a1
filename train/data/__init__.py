"""Datasets by name: ``drive``, ``chase_db1``, ``hrf``, ``folder``, ``synthetic`` (default),
``synthetic_multiclass``.

    train.data.list_datasets()                                   -> names
    train.data.build_dataset(name, root, split, size=None, ...)  -> SegmentationDataset

Each loader's module docstring gives its on-disk layout, its train/test split and default size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from cli.errors import DatasetError
from train.data import chase_db1, drive, folder, hrf, synthetic
from train.data.base import Raw, Record, SegmentationDataset, derive_fov, read_image

__all__ = ["DatasetSpec", "DATASETS", "list_datasets", "get_spec", "build_dataset", "available_splits",
           "SegmentationDataset", "Raw", "Record", "derive_fov", "read_image"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    build: Callable[..., SegmentationDataset]
    default_size: tuple[int, int]
    needs_root: bool
    binary: Optional[bool]            # None: decided by the data (folder)
    summary: str


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("synthetic", synthetic.build, synthetic.DEFAULT_SIZE, False, True,
                "generated fundus-like images with vessel trees (binary; no files)"),
    DatasetSpec("synthetic_multiclass", synthetic.build_multiclass, synthetic.DEFAULT_SIZE, False, False,
                "generated MRI-like grey images, 8 classes of very different sizes (no files)"),
    DatasetSpec("drive", drive.build, drive.DEFAULT_SIZE, True, True, "DRIVE: 20 train / 20 test, 512x512"),
    DatasetSpec("chase_db1", chase_db1.build, chase_db1.DEFAULT_SIZE, True, True,
                "CHASE_DB1: first 8 train / last 20 test, 960x960, derived FOV masks"),
    DatasetSpec("hrf", hrf.build, hrf.DEFAULT_SIZE, True, True,
                "HRF: first 5 of each category train / 30 test, 784x1168"),
    DatasetSpec("folder", folder.build, folder.DEFAULT_SIZE, True, None,
                "your images/ + masks/ folders matched by stem, binary or multi-class, 512x512"),
)}
_ALIASES = {"chase": "chase_db1", "chasedb1": "chase_db1", "chase-db1": "chase_db1",
            "synthetic-multiclass": "synthetic_multiclass", "synthetic_mc": "synthetic_multiclass"}


def list_datasets() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[key]


def available_splits(name: str, root: Optional[str]) -> set[str]:
    """The splits a dataset has of its own (``val`` only for synthetic and folder with ``val/``)."""
    spec = get_spec(name)
    if spec.name.startswith("synthetic"):
        return {"train", "val", "test"}
    if spec.name == "folder":
        return folder.splits(Path(root)) or {"train", "test"}
    return {"train", "test"}


def build_dataset(name: str, root: Optional[str], split: str, *, size: Optional[Sequence[int]] = None,
                  in_chans: Optional[int] = None, num_classes: Optional[int] = None, limit: Optional[int] = None,
                  seed: int = 0, observer: int = 1) -> SegmentationDataset:
    """Builds ``split`` (``train`` | ``val`` | ``test``) of dataset ``name`` found at ``root``.

    ``size`` (H, W) defaults to the dataset's paper size; ``in_chans`` (1 grey, 3 RGB) to the dataset's
    native channels; ``num_classes`` (folder only) is inferred from the labels when None; ``limit``
    keeps the first N images; ``seed`` picks the synthetic images; ``observer`` the CHASE_DB1 labels.
    Raises :class:`cli.errors.DatasetError` (a user error) for bad names, paths and files.
    """
    spec = get_spec(name)
    if split not in ("train", "val", "test"):
        raise DatasetError(f"split must be train, val or test, got {split!r}")
    if spec.needs_root:
        if root is None:
            raise DatasetError(f"dataset {spec.name} needs --data-root (the folder holding its files)")
        if not Path(root).is_dir():
            raise DatasetError(f"--data-root {str(root)!r} is not a folder")
    if split == "val" and split not in available_splits(spec.name, root):
        raise DatasetError(f"dataset {spec.name} has no 'val' split (validation is held out from train)")
    kwargs = dict(size=tuple(size) if size is not None else spec.default_size, seed=seed, observer=observer)
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if spec.name.startswith("synthetic") and limit is not None:
        kwargs["count"] = limit
    ds = spec.build(root, split, **kwargs)
    if limit is not None:
        ds.truncate(limit)
    return ds
