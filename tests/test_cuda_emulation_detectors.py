"""The CUDA emulation's bug detectors catch planted bugs (issue #13, item 4).

tests/emulation/planted_bugs.cpp holds small kernels in the dialect of csrc/**/*.cu, each with one
bug (and correct twins, which also cover static shared memory and warp votes); it is compiled here
against the emulation, once plain and once with AddressSanitizer:

* out-of-bounds accesses (an off-by-one store into a shared-memory tile, a read one past a global
  array): the AddressSanitizer build, run in a child Python with the ASan runtime preloaded, stops
  with "heap-buffer-overflow"; the correct kernel runs clean under it (no false alarm from the
  fiber switches, which are announced to ASan);
* a missing barrier: the emulation runs blocks with their threads in forward and in reverse order;
  the results differ from each other and from the reference, where the correct kernel's agree;
* what a GPU would hang or fault on (a barrier only one warp reaches, a shuffle whose mask leaves
  out lanes that take part, a block of 2048 threads, 64 KiB of dynamic shared memory without opting
  in, or opting in past the device's limit) raises a clear error naming the kernel.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests import _emu_build
from tests._cuda_backends import needs_emulation

PLANTED = Path(__file__).parent / "emulation" / "planted_bugs.cpp"
RUNTIME = _emu_build.CSRC / "emulation" / "cuda_emulation.cpp"
N = 4 * 64  # four blocks of 64 threads

pytestmark = needs_emulation


@pytest.fixture(scope="module")
def planted():
    """torch.ops.hybridops_planted.run, built against the emulation (cached between runs)."""
    path = _emu_build.build("hybridops_planted", [PLANTED, RUNTIME], asan=False)
    torch.ops.load_library(str(path))
    return torch.ops.hybridops_planted.run


def _run(planted, which, order="forward", device="sm61"):
    env = {"HYBRIDOPS_EMU_ORDER": order, "HYBRIDOPS_EMU_DEVICE": device}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return planted(torch.arange(N, dtype=torch.float32), which)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _rotate_reference():
    x = torch.arange(N, dtype=torch.float32).view(-1, 64)
    return torch.roll(x, -1, dims=1).reshape(-1)


# ---- tensor cores (nvcuda::wmma) -----------------------------------------------------------------
def test_wmma_multiplies_and_checks_its_contract(planted):
    """The emulated wmma 16x16x16 gives X @ X exactly (integers 0-255 are exact in fp16, the sums in
    float); a tile pointer off a 256-bit boundary, a load only half the warp makes and a pointer that
    depends on the lane raise, where a GPU's result would be undefined."""
    x = torch.arange(N, dtype=torch.float64).view(16, 16)  # N == 256: one 16x16 tile
    expected = (x @ x).reshape(-1).float()
    for order in ("forward", "reverse"):
        assert torch.equal(_run(planted, "wmma_ok", order, "h100"), expected)
    with pytest.raises(RuntimeError, match="wmma::load_matrix_sync: the pointer must be 256-bit aligned"):
        _run(planted, "wmma_misaligned", device="h100")
    with pytest.raises(RuntimeError, match="wmma_kernel.* are at different warp-collective calls"):
        _run(planted, "wmma_divergent", device="h100")
    with pytest.raises(RuntimeError, match="wmma_kernel.* pass different arguments to one"):
        _run(planted, "wmma_lane_pointer", device="h100")


# ---- shared-memory races: two schedules ----------------------------------------------------------
def test_correct_kernel_agrees_in_both_orders(planted):
    forward, reverse = _run(planted, "rotate_ok"), _run(planted, "rotate_ok", "reverse")
    assert torch.equal(forward, reverse)
    assert torch.equal(forward, _rotate_reference())


def test_static_shared_memory_and_warp_votes(planted):
    """Static __shared__ arrays (one per block: blocks run one at a time) and ballot/any/all."""
    for order in ("forward", "reverse"):
        assert torch.equal(_run(planted, "rotate_static_shared", order), _rotate_reference())
        # 16 of every warp's 32 values (0, 1, ..., N-1) are odd; any(x > 1000) false; all(x >= 0) true
        assert torch.equal(_run(planted, "ballot", order), torch.full((N,), 16.0 + 2000.0))


def test_missing_barrier_is_caught_by_the_two_orders(planted):
    forward = _run(planted, "rotate_missing_barrier")
    reverse = _run(planted, "rotate_missing_barrier", "reverse")
    assert not torch.equal(forward, reverse), "the two schedules agree: the race went unseen"
    assert not torch.equal(forward, _rotate_reference()) and not torch.equal(reverse, _rotate_reference())
    assert torch.isnan(forward).any()  # unwritten shared memory reads as 0xFF bytes: NaN


# ---- what a GPU hangs or faults on ---------------------------------------------------------------
def test_barrier_only_one_warp_reaches_raises(planted):
    with pytest.raises(RuntimeError, match=r"barrier_in_branch_kernel.*exited while .* waits at __syncthreads"):
        _run(planted, "barrier_in_branch")


def _shuffled_down_by_one():
    """__shfl_down_sync(full mask, x, 1): lane 31 of each warp keeps its own value."""
    x = torch.arange(N, dtype=torch.float32).view(-1, 32)
    return torch.cat([x[:, 1:], x[:, 31:]], dim=1).reshape(-1)


def test_shuffle_mask_must_name_every_participating_lane(planted):
    assert torch.equal(_run(planted, "shuffle_ok"), _shuffled_down_by_one())
    with pytest.raises(RuntimeError, match=r"shuffle_kernel.*mask leaves it out"):
        _run(planted, "shuffle_outside_mask")


def test_launch_checks_match_the_driver(planted):
    with pytest.raises(RuntimeError, match=r"CUDA error: invalid configuration argument.*block \(2048, 1, 1\)"):
        _run(planted, "block_too_large")
    with pytest.raises(RuntimeError, match=r"CUDA error: invalid argument.*65536 bytes.*limit of 49152"):
        _run(planted, "smem_over_default")
    # Opting in to 64 KiB: refused on the GTX 1080 Ti profile (48 KiB is Pascal's most), granted on H100.
    with pytest.raises(RuntimeError, match=r"CUDA error: invalid argument.*cudaFuncSetAttribute"):
        _run(planted, "smem_opt_in", device="sm61")
    assert torch.equal(_run(planted, "smem_opt_in", device="h100"), _shuffled_down_by_one())


# ---- out-of-bounds accesses: AddressSanitizer ----------------------------------------------------
@pytest.fixture(scope="module")
def planted_asan():
    """The AddressSanitizer build's path (loaded only by child processes that preload the runtime)."""
    return _emu_build.build("hybridops_planted_asan", [PLANTED, RUNTIME], asan=True)


def run_under_asan(library: Path, which: str) -> subprocess.CompletedProcess:
    """Runs one planted kernel in a child Python with the ASan runtime preloaded."""
    code = textwrap.dedent(f"""
        import torch
        torch.ops.load_library({str(library)!r})
        out = torch.ops.hybridops_planted.run(torch.arange({N}, dtype=torch.float32), {which!r})
        print("finished", float(out[:8].sum()))
    """)
    env = dict(os.environ, LD_PRELOAD=_emu_build.asan_runtime(),
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:verify_asan_link_order=0")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_asan_build_runs_the_correct_kernel_clean(planted_asan):
    result = run_under_asan(planted_asan, "rotate_ok")
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr[-3000:]
    assert "AddressSanitizer" not in result.stderr


@pytest.mark.parametrize("which", ["tile_store_past_end", "global_read_past_end"])
def test_asan_catches_an_off_by_one(planted_asan, which):
    result = run_under_asan(planted_asan, which)
    assert result.returncode != 0 and "finished" not in result.stdout
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in result.stderr, result.stderr[-3000:]
    kernel = f"{which}_kernel"
    assert kernel in result.stderr  # the report's stack names the kernel
