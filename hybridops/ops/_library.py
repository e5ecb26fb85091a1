"""Which op library the functional wrappers call: ``torch.ops.hybridops`` (always, for users), or
``torch.ops.hybridops_emu`` -- the CUDA kernels on the CPU emulation -- inside
``hybridops.cuda_emulation.emulated_cuda()`` (tests)."""
from __future__ import annotations

import torch

_emulated = False


def ops_library():
    """``torch.ops.hybridops``, or ``torch.ops.hybridops_emu`` while the emulation is switched on."""
    return torch.ops.hybridops_emu if _emulated else torch.ops.hybridops


def set_emulated(on: bool) -> bool:
    """Routes the wrappers to the emulation (``on``) or the real library; returns the previous state."""
    global _emulated
    previous, _emulated = _emulated, bool(on)
    return previous
