"""Loads the compiled kernels (``hybridops._C``) and reports how they were built."""
from __future__ import annotations

import warnings

import torch

_BUILD_HINT = (
    "Build it from the source checkout with `pip install .` (a fresh virtual environment), or "
    "`pip install --no-build-isolation .` to compile against the torch already installed. "
    "Set HYBRIDOPS_BUILD_CUDA=1 to require the CUDA kernels; see README.md, 'Install'."
)

try:
    from hybridops import _C  # noqa: F401  (registers torch.ops.hybridops.*)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    try:
        from hybridops._version import built_with_torch
    except ImportError:
        built_with_torch = None
    if built_with_torch and built_with_torch != torch.__version__:
        detail = (f"it was built against torch {built_with_torch} but torch {torch.__version__} is "
                  "installed; rebuild hybridops against this torch.")
    else:
        detail = f"the compiled extension is missing or broken ({exc})."
    raise ImportError(f"hybridops could not load its compiled kernels: {detail} {_BUILD_HINT}") from exc


class _BuildInfo(dict):
    """``build_info()``'s dict; reading the old key ``"cuda"`` warns (it read as "CUDA available")."""

    def __getitem__(self, key):
        if key == "cuda":
            warnings.warn('build_info()["cuda"] is renamed build_info()["built_with_cuda"] (whether the CUDA '
                          "kernels are compiled in, not whether a GPU is usable); the old key goes in the "
                          "next release", DeprecationWarning, stacklevel=2)
        return super().__getitem__(key)


def build_info() -> dict:
    """How the installed kernels were built.

    Returns:
        dict with ``version`` (hybridops), ``torch`` (the torch it was compiled against),
        ``torch_runtime`` (the torch imported now), ``built_with_cuda`` (whether the CUDA kernels
        are compiled in; whether a GPU is usable is ``torch.cuda.is_available()``),
        ``cuda_version`` (CUDA toolkit version as an int such as 13000, 0 without CUDA) and
        ``cuda_archs`` (list of the ``TORCH_CUDA_ARCH_LIST`` entries built, e.g. ``["8.0+PTX"]``).
        ``cuda_emulation`` says whether ``hybridops._C_emu`` (the CUDA kernels on the CPU emulation,
        ``HYBRIDOPS_BUILD_CUDA_EMU=1``) is present. ``cuda`` is the old name of ``built_with_cuda``,
        kept for one release (reading it warns).
    """
    from hybridops import cuda_emulation
    archs = _C.cuda_archs()
    built_with_cuda = bool(_C.with_cuda())
    return _BuildInfo({
        "version": _C.version(),
        "torch": _C.built_with_torch(),
        "torch_runtime": torch.__version__,
        "built_with_cuda": built_with_cuda,
        "cuda_version": int(_C.cuda_version()),
        "cuda_archs": [a for a in archs.replace(" ", ";").split(";") if a],
        "cuda_emulation": cuda_emulation.available(),
        "cuda": built_with_cuda,
    })
