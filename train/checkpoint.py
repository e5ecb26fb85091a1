"""Checkpoints: plain dicts of tensors, numbers, strings and lists, so they load with
``torch.load(path, weights_only=True)`` and rebuild their model without any flags::

    {"format": "hybridops.train/1", "model": "hybridnetseg", "model_kwargs": {...}, "state_dict": {...},
     "data": {"dataset", "data_root", "size", "in_chans", "num_classes", "class_names", "mean", "std"},
     "config": {... every training setting ...}, "epoch": 12 (finished epochs), "best": {...},
     "bad_epochs": 3, "optimizer": {...}, "scaler": {...} or None, "metrics": {... last epoch ...},
     "versions": {"torch": ..., "hybridops": ...}}

Writes are atomic (a temporary file, then ``os.replace``): an interrupted run never leaves a torn
``last.pt``. Loading checks what the caller needs (:data:`PURPOSES`): the entries, their types, an input
size that :func:`train.data.base.check_input_size` accepts, and weights free of NaN/inf; any problem is a
:class:`CheckpointError` naming the file and the entry.
"""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from train.data.base import check_input_size
from train.errors import CheckpointError, UserError

__all__ = ["FORMAT", "PURPOSES", "PIP_HINTS", "save", "load", "read", "check_structure", "is_state_dict",
           "first_nonfinite", "create_model", "load_state", "build_model", "load_weights"]

FORMAT = "hybridops.train/1"

# What each use of a checkpoint needs besides ``format``, ``model`` and ``state_dict``.
PURPOSES = {"weights": (), "inference": ("data",), "resume": ("data", "config", "epoch", "best", "bad_epochs",
                                                               "optimizer")}

# ``pip install`` hints for the optional modules a model may import (keep in step with requirements-test.txt).
PIP_HINTS = {"torchvision": "torchvision==0.29.1"}


def save(path: Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# key: (test, what the value must be). ``size`` gets its own check (bounds and the flag-style message).
_TOP: dict[str, tuple[Callable, str]] = {
    "model": (lambda v: isinstance(v, str) and bool(v), "a model name"),
    "state_dict": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                          for k, t in v.items()), "a dict of named tensors"),
    "model_kwargs": (lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
                     "a dict of constructor arguments"),
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
    def bad(what: str):
        return CheckpointError(f"checkpoint {str(path)!r} is damaged or incomplete: {what}")

    for key in ("model", "state_dict", "model_kwargs") + PURPOSES[purpose]:
        test, want = _TOP[key]
        if key not in ckpt:
            if key == "model_kwargs":
                continue                     # optional: the model's defaults
            raise bad(f"it has no {key!r} entry ({want})")
        if not test(ckpt[key]):
            raise bad(f"{key!r} must be {want}, got {type(ckpt[key]).__name__}")
    if "data" not in PURPOSES[purpose]:
        return
    data = ckpt["data"]
    for table, required in ((_DATA, True), (_DATA_OPTIONAL, False)):
        for key, (test, want) in table.items():
            if key not in data:
                if required:
                    raise bad(f"'data' has no {key!r} entry ({want})")
                continue
            if not test(data[key]):
                raise bad(f"'data.{key}' must be {want}, got {data[key]!r:.80}")
    try:
        check_input_size(data["size"], what="its 'data.size'")
    except UserError as e:
        raise bad(str(e)) from None


def load(path, map_location="cpu", purpose: str = "inference") -> dict:
    """Loads and checks a checkpoint written by ``python -m train`` (``weights_only=True``).

    ``purpose``: ``"weights"`` (model name, kwargs and weights: ``--init-from``, export),
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


def read(path, map_location="cpu") -> object:
    """Whatever ``torch.load(path, weights_only=True)`` returns; a missing, empty, truncated or foreign file
    is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: the file is empty")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:      # any failure to unpickle a user-given file is a bad file, not a bug of ours
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        first = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0])
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: not a PyTorch file written by python -m train, "
                              f"or truncated ({first[:200]})") from None


def is_state_dict(obj) -> bool:
    """Whether ``obj`` is a non-empty plain state dict (names -> tensors)."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in obj.items())


def first_nonfinite(state: dict) -> Optional[str]:
    """``"name (k of n values are NaN/inf)"`` for the first floating-point tensor of ``state`` holding a
    NaN or an infinity, else ``None``."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return f"{name} ({bad} of {t.numel()} values are NaN/inf)"
    return None


def _check_model_name(ckpt: dict, expect: Optional[str], path) -> None:
    if expect is not None and ckpt["model"] != expect:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {ckpt['model']!r} model, not {expect!r}")


def load_state(model: nn.Module, state: dict, path, what: str) -> None:
    """Copies ``state`` into ``model`` after checking that it fits (names, shapes) and is finite."""
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
    nonfinite = first_nonfinite(state)
    if nonfinite:
        raise CheckpointError(f"{what} {str(path)!r} holds non-finite weights: {nonfinite}; it comes from a run "
                              "that diverged, and its outputs would be meaningless")
    model.load_state_dict(state, strict=True)


def _accepted_kwargs(name: str) -> Optional[list[str]]:
    """The keyword arguments of the class that model ``name`` builds (from its entry point's return
    annotation), or ``None`` when that cannot be told."""
    import models.registry

    try:
        cls = inspect.signature(models.registry._MODELS[name], eval_str=True).return_annotation
        return [p for p in inspect.signature(cls).parameters if p != "self"]
    except Exception:  # noqa: BLE001 - only an extra hint in an error message
        return None


def create_model(name: str, kwargs: dict, *, error: type[UserError] = UserError, source: str = "",
                 shown: Optional[dict] = None) -> nn.Module:
    """``models.create_model(name, **kwargs)`` whose failures caused by the user come back as ``error``
    (one line naming the model and the arguments): a missing optional module (e.g. torchvision for
    ``msffnet``) and constructor arguments it does not take or rejects. ``source`` says where the
    arguments came from (``"--model-kwargs"``, a checkpoint); ``shown`` are the ones the user gave
    (default: ``kwargs``)."""
    import models

    if not models.is_model(name):
        raise error(f"unknown model {name!r}; available: {', '.join(models.list_models())}")
    try:
        return models.create_model(name, **kwargs)
    except ImportError as e:
        module = (getattr(e, "name", None) or "").split(".")[0]
        if not module:
            raise error(f"model {name!r} needs a module that cannot be imported: {e}") from None
        raise error(f"model {name!r} needs {module} (pip install {PIP_HINTS.get(module, module)})") from None
    except (TypeError, ValueError) as e:
        takes = _accepted_kwargs(name)
        hint = f" ({name} takes: {', '.join(takes)})" if takes else ""
        raise error(f"cannot build model {name!r} with {source + ' ' if source else ''}"
                    f"{kwargs if shown is None else shown}: {e}{hint}") from None


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
