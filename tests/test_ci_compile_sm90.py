"""``.ci/compile_sm90.sh`` (the DCN unit compiled for Hopper in CI): its help and argument errors answer
before anything compiles. The compile itself is a CI step (.ci/run), not a test."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "compile_sm90.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})


def test_help_names_the_arch_and_options():
    r = _run("--help")
    assert r.returncode == 0
    assert "sm_90" in r.stdout and "--python" in r.stdout and "--arch" in r.stdout


def test_bad_arguments_fail_clearly():
    r = _run("--arch", "hopper")
    assert r.returncode == 2 and "--arch takes names such as sm_90, got 'hopper'" in r.stderr
    r = _run("--out")
    assert r.returncode == 2 and "--out needs a value" in r.stderr
    r = _run("--fast")
    assert r.returncode == 2 and "unknown option '--fast'" in r.stderr
