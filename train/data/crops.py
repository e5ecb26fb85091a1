"""Training on random crops of the native image (``--crop H W``): no resizing, so vessels one or two
pixels wide stay that wide, and each epoch sees ``crops_per_image`` crops of every training image.

Each crop's centre is a pixel drawn uniformly inside the image's field of view; the H x W window around
it may reach past the image's border, where it reads 0 (black image, background label, outside the
FOV), as whole-image inference pads with zeros (``train.infer``). The crop of sample ``k`` in epoch
``e`` depends only on ``(seed, e, k)``: the sampler hands the epoch to the dataset with each index
(:class:`EpochSampler`), so data-loader workers and resumed runs draw the same crops.

    ds = CropDataset(train_ds, [0, 1, 2], crop=(384, 384), crops_per_image=20, seed=0)
    ds[(epoch, k)] -> {"image": uint8 [C, 384, 384], "label": uint8 [384, 384], "fov": bool [384, 384],
                       "index": image index in train_ds, "centre": int64 [2] (row, col in the image)}
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from train.data.base import SegmentationDataset, check_size

__all__ = ["CropDataset", "EpochSampler", "native_item", "crop_window"]


def native_item(ds: SegmentationDataset, i: int) -> dict:
    """Sample ``i`` of ``ds`` at its original size as tensors (cached on ``ds``): ``image`` uint8
    ``[C, h, w]``, ``label`` uint8 ``[h, w]``, ``fov`` bool ``[h, w]``, ``index``."""
    cache = ds.__dict__.setdefault("_native_cache", {})
    if i not in cache:
        raw = ds.original(i)
        h, w = raw.image.shape[:2]
        label = torch.from_numpy(raw.label) if raw.label is not None else torch.zeros(h, w, dtype=torch.uint8)
        cache[i] = {"image": torch.from_numpy(raw.image).permute(2, 0, 1).contiguous(),
                    "label": label.to(torch.uint8), "fov": torch.from_numpy(raw.fov).bool(), "index": i}
    return cache[i]


def crop_window(t: Tensor, top: int, left: int, h: int, w: int) -> Tensor:
    """``t[..., top:top+h, left:left+w]`` where the window may reach past the borders (those pixels 0)."""
    H, W = t.shape[-2:]
    out = torch.zeros(*t.shape[:-2], h, w, dtype=t.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = t[..., y0:y1, x0:x1]
    return out


class CropDataset(Dataset):
    """``crops_per_image`` random native-resolution crops per image of ``ds[indices]``, indexed by
    ``(epoch, k)`` with ``k`` in ``0 .. len - 1`` (``k // crops_per_image`` picks the image)."""

    def __init__(self, ds: SegmentationDataset, indices: Sequence[int], crop: Sequence[int], crops_per_image: int,
                 seed: int) -> None:
        self.ds, self.indices = ds, list(indices)
        self.crop = check_size(crop)
        self.crops_per_image, self.seed = int(crops_per_image), int(seed)
        self._fov_pixels: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.indices) * self.crops_per_image

    def preload(self) -> None:
        """Reads every image now (a bad file fails before training) and caches its FOV pixel list."""
        for i in self.indices:
            self._pixels(i)

    def _pixels(self, i: int) -> Tensor:
        if i not in self._fov_pixels:
            fov = native_item(self.ds, i)["fov"]
            flat = fov.flatten().nonzero()[:, 0]
            self._fov_pixels[i] = flat if flat.numel() else torch.arange(fov.numel())   # no FOV: anywhere
        return self._fov_pixels[i]

    def centre(self, epoch: int, k: int) -> tuple[int, int]:
        """The (row, col) in the native image of crop ``k`` of ``epoch``: a pixel inside the FOV."""
        i = self.indices[k // self.crops_per_image]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 7919 + k * 104_729 + 17) % (2 ** 63))
        pixels = self._pixels(i)
        p = int(pixels[torch.randint(pixels.numel(), (1,), generator=g)])
        w = native_item(self.ds, i)["fov"].shape[1]
        return p // w, p % w

    def __getitem__(self, key) -> dict:
        epoch, k = key if isinstance(key, tuple) else (0, key)
        if not 0 <= k < len(self):
            raise IndexError(f"crop {k} out of range 0..{len(self) - 1}")
        i = self.indices[k // self.crops_per_image]
        item = native_item(self.ds, i)
        (cy, cx), (h, w) = self.centre(epoch, k), self.crop
        top, left = cy - h // 2, cx - w // 2
        return {"image": crop_window(item["image"], top, left, h, w), "label": crop_window(item["label"], top, left, h, w),
                "fov": crop_window(item["fov"], top, left, h, w), "index": i, "centre": torch.tensor([cy, cx])}


class EpochSampler(Sampler):
    """Wraps a sampler of indices (a ``DistributedSampler``) to yield ``(epoch, index)`` pairs."""

    def __init__(self, sampler) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((self.epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
