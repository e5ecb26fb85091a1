"""Build script for hybridops: compiles ``hybridops._C`` from ``csrc/``.

Environment switches (all optional):

* ``HYBRIDOPS_BUILD_CUDA=auto|0|1`` -- ``auto`` (default) follows torchvision's convention: the CUDA
  kernels are built when nvcc and a CUDA build of torch are present AND a GPU is visible or
  ``TORCH_CUDA_ARCH_LIST`` is set (a machine without a GPU gets the fast CPU-only build); ``1``
  builds them whenever possible and fails loudly otherwise (CI); ``0`` builds the CPU kernels only.
* ``TORCH_CUDA_ARCH_LIST`` -- e.g. ``"8.0;9.0"``. Unset: the archs of the visible GPUs, or
  ``HYBRIDOPS_DEFAULT_ARCHS`` below when no GPU is visible (as on a build machine).
* ``MAX_JOBS`` -- parallel compile jobs (ninja). Unset: the number of CPU cores.
* ``HYBRIDOPS_DEBUG=1`` -- ``-O0 -g`` and device line info.
* ``HYBRIDOPS_BUILD_CUDA_EMU=1`` -- also build ``hybridops._C_emu``: the CUDA kernels and launchers of
  ``csrc/**/*.cu`` compiled by the host compiler against ``csrc/emulation/cuda_emulation.h``, run on
  the CPU as ``torch.ops.hybridops_emu.*`` (tests and CI; no GPU or CUDA toolkit needed). Off by default.
* ``CUDA_HOME`` -- the CUDA toolkit folder. When unset it is found from ``nvcc`` even when the
  ``nvcc`` on PATH is a wrapper script.

The extension is compiled against the torch found at build time, and the wheel pins that torch
release (``torch==X.Y.Z``) so the two can never disagree at run time.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
# Archs built when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset. 8.0+PTX runs on every
# GPU from Ampere on (the PTX is JIT-compiled for newer chips); set TORCH_CUDA_ARCH_LIST to build
# native code for yours (Pascal "6.1" needs a CUDA 11/12 toolkit: CUDA 13 dropped it).
HYBRIDOPS_DEFAULT_ARCHS = "8.0+PTX"


def _log(msg: str) -> None:
    print(f"[hybridops build] {msg}", flush=True)


def _find_cuda_home() -> str | None:
    """The CUDA toolkit folder: $CUDA_HOME/$CUDA_PATH, else resolved from nvcc, else /usr/local/cuda.

    The ``nvcc`` on PATH may be a wrapper script (``exec /usr/local/cuda-13.0/bin/nvcc "$@"``), so
    ``dirname(dirname(which nvcc))`` -- what torch guesses -- can be wrong; we check for
    ``include/cuda_runtime.h`` and otherwise read the real path out of the wrapper.
    """
    def is_toolkit(path: str | None) -> bool:
        return bool(path) and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))

    for var in ("CUDA_HOME", "CUDA_PATH"):
        if is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        nvcc = os.path.realpath(nvcc)
        guess = os.path.dirname(os.path.dirname(nvcc))
        if is_toolkit(guess):
            return guess
        try:
            with open(nvcc, "r", errors="ignore") as f:
                text = f.read(4096)
            for cand in re.findall(r"(/\S+)/bin/nvcc", text):
                if is_toolkit(cand):
                    return cand
        except OSError:
            pass
    if is_toolkit("/usr/local/cuda"):
        return "/usr/local/cuda"
    return None


def _extra_cuda_includes() -> list[str]:
    """Headers of the pip-installed CUDA libraries (cusparse.h etc. for torch's CUDA headers)."""
    out = []
    for entry in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include", "nvidia/cusparse/include",
                    "nvidia/cublas/include"):
            path = os.path.join(entry, sub)
            if os.path.isdir(path) and path not in out:
                out.append(path)
    return out


BUILD_CUDA_MODE = os.environ.get("HYBRIDOPS_BUILD_CUDA", "auto").strip().lower()
if BUILD_CUDA_MODE not in ("auto", "0", "1"):
    raise SystemExit(f"HYBRIDOPS_BUILD_CUDA must be auto, 0 or 1, got {BUILD_CUDA_MODE!r}")

CUDA_HOME_FOUND = _find_cuda_home() if BUILD_CUDA_MODE != "0" else None
if CUDA_HOME_FOUND and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = CUDA_HOME_FOUND  # before torch.utils.cpp_extension reads it

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - build-time message
    raise SystemExit(
        "hybridops needs PyTorch at build time. Install torch first, then "
        "`pip install --no-build-isolation .`, or let `pip install .` build in isolation."
    ) from exc

DEBUG = os.environ.get("HYBRIDOPS_DEBUG", "0") == "1"
# One compile job per core (torch's default is cores + 2, which only adds memory pressure here).
os.environ.setdefault("MAX_JOBS", str(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else (os.cpu_count() or 1))))


def _want_cuda() -> tuple[bool, str]:
    if BUILD_CUDA_MODE == "0":
        return False, "HYBRIDOPS_BUILD_CUDA=0"
    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    if CUDA_HOME_FOUND is None:
        reasons.append("no CUDA toolkit found (set CUDA_HOME to the folder holding bin/nvcc)")
    if reasons:
        if BUILD_CUDA_MODE == "1":
            raise SystemExit("HYBRIDOPS_BUILD_CUDA=1 but CUDA cannot be built: " + "; ".join(reasons))
        return False, "; ".join(reasons)
    found = f"nvcc in {CUDA_HOME_FOUND}, torch CUDA {torch.version.cuda}"
    if BUILD_CUDA_MODE == "1":
        return True, f"HYBRIDOPS_BUILD_CUDA=1; {found}"
    if torch.cuda.is_available():
        return True, f"a GPU is visible; {found}"
    if os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        return True, f"TORCH_CUDA_ARCH_LIST is set; {found}"
    return False, ("no GPU is visible (set HYBRIDOPS_BUILD_CUDA=1 or TORCH_CUDA_ARCH_LIST to build the CUDA "
                   f"kernels anyway; {found})")


def _arch_list() -> str:
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env:
        return env
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{a}.{b}" for a, b in caps)
    return HYBRIDOPS_DEFAULT_ARCHS


def _write_version() -> None:
    with open(os.path.join(ROOT, "hybridops", "_version.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"__version__ = {VERSION!r}\n")
        f.write(f"built_with_torch = {torch.__version__!r}\n")


EMULATION_DIR = os.path.join("csrc", "emulation")
BUILD_CUDA_EMU = os.environ.get("HYBRIDOPS_BUILD_CUDA_EMU", "0").strip()
if BUILD_CUDA_EMU not in ("0", "1"):
    raise SystemExit(f"HYBRIDOPS_BUILD_CUDA_EMU must be 0 or 1, got {BUILD_CUDA_EMU!r}")


def emulation_sources() -> list[str]:
    """The units of hybridops._C_emu: the emulation runtime, its module and one wrapper per .cu."""
    return sorted(glob.glob(os.path.join(EMULATION_DIR, "*.cpp")), key=lambda p: ("_cuda_emu" not in p, p))


def emulation_flags(debug: bool) -> list[str]:
    """Host-compiler flags of the emulation units (tests/_emu_build.py builds the ASan variant).
    The kernels' ``#pragma unroll`` means nothing to the host compiler: not worth a warning."""
    return (["-O0", "-g"] if debug else ["-O2", "-g0"]) + ["-DHYBRIDOPS_CUDA_EMULATION=1", "-Wno-unknown-pragmas"]


def make_extension():
    with_cuda, why = _want_cuda()
    # The per-ISA kernel units are the slowest to compile: listed first, ninja starts them first.
    sources = sorted((p for p in glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True)
                      if not p.startswith(EMULATION_DIR + os.sep)),
                     key=lambda p: ("_cpu_isa_" not in p, p))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    archs = ""
    # -g0: Python's default CFLAGS carry -g; debug info for these template-heavy units costs build
    # time and megabytes and serves no user (HYBRIDOPS_DEBUG=1 builds with it).
    opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
    macros = [("HYBRIDOPS_VERSION", f'"{VERSION}"'), ("HYBRIDOPS_TORCH_VERSION", f'"{torch.__version__}"')]
    cxx_flags = opt + (["-fopenmp"] if sys.platform != "darwin" else [])
    extra = {"cxx": cxx_flags}
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        archs = _arch_list()
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += cuda_sources
        macros += [("HYBRIDOPS_WITH_CUDA", None), ("HYBRIDOPS_CUDA_ARCHS", f'"{archs}"')]
        nvcc_opt = ["-O0", "-g"] if DEBUG else ["-O3"]  # (nvcc has no -g0)
        extra["nvcc"] = nvcc_opt + ["--expt-relaxed-constexpr", "-U__CUDA_NO_HALF_OPERATORS__",
                                    "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
                                    "-U__CUDA_NO_HALF2_OPERATORS__"]
        if DEBUG:
            extra["nvcc"].append("-lineinfo")
        include_dirs += _extra_cuda_includes()
        ext_cls = CUDAExtension
        _log(f"CUDA kernels: ON ({why}); archs {archs}")
    else:
        macros.append(("HYBRIDOPS_CUDA_ARCHS", '""'))
        ext_cls = CppExtension
        _log(f"CUDA kernels: OFF ({why})")
    _log(f"torch {torch.__version__}; {len(sources)} sources; MAX_JOBS={os.environ.get('MAX_JOBS', 'auto')}"
         f"{'; debug' if DEBUG else ''}")
    _write_version()
    return ext_cls(
        name="hybridops._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"] if sys.platform != "darwin" else [],
    )


def make_emulation_extension():
    """hybridops._C_emu (HYBRIDOPS_BUILD_CUDA_EMU=1): the .cu kernels on the CPU emulation."""
    _log("CUDA emulation module: ON (HYBRIDOPS_BUILD_CUDA_EMU=1)")
    return CppExtension(
        name="hybridops._C_emu",
        sources=emulation_sources(),
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": emulation_flags(DEBUG)},
    )


def _torch_pin() -> str:
    """The torch release this build is compiled against (local tag such as +cu130 dropped)."""
    return "torch==" + torch.__version__.split("+")[0]


setup(
    name="hybridops",
    version=VERSION,
    packages=find_packages(include=["hybridops", "hybridops.*"]),
    ext_modules=[make_extension()] + ([make_emulation_extension()] if BUILD_CUDA_EMU == "1" else []),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    install_requires=[_torch_pin(), "numpy"],
)
