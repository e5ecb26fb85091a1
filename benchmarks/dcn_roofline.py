"""Roofline model of deform_conv2d (DCNv2) on GPUs: bytes, FLOPs and predicted time of four algorithms.

    python -m benchmarks.dcn_roofline [--gpus h100 h200 gtx1080ti] [--dtypes float32 float16 bfloat16]
                                      [--modes forward backward full] [--traffic] [--breakdown] [--warm]
                                      [--json PATH] [--measured FILE.json ...]

A PREDICTION, not a measurement. For each case of ``benchmarks/deform_conv2d.py`` (3x3, stride 1, pad 1,
one offset group, with mask and bias), each dtype (fp32; fp16/bf16 storage with fp32 accumulation) and
each mode of the benchmark (forward; backward after an untimed forward; full = both), it lists the
kernels each algorithm launches, in order, with the bytes they move, their FLOPs and instructions,
and predicts the time on an H100 SXM, an H200 and a GTX 1080 Ti (the machinery, GPU numbers and
their sources: ``benchmarks/_roofline.py``). ``--measured`` sets a results file of
``benchmarks/deform_conv2d.py`` beside the prediction when its GPU has a profile.

* ``torchvision`` -- torchvision's CUDA kernel (``torchvision/csrc/ops/cuda/deform_conv2d_kernel.cu``):
  batch chunks of up to 32 images (the largest divisor of N <= 32); forward: zero-filled output,
  output buffer and columns, im2col with one thread per (channel, image, pixel) that re-reads the 9
  offset pairs and masks of its pixel for every channel, ``addmm_`` into the buffer, a transposing copy
  and ``out + bias``; backward: zero-filled grads, a copy of the permuted grad_out, ``columns.zero_()``
  and ``addmm_`` (grad_columns), ``col2im_coord`` (one thread per (offset channel, pixel): the input
  is walked 2 x 9 times, the columns twice), ``col2im`` (atomics in the storage type), then
  ``contiguous()`` of grad_out, im2col again and ``addmm_`` for grad_weight, and ``grad_out.sum``.
  No bf16 kernel.
* ``im2col`` -- ours (``deform_conv2d_driver.h`` + ``deform_conv2d_cuda.cu``): blocks of
  ``block_images`` images (1 at every benchmark case); im2col with one item per (tap, pixel) computing
  the corners once and looping over the offset group's channels (the input is walked once per tap),
  ``baddbmm`` with the bias (ATen's baddbmm meta function copies the broadcast bias into the output,
  then the GEMM reads and writes it); backward: ``bmm`` (grad_columns), the offset/mask gradient, the
  col2im scatter (fp32 atomics into an fp32 buffer), im2col again and ``baddbmm_`` into an fp32
  grad_weight; fp16/bf16 convert the fp32 buffers at the end; grad_bias = grad_out.sum.
* ``fused`` -- ours as built (``deform_conv2d_fused_cuda.cuh``, ``deform_conv2d_fused_backward_cuda.cuh``,
  plan ``deform_conv2d_fused_plan.h``, mirrored by ``fused_plan``): no columns in global memory.
  Forward: a block per (image, 32 pixels, up to 64 output channels) samples channel chunks into
  shared memory beside the transposed weight slice; a thread's register tile is 2 pixels x 4
  channels, fed per (channel, tap) row by one 64-bit sample and one 128-bit weight load. Backward: kernel A forms grad_columns tiles in shared
  memory (register tiles of 4 rows x 2 pixels), reduces grad_offset / grad_mask in
  registers and scatters grad_input with fp32 atomics; kernel B re-samples channel chunks into rows
  padded to 33 and sums grad_out x samples into partials on about 264 blocks (item chunks =
  min(items, max(32, ceil(264 / channel chunks)))); a reduction sums them. Every shared-memory access
  of the three micro-GEMMs and of the tile stores is counted warp by warp from the kernels' index
  expressions (``bank_wavefronts``, ``vector_wavefronts``): forward 0.25 wavefront per warp-wide FMA
  (a partial last channel tile runs its zero-weight channels too: 80 channels = 2 x 64),
  A 0.25 (its grad_columns GEMM register-tiled the same way), B 2.2-5.4 (B's gout[co * 32 + pp] is a k-way conflict when a warp spans k output channels, and
  a warp whose r wraps past chunk_b x 9 reads two samples per bank). fp32, and every dtype on the
  1080 Ti: FMA only. fp16/bf16 on the H100/H200 (sm_80+): the forward is the tensor-core kernel
  (``deform_conv2d_fused_tc_cuda.cuh``, plan ``plan_fused_forward_tc``, ``uses_tensor_core_forward``):
  the same grid, pixel and channel tiles, bytes and sampling; its own channel chunk (``mma_chunk``:
  the largest of 16..1 whose tiles fit 48 KiB); samples [rk_pad][tile_p] and weight
  [tile_co_pad][rk_pad] in the storage type (rk = chunk x 9 and tile_co rounded up to 16,
  zero-padded), one 16x16 fp32 accumulator per warp (at most 8), per chunk rk_pad / 16 steps of two
  load_matrix_sync and an mma_sync, then store_matrix_sync into an fp32 staging tile and one store
  per output. Every row is ``MMA_ROW_PAD_BYTES`` = 16 bytes longer than its data
  (kFusedMmaRowPad). MMA FLOPs (the padded tiles) at the tensor rate; every load counted as an
  ldmatrix.x4 (what nvcc emits for these wmma loads on sm_80/sm_90) from its row stride: with the
  padding 8 wavefronts a step and 2 a staging store, conflict-free (``mma_pad`` = 0, the unpadded
  what-if: at tile_p = 32 the samples' 64-byte rows are a 4-way conflict and the weight's 288- or
  160-byte rows a 2-way one, 24 wavefronts a step; staging stores 8-way). The backward stays FMA.
  HYBRIDOPS_DCN_ALGO=auto (``auto_algos``, ``predict("auto", ...)``): the fused forward up to 64
  channels per group (up to 192 where it runs on tensor cores: the model puts it ahead of im2col to
  192 channels, 1.3x, and behind at 256, 0.95x), the fused backward up to 16 (im2col above).
* ``fused_target`` -- the same passes and bytes with the micro-kernels the issue plans. Beyond the
  built kernels it assumes: register-tiled micro-GEMMs (8x8 outputs a thread from 128-bit
  shared-memory loads, as in a tuned SGEMM: 0.25 wavefront per warp-wide FMA; 0.1 with ldmatrix-fed
  MMA), no bank conflicts, channel tiles without zero-weight padding (only the useful MACs), tensor
  cores for fp16/bf16 where the GPU has them, and a B grid of at least 2 blocks per SM on every GPU
  (the built 264 blocks already are on a 132-SM part). The gap between ``fused`` and
  ``fused_target`` is what tuning the built kernels can win; ``fused_target`` against
  ``torchvision`` is the issue's 2x / 4x goal.

Per kernel: time = max(DRAM, L2, compute, shared-memory terms) / fill + launches x launch_s; a mode's
time is the sum over its kernels (one stream, one after another).

Assumptions (``Assumptions`` in ``_roofline.py``; every one is a parameter):
* Achievable fractions: 0.8 of DRAM/L2 bandwidth (the H200 copy reached 0.9), 0.6 of the FP32 lane
  rate for our own and torchvision's sampling kernels, 0.7 of the FP32 rate for cuBLAS SGEMM, 0.5 of
  the tensor rate for the skinny fp16/bf16 GEMMs (M = C_out <= 256). fp32 GEMMs run without TF32
  (PyTorch's default ``allow_tf32=False``), on the FP32 units.
* 4 us per kernel launch (eager PyTorch issues kernels back to back at 3-5 us each).
* L2: a tensor-granular LRU model of half the L2 ("usable": Hopper's L2 is two partitions that can
  hold a line twice, and its replacement is not LRU). A buffer larger than that streams and its
  re-read misses; a buffer overwritten while still dirty in L2 costs one DRAM write, not two. Inside a
  kernel, a buffer walked several times (torchvision's im2col re-reads offsets and masks once per
  channel) re-reads from L2 when the bytes touched between two walks fit, else from DRAM.
* Cold L2: each timed call starts with nothing of its own in L2 (the benchmark interleaves ours and
  torchvision on separate copies of the inputs), except that backward follows its untimed forward as
  in the benchmark. ``--warm``: a call after an identical call (small layers then read from L2).
* Gathers: offsets of about ``offset_reach_px`` = 1 pixel (the benchmark's offsets are N(0, 1)). A
  thread block covering R output rows reads (R + 1 + 2 reach) / R input rows from L2 per tap walk,
  (R + 3 + 2 reach) / R when it does all 9 taps; a fused pixel tile reads its rows x columns window.
  L1 absorbs the rest. DRAM sees each input byte once per walk that misses L2.
* Atomics: each costs 2 x element size of L2 traffic (the read-modify-write); 16-bit atomics on a GPU
  without them (sm_61) cost ``cas_penalty`` = 4x that.
* Sampling work is counted in lane instructions per (channel, tap, pixel) and per (tap, pixel)
  (``OPS``: loads, index math, compares and arithmetic, estimated from each kernel's source; not
  calibrated: ncu's inst_executed would), issued at the FP32 lane rate (FP32 FLOP/s / 2) x fma_eff.
  Index decoding with run-time div/mod makes torchvision's sampling kernels instruction-bound; the
  model then gives its col2im_coord / col2im / im2col / GEMMs about the shares of the published
  Tesla P4 profile (35% / 26% / 10% / 27%; printed beside it). Hopper's INT32 rate is half its FP32
  rate; the model does not split the two.
* Shared memory: one 32-bank wavefront per SM and clock; an n-way bank conflict costs n wavefronts
  (a warp access takes as many wavefronts as the most distinct words it touches in one bank).
  Occupancy and latency are not modelled: a block of 256 threads with 8-16 accumulators a thread is
  assumed to keep shared memory busy.

The channels-last question is ``python -m benchmarks.dcn_layouts`` (it builds on this model): would
NHWC variants of the fused kernels win, for NCHW callers and for channels_last ones, under smooth,
N(0, 1) and random offsets? It counts the gathers' 32-byte sectors in both layouts, the copies our
NCHW driver makes for channels_last tensors, and prints a verdict per shape, dtype and GPU.

What it cannot show: occupancy beyond the fill of a small grid, latency-bound launches, cuBLAS's
kernel choice (split-K for the skinny grad_weight GEMMs is assumed to fill the GPU), atomic contention
on one address, the memory model. The model is for GPUs; with a CPU results file ``--measured`` prints
the measurement alone.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Sequence

from benchmarks._roofline import (GPUS, Access, Assumptions, Gpu, Kernel, Prediction, accumulator_store_wavefronts,
                                  bank_wavefronts, elementwise, gemm, gpu_for_device_name, matrix_load_wavefronts,
                                  per_image, run_kernels, vector_wavefronts, write_json)

ALGOS = ("torchvision", "im2col", "fused", "fused_target")
MODES = ("forward", "backward", "full")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
ACC_BYTES = 4  # fp32 accumulation buffers
KERNEL = 3
TAPS = KERNEL * KERNEL

# Sampling work, in lane instructions (loads, index math, compares and floating point; an FMA is one)
# per item, estimated from the kernels' source: index decoding by run-time div/mod (~20 instructions
# each) dominates torchvision's kernels. "c" items are (channel, tap, pixel), "t" items (tap, pixel).
OPS = {
    "tv_im2col": 60,     # c: per thread 4 div/mod over 9 taps; per tap 3 loads, bounds, 4 gathers, blend
    "tv_coord": 300,     # c: 2 threads (y, x) x (4 div/mod + coordinate weight (+ bilinear for y)) per channel
    "tv_col2im": 240,    # c: 6 div/mod, the 3x3 neighbour loop with distance tests, <= 4 atomics
    "tap": 90,           # t, ours: 3 div/mod, offset/mask loads, corners and bilinear weights
    "im2col": 16,        # c, ours: 4 predicated gathers, blend, convert, store, 2 pointer steps
    "grad_sample": 24,   # c, ours offset/mask grad: gathers, value, d/dy, d/dx, gcol load, 3 FMAs
    "scatter": 14,       # c, ours col2im: gcol load, x mask, 4 weights, 4 atomics
    "fused_tap": 70,     # t per block that needs it: tap_corners (64-bit index math, loads, corners)
    "fused_sample": 12,  # c per block that needs it: 4 predicated gathers, x mask, shared-memory store
    "fused_grad": 35,    # c: gcol load, value, d/dy, d/dx, three sums, 4 scaled atomics
}


@dataclass(frozen=True)
class Layer:
    """A DCNv2 layer: ``batch`` images of ``channels`` x ``size`` x ``size``, 3x3, stride 1, padding 1,
    one offset group, C_out = C_in, with mask and bias."""
    name: str
    batch: int
    channels: int
    size: int

    @property
    def pixels(self) -> int:
        """Output (= input) pixels per image."""
        return self.size * self.size

    def samples(self, images: int = 1) -> int:
        """(channel, tap, pixel) items of ``images`` images."""
        return self.channels * TAPS * self.pixels * images

    def taps(self, images: int = 1) -> int:
        """(tap, pixel) items of ``images`` images."""
        return TAPS * self.pixels * images


def benchmark_layers() -> list[Layer]:
    """The cases of ``benchmarks/deform_conv2d.py`` (imported lazily: it imports torch)."""
    from benchmarks.deform_conv2d import CASES
    return [Layer(name, batch, channels, size) for name, batch, channels, size in CASES]


# --------------------------------------------------------------------------------------- kernels

def rows_factor(width: int, threads: int, reach: float, all_taps: bool) -> float:
    """L2 traffic / input bytes of one gather sweep by blocks of ``threads`` consecutive output pixels
    of an image ``width`` wide: (R + 1 + 2 reach) / R rows for one tap (the offsets' reach on both
    sides, +1 for the bilinear neighbour), (R + 3 + 2 reach) / R for all nine taps; R = the rows a
    block covers (at least 1)."""
    rows = max(1.0, threads / width)
    return (rows + (3 if all_taps else 1) + 2 * reach) / rows


@dataclass(frozen=True)
class Sizes:
    """Bytes per image of each tensor of ``layer`` in a dtype of ``s`` bytes (weight and bias: whole)."""
    s: int
    input: float
    offset: float
    mask: float
    weight: float
    bias: float
    out: float
    columns: float   # [C * 9, P] of one image
    acc: float       # an fp32 input-sized buffer of one image
    tap_rows: float  # the columns rows of one tap (or one channel's 9 taps) of one image: C * P * s

    @classmethod
    def of(cls, layer: Layer, dtype: str) -> "Sizes":
        s = DTYPE_BYTES[dtype]
        c, p = layer.channels, layer.pixels
        return cls(s, c * p * s, 2 * TAPS * p * s, TAPS * p * s, c * c * TAPS * s, c * s, c * p * s,
                   c * TAPS * p * s, c * p * ACC_BYTES, c * p * s)


def tv_block_images(batch: int) -> int:
    """torchvision's images per chunk: the largest divisor of ``batch`` that is <= 32 (1 if none > 1)."""
    return next((k for k in range(min(32, batch), 1, -1) if batch % k == 0), 1)


def ours_block_images(layer: Layer, dtype: str) -> int:
    """``block_images`` of deform_conv2d_driver.h: enough GEMM columns (4096), columns <= 256 MiB."""
    per_image = max(1, layer.samples() * DTYPE_BYTES[dtype])
    by_budget = max(1, (256 << 20) // per_image)
    by_gemm = -(-4096 // layer.pixels)
    return max(1, min(layer.batch, by_budget, by_gemm))


def _blocks(batch: int, per_block: int) -> list[range]:
    return [range(n0, min(batch, n0 + per_block)) for n0 in range(0, batch, per_block)]


def _all(layer: Layer) -> range:
    return range(layer.batch)


# ------------------------------------------------------------------------------------ torchvision

TV_THREADS = 1024  # GET_THREADS() on compute capability >= 6


def tv_im2col(layer: Layer, z: Sizes, imgs: range, asm: Assumptions) -> Kernel:
    """deformable_im2col_kernel: one thread per (channel, image, pixel), channel slowest; each thread
    does the 9 taps and reads its pixel's 9 offset pairs and masks (so they are read once per channel)."""
    nb = len(imgs)
    span = nb * (z.offset + z.mask) + nb * z.columns / layer.channels + nb * z.input / layer.channels
    rf = rows_factor(layer.size, TV_THREADS, asm.offset_reach_px, all_taps=True)
    c = layer.channels
    acc = (per_image("input", z.input, imgs, l2_passes=rf)
           + per_image("offset", z.offset, imgs, l2_passes=c, sweeps=c, span=span)
           + per_image("mask", z.mask, imgs, l2_passes=c, sweeps=c, span=span)
           + [Access("columns", z.columns * nb, "w")])
    return Kernel("im2col", tuple(acc), alu_ops=OPS["tv_im2col"] * layer.samples(nb))


def torchvision_forward(layer: Layer, dtype: str, asm: Assumptions) -> list[Kernel]:
    """deform_conv2d_forward_kernel of torchvision (see the module docstring)."""
    z, nb, c = Sizes.of(layer, dtype), tv_block_images(layer.batch), layer.channels
    ks = [elementwise("zeros(out)", *per_image("tv_out", z.out, _all(layer), op="w")),
          elementwise("zeros(out_buf)", *per_image("out_buf", z.out, _all(layer), op="w")),
          elementwise("zeros(columns)", Access("columns", z.columns * nb, "w"))]
    for imgs in _blocks(layer.batch, nb):
        ks.append(tv_im2col(layer, z, imgs, asm))
        ks.append(gemm("gemm out_buf (addmm_)", c, len(imgs) * layer.pixels, c * TAPS, [Access("weight", z.weight)],
                       [Access("columns", z.columns * len(imgs))], per_image("out_buf", z.out, imgs, op="rw"),
                       asm.gemm_tile))
    ks.append(elementwise("copy out_buf -> out (transpose)", *per_image("out_buf", z.out, _all(layer)),
                          *per_image("tv_out", z.out, _all(layer), op="w")))
    ks.append(elementwise("out + bias", *per_image("tv_out", z.out, _all(layer)), Access("bias", z.bias),
                          *per_image("out", z.out, _all(layer), op="w")))
    return ks


def tv_coord(layer: Layer, z: Sizes, imgs: range, asm: Assumptions) -> Kernel:
    """deformable_col2im_coord_kernel: one thread per (image, offset channel (2 x 9), pixel) looping over
    the channels: each image's input is walked 18 times, the columns twice (y and x threads)."""
    nb = len(imgs)
    span = z.input + z.tap_rows
    rf = rows_factor(layer.size, TV_THREADS, asm.offset_reach_px, all_taps=False)
    sweeps = 2 * TAPS
    acc = (per_image("input", z.input, imgs, l2_passes=sweeps * rf, sweeps=sweeps, span=span)
           + [Access("columns", z.columns * nb, l2_passes=2, sweeps=2, span=span)]
           + per_image("offset", z.offset, imgs, l2_passes=2) + per_image("mask", z.mask, imgs, l2_passes=2)
           + per_image("grad_offset", z.offset, imgs, op="w") + per_image("grad_mask", z.mask, imgs, op="w"))
    return Kernel("col2im_coord", tuple(acc), alu_ops=OPS["tv_coord"] * layer.samples(nb))


def tv_col2im(layer: Layer, z: Sizes, imgs: range, asm: Assumptions) -> Kernel:
    """deformable_col2im_kernel: one thread per (channel, tap, image, pixel), channel slowest, up to 4
    atomics in the storage type; offsets and masks re-read once per channel."""
    nb, c = len(imgs), layer.channels
    span = nb * (z.offset + z.mask) + nb * z.columns / c + nb * z.input / c
    acc = ([Access("columns", z.columns * nb)]
           + per_image("offset", z.offset, imgs, l2_passes=c, sweeps=c, span=span)
           + per_image("mask", z.mask, imgs, l2_passes=c, sweeps=c, span=span)
           + per_image("tv_grad_input", z.input, imgs, op="rw", l2_passes=0))
    return Kernel("col2im (atomics)", tuple(acc), alu_ops=OPS["tv_col2im"] * layer.samples(nb),
                  atomics=4 * layer.samples(nb), atomic_elem=z.s)


def torchvision_backward(layer: Layer, dtype: str, asm: Assumptions) -> list[Kernel]:
    """deform_conv2d_backward_kernel of torchvision: backward_gradient_inputs, then
    backward_gradient_parameters, then grad_bias (see the module docstring)."""
    z, nb, c, p = Sizes.of(layer, dtype), tv_block_images(layer.batch), layer.channels, layer.pixels
    everything = _all(layer)
    ks = [elementwise("zeros_like(input)", *per_image("tv_grad_input", z.input, everything, op="w")),
          elementwise("zeros_like(offset)", *per_image("grad_offset", z.offset, everything, op="w")),
          elementwise("zeros_like(mask)", *per_image("grad_mask", z.mask, everything, op="w"))]
    for imgs in _blocks(layer.batch, nb):
        go = per_image("grad_out", z.out, imgs)
        if len(imgs) > 1:  # grad_out[elt][g].flatten(1) of the permuted view copies
            ks.append(elementwise("grad_out permuted copy", *go, Access("go_flat", z.out * len(imgs), "w")))
            go = [Access("go_flat", z.out * len(imgs))]
        ks.append(elementwise("columns.zero_()", Access("columns", z.columns * len(imgs), "w")))
        ks.append(gemm("gemm grad_columns (addmm_)", c * TAPS, len(imgs) * p, c, [Access("weight", z.weight)], go,
                       [Access("columns", z.columns * len(imgs), "rw")], asm.gemm_tile))
        ks += [tv_coord(layer, z, imgs, asm), tv_col2im(layer, z, imgs, asm)]
    ks.append(elementwise("zeros_like(weight)", Access("grad_weight", z.weight, "w")))
    go_all = per_image("grad_out", z.out, everything)
    if nb > 1:
        ks.append(elementwise("grad_out permute contiguous", *go_all, *per_image("go_buf", z.out, everything, op="w")))
    for imgs in _blocks(layer.batch, nb):
        go = per_image("go_buf" if nb > 1 else "grad_out", z.out, imgs)
        ks.append(tv_im2col(layer, z, imgs, asm))
        ks.append(gemm("gemm grad_weight (addmm_)", c, c * TAPS, len(imgs) * p, go,
                       [Access("columns", z.columns * len(imgs))], [Access("grad_weight", z.weight, "rw")],
                       asm.gemm_tile))
    ks.append(elementwise("grad_out.sum (grad_bias)", *go_all, Access("grad_bias", z.bias, "w")))
    ks.append(Kernel("ones_like(bias) * sum", (Access("grad_bias", z.bias, "rw"),), launches=2))
    return ks


# ------------------------------------------------------------------------------ ours: im2col path

OURS_THREADS = 256  # kThreads of deform_conv2d_cuda.cu


def _ours_sweep(layer: Layer, z: Sizes, imgs: range, asm: Assumptions, extra: float) -> list[Access]:
    """The input walk of our sampling kernels: one item per (image, tap, pixel), pixel fastest, each
    looping over the channels, so every tap walks the image's input once; ``extra`` = other bytes
    touched per tap walk (columns rows, the atomics' target)."""
    rf = rows_factor(layer.size, OURS_THREADS, asm.offset_reach_px, all_taps=False)
    span = z.input + z.tap_rows + 3 * layer.pixels * z.s + extra
    return per_image("input", z.input, imgs, l2_passes=TAPS * rf, sweeps=TAPS, span=span)


def _offset_mask(z: Sizes, imgs: range) -> list[Access]:
    return per_image("offset", z.offset, imgs) + per_image("mask", z.mask, imgs)


def ours_im2col(layer: Layer, z: Sizes, imgs: range, asm: Assumptions) -> Kernel:
    """im2col_kernel: corners once per (tap, pixel), reused for every channel of the offset group."""
    nb = len(imgs)
    acc = _ours_sweep(layer, z, imgs, asm, 0.0) + _offset_mask(z, imgs) + [Access("columns", z.columns * nb, "w")]
    return Kernel("im2col", tuple(acc),
                  alu_ops=OPS["tap"] * layer.taps(nb) + OPS["im2col"] * layer.samples(nb))


def im2col_forward(layer: Layer, dtype: str, asm: Assumptions) -> list[Kernel]:
    """forward<CudaBackend> of deform_conv2d_driver.h: per block of images, im2col then baddbmm with
    the bias (ATen copies the broadcast bias into the output, then the GEMM reads and writes it)."""
    z, c, p = Sizes.of(layer, dtype), layer.channels, layer.pixels
    ks: list[Kernel] = []
    for imgs in _blocks(layer.batch, ours_block_images(layer, dtype)):
        nb = len(imgs)
        ks.append(ours_im2col(layer, z, imgs, asm))
        res = per_image("out", z.out, imgs, op="w") if nb == 1 else [Access("gemm_res", z.out * nb, "w")]
        ks.append(elementwise("copy bias -> out (baddbmm)", Access("bias", z.bias), *res))
        ks.append(gemm("gemm (baddbmm)", c, nb * p, c * TAPS, [Access("weight", z.weight)],
                       [Access("columns", z.columns * nb)], [replace(r, op="rw") for r in res], asm.gemm_tile))
        if nb > 1:
            ks.append(elementwise("permute copy -> out", Access("gemm_res", z.out * nb),
                                  *per_image("out", z.out, imgs, op="w")))
    return ks


def ours_offset_mask_grad(layer: Layer, z: Sizes, imgs: range, asm: Assumptions) -> Kernel:
    """offset_mask_grad_kernel: a channel reduction per (tap, pixel), no atomics."""
    nb = len(imgs)
    acc = (_ours_sweep(layer, z, imgs, asm, 0.0) + _offset_mask(z, imgs)
           + [Access("grad_columns", z.columns * nb)]
           + per_image("grad_offset", z.offset, imgs, op="w") + per_image("grad_mask", z.mask, imgs, op="w"))
    return Kernel("offset/mask grad", tuple(acc),
                  alu_ops=OPS["tap"] * layer.taps(nb) + OPS["grad_sample"] * layer.samples(nb))


def ours_col2im(layer: Layer, z: Sizes, imgs: range, asm: Assumptions) -> Kernel:
    """col2im_scatter_kernel: fp32 atomics into the fp32 grad_input buffer, one tap walk at a time."""
    nb = len(imgs)
    span = z.acc + z.tap_rows + 3 * layer.pixels * z.s
    acc = (_offset_mask(z, imgs) + [Access("grad_columns", z.columns * nb)]
           + per_image("grad_input_acc", z.acc, imgs, op="rw", l2_passes=0, sweeps=TAPS, span=span))
    return Kernel("col2im (atomics)", tuple(acc),
                  alu_ops=OPS["tap"] * layer.taps(nb) + OPS["scatter"] * layer.samples(nb),
                  atomics=4 * layer.samples(nb), atomic_elem=ACC_BYTES)


def _ours_grad_weight(layer: Layer, z: Sizes, dtype: str, imgs: range, go: list[Access],
                      asm: Assumptions) -> list[Kernel]:
    """grad_weight += grad_out @ columns^T: in place into the fp32 buffer for fp32, else a bmm in the
    storage type and an add_ into the fp32 buffer."""
    c, nb = layer.channels, len(imgs)
    gw = Access("grad_weight_acc", z.weight / z.s * ACC_BYTES, "rw")
    cols = [Access("columns", z.columns * nb)]
    if z.s == ACC_BYTES:
        return [gemm("gemm grad_weight (baddbmm_)", c, c * TAPS, nb * layer.pixels, go, cols, [gw], asm.gemm_tile)]
    tmp = Access("grad_weight_tmp", z.weight, "w")
    return [gemm("gemm grad_weight (bmm)", c, c * TAPS, nb * layer.pixels, go, cols, [tmp], asm.gemm_tile),
            elementwise("grad_weight add_", replace(tmp, op="r"), gw)]


def im2col_backward(layer: Layer, dtype: str, asm: Assumptions) -> list[Kernel]:
    """backward<CudaBackend> of deform_conv2d_driver.h, plus grad_bias = grad_out.sum((0, 2, 3))."""
    z, c, p, everything = Sizes.of(layer, dtype), layer.channels, layer.pixels, _all(layer)
    ks = [elementwise("zeros(grad_input fp32)", *per_image("grad_input_acc", z.acc, everything, op="w")),
          elementwise("zeros(grad_weight fp32)", Access("grad_weight_acc", z.weight / z.s * ACC_BYTES, "w"))]
    for imgs in _blocks(layer.batch, ours_block_images(layer, dtype)):
        nb = len(imgs)
        go = per_image("grad_out", z.out, imgs)
        if nb > 1:  # permute + reshape of the block's grad_out copies
            ks.append(elementwise("grad_out permute copy", *go, Access("go_g", z.out * nb, "w")))
            go = [Access("go_g", z.out * nb)]
        ks.append(gemm("gemm grad_columns (bmm)", c * TAPS, nb * p, c, [Access("weight", z.weight)], go,
                       [Access("grad_columns", z.columns * nb, "w")], asm.gemm_tile))
        ks += [ours_offset_mask_grad(layer, z, imgs, asm), ours_col2im(layer, z, imgs, asm),
               ours_im2col(layer, z, imgs, asm)]
        ks += _ours_grad_weight(layer, z, dtype, imgs, go, asm)
    if z.s != ACC_BYTES:
        ks.append(elementwise("grad_input fp32 -> dtype", *per_image("grad_input_acc", z.acc, everything),
                              *per_image("grad_input", z.input, everything, op="w")))
        ks.append(elementwise("grad_weight fp32 -> dtype", Access("grad_weight_acc", z.weight / z.s * ACC_BYTES),
                              Access("grad_weight", z.weight, "w")))
    ks.append(elementwise("grad_out.sum (grad_bias)", *per_image("grad_out", z.out, everything),
                          Access("grad_bias", z.bias, "w")))
    return ks


# ------------------------------------------------------------------------------------ ours: fused

# deform_conv2d_fused_plan.h's constants (tests/test_dcn_roofline.py checks them against the header).
FUSED_THREADS = 256
FUSED_PAIRS = 2
FUSED_OUTPUTS = 8
FUSED_PIXELS_PER_THREAD = 2     # a thread's register tile: 2 pixels (one 64-bit sample load) x
FUSED_CHANNELS_PER_THREAD = 4   # 4 channels (one 128-bit weight load) = FUSED_OUTPUTS
FUSED_SMEM_BYTES = 48 * 1024
FUSED_WEIGHT_OUTPUTS = 16
FUSED_ITEM_CHUNKS = 32
FUSED_TARGET_BLOCKS = 264
FUSED_AUTO_FORWARD_MAX_CHANNELS = 64
FUSED_AUTO_TENSOR_CORE_FORWARD_MAX_CHANNELS = 192
FUSED_AUTO_BACKWARD_MAX_CHANNELS = 16
WARP = 32


@dataclass(frozen=True)
class FusedPlan:
    """plan_fused_forward / plan_fused_backward of deform_conv2d_fused_plan.h for ``layer`` (one
    weight group, one offset group, fp32 accumulation): pixel tile, output-channel tile, the channel
    chunks of the forward (c), backward sampling (a) and grad_weight (b) kernels, B's item chunks and
    B's shared memory in bytes (sample rows padded to tile_p + 1)."""
    tile_p: int
    tile_co: int
    chunk_c: int
    tile_p_bwd: int
    chunk_a: int
    chunk_b: int
    item_chunks: int
    smem_b: int


def _round_up(x: int, m: int) -> int:
    """``x`` rounded up to a multiple of ``m`` (round_up in common/host_device.h)."""
    return -(-x // m) * m


def rows_in_tiles(n: int) -> int:
    """``n`` rows rounded up to whole register tiles (fused_rows_in_tiles): backward kernel A's
    transposed weight chunk [cout_g][rows]."""
    return _round_up(n, FUSED_CHANNELS_PER_THREAD)


def fused_weight_row_stride(tile_co: int) -> int:
    """The fused forward's transposed weight tile row (fused_weight_row_stride): tile_co rounded up to
    whole register tiles of channels, plus one register tile of padding."""
    return rows_in_tiles(tile_co) + FUSED_CHANNELS_PER_THREAD


def fused_plan(layer: Layer) -> FusedPlan:
    """The fused kernels' launch plan (mirrors deform_conv2d_fused_plan.h; ValueError if not covered).
    B's grid: item_chunks = min(items, max(kFusedItemChunks, ceil(kFusedTargetBlocks / channel
    chunks))), items = batch x pixel tiles, channel chunks = C / chunk_b."""
    k, c, acc = TAPS, layer.channels, ACC_BYTES
    tp = next(t for t in (64, 32, 16, 8, 4) if k * t <= FUSED_THREADS * FUSED_PAIRS)
    tile_co = min(c, FUSED_THREADS * FUSED_OUTPUTS // tp)
    ld_w = fused_weight_row_stride(tile_co)
    chunk_c = next((cc for cc in (16, 8, 4, 2, 1) if (cc * k * tp + ld_w * cc * k) * acc <= FUSED_SMEM_BYTES), 0)
    t = tp
    while t >= 4:
        a = next((cc for cc in (16, 8, 4, 2, 1)
                  if (c * t + rows_in_tiles(cc * k) * c + cc * k * t) * acc <= FUSED_SMEM_BYTES), 0)
        b = next((cc for cc in (16, 8, 4, 2, 1) if c % cc == 0 and c * cc * k <= FUSED_THREADS * FUSED_WEIGHT_OUTPUTS
                  and (cc * k * (t + 1) + c * t) * acc <= FUSED_SMEM_BYTES), 0)
        if a and b and chunk_c:
            items = layer.batch * math.ceil(layer.pixels / t)
            wanted = max(FUSED_ITEM_CHUNKS, math.ceil(FUSED_TARGET_BLOCKS / (c // b)))
            return FusedPlan(tp, tile_co, chunk_c, t, a, b, max(1, min(items, wanted)),
                             (b * k * (t + 1) + c * t) * acc)
        t //= 2
    raise ValueError(f"layer: the fused kernels do not cover {layer.channels} channels")


def auto_algos(layer: Layer, dtype: str = "float32", gpu: Optional[Gpu] = None) -> tuple[str, str]:
    """(forward, backward) algorithm HYBRIDOPS_DCN_ALGO=auto runs on a CUDA device (use_fused): fused
    where the plan covers the layer and it has at most kFusedAutoForwardMaxChannels (64) channels per
    group -- kFusedAutoTensorCoreForwardMaxChannels (192) where the forward runs on tensor cores
    (fp16/bf16 on a ``gpu`` with them, ``uses_tensor_core_forward``) -- resp.
    kFusedAutoBackwardMaxChannels for the backward; else im2col."""
    try:
        fused_plan(layer)
    except ValueError:
        return "im2col", "im2col"
    tensor_cores = gpu is not None and uses_tensor_core_forward(dtype, gpu)
    forward_limit = FUSED_AUTO_TENSOR_CORE_FORWARD_MAX_CHANNELS if tensor_cores else FUSED_AUTO_FORWARD_MAX_CHANNELS
    return tuple("fused" if layer.channels <= limit else "im2col"
                 for limit in (forward_limit, FUSED_AUTO_BACKWARD_MAX_CHANNELS))


def auto_label(layer: Layer, mode: str, dtype: str = "float32", gpu: Optional[Gpu] = None) -> str:
    """What auto runs in a benchmark mode: 'fused' / 'im2col', or 'fused fwd + im2col bwd' (full)."""
    fwd, bwd = auto_algos(layer, dtype, gpu)
    if mode == "forward":
        return fwd
    if mode == "backward":
        return bwd
    return fwd if fwd == bwd else f"{fwd} fwd + {bwd} bwd"


@dataclass(frozen=True)
class FusedVariant:
    """How the fused kernels' micro-GEMMs use shared memory and the FMA units.

    ``wavefronts_per_warp_mac`` None (``FUSED_BUILT``): the kernels as built; every shared-memory
    access is counted warp by warp from the kernels' index expressions (``forward_block_wavefronts``,
    ``sampling_block_wavefronts``, ``weight_grad_block_wavefronts``: ``bank_wavefronts`` of the lanes'
    words), and the FMAs are those executed (whole tiles, zero-weight channels of a partial channel
    tile included). A number (``FUSED_TARGET``): that many wavefronts per warp-wide FMA of the useful
    MACs (0.25: register-tiled, 8x8 outputs a thread from 128-bit loads as in a tuned SGEMM; 0.1 with
    ldmatrix-fed tensor-core MMA), plus one per 32 samples stored. ``fill_grid``: B gets at least
    ``blocks_per_sm`` blocks per SM of the GPU at hand. ``tensor_cores``: fp16/bf16 micro-GEMMs on
    tensor cores where the GPU has them."""
    wavefronts_per_warp_mac: Optional[float]
    wavefronts_per_warp_mac_mma: Optional[float]
    fill_grid: bool
    tensor_cores: bool


FUSED_BUILT = FusedVariant(None, None, False, False)
FUSED_TARGET = FusedVariant(0.25, 0.1, True, True)


def _strided_wavefronts(count: int, word: Callable[[int], int]) -> int:
    """Wavefronts of a block loop ``for (i = t; i < count; i += kFusedThreads)`` whose iteration i
    touches shared word ``word(i)``: each warp's trip is 32 consecutive i."""
    return sum(bank_wavefronts(word(i) for i in range(b, min(count, b + WARP))) for b in range(0, count, WARP))


def channel_chunks(channels: int, chunk: int) -> list[int]:
    """The channel chunks a block walks (one group, one offset group): ``chunk`` each, then the rest."""
    return [chunk] * (channels // chunk) + ([channels % chunk] if channels % chunk else [])


@lru_cache(maxsize=None)
def forward_block_wavefronts(tile_p: int, tile_co: int, cc: int, k: int) -> tuple[int, int]:
    """(micro-GEMM, stores) shared-memory wavefronts of one fused_forward_kernel block for one chunk of
    ``cc`` channels. Micro-GEMM: thread t owns the register tile of pixels my_p = t % (tile_p / 2) x 2
    (+0, 1) and channels my_co = t / (tile_p / 2) x 4 (+0..3), if my_co < tile_co; for each of the
    chunk's rk = cc x k rows r it loads 2 samples at samples[r * tile_p + my_p] (64 bits) and 4
    weights at wtile[r * ld_w + my_co] (128 bits; ld_w = ``fused_weight_row_stride``), counted per
    warp by ``vector_wavefronts`` (at r = 0: a shift by r moves every lane alike). Stores: the
    samples (samples[ci * k * tile_p + q] for the pairs q < k x tile_p of each channel) and the
    transposed weight tile, item i < co_rows x rk storing word r * ld_w + co with co_lo = i % 4,
    r = i / 4 % rk, co = i / 4 / rk x 4 + co_lo."""
    px, cx = FUSED_PIXELS_PER_THREAD, FUSED_CHANNELS_PER_THREAD
    rk, ld_w = cc * k, fused_weight_row_stride(tile_co)
    co_rows = ld_w - cx
    per_r = 0
    for w in range(0, FUSED_THREADS, WARP):
        lanes = [t for t in range(w, w + WARP) if t // (tile_p // px) * cx < tile_co]
        if lanes:
            per_r += vector_wavefronts(((t % (tile_p // px) * px, px) for t in lanes))
            per_r += vector_wavefronts(((t // (tile_p // px) * cx, cx) for t in lanes))

    def weight_word(i: int) -> int:
        r, co = i // cx % rk, i // cx // rk * cx + i % cx
        return r * ld_w + co

    stores = cc * _strided_wavefronts(k * tile_p, int) + _strided_wavefronts(co_rows * rk, weight_word)
    return rk * per_r, stores


@lru_cache(maxsize=None)
def sampling_block_wavefronts(tile_p: int, cout_g: int, cc: int, k: int) -> tuple[int, int]:
    """(micro-GEMM, other) wavefronts of one fused_backward_sampling_kernel (A) block for one chunk of
    ``cc`` channels. Micro-GEMM, register-tiled like the forward's: register tile tt < rk4 / 4 x
    tile_p / 2 (rk4 = ``rows_in_tiles``(cc x k)) computes rows r0 = tt / (tile_p / 2) x 4 (+0..3) and
    pixels q0 = tt % (tile_p / 2) x 2 (+0, 1), per output channel co one 128-bit load of
    wchunk[co * rows_a + r0] and one 64-bit load of gout[co * tile_p + q0] (counted at co = 0, times
    cout_g; each warp trip of the tile loop by ``vector_wavefronts``). Other: the transposed weight
    chunk's stores (contiguous), gcol's stores (row r < rk of each tile, 2 pixels a lane) and its
    loads by the pairs' owners (gcol[ci * k * tile_p + q] for each channel)."""
    px, rx = FUSED_PIXELS_PER_THREAD, FUSED_CHANNELS_PER_THREAD
    rk = cc * k
    rk4 = rows_in_tiles(rk)
    tiles = rk4 // rx * (tile_p // px)
    gemm = 0
    stores = 0
    for b in range(0, tiles, WARP):
        lanes = range(b, min(tiles, b + WARP))
        gemm += vector_wavefronts(((tt // (tile_p // px) * rx, rx) for tt in lanes))
        gemm += vector_wavefronts(((tt % (tile_p // px) * px, 1 * px) for tt in lanes))
        for a in range(rx):
            stores += vector_wavefronts((((tt // (tile_p // px) * rx + a) * tile_p + tt % (tile_p // px) * px, px)
                                         for tt in lanes if tt // (tile_p // px) * rx + a < rk))
    other = (_strided_wavefronts(rk4 * cout_g, int) + stores + cc * _strided_wavefronts(k * tile_p, int))
    return cout_g * gemm, other


@lru_cache(maxsize=None)
def weight_grad_block_wavefronts(tile_p: int, ld: int, cout_g: int, cc: int, k: int) -> tuple[int, int]:
    """(micro-GEMM, stores) wavefronts of one fused_weight_grad_partial_kernel (B) block for one item
    (image, pixel tile). Micro-GEMM: entry e = t + 256 j < cout_g x rk (co = e / rk, r = e % rk) sums
    over pp gout[co * tile_p + pp] x samples[r * ld + pp] (counted at pp = 0, times tile_p); ld =
    tile_p + 1 as built (tile_p: the layout before the padding). Stores: the sample rows
    samples[(ci * k + q / tile_p) * ld + q % tile_p] of the pairs q of each channel, and gout."""
    rk = cc * k
    n = cout_g * rk
    gemm = sum(bank_wavefronts((e // rk) * tile_p for e in range(b, min(n, b + WARP)))
               + bank_wavefronts((e % rk) * ld for e in range(b, min(n, b + WARP))) for b in range(0, n, WARP))
    stores = (cc * _strided_wavefronts(k * tile_p, lambda q: (q // tile_p) * ld + q % tile_p)
              + _strided_wavefronts(cout_g * tile_p, int))
    return tile_p * gemm, stores


def window_factor(layer: Layer, tile_p: int, reach: float) -> float:
    """L2 input bytes per input byte of one gather by pixel tiles of ``tile_p`` consecutive pixels
    doing all 9 taps: their rows x columns window with the 3x3 and the offsets' reach."""
    rows, cols = max(1.0, tile_p / layer.size), min(tile_p, layer.size)
    return (rows + 3 + 2 * reach) * (cols + 3 + 2 * reach) / (rows * cols)


def _smem(variant: FusedVariant, built: float, macs: float, stored: float) -> tuple[float, Optional[float]]:
    """(wavefronts, wavefronts on tensor cores) of a fused kernel: ``built`` (counted) for the built
    variant, else the variant's rate per warp-wide FMA of ``macs`` plus ``stored`` samples / 32."""
    if variant.wavefronts_per_warp_mac is None:
        return built, None
    return ((macs * variant.wavefronts_per_warp_mac + stored) / WARP,
            (macs * variant.wavefronts_per_warp_mac_mma + stored) / WARP)


# The tensor-core fused forward (fp16/bf16 on sm_80+; deform_conv2d_fused_tc_cuda.cuh, mirrored):
# the FMA kernel's grid and plan, its contraction on WMMA 16x16x16 fragments (fp32 accumulate).
MMA_TILE = 16                        # WMMA m16n16k16
MMA_WARPS = FUSED_THREADS // WARP    # 8 warps, at most one accumulator fragment each
MMA_ELEM = 2                         # fp16/bf16 operands in shared memory
MMA_ROW_PAD_BYTES = 16               # kFusedMmaRowPad = 8 16-bit elements: every row 16 bytes longer


def uses_tensor_core_forward(dtype: str, gpu: Gpu) -> bool:
    """Whether ``fused`` runs the tensor-core forward: fp16/bf16 on a GPU with tensor cores (the
    H100/H200 profiles, sm_90); fp32 and the 1080 Ti (sm_61) keep the FMA kernel."""
    return DTYPE_BYTES[dtype] == 2 and gpu.mma_flops is not None


@dataclass(frozen=True)
class MmaTiles:
    """The tensor-core forward's shared-memory tiles for one chunk of ``rk`` = chunk x K (channel, tap)
    rows: samples [rk_pad][tile_p] and the weight slice [tile_co_pad][rk_pad] in the storage type
    (rk_pad = rk rounded up to 16, the extra rows zero), the fp32 staging tile [tile_co_pad][tile_p];
    ``fragments`` = (tile_co_pad / 16) x (tile_p / 16) accumulators, one per warp."""
    rk: int
    rk_pad: int
    tile_co_pad: int
    fragments: int
    smem_bytes: int


def mma_tiles(tile_p: int, tile_co: int, cc: int, k: int, pad: int = MMA_ROW_PAD_BYTES) -> MmaTiles:
    """``MmaTiles`` of one chunk of ``cc`` channels, every row ``pad`` bytes longer than its data (16 as
    built; ValueError where the kernel does not apply: tile_p not a multiple of 16, or more fragments
    than warps)."""
    rk = cc * k
    rk_pad, co_pad = _round_up(rk, MMA_TILE), _round_up(tile_co, MMA_TILE)
    fragments = (co_pad // MMA_TILE) * (tile_p // MMA_TILE)
    if tile_p % MMA_TILE or fragments > MMA_WARPS:
        raise ValueError(f"tile_p = {tile_p}, tile_co = {tile_co}: not {MMA_TILE}-aligned tiles of at most "
                         f"{MMA_WARPS} fragments")
    smem = rk_pad * (tile_p * MMA_ELEM + pad) + co_pad * (rk_pad * MMA_ELEM + pad) + co_pad * (tile_p * ACC_BYTES + pad)
    return MmaTiles(rk, rk_pad, co_pad, fragments, smem)


def mma_chunk(tile_p: int, tile_co: int, k: int, pad: int = MMA_ROW_PAD_BYTES) -> int:
    """The tensor-core forward's own channel chunk (plan_fused_forward_tc): the largest of 16, 8, 4, 2, 1
    whose tiles (``mma_tiles``) fit the 48 KiB the FMA plan also keeps to."""
    return next(cc for cc in (16, 8, 4, 2, 1) if mma_tiles(tile_p, tile_co, cc, k, pad).smem_bytes <= FUSED_SMEM_BYTES)


@lru_cache(maxsize=None)
def mma_forward_block_wavefronts(tile_p: int, tile_co: int, cc: int, k: int,
                                 pad: int = MMA_ROW_PAD_BYTES) -> tuple[int, int]:
    """(contraction, stores) shared-memory wavefronts of one tensor-core forward block for one chunk of
    ``cc`` channels. Contraction: each of the ``fragments`` warps does rk_pad / 16 steps of
    load_matrix_sync(A: weight tile, rows rk_pad x 2 bytes apart) + load_matrix_sync(B: samples, rows
    tile_p x 2 bytes apart) + mma_sync, each load an ldmatrix.x4 (``matrix_load_wavefronts``: 4 at
    best; at tile_p = 32 the 64-byte rows of B are a 4-way conflict, 16; rk_pad = 144 or 80 gives A
    2-way, 8; ``pad`` = 16 bytes more a row makes both conflict-free). Stores: the samples (storage
    type, 2 lanes a word), the zero rows rk..rk_pad and the [tile_co_pad][rk_pad] weight tile."""
    t = mma_tiles(tile_p, tile_co, cc, k, pad)
    ld_a, ld_b = t.rk_pad * MMA_ELEM + pad, tile_p * MMA_ELEM + pad  # row strides in bytes
    contraction = t.fragments * (t.rk_pad // MMA_TILE) * (matrix_load_wavefronts(ld_a) + matrix_load_wavefronts(ld_b))

    def rows(width: int, ld: int) -> Callable[[int], int]:  # element i of a [.][width] tile of 16-bit elements
        return lambda i: ((i // width) * ld + (i % width) * MMA_ELEM) // 4

    stores = (cc * _strided_wavefronts(k * tile_p, rows(tile_p, ld_b))
              + _strided_wavefronts((t.rk_pad - t.rk) * tile_p, lambda i: (t.rk * ld_b) // 4 + rows(tile_p, ld_b)(i))
              + _strided_wavefronts(t.tile_co_pad * t.rk_pad, rows(t.rk_pad, ld_a)))
    return contraction, stores


def mma_forward_epilogue_wavefronts(tile_p: int, tile_co: int, pad: int = MMA_ROW_PAD_BYTES) -> int:
    """Wavefronts of a tensor-core forward block's end: store_matrix_sync of each fragment into the fp32
    staging tile (rows tile_p x 4 + pad bytes apart: 128 bytes at tile_p = 32, an 8-way conflict), then
    every thread reads its outputs staging[o], o = t + 256 j < tile_co x tile_p (one per warp read)."""
    t = mma_tiles(tile_p, tile_co, 1, 1, pad)
    ld = tile_p * ACC_BYTES + pad
    return (t.fragments * accumulator_store_wavefronts(ld)
            + _strided_wavefronts(tile_co * tile_p, lambda o: ((o // tile_p) * ld) // 4 + o % tile_p))


def fused_forward(layer: Layer, dtype: str, asm: Assumptions, variant: FusedVariant = FUSED_BUILT,
                  tensor_cores: bool = False, mma_pad: int = MMA_ROW_PAD_BYTES) -> list[Kernel]:
    """fused_forward_kernel: a block per (image, tile_p pixels, tile_co output channels); corners once
    per (tap, pixel) and block, channel chunks sampled into shared memory, contracted with the weight
    slice there (one sample load per r for all of a thread's outputs), bias fused. Every block reads
    its whole weight slice (weight x pixel tiles in L2). ``tensor_cores`` (the built variant only;
    ``uses_tensor_core_forward``): the tensor-core forward instead -- the same grid, plan, bytes and
    sampling, the contraction as WMMA fragments over the padded tiles (``mma_tiles``: executed MACs =
    tile_co_pad x tile_p x rk_pad a chunk, at the tensor rate), its shared memory counted by
    ``mma_forward_block_wavefronts`` and ``mma_forward_epilogue_wavefronts`` (rows ``mma_pad`` bytes
    longer than their data: 16 as built)."""
    z, c, everything, fp = Sizes.of(layer, dtype), layer.channels, _all(layer), fused_plan(layer)
    tiles = layer.batch * math.ceil(layer.pixels / fp.tile_p)
    co_tiles = math.ceil(c / fp.tile_co)
    blocks = tiles * co_tiles
    window = window_factor(layer, fp.tile_p, asm.offset_reach_px)
    acc = (per_image("input", z.input, everything, l2_passes=window * co_tiles)
           + per_image("offset", z.offset, everything, l2_passes=co_tiles)
           + per_image("mask", z.mask, everything, l2_passes=co_tiles)
           + [Access("weight", z.weight, l2_passes=tiles), Access("bias", z.bias, l2_passes=tiles)]
           + per_image("out", z.out, everything, op="w"))
    n = layer.samples(layer.batch)
    alu = co_tiles * (OPS["fused_tap"] * layer.taps(layer.batch) + OPS["fused_sample"] * n)
    built = variant.wavefronts_per_warp_mac is None
    if built and tensor_cores:
        chunk = mma_chunk(fp.tile_p, fp.tile_co, TAPS, mma_pad)
        tiles_mma = [mma_tiles(fp.tile_p, fp.tile_co, cc, TAPS, mma_pad) for cc in channel_chunks(c, chunk)]
        macs = blocks * sum(t.tile_co_pad * fp.tile_p * t.rk_pad for t in tiles_mma)
        wf = blocks * (sum(sum(mma_forward_block_wavefronts(fp.tile_p, fp.tile_co, t.rk // TAPS, TAPS, mma_pad))
                           for t in tiles_mma) + mma_forward_epilogue_wavefronts(fp.tile_p, fp.tile_co, mma_pad))
        return [Kernel("fused forward (tensor cores)", tuple(acc), gemm_flops=2.0 * macs, alu_ops=alu,
                       smem_wavefronts=wf, blocks=blocks, tensor_cores=True)]
    macs = blocks * fp.tile_co * fp.tile_p * c * TAPS if built else c * n  # executed (whole tiles) / useful
    counted = blocks * sum(sum(forward_block_wavefronts(fp.tile_p, fp.tile_co, cc, TAPS))
                           for cc in channel_chunks(c, fp.chunk_c)) if built else 0.0
    wf, wf_mma = _smem(variant, counted, macs, co_tiles * n)
    return [Kernel("fused forward", tuple(acc), gemm_flops=2.0 * macs, alu_ops=alu,
                   smem_wavefronts=wf, smem_wavefronts_mma=wf_mma, blocks=blocks, tensor_cores=variant.tensor_cores)]


def _fused_sampling_kernel(layer: Layer, z: Sizes, fp: FusedPlan, asm: Assumptions, variant: FusedVariant) -> Kernel:
    """fused_backward_sampling_kernel (A): grad_columns = W^T grad_out per channel chunk in shared memory,
    offset/mask gradients in registers, grad_input scattered with fp32 atomics."""
    c, everything, tp = layer.channels, _all(layer), fp.tile_p_bwd
    tiles = layer.batch * math.ceil(layer.pixels / tp)
    acc = (per_image("grad_out", z.out, everything)
           + per_image("input", z.input, everything, l2_passes=window_factor(layer, tp, asm.offset_reach_px))
           + _offset_mask(z, everything) + [Access("weight", z.weight, l2_passes=tiles)]
           + per_image("grad_input_acc", z.acc, everything, op="rw", l2_passes=0)
           + per_image("grad_offset", z.offset, everything, op="w")
           + per_image("grad_mask", z.mask, everything, op="w"))
    n = layer.samples(layer.batch)
    built = variant.wavefronts_per_warp_mac is None
    macs = tiles * tp * c * TAPS * c if built else c * n
    per_block = _strided_wavefronts(c * tp, int) + sum(sum(sampling_block_wavefronts(tp, c, cc, TAPS))
                                                       for cc in channel_chunks(c, fp.chunk_a))
    counted = tiles * per_block if built else 0.0
    wf, wf_mma = _smem(variant, counted, macs, n)
    return Kernel("fused backward A (grad_columns, offset/mask, scatter)", tuple(acc), gemm_flops=2.0 * macs,
                  alu_ops=OPS["fused_tap"] * layer.taps(layer.batch) + OPS["fused_grad"] * n,
                  smem_wavefronts=wf, smem_wavefronts_mma=wf_mma, atomics=4 * n,
                  atomic_elem=ACC_BYTES, blocks=tiles, tensor_cores=variant.tensor_cores)


def _fused_weight_kernels(layer: Layer, z: Sizes, fp: FusedPlan, gpu: Gpu, asm: Assumptions,
                          variant: FusedVariant) -> list[Kernel]:
    """fused_weight_grad_partial_kernel (B): a block per (item chunk, chunk_b channels) re-samples its
    channels for every item of its chunk into padded rows and sums grad_out x samples into fp32
    partials; then fused_weight_grad_reduce_kernel sums the partials in chunk order."""
    c, everything, tp = layer.channels, _all(layer), fp.tile_p_bwd
    chunks_c = c // fp.chunk_b
    items = layer.batch * math.ceil(layer.pixels / tp)
    item_chunks = fp.item_chunks
    if variant.fill_grid:
        item_chunks = max(item_chunks, min(items, math.ceil(asm.blocks_per_sm * gpu.sms / chunks_c)))
    partials = item_chunks * c * c * TAPS * ACC_BYTES
    window = window_factor(layer, tp, asm.offset_reach_px)
    acc = (per_image("grad_out", z.out, everything, l2_passes=chunks_c)
           + per_image("input", z.input, everything, l2_passes=window)
           + per_image("offset", z.offset, everything, l2_passes=chunks_c)
           + per_image("mask", z.mask, everything, l2_passes=chunks_c)
           + [Access("partials", partials, "w")])
    n = layer.samples(layer.batch)
    built = variant.wavefronts_per_warp_mac is None
    macs = items * tp * c * TAPS * c if built else c * n
    counted = items * chunks_c * sum(weight_grad_block_wavefronts(tp, tp + 1, c, fp.chunk_b, TAPS)) if built else 0.0
    wf, wf_mma = _smem(variant, counted, macs, n)
    b = Kernel("fused backward B (grad_weight partials)", tuple(acc), gemm_flops=2.0 * macs,
               alu_ops=chunks_c * OPS["fused_tap"] * layer.taps(layer.batch) + OPS["fused_sample"] * n,
               smem_wavefronts=wf, smem_wavefronts_mma=wf_mma, blocks=item_chunks * chunks_c,
               tensor_cores=variant.tensor_cores)
    reduce = Kernel("grad_weight partials reduce", (Access("partials", partials), Access("grad_weight", z.weight, "w")),
                    blocks=math.ceil(c * c * TAPS / 256))
    return [b, reduce]


def fused_backward(layer: Layer, dtype: str, gpu: Gpu, asm: Assumptions,
                   variant: FusedVariant = FUSED_BUILT) -> list[Kernel]:
    """fused_backward_cuda: zero-filled fp32 grad_input and grad_weight, kernels A and B, the partials'
    reduction, the fp32 -> dtype conversion of grad_input, and the autograd wrapper's grad_bias."""
    z, everything, fp = Sizes.of(layer, dtype), _all(layer), fused_plan(layer)
    ks = [elementwise("zeros(grad_input fp32)", *per_image("grad_input_acc", z.acc, everything, op="w")),
          elementwise("zeros(grad_weight)", Access("grad_weight", z.weight, "w")),
          _fused_sampling_kernel(layer, z, fp, asm, variant)]
    ks += _fused_weight_kernels(layer, z, fp, gpu, asm, variant)
    if z.s != ACC_BYTES:
        ks.append(elementwise("grad_input fp32 -> dtype", *per_image("grad_input_acc", z.acc, everything),
                              *per_image("grad_input", z.input, everything, op="w")))
    ks.append(elementwise("grad_out.sum (grad_bias)", *per_image("grad_out", z.out, everything),
                          Access("grad_bias", z.bias, "w")))
    return ks


# ------------------------------------------------------------------------------------ evaluation

def supported(algo: str, dtype: str) -> bool:
    """torchvision's CUDA kernels dispatch float, double and half only: no bf16."""
    return not (algo == "torchvision" and dtype == "bfloat16")


def plan(algo: str, layer: Layer, dtype: str, gpu: Gpu, asm: Assumptions) -> tuple[list[Kernel], list[Kernel]]:
    """(forward kernels, backward kernels) of ``algo`` (one of ``ALGOS``, or "auto": ``auto_algos``) in
    launch order."""
    if algo not in (*ALGOS, "auto"):
        raise ValueError(f"algo: expected one of {(*ALGOS, 'auto')}, got {algo!r}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: expected one of {tuple(DTYPE_BYTES)}, got {dtype!r}")
    if not supported(algo, dtype):
        raise ValueError(f"algo: {algo} has no {dtype} kernel")
    if algo == "auto":  # what HYBRIDOPS_DCN_ALGO=auto runs: each direction its own algorithm
        fwd, bwd = auto_algos(layer, dtype, gpu)
        return plan(fwd, layer, dtype, gpu, asm)[0], plan(bwd, layer, dtype, gpu, asm)[1]
    if algo == "torchvision":
        return torchvision_forward(layer, dtype, asm), torchvision_backward(layer, dtype, asm)
    if algo == "im2col":
        return im2col_forward(layer, dtype, asm), im2col_backward(layer, dtype, asm)
    variant = FUSED_BUILT if algo == "fused" else FUSED_TARGET
    return (fused_forward(layer, dtype, asm, variant, uses_tensor_core_forward(dtype, gpu)),
            fused_backward(layer, dtype, gpu, asm, variant))


def mode_kernels(fwd: list[Kernel], bwd: list[Kernel], mode: str) -> tuple[list[Kernel], list[Kernel]]:
    """(untimed kernels run first, timed kernels) of a benchmark mode."""
    if mode == "forward":
        return [], fwd
    if mode == "backward":
        return fwd, bwd
    if mode == "full":
        return [], fwd + bwd
    raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def predict(algo: str, mode: str, layer: Layer, dtype: str, gpu: Gpu, asm: Assumptions = Assumptions()) -> Prediction:
    """The predicted cost of one benchmark call of ``algo`` in ``mode`` (``run_kernels``: the call's
    kernels through the L2 model, each costed by ``kernel_cost``)."""
    fwd, bwd = plan(algo, layer, dtype, gpu, asm)
    untimed, timed = mode_kernels(fwd, bwd, mode)
    return Prediction(algo, mode, run_kernels(untimed, timed, gpu, DTYPE_BYTES[dtype] == 2, asm))


# -------------------------------------------------------------------------------------- reports

def predictions(layers: Sequence[Layer], dtypes: Sequence[str], modes: Sequence[str], gpus: Sequence[Gpu],
                asm: Assumptions) -> list[dict]:
    """One row per (gpu, case, dtype, mode): each algorithm's ``Prediction.summary()`` (None where it
    has no kernel) and ``speedup`` = torchvision time / algorithm time (> 1: faster than torchvision)."""
    rows = []
    for gpu in gpus:
        for layer in layers:
            for dtype in dtypes:
                for mode in modes:
                    algos = {a: predict(a, mode, layer, dtype, gpu, asm).summary() if supported(a, dtype) else None
                             for a in ALGOS}
                    tv = algos["torchvision"]
                    speedup = {a: (tv["time_us"] / algos[a]["time_us"] if tv else None) for a in ALGOS[1:]}
                    rows.append({"gpu": gpu.key, "case": layer.name, "batch": layer.batch, "channels": layer.channels,
                                 "size": layer.size, "dtype": dtype, "mode": mode, "algos": algos,
                                 "speedup": speedup})
    return rows


ISSUE_LAYER = Layer("hybridnetseg 16ch@256^2 b2", 2, 16, 256)


def issue_check(asm: Assumptions, gpu: Gpu = GPUS["h200"]) -> dict:
    """Issue #16's example (16ch@256^2, batch 2, fp32): the columns buffer (issue: 75 MB, written and
    read back) and the forward's necessary traffic (issue: ~31 MB: input, offset, mask, output), with
    each algorithm's modelled forward DRAM and L2 bytes on ``gpu``."""
    layer, z = ISSUE_LAYER, Sizes.of(ISSUE_LAYER, "float32")
    n = layer.batch
    parts = {"input": z.input * n, "offset": z.offset * n, "mask": z.mask * n, "output": z.out * n,
             "weight+bias": z.weight + z.bias}
    forward = {a: predict(a, "forward", layer, "float32", gpu, asm) for a in ALGOS}
    return {"case": layer.name, "dtype": "float32", "gpu": gpu.key,
            "columns_bytes": z.columns * n, "columns_formula": "2 * 16 * 9 * 256 * 256 * 4",
            "necessary_forward_bytes": sum(parts.values()), "necessary_parts": parts,
            "forward_dram_bytes": {a: p.dram_bytes for a, p in forward.items()},
            "forward_l2_bytes": {a: p.l2_bytes for a, p in forward.items()}}


def issue_check_text(check: dict) -> str:
    """The issue check as a few lines of markdown."""
    mb = 1e6
    parts = ", ".join(f"{k} {v / mb:.2f}" for k, v in check["necessary_parts"].items())
    dram = ", ".join(f"{a} {v / mb:.1f}" for a, v in check["forward_dram_bytes"].items())
    return "\n".join([
        f"Issue #16 check ({check['case']}, fp32):",
        f"- columns buffer = {check['columns_formula']} B = {check['columns_bytes'] / mb:.1f} MB "
        f"({check['columns_bytes'] / 2**20:.0f} MiB; the issue's '75 MB'); im2col writes it once and the GEMM "
        f"reads it back once per forward (torchvision zero-fills it first).",
        f"- necessary forward traffic = {check['necessary_forward_bytes'] / mb:.1f} MB ({parts} MB; the issue's "
        f"'~31 MB').",
        f"- modelled forward DRAM bytes on {GPUS[check['gpu']].name} (MB): {dram}."])


def _us(x: Optional[dict]) -> str:
    return "n/a" if x is None else f"{x['time_us']:.0f}"


def _ratio(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def time_table(rows: Sequence[dict], gpu: Gpu) -> str:
    """Markdown: predicted microseconds per algorithm and the speedups over torchvision on ``gpu``."""
    others = ALGOS[1:]
    head = (["case", "dtype", "mode"] + [f"{a} (us)" for a in ALGOS] + [f"{a} speedup" for a in others]
            + ["bound (" + " / ".join(ALGOS) + ")"])
    lines = [f"Predicted on {gpu.name} (model, not measured); speedup = torchvision / algorithm (> 1: faster).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        if r["gpu"] != gpu.key:
            continue
        a = r["algos"]
        bound = " / ".join("-" if a[x] is None else a[x]["bound"] for x in ALGOS)
        cells = ([r["case"], r["dtype"], r["mode"]] + [_us(a[x]) for x in ALGOS]
                 + [_ratio(r["speedup"][x]) for x in others] + [bound])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def traffic_table(rows: Sequence[dict], gpu: Gpu) -> str:
    """Markdown: DRAM and SM<->L2 megabytes, GEMM GFLOP, sampling G ops and launches on ``gpu``."""
    lines = [f"Traffic on {gpu.name} (model): DRAM = after the L2 model; L2 = SM<->L2 requests incl. atomics.", "",
             "| case | dtype | mode | algo | DRAM (MB) | L2 (MB) | GEMM GFLOP | G ops | launches | bound |",
             "|" + " --- |" * 10]
    for r in rows:
        if r["gpu"] != gpu.key:
            continue
        for algo, a in r["algos"].items():
            if a is not None:
                lines.append(f"| {r['case']} | {r['dtype']} | {r['mode']} | {algo} | {a['dram_bytes'] / 1e6:.1f} | "
                             f"{a['l2_bytes'] / 1e6:.1f} | {a['gemm_flops'] / 1e9:.2f} | "
                             f"{a['alu_ops'] / 1e9:.2f} | {a['launches']} | {a['bound']} |")
    return "\n".join(lines)


def breakdown_table(pred: Prediction, title: str) -> str:
    """Markdown: one row per kernel of a prediction, with its share of the time."""
    total = pred.time_s
    lines = [title, "", "| kernel | launches | DRAM (MB) | L2 (MB) | GEMM GFLOP | G ops | us | share | bound |",
             "|" + " --- |" * 9]
    for k in pred.kernels:
        lines.append(f"| {k.name} | {k.launches} | {k.dram_bytes / 1e6:.1f} | {k.l2_bytes / 1e6:.1f} | "
                     f"{k.gemm_flops / 1e9:.3f} | {k.alu_ops / 1e9:.3f} | {k.time_s * 1e6:.1f} | "
                     f"{k.time_s / total:.0%} | {k.bound} |")
    return "\n".join(lines)


def torchvision_shares(pred: Prediction) -> dict[str, float]:
    """Share of torchvision's time per kernel family (col2im_coord, col2im, im2col, gemm, other), to
    set beside the published Tesla P4 profile (35% / 26% / 10% / 27%)."""
    families = {"col2im_coord": 0.0, "col2im": 0.0, "im2col": 0.0, "gemm": 0.0, "other": 0.0}
    for k in pred.kernels:
        key = next((f for f in ("col2im_coord", "col2im", "im2col", "gemm") if k.name.startswith(f)), "other")
        families[key] += k.time_s / pred.time_s
    return families


# ------------------------------------------------------------------------------------- measured

CASE_RE = re.compile(r"(\d+)ch@(\d+)\^2 b(\d+)")


def layer_of_case(case: str) -> Optional[Layer]:
    """The Layer of a benchmark case name such as 'hybridnetseg 16ch@256^2 b2', or None."""
    m = CASE_RE.search(case)
    return Layer(case, int(m.group(3)), int(m.group(1)), int(m.group(2))) if m else None


def read_measured(path: str) -> dict:
    """A ``benchmarks/deform_conv2d.py`` results file; ValueError naming the file if it is not one."""
    try:
        payload = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"--measured {path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--measured {path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(payload, dict) or payload.get("benchmark") != "deform_conv2d" or "rows" not in payload:
        found = payload.get("benchmark") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"--measured {path}: not a deform_conv2d benchmark results file (benchmark = {found!r})")
    return payload


def compare_measured(payload: dict, asm: Assumptions) -> tuple[Optional[Gpu], list[dict]]:
    """(the GPU profile matched from the file's device, or None, and one row per measured row: the
    measured p50s and speedup (torchvision / ours) and, with a profile, each algorithm's predicted
    milliseconds, "auto" among them, and ``auto`` = what HYBRIDOPS_DCN_ALGO=auto runs in the row's
    mode (``auto_label``: forward and backward each by their own rule)). Rows of channels_last callers
    (``extra["layout"]``, ``deform_conv2d.py --layouts``) get no prediction: this model is NCHW's (their
    model is ``benchmarks.dcn_layouts``)."""
    env = payload.get("environment", {})
    gpu = gpu_for_device_name(env.get("device_name", "")) if str(env.get("device", "")).startswith("cuda") else None
    out = []
    for r in payload["rows"]:
        peer = r.get("peer") or {}
        row = {"case": r["case"], "mode": r["mode"], "dtype": r["dtype"], "ours_ms": r["ours"]["p50_ms"],
               "peer_ms": peer.get("p50_ms"), "speedup": r.get("speedup"), "auto": None, "predicted": None}
        layer = layer_of_case(r["case"]) if (r.get("extra") or {}).get("layout", "nchw") == "nchw" else None
        if gpu is not None and layer is not None and r["dtype"] in DTYPE_BYTES and r["mode"] in MODES:
            row["auto"] = auto_label(layer, r["mode"], r["dtype"], gpu)
            row["predicted"] = {a: predict(a, r["mode"], layer, r["dtype"], gpu, asm).time_s * 1e3
                                for a in (*ALGOS, "auto") if supported(a, r["dtype"])}
        out.append(row)
    return gpu, out


def _measured_only(head: str, why: str, rows: Sequence[dict]) -> str:
    lines = [head, f"({why}: measured numbers only; speedup = torchvision p50 / ours p50)", "",
             "| case | mode | dtype | ours (ms) | torchvision (ms) | measured speedup |", "|" + " --- |" * 6]
    for r in rows:
        peer = "-" if r["peer_ms"] is None else f"{r['peer_ms']:.3f}"
        lines.append(f"| {r['case']} | {r['mode']} | {r['dtype']} | {r['ours_ms']:.3f} | {peer} | "
                     f"{_ratio(r['speedup'])} |")
    return "\n".join(lines)


def measured_table(path: str, payload: dict, gpu: Optional[Gpu], rows: Sequence[dict]) -> str:
    """Markdown: measured speedups beside the predicted ones (when the device has a profile)."""
    env = payload.get("environment", {})
    head = (f"Measured: {env.get('device_name', '?')} ({env.get('device', '?')}), torch {env.get('torch', '?')}, "
            f"{str(env.get('date', '?'))[:10]}, git {env.get('git_sha', '?')}; source: `{path}`")
    if gpu is None:
        cuda = str(env.get("device", "")).startswith("cuda")
        return _measured_only(head, "no GPU profile for this device" if cuda else "the model is for GPUs", rows)
    others = ALGOS[1:]
    lines = [head, f"(profile {gpu.name}; 'predicted ours' is what HYBRIDOPS_DCN_ALGO=auto runs at this commit: "
                   f"the fused forward up to {FUSED_AUTO_FORWARD_MAX_CHANNELS} channels per group "
                   f"({FUSED_AUTO_TENSOR_CORE_FORWARD_MAX_CHANNELS} on tensor cores), the fused backward "
                   f"up to {FUSED_AUTO_BACKWARD_MAX_CHANNELS}, else im2col; files from before the fused "
                   "kernels (4810f9e) measured im2col, files from 4810f9e to 87d0eeb the fused kernels up to 128 "
                   "channels)", "",
             "| case | mode | dtype | ours (ms) | torchvision (ms) | measured speedup | predicted ours (ms) | "
             "predicted torchvision (ms) | predicted speedup | predicted speedup " + " / ".join(others) + " |",
             "|" + " --- |" * 10]
    for r in rows:
        p, auto = r["predicted"] or {}, r["auto"]
        tv = p.get("torchvision")
        ours = f"{p['auto']:.3f} ({auto})" if "auto" in p else "n/a"
        each = " / ".join(_ratio(tv / p[a]) if tv and a in p else "n/a" for a in others)
        peer = "-" if r["peer_ms"] is None else f"{r['peer_ms']:.3f}"
        tv_ms = "n/a" if tv is None else f"{tv:.3f}"
        predicted = _ratio(tv / p["auto"] if tv and "auto" in p else None)
        lines.append(f"| {r['case']} | {r['mode']} | {r['dtype']} | {r['ours_ms']:.3f} | {peer} | "
                     f"{_ratio(r['speedup'])} | {ours} | {tv_ms} | {predicted} | {each} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", nargs="+", choices=sorted(GPUS), default=list(GPUS))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPE_BYTES), default=list(DTYPE_BYTES))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--traffic", action="store_true", help="also print DRAM/L2 bytes, GFLOP, ops and launches")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print per-kernel tables of the issue's case (fp32, full) on each GPU")
    parser.add_argument("--warm", action="store_true", help="L2 kept from an identical previous call")
    parser.add_argument("--json", default=None, help="write the model, its assumptions and predictions here")
    parser.add_argument("--measured", nargs="+", default=[], metavar="FILE.json",
                        help="benchmarks/deform_conv2d.py results files to set beside the predictions")
    return parser


def _print_shares(gpus: Sequence[Gpu], asm: Assumptions, breakdown: bool) -> dict[str, dict[str, float]]:
    """Prints torchvision's modelled time shares per kernel family on each GPU (beside the published
    P4 profile) and, with ``breakdown``, every algorithm's per-kernel table of the issue's case."""
    shares = {}
    for gpu in gpus:
        tv = predict("torchvision", "full", ISSUE_LAYER, "float32", gpu, asm)
        shares[gpu.key] = torchvision_shares(tv)
        if breakdown:
            for algo in ALGOS:
                pred = tv if algo == "torchvision" else predict(algo, "full", ISSUE_LAYER, "float32", gpu, asm)
                print("\n" + breakdown_table(pred, f"{algo}, {ISSUE_LAYER.name}, float32, full, on {gpu.name} (model)"))
    print("\ntorchvision time shares, 16ch@256^2 b2 fp32 full (model; the published Tesla P4 profile: "
          "col2im_coord 35%, col2im 26%, im2col 10%, GEMMs 27%):")
    for key, fam in shares.items():
        print(f"- {GPUS[key].name}: " + ", ".join(f"{f} {v:.0%}" for f, v in fam.items()))
    return shares


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints the issue check, the predicted tables and, with --measured, the comparisons; returns 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    asm = Assumptions(steady_state=args.warm)
    try:
        measured = [(path, read_measured(path)) for path in args.measured]
    except ValueError as exc:
        parser.error(str(exc))
    gpus = [GPUS[k] for k in args.gpus]
    check = issue_check(asm)
    rows = predictions(benchmark_layers(), args.dtypes, args.modes, gpus, asm)
    print(issue_check_text(check))
    for gpu in gpus:
        print("\n" + time_table(rows, gpu))
        if args.traffic:
            print("\n" + traffic_table(rows, gpu))
    shares = _print_shares(gpus, asm, args.breakdown)
    compared = []
    for path, payload in measured:
        gpu, mrows = compare_measured(payload, asm)
        print("\n" + measured_table(path, payload, gpu, mrows))
        compared.append({"file": path, "gpu": gpu.key if gpu else None, "rows": mrows})
    if args.json:
        payload = {"model": "benchmarks.dcn_roofline", "kind": "prediction (model, not measured)",
                   "assumptions": asdict(asm), "ops_per_item": OPS,
                   "gpus": {g.key: asdict(g) for g in gpus}, "issue_check": check,
                   "torchvision_shares": shares, "predictions": rows, "measured": compared}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
