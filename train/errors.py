"""User errors: bad paths, files, sizes or checkpoints. The CLIs print them as one ``error: ...`` line
and exit with status 2 (no traceback); anything else is a bug and keeps its traceback."""
from __future__ import annotations

__all__ = ["UserError", "DatasetError", "CheckpointError"]


class UserError(Exception):
    """A problem with what the user gave us (paths, files, options), reported without a traceback."""


class DatasetError(UserError):
    """Missing, mismatched or unreadable dataset files, or label values out of range."""


class CheckpointError(UserError):
    """A missing or unreadable checkpoint, or one that does not fit the requested model."""
