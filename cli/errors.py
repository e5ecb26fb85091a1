"""User errors: bad paths, files, options, sizes or checkpoints. The CLIs print them as one ``error: ...``
line and exit with status 2 (no traceback); anything else is a bug and keeps its traceback.

Every CLI of the repository (``python -m train``, ``train.evaluate``, ``train.predict``,
``models.export``) runs its body through :func:`run_cli`, so the rule holds in one place; the module
stands below ``models`` and ``train`` so that both may raise these errors.
"""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["UserError", "DatasetError", "CheckpointError", "EXIT_USER_ERROR", "run_cli", "one_line"]

EXIT_USER_ERROR = 2          # argparse's status for bad arguments, used for every user error


class UserError(Exception):
    """A problem with what the user gave us (paths, files, options), reported without a traceback."""


class DatasetError(UserError):
    """Missing, mismatched or unreadable dataset files, or label values out of range."""


class CheckpointError(UserError):
    """A missing, unreadable or malformed checkpoint, one with non-finite weights, or one that does not
    fit the requested model."""


def one_line(text: str) -> str:
    """``text`` on one line: its non-blank lines, stripped, joined by ``"; "``."""
    return "; ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


def run_cli(body: Callable[[], object]) -> int:
    """Runs a CLI's ``body``; returns 0, or :data:`EXIT_USER_ERROR` after printing a :class:`UserError`
    as one ``error: ...`` line on stderr. Other exceptions propagate (a bug keeps its traceback)."""
    try:
        body()
    except UserError as e:
        print(f"error: {one_line(str(e)) or type(e).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
