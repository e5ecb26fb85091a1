"""The learning-rate schedules (``--schedule``):

* ``step`` (the default; per epoch): ``lr * lr_gamma ** (number of --lr-steps <= epoch)``;
* ``cosine`` (per optimiser step): a linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first
  ``warmup_steps`` steps, then a half cosine from ``lr`` down to ``min_lr`` at the last planned step
  (``epochs * steps_per_epoch``). The step count comes from the epoch and the batch, so a resumed run
  continues on the same curve (a resume with a different ``--epochs`` stretches what is left of it).
"""
from __future__ import annotations

import math

__all__ = ["lr_at", "lr_for"]


def lr_at(cfg: dict, epoch: int) -> float:
    """Step schedule: ``lr * gamma ** (number of lr_steps <= epoch)`` (epoch counted from 0)."""
    return cfg["lr"] * cfg["lr_gamma"] ** sum(epoch >= s for s in cfg["lr_steps"])


def lr_for(cfg: dict, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of batch ``step`` (from 0) of ``epoch`` (from 0) under ``cfg["schedule"]``."""
    if cfg.get("schedule", "step") != "cosine":
        return lr_at(cfg, epoch)
    lr, low, warm = cfg["lr"], cfg.get("min_lr", 0.0), int(cfg.get("warmup_steps", 0))
    t = epoch * steps_per_epoch + step
    total = max(cfg["epochs"] * steps_per_epoch, 1)
    if t < warm:
        return lr * (t + 1) / warm
    span = max(total - 1 - warm, 1)
    frac = min(max((t - warm) / span, 0.0), 1.0)
    return low + (lr - low) * 0.5 * (1.0 + math.cos(math.pi * frac))
