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

Run recipes (``--recipe NAME``, :data:`RUN_RECIPES`) sit on top of the model's recipe (flags still win):

* ``paper``: the model's paper protocol exactly, without the synthetic datasets' demo shortcut
  (HybridNetSeg on CHASE_DB1: 960x960 resized input, batch 1, 500 epochs, patience 30).
* ``chase_db1_cpu``: paper fidelity within a CPU budget. Training on random 320x320 crops of the
  native image (no resizing: thin vessels stay 1-2 px wide), 20 crops per image per epoch (their
  centres drawn inside the FOV), 20 epochs (8 CHASE_DB1 images: 3200 steps of batch 1), the paper's
  AdamW 1e-3 / wd 5e-4 and mixed loss, 100 steps of linear warm-up then a cosine decay to 1e-5 per
  step, no early stopping, no validation (the 8/20 split leaves no image to spare), 1 thread (on a
  shared 2-core CPU a 384^2 step took 2.3 s with 1 thread, 5-6 s with 2: the threads fight);
  validation and evaluation run on the whole native image (zero-padded to a multiple of 16).
"""
from __future__ import annotations

import copy

from cli.errors import UserError

__all__ = ["RECIPES", "recipe_for", "default_in_chans", "LOSSES", "OPTIMIZERS", "DATASET_OVERRIDES", "RUN_RECIPES",
           "run_recipe", "SCHEDULES", "RUN_DEFAULTS"]

LOSSES = ("mixed", "bce_dice", "bce", "ce", "sace")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("step", "cosine")

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


# The run settings every recipe has (crop training off: the whole image resized to --size).
RUN_DEFAULTS: dict = dict(crop=None, crops_per_image=1, schedule="step", warmup_steps=0, min_lr=0.0, max_minutes=None)

# ``--recipe NAME``: settings on top of the model's recipe; ``dataset_overrides`` False drops the
# synthetic datasets' demo shortcut (DATASET_OVERRIDES).
RUN_RECIPES: dict[str, dict] = {
    "paper": dict(dataset_overrides=False),
    "chase_db1_cpu": dict(
        dataset_overrides=False, crop=[320, 320], crops_per_image=20, epochs=20, batch_size=1, patience=0,
        optimizer="adamw", lr=1e-3, weight_decay=5e-4, loss="mixed", schedule="cosine", warmup_steps=100,
        min_lr=1e-5, lr_steps=[], val="none", threads=1),
}


def run_recipe(name: str) -> dict:
    """The settings of ``--recipe name`` (a fresh dict); :class:`UserError` naming the choices otherwise."""
    if name not in RUN_RECIPES:
        raise UserError(f"unknown --recipe {name!r}; available: {', '.join(RUN_RECIPES)}")
    return copy.deepcopy(RUN_RECIPES[name])


def recipe_for(model: str, dataset: str, multiclass: bool, recipe: str | None = None) -> dict:
    """The settings for ``model`` on ``dataset`` under run recipe ``recipe`` (None: the model's own
    recipe with the dataset's overrides), a fresh dict: callers may change it.

    ``loss`` is the recipe's loss if it fits the task (binary vs multi-class), else the recipe's
    fallback for the task (``loss_binary`` / ``loss_multiclass``).
    """
    run = run_recipe(recipe) if recipe is not None else {}
    r = copy.deepcopy(RECIPES.get(model, dict(RECIPES["unet"], lr=1e-3)))
    r["batch_size"] = r.pop("batch_size_by_dataset", {}).get(dataset, r["batch_size"])
    r.update(copy.deepcopy(RUN_DEFAULTS))
    if run.pop("dataset_overrides", True):
        r.update(copy.deepcopy(DATASET_OVERRIDES.get(dataset, {})))
    r.update(run)
    fits = (r["loss"] in ("ce", "sace")) == multiclass
    if not fits:
        r["loss"] = r.get("loss_multiclass", "ce") if multiclass else r.get("loss_binary", "bce_dice")
    r.pop("loss_multiclass", None)
    r.pop("loss_binary", None)
    r["monitor"] = "mdice" if multiclass else "dice"
    return r


def default_in_chans(model: str) -> int:
    return RECIPES.get(model, RECIPES["unet"])["in_chans"]
