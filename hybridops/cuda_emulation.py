"""The CUDA kernels on the CPU: ``torch.ops.hybridops_emu.*`` (issue #13).

``hybridops._C_emu`` -- built with ``HYBRIDOPS_BUILD_CUDA_EMU=1``, for tests and CI -- compiles the
unchanged ``csrc/**/*.cu`` sources with the host compiler against ``csrc/emulation/cuda_emulation.h``:
the real launchers and ``__global__`` kernels run on CPU tensors, every CUDA thread a fiber, with
real barriers, warp exchanges, per-block shared memory and the driver's launch checks. The ops have
exactly the schemas of ``torch.ops.hybridops.*``.

What it proves and what it cannot: README.md, "The CUDA emulation".

Environment (read at every launch):
    HYBRIDOPS_EMU_DEVICE   ``sm61`` (GTX 1080 Ti: 28 SMs, 48 KiB shared memory per block; default)
                           or ``h100`` (132 SMs, 227 KiB opt-in).
    HYBRIDOPS_EMU_ORDER    ``forward`` (default) or ``reverse``: the order in which a block's threads
                           start and resume after each barrier, and blocks run.
    HYBRIDOPS_EMU_LIBRARY  path of another build of the module to load instead (the
                           AddressSanitizer build of ``.ci/emu_asan.sh``).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Iterator, Optional

from hybridops.ops import _library

DEVICES = ("sm61", "h100")
ORDERS = ("forward", "reverse")

_module = None
_load_error: Optional[str] = None


def _load():
    """Imports hybridops._C_emu (or HYBRIDOPS_EMU_LIBRARY) once and registers the Python parts of its ops."""
    global _module, _load_error
    if _module is not None or _load_error is not None:
        return _module
    path = os.environ.get("HYBRIDOPS_EMU_LIBRARY")
    try:
        if path:
            spec = importlib.util.spec_from_file_location("hybridops._C_emu", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["hybridops._C_emu"] = module
            spec.loader.exec_module(module)
        else:
            from hybridops import _C_emu as module
    except ImportError as exc:
        _load_error = str(exc)
        return None
    for op_module in ("hybridops.ops.deform_conv2d", "hybridops.ops.mixed_depthwise_conv2d"):
        importlib.import_module(op_module).register_python_parts("hybridops_emu")
    _module = module
    return module


def available() -> bool:
    """Whether the emulation module was built (``HYBRIDOPS_BUILD_CUDA_EMU=1``) and loads."""
    return _load() is not None


def _require():
    module = _load()
    if module is None:
        raise RuntimeError("hybridops was built without the CUDA emulation (hybridops._C_emu): rebuild with "
                           f"HYBRIDOPS_BUILD_CUDA_EMU=1 ({_load_error})")
    return module


@contextlib.contextmanager
def emulated_cuda(device: str = "sm61", order: str = "forward") -> Iterator[None]:
    """Within the block, ``hybridops.deform_conv2d`` / ``hybridops.mixed_depthwise_conv2d`` (and the
    modules built on them) run the CUDA kernels on the emulated ``device`` with CPU tensors; the
    autograd graph they record keeps using the emulated backward ops after the block ends.

    Args:
        device: ``"sm61"`` or ``"h100"`` (see the module docstring).
        order: ``"forward"`` or ``"reverse"`` thread and block order.
    """
    _require()
    if device not in DEVICES:
        raise ValueError(f"emulated_cuda: device must be one of {DEVICES}, got {device!r}")
    if order not in ORDERS:
        raise ValueError(f"emulated_cuda: order must be one of {ORDERS}, got {order!r}")
    saved = {k: os.environ.get(k) for k in ("HYBRIDOPS_EMU_DEVICE", "HYBRIDOPS_EMU_ORDER")}
    os.environ["HYBRIDOPS_EMU_DEVICE"], os.environ["HYBRIDOPS_EMU_ORDER"] = device, order
    previous = _library.set_emulated(True)
    try:
        yield
    finally:
        _library.set_emulated(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def counters() -> dict:
    """Launches, blocks, threads, barriers, warp exchanges and fiber switches since ``reset_counters()``."""
    return _require().counters()


def kernels() -> list:
    """The kernel expressions launched since ``reset_counters()``, e.g. ``"im2col_kernel<scalar_t, int64_t>"``."""
    return _require().kernels()


def reset_counters() -> None:
    """Zeroes the counters and forgets the kernels launched."""
    _require().reset_counters()


def device_name() -> str:
    """The emulated device now selected, e.g. ``"NVIDIA GeForce GTX 1080 Ti (emulated)"``."""
    return _require().device_name()
