"""Where a result came from: the versions, the git commit and the command line, recorded in every
``config.json``, checkpoint, ``metrics.json`` and benchmark results file that ``train`` writes."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Optional

import torch

__all__ = ["versions", "command_line", "git_sha"]


def versions() -> dict:
    """``{"python": ..., "torch": ..., "hybridops": ...}`` of this process."""
    out = {"python": platform.python_version(), "torch": str(torch.__version__)}
    try:
        import hybridops
        out["hybridops"] = str(getattr(hybridops, "__version__", "?"))
    except Exception:  # pragma: no cover - hybridops is a dependency of models
        pass
    return out


def command_line() -> str:
    """The command that is running, as the user would type it (``python -m train ...``)."""
    import shlex

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
    """The short commit of the checkout this code runs from, or None (not a git checkout, no git)."""
    try:
        import subprocess
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=5)
        return r.stdout.strip() or None
    except Exception:
        return None

