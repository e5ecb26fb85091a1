"""Roofline machinery for op models (``benchmarks/dcn_roofline.py``): GPU profiles, kernels as lists of
buffer accesses with FLOPs and instruction counts, a tensor-granular LRU model of L2 that turns the
accesses into DRAM bytes, and the per-kernel cost

    time = max(DRAM bytes / (bandwidth x bw_eff), SM<->L2 bytes / (L2 bandwidth x bw_eff),
               GEMM FLOPs / GEMM rate + lane instructions / (FP32 rate / 2 x fma_eff),
               shared-memory wavefronts / (SMs x clock)) / fill  +  launches x launch_s

where fill is the fraction of SMs a launch's blocks occupy. A prediction, never a measurement: every
rate is a datasheet lead or a stated assumption (see ``GPUS`` and ``Assumptions``).

GPU numbers -- datasheet leads unless marked:
* H200: 4.8 TB/s HBM3e, ~67 TFLOP/s FP32, ~990 TFLOP/s dense fp16/bf16 tensor (the H100's rates) --
  /work/.library/device/H200.md (NVIDIA datasheet); 132 SMs and 60 MB of L2 as PyTorch reported on
  this workplace's H200 (/work/.library/device/KINDS.md, 2026-10-28), which also measured a
  device-to-device copy at ~4.3 TB/s (0.9 of the datasheet) and an 8192^3 bf16 GEMM at ~790 TFLOP/s.
* H100 SXM (80 GB HBM3): 3.35 TB/s (H200.md), 67 / ~990 TFLOP/s, 132 SMs, 50 MB L2 (NVIDIA H100
  whitepaper). H100 PCIe / NVL are different parts and get no profile.
* GTX 1080 Ti (GP102, sm_61): 484 GB/s, 11.34 TFLOP/s FP32 (3584 cores x 1582 MHz x 2), 28 SMs,
  2.75 MB L2 (NVIDIA spec); no tensor cores, so fp16/bf16 storage computes at the FP32 rate (cuBLAS
  half GEMMs accumulate in fp32; GP102's native fp16 rate is 1/64 and is not used); no native 16-bit
  atomics (a CAS loop).
* The SM clock is implied by the FP32 rate (128 FP32 lanes per SM on both architectures): 1.98 GHz
  (Hopper), 1.58 GHz (1080 Ti); shared memory serves one 32-bank wavefront per SM and clock.
* L2 bandwidth is NOT a datasheet number: assumed 8 TB/s on Hopper (third-party microbenchmarks put it
  at 2-3x HBM3) and 1 TB/s on the 1080 Ti (~2x its DRAM). Calibrate with ncu (lts__t_bytes).
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence


@dataclass(frozen=True)
class Gpu:
    """A GPU profile: rates in bytes/s and FLOP/s (datasheet leads; l2_bw is an assumption)."""
    key: str
    name: str
    dram_bw: float
    l2_bw: float
    l2_bytes: float
    fp32_flops: float
    mma_flops: Optional[float]  # dense fp16/bf16 tensor-core rate; None: no tensor cores
    sms: int
    native_half_atomics: bool
    source: str

    @property
    def clock_hz(self) -> float:
        """SM clock implied by the FP32 rate: 128 FP32 lanes per SM (Pascal GP102 and Hopper), FMA = 2."""
        return self.fp32_flops / (self.sms * 128 * 2)


GPUS = {
    "h100": Gpu("h100", "H100 SXM 80GB", 3.35e12, 8e12, 50e6, 67e12, 990e12, 132, True,
                "H200.md (3.35 TB/s, 67/990 TFLOP/s); 50 MB L2, 132 SMs: H100 whitepaper"),
    "h200": Gpu("h200", "H200", 4.8e12, 8e12, 60e6, 67e12, 990e12, 132, True,
                "H200.md (4.8 TB/s, 67/990 TFLOP/s); 60 MB L2, 132 SMs: KINDS.md 2026-10-28"),
    "gtx1080ti": Gpu("gtx1080ti", "GTX 1080 Ti", 484e9, 1e12, 2.75e6, 11.34e12, None, 28, False,
                     "NVIDIA spec: 484 GB/s, 3584 cores x 1582 MHz, 2.75 MB L2, 28 SMs"),
}


def gpu_for_device_name(name: str) -> Optional[Gpu]:
    """The profile of a CUDA device name (``torch.cuda.get_device_name``), or None: 'NVIDIA H200'
    -> h200, 'NVIDIA H100 80GB HBM3' / '... H100 SXM ...' -> h100 (not the PCIe or NVL parts),
    'NVIDIA GeForce GTX 1080 Ti' -> gtx1080ti."""
    n = name.upper()
    if "H200" in n:
        return GPUS["h200"]
    if "H100" in n and ("HBM3" in n or "SXM" in n) and "PCIE" not in n and "NVL" not in n:
        return GPUS["h100"]
    if "1080 TI" in n:
        return GPUS["gtx1080ti"]
    return None


@dataclass(frozen=True)
class Assumptions:
    """The model's free parameters: achievable fractions of DRAM/L2 bandwidth (``bw_eff``), of the FP32
    lane rate for our own kernels (``fma_eff``), of the FP32 rate for cuBLAS SGEMM (``gemm_eff``) and
    of the tensor-core rate (``mma_eff``); seconds per kernel launch; the fraction of L2 the LRU model
    may use; whether L2 starts warm (``steady_state``); the offsets' reach in pixels for gathers; the
    cost multiplier of 16-bit CAS-loop atomics; cuBLAS's tile edge; blocks per SM a grid should give."""
    bw_eff: float = 0.8
    fma_eff: float = 0.6
    gemm_eff: float = 0.7
    mma_eff: float = 0.5
    launch_s: float = 4e-6
    l2_usable: float = 0.5
    steady_state: bool = False
    offset_reach_px: float = 1.0
    cas_penalty: float = 4.0
    gemm_tile: int = 128
    blocks_per_sm: int = 2


@dataclass(frozen=True)
class Access:
    """One kernel's use of one buffer.

    ``op``: "r" read, "w" write (every byte overwritten), "rw" read-modify-write. ``l2_passes``: SM<->L2
    traffic is ``nbytes * l2_passes`` (x2 for "rw"): re-reads, gather halos, GEMM tile re-reads.
    ``sweeps``: how many times the kernel walks the whole buffer in an order where a re-walk can miss
    L2; ``span`` the bytes touched between two walks (re-walks hit L2 when span fits)."""
    buffer: str
    nbytes: float
    op: str = "r"
    l2_passes: float = 1.0
    sweeps: float = 1.0
    span: float = 0.0

    @property
    def l2_bytes(self) -> float:
        return self.nbytes * self.l2_passes * (2 if self.op == "rw" else 1)


@dataclass(frozen=True)
class Kernel:
    """One launch (or ``launches`` identical ones): its accesses, FLOPs, instructions and atomics.

    ``gemm_flops`` run on the tensor cores for fp16/bf16 on a GPU that has them (unless
    ``tensor_cores=False``: an FMA-only kernel), else on the FP32 units (at ``gemm_eff`` for cuBLAS,
    ``fma_eff`` for our own kernels); ``atomics`` adds of ``atomic_elem``-byte elements cost
    2 x atomic_elem bytes of L2 traffic each (x ``cas_penalty`` for 16-bit ones on a GPU without
    them); ``alu_ops`` (sampling: lane instructions, ``OPS``) issue at the FP32 lane rate (FP32
    FLOP/s / 2) x ``fma_eff``. ``smem_wavefronts``: shared-memory accesses (one per SM and clock;
    ``smem_wavefronts_mma`` instead when the GEMM part runs on tensor cores).
    ``blocks``: thread blocks of the launch when fewer than fill the GPU matter (None: plenty)."""
    name: str
    accesses: tuple[Access, ...]
    gemm_flops: float = 0.0
    alu_ops: float = 0.0
    atomics: float = 0.0
    atomic_elem: int = 4
    cublas: bool = False
    tensor_cores: bool = True
    smem_wavefronts: float = 0.0
    smem_wavefronts_mma: Optional[float] = None
    blocks: Optional[int] = None
    launches: int = 1

    @property
    def requested_bytes(self) -> float:
        """SM<->L2 bytes of the accesses (atomics not included)."""
        return sum(a.l2_bytes for a in self.accesses)


def bank_wavefronts(words: Iterable[int], banks: int = 32) -> int:
    """Shared-memory wavefronts of one warp-wide access to 32-bit ``words`` (the active lanes' word
    addresses): the most distinct words that fall into one of the ``banks`` banks (lanes reading the
    same word share it: a broadcast); 0 when no lane is active."""
    per_bank: dict[int, set[int]] = {}
    for w in words:
        per_bank.setdefault(w % banks, set()).add(w)
    return max((len(v) for v in per_bank.values()), default=0)


def vector_wavefronts(lanes: Iterable[tuple[int, int]], banks: int = 32) -> int:
    """Shared-memory wavefronts of one warp-wide vector access (64- or 128-bit loads or stores): each
    active lane touches ``count`` consecutive 32-bit words from ``start`` (``lanes``: (start, count)
    pairs). Lanes touching the same word share it (a broadcast); the access needs at least one
    wavefront per 128 bytes of distinct words, and at least as many as the most distinct words that
    fall into one bank. For 32-bit scalars (count 1) this is ``bank_wavefronts``."""
    words = {start + i for start, count in lanes for i in range(count)}
    per_bank: dict[int, int] = {}
    for w in words:
        per_bank[w % banks] = per_bank.get(w % banks, 0) + 1
    return max(-(-len(words) // banks), max(per_bank.values(), default=0))


def matrix_load_wavefronts(stride_bytes: int, rows: int = 16, row_bytes: int = 32) -> int:
    """Shared-memory wavefronts of one ldmatrix.x4-style load of a ``rows`` x ``row_bytes`` tile (a
    16x16 fp16/bf16 WMMA operand: 512 bytes, 4 wavefronts at best) whose rows are ``stride_bytes``
    apart: each 8x8 matrix (8 rows of 16 bytes) is one 128-byte phase, and a phase takes as many
    wavefronts as the most distinct words its 8 rows put in one bank. Conflict-free when the 8 row
    starts fall in 8 different 16-byte bank groups ((stride / 16) odd); a stride that is a multiple
    of 128 bytes puts all 8 rows in one group (8 wavefronts a phase), a 64-byte one 4, 32 bytes 2.
    (CUDA 13's nvcc compiles wmma::load_matrix_sync of fp16 row-major A and B to LDSM.16.M88.4 /
    LDSM.16.MT88.4 for sm_80 and sm_90: seen with cuobjdump -sass.)"""
    total = 0
    for seg in range(0, row_bytes, 16):
        for r0 in range(0, rows, 8):
            total += bank_wavefronts((r * stride_bytes + seg) // 4 + w for r in range(r0, r0 + 8) for w in range(4))
    return total


def accumulator_store_wavefronts(stride_bytes: int) -> int:
    """Shared-memory wavefronts of wmma::store_matrix_sync of a 16x16 fp32 accumulator (row-major, rows
    ``stride_bytes`` apart): four warp-wide 64-bit stores (STS.64 in nvcc's sm_80/sm_90 code), assumed
    in the mma.m16n8k16 accumulator layout (lane l writes row l / 4 (+ 8), columns 2 (l % 4) and
    2 (l % 4) + 1 (+ 8)). 2 wavefronts a store at best (256 bytes); a 128-byte row stride puts the 8
    rows of a store in the same 8 banks: 8."""
    total = 0
    for r_half in (0, 8):
        for c_half in (0, 8):
            total += bank_wavefronts(((lane // 4 + r_half) * stride_bytes) // 4 + c_half + 2 * (lane % 4) + e
                                     for lane in range(32) for e in (0, 1))
    return total


def per_image(tensor: str, nbytes: float, images: Iterable[int], **kw) -> list[Access]:
    """Accesses to ``tensor``'s per-image slices ``tensor#b`` (``nbytes`` each)."""
    return [Access(f"{tensor}#{b}", nbytes, **kw) for b in images]


def gemm(name: str, m: int, n: int, k: int, a: Sequence[Access], b: Sequence[Access], c: Sequence[Access],
         tile: int) -> Kernel:
    """A cuBLAS GEMM C[m, n] (+)= A[m, k] B[k, n] (each operand given as its buffers' accesses): A is
    re-read once per column tile and B once per row tile of ``tile`` (from L2)."""
    a = [replace(x, l2_passes=math.ceil(n / tile)) for x in a]
    b = [replace(x, l2_passes=math.ceil(m / tile)) for x in b]
    return Kernel(name, (*a, *b, *c), gemm_flops=2.0 * m * n * k, cublas=True)


def elementwise(name: str, *accesses: Access) -> Kernel:
    """A fill, copy, conversion or reduction kernel: bytes only."""
    return Kernel(name, tuple(accesses))


class L2Model:
    """Tensor-granular LRU model of the usable L2 (``capacity`` bytes); ``access`` returns the DRAM
    bytes (read, written) of one access.

    A buffer larger than the capacity streams: reading it again misses (LRU thrash). A write is charged
    when it happens, except where it overwrites bytes of the same buffer still dirty in L2 (the two
    writes cost one write-back). A buffer walked ``sweeps`` times re-reads from DRAM after the first
    walk only when ``span`` does not fit."""

    def __init__(self, capacity: float):
        self.capacity = capacity
        self.lines: OrderedDict[str, tuple[float, float]] = OrderedDict()  # buffer -> (resident, dirty)

    def access(self, a: Access) -> tuple[float, float]:
        b, cap = a.nbytes, self.capacity
        fits = b <= cap
        resident, dirty = self.lines.pop(a.buffer, (0.0, 0.0))
        rewalks = (a.sweeps - 1) * b if a.sweeps > 1 and (a.span > cap or not fits) else 0.0
        read = written = 0.0
        if a.op in ("r", "rw"):
            read = max(0.0, b - (resident if fits else 0.0)) + rewalks
        if a.op in ("w", "rw"):
            written = max(0.0, b - (dirty if fits else 0.0)) + (rewalks if a.op == "rw" else 0.0)
            dirty = min(b, cap)
        self.lines[a.buffer] = (min(b, cap), min(dirty, min(b, cap)))
        self._evict()
        return read, written

    def _evict(self) -> None:
        total = sum(r for r, _ in self.lines.values())
        while total > self.capacity and len(self.lines) > 1:
            name, (resident, dirty) = next(iter(self.lines.items()))
            drop = min(resident, total - self.capacity)
            total -= drop
            if drop >= resident:
                del self.lines[name]
            else:
                keep = resident - drop
                self.lines[name] = (keep, dirty * keep / resident)


@dataclass
class KernelCost:
    """One kernel's predicted cost on one GPU."""
    name: str
    launches: int
    dram_bytes: float
    l2_bytes: float
    gemm_flops: float
    alu_ops: float
    t_dram: float
    t_l2: float
    t_compute: float
    t_smem: float
    t_launch: float

    @property
    def time_s(self) -> float:
        return max(self.t_dram, self.t_l2, self.t_compute, self.t_smem) + self.t_launch

    @property
    def bound(self) -> str:
        """The largest of the roofline terms: dram, l2, compute or smem."""
        terms = {"dram": self.t_dram, "l2": self.t_l2, "compute": self.t_compute, "smem": self.t_smem}
        return max(terms, key=terms.get)


def kernel_cost(k: Kernel, dram: float, gpu: Gpu, half: bool, asm: Assumptions) -> KernelCost:
    """time = max(DRAM, L2, compute, shared-memory terms) / fill + launches x launch_s, fill = the
    fraction of SMs the launch's blocks occupy (see the module docstring)."""
    atomic = k.atomics * 2 * k.atomic_elem
    if k.atomic_elem == 2 and not gpu.native_half_atomics:
        atomic *= asm.cas_penalty
    l2 = k.requested_bytes + atomic
    mma = bool(half and gpu.mma_flops and k.tensor_cores)
    if mma:
        gemm_rate = gpu.mma_flops * asm.mma_eff
    else:
        gemm_rate = gpu.fp32_flops * (asm.gemm_eff if k.cublas else asm.fma_eff)
    t_compute = k.gemm_flops / gemm_rate + k.alu_ops / (gpu.fp32_flops / 2 * asm.fma_eff)
    t_dram = dram / (gpu.dram_bw * asm.bw_eff)
    t_l2 = l2 / (gpu.l2_bw * asm.bw_eff)
    wavefronts = k.smem_wavefronts_mma if mma and k.smem_wavefronts_mma is not None else k.smem_wavefronts
    t_smem = wavefronts / (gpu.sms * gpu.clock_hz)
    fill = 1.0 if k.blocks is None else min(1.0, k.blocks / gpu.sms)
    return KernelCost(k.name, k.launches, dram, l2, k.gemm_flops, k.alu_ops, t_dram / fill, t_l2 / fill,
                      t_compute / fill, t_smem / fill, k.launches * asm.launch_s)


@dataclass
class Prediction:
    """A mode's predicted cost: the sum over its kernels."""
    algo: str
    mode: str
    kernels: list[KernelCost] = field(default_factory=list)

    def total(self, attr: str) -> float:
        """The sum over the kernels of a KernelCost attribute: time_s, dram_bytes, l2_bytes, gemm_flops
        (the contractions), alu_ops (sampling, its gradient and the scatter, in lane instructions) or
        launches."""
        return sum(getattr(k, attr) for k in self.kernels)

    @property
    def time_s(self) -> float:
        return self.total("time_s")

    @property
    def dram_bytes(self) -> float:
        return self.total("dram_bytes")

    @property
    def l2_bytes(self) -> float:
        return self.total("l2_bytes")

    @property
    def bound(self) -> str:
        """Where most of the time goes: each kernel's largest roofline term (dram, l2, compute, smem)
        summed by kind, against the launch overheads (launch)."""
        terms = {"dram": 0.0, "l2": 0.0, "compute": 0.0, "smem": 0.0, "launch": 0.0}
        for k in self.kernels:
            terms[k.bound] += k.time_s - k.t_launch
            terms["launch"] += k.t_launch
        return max(terms, key=terms.get)

    def summary(self) -> dict:
        """The totals, the number of launches and the bound, as a JSON-ready dict."""
        out = {"time_us": self.time_s * 1e6}
        out.update({k: self.total(k) for k in ("dram_bytes", "l2_bytes", "gemm_flops", "alu_ops")})
        return {**out, "launches": int(self.total("launches")), "bound": self.bound}


def run_kernels(untimed: Sequence[Kernel], timed: Sequence[Kernel], gpu: Gpu, half: bool,
                asm: Assumptions) -> list[KernelCost]:
    """The costs of ``timed``, after ``untimed`` went through the L2 model (and, with
    ``asm.steady_state``, one earlier run of both: an L2 kept from an identical previous call)."""
    l2 = L2Model(gpu.l2_bytes * asm.l2_usable)
    warm = (list(untimed) + list(timed) if asm.steady_state else []) + list(untimed)
    for k in warm:
        for a in k.accesses:
            l2.access(a)
    return [kernel_cost(k, sum(sum(l2.access(a)) for a in k.accesses), gpu, half, asm) for k in timed]


def write_json(path: str, payload: dict) -> None:
    """Writes a model's ``payload`` to ``path`` (its folder made if missing) and says so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {path}")
