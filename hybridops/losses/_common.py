"""Shared plumbing of the fused losses: optional Triton import, backend choice, argument checks.

Backend choice (per call, from the first tensor argument):

* CUDA tensor in fp32/fp16/bf16 and Triton importable -> the Triton kernels;
* anything else (CPU tensors, float64, empty tensors, Triton missing) -> the pure-PyTorch path of
  ``_reference.py``, which has the same semantics.

The environment variable ``HYBRIDOPS_LOSSES_BACKEND`` overrides ``auto``: ``torch`` always takes
the PyTorch path; ``triton`` requires the kernels and also runs them on CPU tensors when
``TRITON_INTERPRET=1`` was set before Triton was imported (that is how the tests exercise the
kernels without a GPU). It is read at every call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor

try:  # Triton is optional: without it only the PyTorch path exists.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    HAS_TRITON = False

    class _TritonStub:
        """Stands in for ``triton`` so the kernel definitions still parse (they are never launched)."""

        @staticmethod
        def jit(fn: Optional[Callable] = None, **_kwargs: Any):
            return fn if fn is not None else (lambda f: f)

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-a // b)

        @staticmethod
        def next_power_of_2(n: int) -> int:
            return 1 << max(0, (int(n) - 1).bit_length())

    class _TLStub:
        constexpr = object()

    triton = _TritonStub()  # type: ignore[assignment]
    tl = _TLStub()  # type: ignore[assignment]

BACKEND_ENV = "HYBRIDOPS_LOSSES_BACKEND"
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REDUCTIONS = ("mean", "sum", "none")

# Launches recorded instead of run (tests: compile every kernel for a GPU target without a GPU).
_RECORD: Optional[List[Tuple[Any, tuple, tuple, dict]]] = None
# Tests: fill every buffer a kernel writes with NaN first, so an element it fails to write shows.
_POISON = False


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(x: Tensor, op: str) -> bool:
    """Whether the call with first tensor ``x`` takes the Triton kernels."""
    backend = os.environ.get(BACKEND_ENV, "auto").lower()
    if backend == "torch":
        return False
    if backend not in ("auto", "triton"):
        raise ValueError(f"{op}: {BACKEND_ENV} must be 'auto', 'triton' or 'torch', got {backend!r}")
    eligible = x.dtype in KERNEL_DTYPES and x.numel() > 0
    if backend == "auto":
        return HAS_TRITON and eligible and x.is_cuda
    if not HAS_TRITON:
        raise RuntimeError(f"{op}: {BACKEND_ENV}=triton but triton is not installed")
    if not (x.is_cuda or interpreting() or _RECORD is not None):
        raise RuntimeError(f"{op}: {BACKEND_ENV}=triton needs CUDA tensors, or TRITON_INTERPRET=1 "
                           f"(set before triton is imported) for CPU tensors; got a {x.device} tensor")
    return eligible


def empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.empty`` for kernel outputs (NaN-filled under the tests' ``_POISON``)."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if _POISON:
        t.fill_(float("nan"))
    return t


def empty_like(x: Tensor) -> Tensor:
    return empty(x.shape, x.dtype, x.device)


def launch(kernel: Any, grid: tuple, *args: Any, **meta: Any) -> None:
    """Launches ``kernel[grid](*args, **meta)`` on the device of the tensors (or records it)."""
    if _RECORD is not None:
        _RECORD.append((kernel, grid, args, meta))
        return
    first = args[0][0] if isinstance(args[0], tuple) else args[0]
    dev = first.device
    if dev.type == "cuda" and dev.index is not None and dev.index != torch.cuda.current_device():
        with torch.cuda.device(dev):  # Triton launches on the current device
            kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)


def check_reduction(reduction: str, op: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_float_input(x: object, name: str, op: str, min_dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating point tensor (logits), got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{op}: {name} must have at least {min_dim} dimensions, got {x.dim()}-D "
                         f"with shape {tuple(x.shape)}")


def check_same_device(t: Tensor, name: str, x: Tensor, op: str, x_name: str = "input") -> None:
    if t.device != x.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {x_name} is on {x.device}")


def check_binary_target(target: object, input: Tensor, op: str, input_name: str = "input") -> None:
    """``target`` has ``input``'s shape and device; float, bool or integer (0/1) labels."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_complex():
        raise TypeError(f"{op}: target must hold real labels, got {target.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"{op}: target must have the shape of {input_name}, {tuple(input.shape)}, "
                         f"got {tuple(target.shape)}")
    check_same_device(target, "target", input, op, input_name)


def check_scalar(value: object, name: str, op: str, minimum: Optional[float] = None,
                 maximum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{op}: {name} must not be NaN")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{op}: {name} must be <= {maximum}, got {value}")
    return value


def label_view(target: Tensor) -> Tensor:
    """``target`` as a contiguous tensor Triton can load (bool is viewed as uint8, no copy)."""
    target = target.contiguous()
    return target.view(torch.uint8) if target.dtype == torch.bool else target


def cdiv(a: int, b: int) -> int:
    """Host-side ceil division (``triton.cdiv`` is a constexpr function: slow to call from the host)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def prev_pow2(n: int) -> int:
    """The largest power of 2 <= ``n`` (1 for ``n < 2``)."""
    return 1 << max(0, int(n).bit_length() - 1)


def num_warps_for(block: int) -> int:
    return max(1, min(8, block // 256))


# ----------------------------------------------------------------------------------------------
# Launch geometry: every loss kernel runs on a 1-D grid of programs, each covering a tile
# ----------------------------------------------------------------------------------------------
GRID_X_MAX = 2 ** 31 - 1   # CUDA's limit on gridDim.x (gridDim.y and .z stop at 65,535: never used)
GRID_YZ_MAX = 65_535
# An element offset at or above this is computed in int64 by the kernels (their IDX64 variant). Read at
# every call, so tests can lower it to run the int64 variants on small tensors.
INT32_LIMIT = 2 ** 31


def needs_int64(max_offset: int) -> bool:
    """Whether element offsets up to ``max_offset`` (exclusive bound) need int64 index arithmetic."""
    return max_offset >= INT32_LIMIT


@dataclass(frozen=True)
class Tiling:
    """A ``[rows, cols]`` problem cut into programs of ``[rows_per, cols_per]`` (powers of 2).

    Rows are images (or planes, or lines) and columns the elements of one row. A program covers one
    block of ``cols_per`` columns of one row, or, when a whole row fits, ``rows_per`` whole rows:
    small rows (``[N, 1]`` inputs, ``[N, C]`` logits) do not leave lanes idle. Programs are numbered on
    grid axis 0 only (up to 2**31 - 1, against 65,535 for axes 1 and 2): program ``p`` covers row block
    ``p // col_blocks`` and column block ``p % col_blocks`` (``program_tile`` in the kernels).
    """

    rows: int
    cols: int
    rows_per: int
    cols_per: int

    @property
    def row_blocks(self) -> int:
        return cdiv(self.rows, self.rows_per)

    @property
    def col_blocks(self) -> int:
        return cdiv(self.cols, self.cols_per)

    @property
    def size(self) -> int:
        """Elements of one program's tile."""
        return self.rows_per * self.cols_per

    @property
    def grid(self) -> Tuple[int]:
        return grid_1d(self.row_blocks * self.col_blocks)


def tile(rows: int, cols: int, max_cols: int, max_tile: int) -> Tiling:
    """The tiling of a ``[rows, cols]`` problem: at most ``max_cols`` columns and ``max_tile`` elements per
    program (sides rounded down to powers of 2); several rows per program only when a whole row fits."""
    cols_per = prev_pow2(min(max_cols, max_tile, next_pow2(cols)))
    rows_per = 1
    if cols_per >= cols:
        rows_per = prev_pow2(min(max_tile // cols_per, next_pow2(rows)))
    return Tiling(rows, cols, rows_per, cols_per)


def grid_1d(programs: int) -> Tuple[int]:
    """The launch grid for ``programs`` programs: ``(programs,)``, within CUDA's limit on grid axis 0."""
    if programs > GRID_X_MAX:  # > 2**31 programs of >= 1 KiB each: more data than any GPU holds
        raise ValueError(f"hybridops.losses: {programs} programs exceed CUDA's grid limit ({GRID_X_MAX})")
    return (max(1, programs),)


@triton.jit
def program_tile(col_blocks):
    """(row block, column block) of this program in a ``Tiling`` launched on ``Tiling.grid``."""
    pid = tl.program_id(0)
    return pid // col_blocks, pid % col_blocks


@triton.jit
def tile_ids(ROWS, COLS, COL_BLOCKS, IDX64: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    """This program's part of a ``Tiling``: its first row (int64), the row offsets ``r`` (``[R]``), the
    columns (``[BLOCK]``; int64 with ``IDX64``), the mask (``[R, BLOCK]``) and the column block."""
    rb, cb = program_tile(COL_BLOCKS)
    first = (rb * R).to(tl.int64)
    r = tl.arange(0, R)
    if IDX64:
        cols = cb.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        cols = cb * BLOCK + tl.arange(0, BLOCK)
    mask = (first + r < ROWS)[:, None] & (cols < COLS)[None, :]
    return first, r, cols, mask, cb
