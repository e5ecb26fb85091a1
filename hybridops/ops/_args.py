"""Argument normalisation and validation shared by the op wrappers."""
from __future__ import annotations

from typing import Sequence, Union

import torch

IntPair = Union[int, Sequence[int]]


def pair(value: IntPair, name: str, op: str, minimum: int) -> list[int]:
    """``value`` as two ints (an int is used for both), each at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        out = [value, value]
    else:
        try:
            out = [int(v) for v in value]
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
        if len(out) != 2:
            raise ValueError(f"{op}: {name} must have 2 values, got {len(out)}: {value!r}")
    if min(out) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {kind}, got {tuple(out)}")
    return out


def check_tensor(t: object, name: str, op: str, ndim: int, like: torch.Tensor | None = None) -> None:
    """``t`` is a tensor of rank ``ndim`` with the device and dtype of ``like``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got {t.dim()}-D with shape {tuple(t.shape)}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(f"{op}: {name} is on {t.device} but input is on {like.device}")
        if t.dtype != like.dtype:
            raise ValueError(f"{op}: {name} has dtype {t.dtype} but input has dtype {like.dtype}")


def check_bias(bias: object, op: str, like: torch.Tensor, channels: int) -> None:
    """``bias`` is None or a ``[channels]`` tensor with the device and dtype of ``like``."""
    if bias is None:
        return
    check_tensor(bias, "bias", op, 1, like=like)
    if bias.shape[0] != channels:
        raise ValueError(f"{op}: bias must have shape ({channels},), got {tuple(bias.shape)}")
