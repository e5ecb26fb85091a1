"""Checkpoints: plain dicts of tensors, numbers, strings and lists, so they load with
``torch.load(path, weights_only=True)`` and rebuild their model without any flags::

    {"format": "hybridops.train/1", "model": "hybridnetseg", "model_kwargs": {...}, "state_dict": {...},
     "data": {"dataset", "data_root", "size", "in_chans", "num_classes", "class_names", "mean", "std"},
     "config": {... every training setting ...}, "epoch": 12 (finished epochs), "best": {...},
     "bad_epochs": 3, "optimizer": {...}, "scaler": {...} or None, "metrics": {... last epoch ...},
     "versions": {"torch": ..., "hybridops": ...}}

Writes are atomic (a temporary file, then ``os.replace``): an interrupted run never leaves a torn
``last.pt``. Loading checks what the caller needs (:data:`PURPOSES`): the entries, their types, an input
size that :func:`cli.args.check_input_size` accepts, and weights free of NaN/inf; any problem is a
:class:`CheckpointError` naming the file and the entry. Reading the file, the model entries and the
weights are :mod:`models.checkpoint`'s (``python -m models.export`` reads checkpoints with it alone);
this module adds the training entries.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from cli.args import check_input_size
from cli.errors import CheckpointError, UserError
from models.checkpoint import check_entries, check_model_entries, create_model, damaged, is_state_dict, load_state, read

__all__ = ["FORMAT", "PURPOSES", "save", "load", "check_structure", "build_model", "load_weights"]

FORMAT = "hybridops.train/1"

# What each use of a checkpoint needs besides ``format``, ``model`` and ``state_dict``.
PURPOSES = {"weights": (), "inference": ("data",), "resume": ("data", "config", "epoch", "best", "bad_epochs",
                                                               "optimizer")}


def save(path: Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# key: (test, what the value must be) for the training entries (the model's are
# ``models.checkpoint.MODEL_ENTRIES``). ``size`` gets its own check (bounds and the flag-style message).
_TOP: dict[str, tuple[Callable, str]] = {
    "data": (lambda v: isinstance(v, dict), "a dict (dataset, size, in_chans, num_classes, ...)"),
    "config": (lambda v: isinstance(v, dict), "a dict of training settings"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "the number of finished epochs"),
    "best": (lambda v: isinstance(v, dict), "a dict"),
    "bad_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "optimizer": (lambda v: isinstance(v, dict), "an optimizer state dict"),
}
_DATA: dict[str, tuple[Callable, str]] = {
    "dataset": (lambda v: isinstance(v, str) and bool(v), "a dataset name"),
    "size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(s) for s in v),
             "[H, W], two integers"),
    "in_chans": (lambda v: v in (1, 3) and _is_int(v), "1 or 3"),
    "num_classes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}
_DATA_OPTIONAL: dict[str, tuple[Callable, str]] = {
    "mean": (_is_number, "a finite number"),
    "std": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "native": (lambda v: isinstance(v, bool), "true or false (crop training: infer on the whole native image)"),
    "class_names": (lambda v: v is None or (isinstance(v, list) and all(isinstance(c, str) for c in v)),
                    "a list of names"),
}


def check_structure(ckpt: dict, path, purpose: str = "inference") -> None:
    """Raises :class:`CheckpointError` naming ``path`` and the first missing or malformed entry that
    ``purpose`` (a key of :data:`PURPOSES`) needs; the sizes must be ones :func:`check_input_size` accepts."""
    check_model_entries(ckpt, path)
    check_entries(ckpt, path, _TOP, PURPOSES[purpose])
    if "data" not in PURPOSES[purpose]:
        return
    data = ckpt["data"]
    for table, required in ((_DATA, True), (_DATA_OPTIONAL, False)):
        for key, (test, want) in table.items():
            if key not in data:
                if required:
                    raise damaged(path, f"'data' has no {key!r} entry ({want})")
                continue
            if not test(data[key]):
                raise damaged(path, f"'data.{key}' must be {want}, got {data[key]!r:.80}")
    try:
        check_input_size(data["size"], what="its 'data.size'")
    except UserError as e:
        raise damaged(path, str(e)) from None


def load(path, map_location="cpu", purpose: str = "inference") -> dict:
    """Loads and checks a checkpoint written by ``python -m train`` (``weights_only=True``).

    ``purpose``: ``"weights"`` (model name, kwargs and weights: ``--init-from``),
    ``"inference"`` (also ``data``: evaluation, prediction) or ``"resume"`` (also the optimizer, epoch
    and config). Raises :class:`CheckpointError` (a user error) for a missing, unreadable, foreign or
    malformed file; the weights are checked for NaN/inf when they are loaded into a model.
    """
    path = Path(path)
    ckpt = read(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "state_dict" not in ckpt or "model" not in ckpt:
        what = "a plain state dict" if is_state_dict(ckpt) else "not a training checkpoint"
        raise CheckpointError(f"{str(path)!r} is {what}: expected a checkpoint written by python -m train "
                              f"(format {FORMAT!r}, with the model name and config)")
    check_structure(ckpt, path, purpose)
    return ckpt


def _check_model_name(ckpt: dict, expect: Optional[str], path) -> None:
    if expect is not None and ckpt["model"] != expect:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {ckpt['model']!r} model, not {expect!r}")


def build_model(ckpt: dict, path="checkpoint", expect_model: Optional[str] = None) -> nn.Module:
    """The checkpoint's model, rebuilt from its name and kwargs, with its (finite) weights, on the CPU."""
    import models

    _check_model_name(ckpt, expect_model, path)
    name = ckpt["model"]
    if not models.is_model(name):
        raise CheckpointError(f"checkpoint {str(path)!r} holds model {name!r}, which this version does not have "
                              f"(available: {', '.join(models.list_models())})")
    model = create_model(name, dict(ckpt.get("model_kwargs") or {}), error=CheckpointError,
                         source=f"the arguments stored in checkpoint {str(path)!r}")
    load_state(model, ckpt["state_dict"], path, "checkpoint")
    return model


def load_weights(model: nn.Module, model_name: str, path) -> dict:
    """``--init-from``: copies a checkpoint's weights into ``model`` (same model and shapes, finite)."""
    ckpt = load(path, purpose="weights")
    _check_model_name(ckpt, model_name, path)
    load_state(model, ckpt["state_dict"], path, "--init-from checkpoint")
    return ckpt
