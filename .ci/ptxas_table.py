"""Per-kernel resource table from ``ptxas -v`` logs (registers, spills, static shared memory, stack).

Used by ``.ci/compile_sm61.sh``::

    python .ci/ptxas_table.py build/compile_sm61/*.sm_61.ptxas.txt            # markdown table
    python .ci/ptxas_table.py --summary build/compile_sm61/*.sm_70.ptxas.txt  # one line

Only entry functions (kernels) are reported; ptxas also lists non-inlined device functions, which
have no register count of their own.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Sequence

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
# Namespaces that say nothing in a table of this project's kernels.
_QUALIFIER = re.compile(r"\b[A-Za-z_]\w*::")
_NOISE = ("hybridops::", "(anonymous namespace)::", "c10::", "at::")


@dataclass(frozen=True)
class KernelUsage:
    """One kernel's resources as ptxas reports them (bytes for everything but ``registers``)."""

    mangled: str
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int
    smem: int
    stack: int


def parse_ptxas(text: str) -> List[KernelUsage]:
    """Every entry function in one ``ptxas -v`` log, in the log's order.

    Raises ``ValueError`` when an entry has no ``Used N registers`` line (a truncated log).
    """
    rows: List[KernelUsage] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        entry = _ENTRY.search(line)
        if not entry:
            continue
        frame = used = None
        smem = 0
        for following in lines[i + 1:]:
            if _ENTRY.search(following):
                break
            frame = frame or _FRAME.search(following)
            if _USED.search(following):
                used = _USED.search(following)
                smem_match = _SMEM.search(following)
                smem = int(smem_match.group(1)) if smem_match else 0
                break
        if used is None:
            raise ValueError(f"ptxas log: no 'Used N registers' line for {entry.group(1)!r}")
        stack, stores, loads = (int(g) for g in frame.groups()) if frame else (0, 0, 0)
        rows.append(KernelUsage(entry.group(1), entry.group(2), int(used.group(1)), stores, loads, smem, stack))
    return rows


def demangle(names: Sequence[str]) -> List[str]:
    """C++ names for ``names`` via ``c++filt`` or ``llvm-cxxfilt``; unchanged when neither exists."""
    tool = shutil.which("c++filt") or shutil.which("llvm-cxxfilt") or shutil.which("llvm-cxxfilt-16")
    if tool is None or not names:
        return list(names)
    out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True, check=True)
    result = out.stdout.splitlines()
    return result if len(result) == len(names) else list(names)


def short_name(demangled: str) -> str:
    """``void hybridops::mdc::(anonymous namespace)::k<c10::Half>(args)`` -> ``mdc::k<Half>``."""
    name = demangled[len("void "):] if demangled.startswith("void ") else demangled
    depth = 0
    for pos, char in enumerate(name):  # cut the parameter list: the first '(' outside template brackets
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "(" and depth == 0 and not name.startswith("(anonymous", pos):
            name = name[:pos]
            break
    for noise in _NOISE:
        name = name.replace(noise, "")
    head, bracket, args = name.partition("<")  # inside template arguments, drop every namespace
    return head + bracket + _QUALIFIER.sub("", args)


def markdown_table(rows: Sequence[KernelUsage], names: Sequence[str]) -> str:
    """A markdown table, one row per kernel, labelled with ``names`` (same order as ``rows``)."""
    out = ["| kernel | registers | spill stores (B) | spill loads (B) | static smem (B) | stack (B) |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, r in zip(names, rows):
        out.append(f"| `{name}` | {r.registers} | {r.spill_stores} | {r.spill_loads} | {r.smem} | {r.stack} |")
    return "\n".join(out)


def summary(rows: Sequence[KernelUsage], names: Sequence[str]) -> str:
    """One line: kernel count, the largest register count, and which kernels spill."""
    if not rows:
        return "no kernels"
    top = max(range(len(rows)), key=lambda i: rows[i].registers)
    spilling = [n for n, r in zip(names, rows) if r.spill_stores or r.spill_loads]
    arch = ",".join(sorted({r.arch for r in rows}))
    return (f"{arch}: {len(rows)} kernels, most registers {rows[top].registers} ({names[top]}), "
            f"spills: {', '.join(spilling) if spilling else 'none'}")


def _load(paths: Iterable[Path]) -> tuple[List[KernelUsage], List[str]]:
    rows = [row for path in paths for row in parse_ptxas(Path(path).read_text())]
    names = [short_name(n) for n in demangle([r.mangled for r in rows])]
    order = sorted(range(len(rows)), key=lambda i: names[i])
    return [rows[i] for i in order], [names[i] for i in order]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path, help="ptxas -v output files")
    parser.add_argument("--summary", action="store_true", help="one line instead of the table")
    args = parser.parse_args(argv)
    rows, names = _load(args.logs)
    print(summary(rows, names) if args.summary else markdown_table(rows, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
