"""Builds a shared library from C++ sources that use the CUDA emulation (csrc/emulation/), with or
without AddressSanitizer, cached by the hash of its inputs.

Used by the planted-bug tests (tests/test_cuda_emulation_detectors.py) and, as a command, by
.ci/emu_asan.sh for the AddressSanitizer build of hybridops._C_emu:

    python -m tests._emu_build --asan      # prints the path of the (cached) _C_emu.so
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hybridops" / "emu-build"


def asan_runtime() -> str:
    """Path of GCC's AddressSanitizer runtime (LD_PRELOAD it into a Python that loads an ASan build)."""
    return subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _flags(asan: bool, defines: Sequence[str]) -> list[str]:
    from torch.utils import cpp_extension
    includes = [str(CSRC)] + cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
    return (["-std=c++20", "-fPIC", "-w", "-DHYBRIDOPS_CUDA_EMULATION=1"]
            + [f"-D{d}" for d in defines] + [f"-I{p}" for p in includes]
            + (ASAN_FLAGS if asan else ["-O2", "-g0"]))


def _digest(sources: Sequence[Path], flags: Sequence[str]) -> str:
    h = hashlib.sha256(" ".join(flags).encode())
    for path in sorted(set(sources) | set(CSRC.rglob("*.h")) | set(CSRC.rglob("*.cu")) | set(CSRC.rglob("*.cpp"))):
        h.update(str(path).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(name: str, sources: Sequence[Path], *, asan: bool, defines: Sequence[str] = (),
          out_dir: Path | None = None, jobs: int = 2) -> Path:
    """Compiles ``sources`` into ``<out_dir>/<name>.so`` (default: a cache folder keyed by the hash
    of every input) and returns its path; an unchanged build is reused."""
    import torch
    flags = _flags(asan, defines)
    digest = _digest(sources, flags)
    out_dir = Path(out_dir) if out_dir else CACHE / f"{name}-{digest}"
    target = out_dir / f"{name}.so"
    stamp = out_dir / "inputs.sha"
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)

    def compile_one(src: Path) -> Path:
        obj = out_dir / (src.stem + ".o")
        subprocess.run(["g++", "-c", str(src), "-o", str(obj)] + flags, check=True)
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        objects = list(pool.map(compile_one, sources))
    torch_lib = Path(torch.__file__).parent / "lib"
    subprocess.run(["g++", "-shared", "-o", str(target)] + [str(o) for o in objects]
                   + (["-fsanitize=address"] if asan else [])
                   + [f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu", "-ltorch"], check=True)
    stamp.write_text(digest)
    return target


def emulation_module_sources() -> list[Path]:
    """The units of hybridops._C_emu (as setup.py lists them)."""
    return sorted((CSRC / "emulation").glob("*.cpp"), key=lambda p: ("_cuda_emu" not in p.name, p.name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asan", action="store_true", help="build with AddressSanitizer")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for _C_emu.so (default: a cache folder keyed by the inputs' hash)")
    args = parser.parse_args(argv)
    path = build("_C_emu", emulation_module_sources(), asan=args.asan, out_dir=args.out)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
