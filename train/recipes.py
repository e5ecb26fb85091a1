"""Training recipes: each model trains by its own paper's recipe unless command-line flags override it.

* ``hybridnetseg`` (HybridNetSeg): AdamW (lr 1e-3, weight decay 5e-4), the multi-scale mixed loss
  (BCE + Dice on the final and side outputs and their mean), batch 2 (1 for CHASE_DB1 and HRF, whose
  images are large), at most 500 epochs with early stopping (patience 30) on the validation F1 (Dice).
  Augmentation (the paper names the kinds, not the ranges; these ranges are ours): horizontal and
  vertical flips (p 0.5), rotation within +-30 deg, scale 0.9-1.1, shift 5%, brightness/contrast/
  saturation jitter 0.2.
* ``msffnet`` (lumbar MSFF network): SGD (momentum 0.9), lr 1e-3 for 80 epochs then 1e-4 for 20 (100
  epochs), batch 4, size-adaptive cross-entropy with alpha 1, no early stopping; its augmentations:
  random contrast and brightness (0.2, our range), rotation within +-10 deg, horizontal flip (p 0.5).
* ``unet`` (baseline): Adam (lr 1e-4), BCE + Dice (cross-entropy for multi-class), batch 2, 500 epochs,
  patience 30, HybridNetSeg's augmentation (so the comparison is about the network).

Any other registered model gets the ``unet`` recipe with lr 1e-3. Dataset defaults: the paper input
sizes (DRIVE 512x512, CHASE_DB1 960x960, HRF 784x1168, folder 512x512) and, for the synthetic
datasets, a short demo run (64x64, 30 epochs of 16 images, lr 3e-3 so that it learns visibly in that
time, one CPU thread: as fast as more for 64x64 images, and on a busy CPU many times faster, since
torch's threads then fight the other jobs) so ``python -m train`` finishes in a minute or two on a CPU.
"""
from __future__ import annotations

import copy

__all__ = ["RECIPES", "recipe_for", "default_in_chans", "LOSSES", "OPTIMIZERS", "DATASET_OVERRIDES"]

LOSSES = ("mixed", "bce_dice", "bce", "ce", "sace")
OPTIMIZERS = ("adamw", "adam", "sgd")

_RETINA_AUG = dict(hflip=0.5, vflip=0.5, rotate=30.0, scale=(0.9, 1.1), shift=0.05, brightness=0.2,
                   contrast=0.2, saturation=0.2)

RECIPES: dict[str, dict] = {
    "hybridnetseg": dict(
        in_chans=3, optimizer="adamw", lr=1e-3, weight_decay=5e-4, momentum=0.9, loss="mixed", loss_multiclass="ce",
        batch_size=2, batch_size_by_dataset={"chase_db1": 1, "hrf": 1}, epochs=500, patience=30,
        lr_steps=[], lr_gamma=0.1, augment=_RETINA_AUG, alpha=1.0),
    "msffnet": dict(
        in_chans=1, optimizer="sgd", lr=1e-3, weight_decay=0.0, momentum=0.9, loss="sace", loss_binary="bce_dice",
        batch_size=4, epochs=100, patience=0, lr_steps=[80], lr_gamma=0.1, alpha=1.0,
        augment=dict(hflip=0.5, rotate=10.0, brightness=0.2, contrast=0.2)),
    "unet": dict(
        in_chans=3, optimizer="adam", lr=1e-4, weight_decay=0.0, momentum=0.9, loss="bce_dice", loss_multiclass="ce",
        batch_size=2, epochs=500, patience=30, lr_steps=[], lr_gamma=0.1, augment=_RETINA_AUG, alpha=1.0),
}

# Applied on top of the model's recipe when the dataset is this one (flags still win).
DATASET_OVERRIDES: dict[str, dict] = {
    "synthetic": dict(epochs=30, patience=0, lr=3e-3, threads=1),
    "synthetic_multiclass": dict(epochs=30, patience=0, lr=3e-3, threads=1),
}


def recipe_for(model: str, dataset: str, multiclass: bool) -> dict:
    """The settings for ``model`` on ``dataset`` (a fresh dict: callers may change it).

    ``loss`` is the recipe's loss if it fits the task (binary vs multi-class), else the recipe's
    fallback for the task (``loss_binary`` / ``loss_multiclass``).
    """
    r = copy.deepcopy(RECIPES.get(model, dict(RECIPES["unet"], lr=1e-3)))
    r["batch_size"] = r.pop("batch_size_by_dataset", {}).get(dataset, r["batch_size"])
    r.update(copy.deepcopy(DATASET_OVERRIDES.get(dataset, {})))
    fits = (r["loss"] in ("ce", "sace")) == multiclass
    if not fits:
        r["loss"] = r.get("loss_multiclass", "ce") if multiclass else r.get("loss_binary", "bce_dice")
    r.pop("loss_multiclass", None)
    r.pop("loss_binary", None)
    r["monitor"] = "mdice" if multiclass else "dice"
    return r


def default_in_chans(model: str) -> int:
    return RECIPES.get(model, RECIPES["unet"])["in_chans"]
