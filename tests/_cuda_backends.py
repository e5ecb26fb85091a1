"""Where the CUDA tests run: a real GPU ("cuda"), and the same CUDA kernels and launchers on the CPU
emulation (hybridops.cuda_emulation) with each device profile ("emu-sm61", "emu-h100").

A test takes the ``cuda_backend`` fixture (deform_conv2d tests also ``dcn_algo``: both algorithms),
puts its tensors on ``cuda_backend.device`` and makes the calls meant for the GPU inside
``with cuda_backend.active():``. Autograd records the emulated backward op with the forward, so
backward passes need no context. ``HYBRIDOPS_EMU_ORDER=reverse`` in the environment runs every
emulated test with threads and blocks in reverse order (the dry run of benchmarks/gpu_verify.sh
does, as its stand-in for compute-sanitizer's racecheck).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

import hybridops
from hybridops import cuda_emulation

GPU = torch.cuda.is_available() and hybridops.build_info()["built_with_cuda"]
EMU = cuda_emulation.available()
needs_emulation = pytest.mark.skipif(not EMU, reason="hybridops built without HYBRIDOPS_BUILD_CUDA_EMU=1")


@dataclass(frozen=True)
class CudaBackend:
    name: str
    device: str                 # where the test's tensors live: "cuda", or "cpu" for the emulation
    emu_device: Optional[str]   # the emulated profile, None on a real GPU

    @property
    def emulated(self) -> bool:
        return self.emu_device is not None

    def active(self, order: Optional[str] = None):
        """The context in which hybridops' ops run on this backend; on the emulation in ``order``
        (default: ``$HYBRIDOPS_EMU_ORDER``, else ``"forward"``)."""
        if not self.emulated:
            return contextlib.nullcontext()
        order = order or os.environ.get("HYBRIDOPS_EMU_ORDER", "forward")
        return cuda_emulation.emulated_cuda(self.emu_device, order)

    def to(self, t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.to(self.device)


CUDA_BACKENDS = [
    pytest.param(CudaBackend("cuda", "cuda", None), id="cuda",
                 marks=pytest.mark.skipif(not GPU, reason="needs a GPU and hybridops built with CUDA")),
    pytest.param(CudaBackend("emu-sm61", "cpu", "sm61"), id="emu-sm61", marks=needs_emulation),
    pytest.param(CudaBackend("emu-h100", "cpu", "h100"), id="emu-h100", marks=needs_emulation),
]


@pytest.fixture(params=CUDA_BACKENDS)
def cuda_backend(request) -> CudaBackend:
    return request.param


@pytest.fixture(params=["im2col", "fused"])
def dcn_algo(request, monkeypatch) -> str:
    """Runs a deform_conv2d CUDA test once per algorithm (HYBRIDOPS_DCN_ALGO): the columns buffer +
    GEMM, and the fused kernels."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", request.param)
    return request.param
