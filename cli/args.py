"""Checks of the arguments that several commands take (``python -m train``, ``train.evaluate``,
``train.predict``, ``models.export``); a bad value is a :class:`cli.errors.UserError` naming the flag."""
from __future__ import annotations

from typing import Optional, Sequence

from cli.errors import UserError

__all__ = ["MAX_SIDE", "check_input_size"]

# The largest input side (H or W) the CLIs accept: 16384 covers full-resolution fundus photos (HRF is
# 3504x2336) many times over; beyond it one uint8 RGB image alone takes over 800 MB. Training also
# checks that a batch fits in the device's memory (``train.memory``).
MAX_SIDE = 16384


def check_input_size(size: Sequence[int], divisor: int = 1, model: Optional[str] = None,
                     what: str = "--size") -> tuple[int, int]:
    """``(H, W)`` if ``size`` is two integers in ``1..MAX_SIDE`` divisible by ``divisor`` (the model's
    ``input_divisor``), else a :class:`UserError` that names ``what`` (the flag) and, with ``model``, the
    model and a size that works."""
    vals = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(vals) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in vals):
        raise UserError(f"{what} takes two integers H W, got {' '.join(map(str, vals))}")
    h, w = vals
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise UserError(f"{what} {h} {w}: H and W must be in 1..{MAX_SIDE}")
    if h % divisor or w % divisor:
        near = lambda s: min(MAX_SIDE // divisor, max(1, (s + divisor // 2) // divisor)) * divisor  # noqa: E731
        raise UserError(f"{what} {h} {w}: {model or 'the model'} needs H and W divisible by {divisor} "
                        f"(e.g. {near(h)} {near(w)})")
    return h, w
