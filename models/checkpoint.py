"""A model back from a file: reading a user-given ``.pt`` file safely, building a model by name with
user errors for what the user got wrong, and loading weights only when they fit and are finite.

The model part of a checkpoint written by ``python -m train`` is ``{"model": name, "model_kwargs":
{...}, "state_dict": {...}}``; ``train.checkpoint`` adds the training entries (data, config, optimizer,
...) on top of what this module checks. ``python -m models.export`` reads checkpoints and plain state
dicts with it alone. Every problem is a :class:`cli.errors.CheckpointError` (or the ``error`` class a
caller names): one ``error: ...`` line naming the file and the entry, exit status 2.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from cli.errors import CheckpointError, UserError
from models import registry

__all__ = ["PIP_HINTS", "MODEL_ENTRIES", "damaged", "check_entries", "check_model_entries", "read", "is_state_dict",
           "first_nonfinite", "load_state", "create_model"]

# ``pip install`` hints for the optional modules a model may import (keep in step with requirements-test.txt).
PIP_HINTS = {"torchvision": "torchvision==0.29.1"}

# key: (test, what the value must be) for the entries that rebuild the model; ``model_kwargs`` is optional
# (the model's defaults).
MODEL_ENTRIES: dict[str, tuple[Callable, str]] = {
    "model": (lambda v: isinstance(v, str) and bool(v), "a model name"),
    "state_dict": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                          for k, t in v.items()), "a dict of named tensors"),
    "model_kwargs": (lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
                     "a dict of constructor arguments"),
}


def damaged(path, what: str) -> CheckpointError:
    """The error for a checkpoint with a missing or malformed entry (``what`` says which)."""
    return CheckpointError(f"checkpoint {str(path)!r} is damaged or incomplete: {what}")


def check_entries(ckpt: dict, path, table: dict[str, tuple[Callable, str]], keys: Iterable[str],
                  optional: Iterable[str] = ()) -> None:
    """Raises :func:`damaged` for the first of ``keys`` that ``ckpt`` lacks (unless ``optional``) or
    whose value fails its test in ``table`` (``key: (test, what it must be)``)."""
    for key in keys:
        test, want = table[key]
        if key not in ckpt:
            if key in optional:
                continue
            raise damaged(path, f"it has no {key!r} entry ({want})")
        if not test(ckpt[key]):
            raise damaged(path, f"{key!r} must be {want}, got {type(ckpt[key]).__name__}")


def check_model_entries(ckpt: dict, path) -> None:
    """Raises :class:`CheckpointError` naming ``path`` and the first missing or malformed entry of
    :data:`MODEL_ENTRIES` (the model name, its weights and its constructor arguments)."""
    check_entries(ckpt, path, MODEL_ENTRIES, MODEL_ENTRIES, optional=("model_kwargs",))


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
    try:
        cls = inspect.signature(registry._MODELS[name], eval_str=True).return_annotation
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
    if not registry.is_model(name):
        raise error(f"unknown model {name!r}; available: {', '.join(registry.list_models())}")
    try:
        return registry.create_model(name, **kwargs)
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
