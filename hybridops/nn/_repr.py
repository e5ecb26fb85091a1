"""The ``extra_repr`` of every hybridops module (convolutions and losses): what the user set, as
``nn.Conv2d`` and the ``nn.*Loss`` classes show it."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from torch import nn


def settings_repr(module: nn.Module, defaults: Mapping[str, object], first: Sequence[str] = (),
                  extra: Optional[Mapping[str, str]] = None) -> str:
    """``", "``-joined: ``first`` (always shown, already formatted), then ``name=value!r`` for each
    attribute ``name`` of ``module`` whose value differs from ``defaults[name]`` (a missing attribute
    counts as its default), then ``name=text`` for each item of ``extra``.

    Example: ``settings_repr(conv, {"padding": (0, 0)}, ["4", "8"])`` is ``"4, 8, padding=(1, 1)"``
    for a ``conv`` with ``padding == (1, 1)`` and ``"4, 8"`` for one without padding."""
    parts = list(first)
    parts += [f"{k}={getattr(module, k, d)!r}" for k, d in defaults.items() if getattr(module, k, d) != d]
    parts += [f"{k}={v}" for k, v in (extra or {}).items()]
    return ", ".join(parts)
