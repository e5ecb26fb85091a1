"""The shape of the code base, checked from the source text (``ast``; nothing is imported or run):
no import circle among the project's own modules, no function over 100 lines outside ``tests/``, and
the layering (``hybridops`` <- ``models`` <- ``train``; ``benchmarks`` on top; the shared helpers
``plotting`` and ``cli`` below their users)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("hybridops", "models", "train", "benchmarks", "plotting", "cli")
# Layers, bottom to top: which of the project's other packages each one may import. ``hybridops`` is the
# library (it alone is installed); ``plotting`` (PNG line charts) and ``cli`` (user errors, argument checks
# and provenance shared by every command) are helpers that stand below all of their users.
MAY_IMPORT = {
    "hybridops": set(),
    "plotting": set(),
    "cli": {"hybridops"},
    "models": {"hybridops", "cli"},
    "train": {"hybridops", "cli", "models", "plotting"},
    "benchmarks": {"hybridops", "cli", "models", "plotting", "train"},
}
COMPILED = ("hybridops._C", "hybridops._C_emu")  # built from csrc/ (setup.py): import no Python module of ours
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Optional[Path]]:
    """Every module of the project's packages: dotted name -> file (None: a compiled extension)."""
    out: dict[str, Optional[Path]] = {name: None for name in COMPILED}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> Optional[str]:
    """The project module that importing ``name`` runs last (``a.b.c`` -> ``a.b.c`` if it is a module,
    else ``a.b``, ...), or None for a module from outside the project."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for every import statement of ``path``, including those inside
    functions (a lazy import still closes a circle the day it runs)."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:          # ``from pkg import sub`` imports the submodule ``pkg.sub``
                target = _resolve(f"{base}.{alias.name}", modules) or _resolve(base, modules)
                if target:
                    yield target, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for mod, path in modules.items():
        if path is None:
            continue
        for target, line in _imports(mod, path, modules):
            if target != mod:
                graph[mod].setdefault(target, line)
    return graph


def _find_cycle(graph: dict[str, dict[str, int]]) -> Optional[list[str]]:
    """A list of modules ``[a, b, ..., a]`` that import each other in a circle, or None."""
    state: dict[str, int] = {}            # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_cycle_finder_sees_a_circle():
    """The checker itself: a circle of three is found, a chain is not."""
    assert _find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {}}) is None


def test_no_import_cycles():
    graph = _graph()
    assert {"train.loop", "models.blocks", "benchmarks.plots"} <= set(graph)     # the walk found the packages
    cycle = _find_cycle(graph)
    assert cycle is None, "modules import each other in a circle: " + _describe(cycle, graph)


def _upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """``"a.b (line n) imports c.d"`` for every import of a package that ``MAY_IMPORT`` does not allow."""
    found = []
    for mod, targets in sorted(graph.items()):
        pkg = mod.split(".")[0]
        for target, line in sorted(targets.items()):
            other = target.split(".")[0]
            if other != pkg and other not in MAY_IMPORT[pkg]:
                found.append(f"{mod} (line {line}) imports {target}")
    return found


def test_upward_import_finder_sees_one():
    """The checker itself: a model importing train, or the library importing a model, is found."""
    graph = {"models.export": {"train.errors": 3, "hybridops": 1}, "hybridops.ops": {"models.blocks": 7},
             "train.loop": {"models": 2, "plotting": 4}}
    assert _upward_imports(graph) == ["hybridops.ops (line 7) imports models.blocks",
                                      "models.export (line 3) imports train.errors"]


def test_layers_import_downwards():
    """``hybridops`` imports none of the rest, ``models`` neither ``train`` nor ``benchmarks``, ``train``
    not ``benchmarks``, and the shared helpers stand below their users (e.g. ``benchmarks`` does not
    reach into ``train`` for plotting or provenance)."""
    graph = _graph()
    assert set(MAY_IMPORT) == set(PACKAGES), "every package needs its place in MAY_IMPORT"
    upward = _upward_imports(graph)
    assert not upward, "imports against the layering (see MAY_IMPORT): " + "; ".join(upward)


def _long_functions() -> list[str]:
    found = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("tests", "build", ".git") or any(p.startswith(".") for p in rel.parts) \
                or "site-packages" in rel.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_over_100_lines():
    long = _long_functions()
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them by concern): " + ", ".join(long)


PROVENANCE = ("git_sha", "versions", "command_line", "utc_timestamp")     # what a results file records


def test_provenance_has_one_home():
    """Every command records where its numbers came from with the same functions, defined once in
    ``cli.provenance`` (a second copy drifts: the benchmarks' sha once marked a dirty tree, train's did not)."""
    homes: dict[str, list[str]] = {}
    for mod, path in _modules().items():
        if path is None:
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef) and node.name in PROVENANCE:
                homes.setdefault(node.name, []).append(mod)
    assert homes == {name: ["cli.provenance"] for name in PROVENANCE}, homes
