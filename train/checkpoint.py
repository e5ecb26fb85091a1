"""Checkpoints: plain dicts of tensors, numbers, strings and lists, so they load with
``torch.load(path, weights_only=True)`` and rebuild their model without any flags::

    {"format": "hybridops.train/1", "model": "hybridnetseg", "model_kwargs": {...}, "state_dict": {...},
     "data": {"dataset", "data_root", "size", "in_chans", "num_classes", "class_names", "mean", "std"},
     "config": {... every training setting ...}, "epoch": 12 (finished epochs), "best": {...},
     "bad_epochs": 3, "optimizer": {...}, "scaler": {...} or None, "metrics": {... last epoch ...},
     "versions": {"torch": ..., "hybridops": ...}}

Writes are atomic (a temporary file, then ``os.replace``): an interrupted run never leaves a torn
``last.pt``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from train.errors import CheckpointError

__all__ = ["FORMAT", "save", "load", "build_model", "load_weights"]

FORMAT = "hybridops.train/1"


def save(path: Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path, map_location="cpu") -> dict:
    """Loads and checks a checkpoint written by ``python -m train`` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:      # any failure to unpickle a user-given file is a bad file, not a bug of ours
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        first = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0])
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: not a PyTorch file written by python -m train, "
                              f"or truncated ({first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "state_dict" not in ckpt or "model" not in ckpt:
        what = "a plain state dict" if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()) \
            else "not a training checkpoint"
        raise CheckpointError(f"{str(path)!r} is {what}: expected a checkpoint written by python -m train "
                              f"(format {FORMAT!r}, with the model name and config)")
    return ckpt


def _check_model_name(ckpt: dict, expect: Optional[str], path) -> None:
    if expect is not None and ckpt["model"] != expect:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {ckpt['model']!r} model, not {expect!r}")


def _load_state(model: nn.Module, state: dict, path, what: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]} (checkpoint vs model)")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{what} {str(path)!r} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def build_model(ckpt: dict, path="checkpoint", expect_model: Optional[str] = None) -> nn.Module:
    """The checkpoint's model, rebuilt from its name and kwargs, with its weights (on the CPU)."""
    import models

    _check_model_name(ckpt, expect_model, path)
    name = ckpt["model"]
    if not models.is_model(name):
        raise CheckpointError(f"checkpoint {str(path)!r} holds model {name!r}, which this version does not have "
                              f"(available: {', '.join(models.list_models())})")
    try:
        model = models.create_model(name, **dict(ckpt.get("model_kwargs") or {}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild {name!r} from checkpoint {str(path)!r}: {e}") from None
    _load_state(model, ckpt["state_dict"], path, "checkpoint")
    return model


def load_weights(model: nn.Module, model_name: str, path) -> dict:
    """``--init-from``: copies a checkpoint's weights into ``model`` (same model and shapes)."""
    ckpt = load(path)
    _check_model_name(ckpt, model_name, path)
    _load_state(model, ckpt["state_dict"], path, "--init-from checkpoint")
    return ckpt
