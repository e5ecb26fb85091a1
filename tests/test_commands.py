"""What a new user runs first: every command-line module of the repository starts (``--help``, and the
latency benchmark's ``--quick`` run) without a missing module, and ``requirements.txt`` -- the main
job's environment -- provides every third-party module the project's code imports unguarded."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
OWN = ("hybridops", "models", "train", "benchmarks", "plotting", "cli")      # the project's own top-level packages
# Whose imports requirements.txt must cover. hybridops declares its own in setup.py (its ONNX helpers need
# the optional [deploy] extra and say so when it is missing).
CODE = ("models", "train", "benchmarks", "plotting", "cli")
DOCUMENTED = {"train", "train.evaluate", "train.predict", "train.augment", "models.export", "benchmarks.latency",
              "benchmarks.deform_conv2d", "benchmarks.losses", "benchmarks.mixconv", "benchmarks.onnx_mixconv",
              "benchmarks.plots", "benchmarks.report"}


def _command_modules() -> list[str]:
    """Every module that runs as ``python -m <name>``: a package's ``__main__.py``, or a module with an
    ``if __name__ == "__main__":`` block."""
    found = []
    for pkg in ("train", "models", "benchmarks"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            if path.name == "__main__.py":
                found.append(".".join(rel.parts[:-1]))
            elif re.search(r'^if __name__ == "__main__":', path.read_text(), re.M):
                found.append(".".join(rel.parts))
    return found


def _run(args: list[str], timeout: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)                    # as a user runs it: from the checkout's root
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_only_the_library_is_installed():
    """``pip install .`` installs ``hybridops`` alone: the commands' packages (``models``, ``train``,
    ``benchmarks``) and their helpers (``plotting``, ``cli``) run from the checkout and must not land in
    site-packages under such generic names."""
    from setuptools import find_packages

    call = next(node for node in ast.walk(ast.parse((REPO / "setup.py").read_text()))
                if isinstance(node, ast.keyword) and node.arg == "packages").value
    assert isinstance(call, ast.Call) and call.func.id == "find_packages", ast.dump(call)
    include = ast.literal_eval(next(kw.value for kw in call.keywords if kw.arg == "include"))
    installed = {name.split(".")[0] for name in find_packages(str(REPO), include=include)}
    assert installed == {"hybridops"}, installed
    assert set(OWN) - {"hybridops"} == {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} - {"hybridops"}


def test_every_documented_command_is_found():
    assert DOCUMENTED <= set(_command_modules()), DOCUMENTED - set(_command_modules())


@pytest.mark.parametrize("module", _command_modules())
def test_command_help_starts(module):
    r = _run([module, "--help"], timeout=120)
    out = r.stdout + r.stderr
    assert "ModuleNotFoundError" not in out and "ImportError" not in out, out[-3000:]
    assert r.returncode == 0, out[-3000:]
    assert "usage:" in r.stdout


def test_latency_quick_runs(tmp_path):
    """The benchmark README's first command, end to end at CI size (about 10 s on 2 CPU cores)."""
    r = _run(["benchmarks.latency", "--quick", "--no-onnx", "--json", str(tmp_path / "lat.json")], timeout=300)
    out = r.stdout + r.stderr
    assert "ModuleNotFoundError" not in out, out[-3000:]
    assert r.returncode == 0, out[-3000:]
    assert (tmp_path / "lat.json").is_file()


# ------------------------------------------------------------------------------------------ requirements


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> set[str]:
    """The distribution names ``path`` asks for (``-r`` includes followed; versions, extras, markers dropped)."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            names |= _requirements(path.parent / line.split(None, 1)[1])
        elif not line.startswith("-"):
            names.add(_canonical(re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0]))
    return names


def _guarding(handler: ast.ExceptHandler) -> bool:
    """Whether an ``except`` clause catches a failed import."""
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError", "Exception") for t in types)


def _imports(tree: ast.AST, guarded: bool = False) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, guarded) of every absolute import; guarded: inside the body of a ``try``
    whose handlers catch ImportError (an optional dependency with a fallback)."""
    if isinstance(tree, ast.Import):
        for alias in tree.names:
            yield alias.name.split(".")[0], tree.lineno, guarded
    elif isinstance(tree, ast.ImportFrom) and not tree.level and tree.module:
        yield tree.module.split(".")[0], tree.lineno, guarded
    elif isinstance(tree, ast.Try):
        catches = any(_guarding(h) for h in tree.handlers)
        for node in tree.body:
            yield from _imports(node, guarded or catches)
        for node in tree.handlers + tree.orelse + tree.finalbody:
            yield from _imports(node, guarded)
        return
    for node in ast.iter_child_nodes(tree):
        yield from _imports(node, guarded)


def _third_party_imports() -> dict[str, list[str]]:
    """Unguarded third-party top-level modules imported by the project's non-test code -> where."""
    found: dict[str, list[str]] = {}
    for pkg in CODE:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name.startswith("test_"):
                continue
            for mod, line, guarded in _imports(ast.parse(path.read_text(), str(path))):
                if guarded or mod in OWN or mod in sys.stdlib_module_names or mod == "__future__":
                    continue
                found.setdefault(mod, []).append(f"{path.relative_to(REPO)}:{line}")
    return found


def _distributions(module: str) -> set[str]:
    """The distributions that provide the import name ``module`` (PIL -> pillow), from the installed
    packages' metadata; the module's own name when none is installed."""
    dists = importlib.metadata.packages_distributions().get(module) or [module]
    return {_canonical(d) for d in dists}


def test_import_scan_sees_guards():
    """The scanner itself: a guarded import is told apart from a plain one, at any depth."""
    src = ("import numpy\ndef f():\n    try:\n        import onnxruntime\n    except ImportError:\n        pass\n"
           "    from PIL import Image\n")
    assert sorted(_imports(ast.parse(src))) == [("PIL", 7, False), ("numpy", 1, False), ("onnxruntime", 4, True)]
    assert _distributions("PIL") == {"pillow"}


def test_requirements_cover_every_import():
    reqs = _requirements(REPO / "requirements.txt")
    missing = {mod: where for mod, where in _third_party_imports().items() if not _distributions(mod) & reqs}
    assert not missing, ("requirements.txt lacks the distribution of these imports (add it, or guard an optional "
                         "import with try/except ImportError): "
                         + "; ".join(f"{mod} ({', '.join(where[:3])})" for mod, where in sorted(missing.items())))
