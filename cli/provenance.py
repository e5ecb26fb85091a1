"""Where a result came from: the versions, the git commit, the command line and the time, recorded in
every ``config.json``, checkpoint and ``metrics.json`` that ``train`` writes and every results file of
``benchmarks`` -- by these functions alone, so that the records of the two agree."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

__all__ = ["versions", "command_line", "git_sha", "utc_timestamp"]

REPO = Path(__file__).resolve().parent.parent


def versions() -> dict:
    """``{"python": ..., "torch": ..., "hybridops": ...}`` of this process."""
    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    try:
        import hybridops
        out["hybridops"] = str(getattr(hybridops, "__version__", "?"))
    except Exception:  # pragma: no cover - hybridops is a dependency of every command
        pass
    return out


def command_line() -> str:
    """The command that is running, as the user would type it (``python -m train ...``)."""
    a0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if a0.name == "__main__.py":
        prog = f"python -m {a0.parent.name}"
    elif a0.parent.name == "train" and a0.suffix == ".py":
        prog = f"python -m train.{a0.stem}"
    else:
        prog = a0.name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prog = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])} -m train"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def git_sha() -> Optional[str]:
    """The short commit of the checkout this code runs from, with ``-dirty`` when ``csrc/`` or
    ``hybridops/`` (the compiled library) have uncommitted changes; None outside a git checkout or
    without git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "csrc", "hybridops"], cwd=REPO,
                               capture_output=True, timeout=10).returncode != 0
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def utc_timestamp() -> str:
    """Now in UTC, ISO 8601 to the second (``2026-11-23T14:05:09+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
