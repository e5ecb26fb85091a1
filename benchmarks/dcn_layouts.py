"""Channels-last or not: would NHWC variants of the fused DCNv2 kernels win? A layout study on top of
``benchmarks/dcn_roofline.py``.

    python -m benchmarks.dcn_layouts [--gpus h100 h200 gtx1080ti] [--dtypes float32 float16 bfloat16]
                                     [--modes forward full] [--variant fused|fused_target]
                                     [--offsets smooth benchmark random] [--warm] [--json PATH]

A PREDICTION, not a measurement. Issue #16 asks for "channels-last kernels if your model says they
win"; this module made the model answer, per benchmark shape, dtype and GPU, for two kinds of caller:
NCHW callers (every model in this repository) and channels_last callers. It said yes for
channels_last callers, and since 2026-12-02 the fused CUDA kernels read and write a channels_last
caller's tensors as they are (``nhwc`` below is what such a caller now runs; an NCHW caller runs
``nchw`` without copies). It compares the fused kernels as ``dcn_roofline`` models them (``fused``:
FMA, with the tensor-core forward for fp16/bf16 on the H100/H200; or ``fused_target``) in three
variants:

* ``nchw`` -- the kernels gather NCHW input planes; for a channels_last caller the driver calls
  ``.contiguous()`` on input, offset, mask and weight (forward) and grad_output, input, offset, mask
  and weight (backward), and returns NCHW tensors: what the fused path did before 2026-12-02 and
  what the im2col path still does. For a channels_last caller every one of those is a transposing
  copy (the saved tensors are the caller's, so the backward copies input, offset and mask again),
  and the caller's next layers convert our NCHW out / grad_input / grad_offset / grad_mask /
  grad_weight back (assumed: one copy each, as a channels_last cuDNN convolution does with an NCHW
  operand; the weight counts only where the model was moved to channels_last, as
  ``Module.to(memory_format=...)`` does for 4-D parameters).
* ``nchw-strided`` -- a what-if driver: the same kernels, copying only the tensor they gather (the
  input) and the weight, and reading offset, mask and grad_output, writing the outputs, through
  strides.
* ``nhwc`` -- the NHWC variant (as DCNv4 does), built for channels_last callers (``FusedLayouts``,
  ``gather_step`` in ``deform_conv2d_fused_cuda.cuh``): the same plans and micro-GEMMs, but a
  corner of a (tap, pixel) reads the chunk's channels contiguously, with 128-bit loads where the
  chunk is whole vectors (``vector_gather``; backward kernel A at most 4 values a load; scalar loads
  otherwise: ``sample_ops``); offset, mask and grad_output read and the outputs written in the
  caller's layout (assumed free: grad_output is loaded channels-fastest, coalesced; the output,
  grad_offset and grad_mask stores of a warp are 32 pixels apart, one sector each, which L2 merges
  before DRAM -- not modelled; nor are the up to 32-way bank conflicts of the channels-fastest
  grad_output tile's shared-memory stores); grad_input scattered into a buffer in the input's
  layout. The weight is read NCHW: a channels_last caller's weight is copied each direction and
  grad_weight converted back, as in the other variants. For an
  NCHW caller (a what-if: such a caller runs ``nchw``) it would copy the input to NHWC in the forward
  and again in the backward (the saved input is the caller's; saving the copy would trade memory for
  the second one); its fp32 grad_input scatter buffer could be NCHW (scalar atomics do not care).

(a) The gathers. For one pixel tile (a block) of each kernel, the corners its (tap, pixel) pairs load
are enumerated (``BilinearCorners::sample``: every in-plane corner, also at zero weight) under
three offset fields, and the 32-byte sectors they touch are counted (``gather_count``):

* ``smooth``: every offset 0 (the state at init, the zero-initialised predictor; a smooth field of
  small offsets shifts the window by a pixel and counts within a sector of it);
* ``benchmark``: offsets N(0, 1) independently per (pixel, tap), as ``benchmarks/deform_conv2d.py``
  draws them;
* ``random``: each sampling point uniform over the plane, independent of its pixel (the worst case:
  corners of neighbouring pixels share a sector only by chance).

Two numbers per layout: the sectors of one warp-wide corner load (NCHW: 32 pixel-lanes of one tap,
one channel, s bytes each; NHWC: 32 lanes of 16 bytes, the chunk's channels of 32 / vectors-per-pixel
pixels) with its distinct useful bytes; and the SM<->L2 bytes per sampled value (channel, tap,
pixel) when L1 keeps what one block touches -- across its channel chunks under smooth and N(0, 1)
offsets (a window of a few KB), within one chunk under random ones -- and nothing across blocks.
The second replaces the main model's window factor (``window_factor``) for the input reads of the forward, A and
B in both layouts. With smooth offsets NCHW warp loads are coalesced rows and the two layouts move
about the same bytes; with random offsets an NCHW lane gets its own sector per corner row for s
useful bytes (~2 sectors per 4 corners), an NHWC corner one sector per 32 bytes of channels. The
NHWC variant keeps the plans, so a chunk narrower than a sector wastes part of each (80 channels
fp16: 8-channel chunks of 16 bytes, half of every sector its loads move). Under ``random`` every
input read beyond the first misses L2 where the image's input is larger than the usable L2 (the
1080 Ti).

(b) The instructions. Per sampled value the NCHW kernels issue 4 predicated scalar corner loads and
a plane-pointer step (of ``dcn_roofline.OPS``' 12 for sampling, 35 for the A kernel's gradient);
the NHWC variant issues 4 / v loads instead (v values a load of up to 16 bytes of the chunk: 8
fp16/bf16 or 4 fp32; 1 for B's single-channel chunks at 256 channels) and everything else the
same (conversion, blend, modulation, shared-memory stores, A's derivatives and its 4 scalar
atomics; sm_90's vector atomics would cut those too: not modelled).

(c) The copies: elementwise kernels moving the tensor's bytes once read and once written at the
model's achievable bandwidth, one launch each (optimistic for a transposing copy, which rarely
reaches a plain copy's bandwidth: the copies' cost, and so NCHW's penalty for channels_last callers,
is if anything understated).

Verdict (``verdict_table``, ``tally``): the NHWC variant "wins" where it is predicted more than
``TIE`` (10%) faster than the NCHW variant the caller would otherwise get, "loses" where more than
10% slower, else a tie: the model's rates and op counts are not better than that. Launches weigh:
most of what a channels_last caller paid the copying NCHW kernels is the copies' launches (4 us each in
``Assumptions``); with ``launch_s=0`` (CUDA graphs) NHWC's lead over them shrinks to 1.00-1.17x
forward+backward on an H200.
"""
from __future__ import annotations

import argparse
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from itertools import accumulate
from typing import Iterable, Optional, Sequence

from benchmarks import dcn_roofline as dr
from benchmarks._roofline import (GPUS, Access, Assumptions, Gpu, Kernel, elementwise, per_image, run_kernels,
                                  write_json)

KERNEL_LAYOUTS = ("nchw", "nchw-strided", "nhwc")
CALLERS = ("nchw", "channels_last")
SCENARIOS = ("smooth", "benchmark", "random")
ALGOS = ("fused", "fused_target")
SECTOR = 32                # bytes: the SM<->L2 transfer unit
VECTOR_BYTES = 16          # a 128-bit load
GRAD_VECTOR_VALUES = 4     # at most this many values a load in backward kernel A (kGradLoadVectorMax)
NCHW_GATHER_OPS = 5        # per sampled value: 4 predicated scalar corner loads + the plane-pointer step
BLOCKS_SAMPLED = 24        # pixel tiles enumerated per (layer, scenario)
SEED = 16                  # of the offsets drawn for "benchmark" and "random"
TIE = 0.10                 # |speedup - 1| within this: a tie


# ------------------------------------------------------------------------------------------ gathers

def _block_corners(layer: dr.Layer, scenario: str, rng: random.Random, p0: int,
                   tile_p: int) -> list[list[list[Optional[int]]]]:
    """corners[k][lane]: the four corners (top-left, top-right, bottom-left, bottom-right; a pixel index
    y x W + x, None where not loaded) of (tap k, pixel p0 + lane), for a 3x3 stride-1 pad-1 layer
    (``BilinearCorners::sample``: every in-plane corner, also at zero weight, of a point in
    [-1, H) x [-1, W); none beyond)."""
    h = w = layer.size
    out: list[list[list[Optional[int]]]] = []
    for k in range(dr.TAPS):
        ky, kx = divmod(k, dr.KERNEL)
        lanes = []
        for p in range(p0, min(p0 + tile_p, layer.pixels)):
            y, x = divmod(p, w)
            if scenario == "smooth":
                py, px = float(y - 1 + ky), float(x - 1 + kx)
            elif scenario == "benchmark":
                py, px = y - 1 + ky + rng.gauss(0.0, 1.0), x - 1 + kx + rng.gauss(0.0, 1.0)
            elif scenario == "random":
                py, px = rng.uniform(0.0, h - 1.0), rng.uniform(0.0, w - 1.0)
            else:
                raise ValueError(f"scenario: expected one of {SCENARIOS}, got {scenario!r}")
            corners: list[Optional[int]] = [None] * 4
            if -1.0 <= py < h and -1.0 <= px < w:
                y0, x0 = math.floor(py), math.floor(px)
                corners = [r * w + c if 0 <= r < h and 0 <= c < w else None for r in (y0, y0 + 1) for c in (x0, x0 + 1)]
            lanes.append(corners)
        out.append(lanes)
    return out


def _sectors(start: int, nbytes: int) -> range:
    return range(start // SECTOR, (start + nbytes - 1) // SECTOR + 1)


def _span_sectors(pixels: Iterable[int], stride: int, offset: int, nbytes: int) -> int:
    """Distinct sectors of the byte ranges [q x stride + offset, + nbytes) of ``pixels``."""
    return len({sec for q in pixels for sec in _sectors(q * stride + offset, nbytes)})


@dataclass(frozen=True)
class GatherCount:
    """Sectors of one layout's gathers under one offset scenario (sums over the sampled blocks):
    ``load_sectors`` / ``load_bytes``: sectors and distinct useful bytes of one warp-wide corner load
    (averages); ``l2_per_value``: SM<->L2 bytes per sampled value (channel, tap, pixel); ``factor``:
    the same as L2 bytes per input byte of one sweep (all 9 taps of every pixel, once), the
    ``l2_passes`` of the kernel's input reads."""
    layout: str
    scenario: str
    load_sectors: float
    load_bytes: float
    l2_per_value: float
    factor: float

    @property
    def load_efficiency(self) -> float:
        """Distinct useful bytes / bytes moved of one warp-wide corner load."""
        return self.load_bytes / (self.load_sectors * SECTOR)


@lru_cache(maxsize=None)
def gather_count(layer: dr.Layer, dtype: str, layout: str, scenario: str, tile_p: int, chunk: int) -> GatherCount:
    """``GatherCount`` of the fused kernels' input gathers by pixel tiles of ``tile_p`` walking the
    channels in chunks of ``chunk`` (``layout`` "nchw" or "nhwc"; NHWC needs C x s a multiple of 16
    bytes for 128-bit loads). L1 merges what one block touches: under "smooth" and "benchmark" across
    its channel chunks (the block's window is a few KB), under "random" within one chunk only (a
    block's scattered sectors outgrow its share of L1), which matters only for NHWC chunks that end
    inside a sector. ``BLOCKS_SAMPLED`` tiles drawn with ``SEED``: reproducible."""
    s, c = dr.DTYPE_BYTES[dtype], layer.channels
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout: expected 'nchw' or 'nhwc', got {layout!r}")
    if layout == "nhwc" and (c * s) % VECTOR_BYTES:
        raise ValueError(f"layout: nhwc needs channels x element size a multiple of {VECTOR_BYTES} bytes")
    rng = random.Random(SEED)
    tiles = math.ceil(layer.pixels / tile_p)
    widths = dr.channel_chunks(c, chunk)
    starts = [0, *accumulate(widths)][:-1]
    # chunks alike up to a whole number of sectors count alike: (start mod 32 bytes, bytes) -> how many
    groups = Counter((c0 * s % SECTOR, cc * s) for c0, cc in zip(starts, widths))
    if layout == "nchw":  # one plane per channel, each alike (H x W x s is whole sectors); 1 element a lane
        groups, stride, vector = Counter({(0, s): c}), s, s
    else:  # a pixel's channels contiguous: the chunk's cc x s bytes, loads of up to 16 bytes
        stride, vector = c * s, VECTOR_BYTES
    loads = load_sectors = load_bytes = union = values = 0.0
    for _ in range(BLOCKS_SAMPLED):
        corners = _block_corners(layer, scenario, rng, rng.randrange(tiles) * tile_p, tile_p)
        values += dr.TAPS * len(corners[0]) * c
        pixels = {q for tap in corners for lane in tap for q in lane if q is not None}
        if layout == "nhwc" and scenario != "random":
            union += _span_sectors(pixels, stride, 0, stride)
        else:
            union += sum(m * _span_sectors(pixels, stride, off, width) for (off, width), m in groups.items())
        for (off, width), m in groups.items():
            per_load = max(1, dr.WARP // math.ceil(width / vector))  # pixels (lanes) of one warp-wide load
            for tap in corners:
                for i in range(4):  # corner i of each lane that loads it
                    hit = [lane[i] for lane in tap if lane[i] is not None]
                    for lo in range(0, len(hit), per_load):
                        group = set(hit[lo:lo + per_load])
                        loads += m
                        load_sectors += m * _span_sectors(group, stride, off, width)
                        load_bytes += m * len(group) * width
    l2_per_value = union * SECTOR / values
    return GatherCount(layout, scenario, load_sectors / loads, load_bytes / loads, l2_per_value,
                       l2_per_value * dr.TAPS / s)


def sample_ops(kind: str, layout: str, dtype: str, chunk: int) -> float:
    """Lane instructions per sampled value of a fused kernel (``kind``: "fused_sample" for the forward
    and B, "fused_grad" for A) walking channels in chunks of ``chunk``: ``dcn_roofline.OPS`` for NCHW;
    for NHWC the 4 scalar corner loads and the plane-pointer step become 4 / v loads, v = the values
    of one 128-bit load (8 fp16/bf16, 4 fp32) -- at most ``GRAD_VECTOR_VALUES`` in A -- where the
    chunk is whole vectors of v, else 1 (scalar loads): the built kernels' rule (``vector_gather``,
    which also needs the channel count a multiple of v and an aligned chunk start: true at every
    benchmark shape, whose channels are multiples of 8 in one offset group)."""
    if layout.startswith("nchw"):
        return float(dr.OPS[kind])
    s = dr.DTYPE_BYTES[dtype]
    v = VECTOR_BYTES // s if kind != "fused_grad" else min(VECTOR_BYTES // s, GRAD_VECTOR_VALUES)
    v = v if chunk % v == 0 else 1
    return dr.OPS[kind] - NCHW_GATHER_OPS + 4 / v


# ------------------------------------------------------------------------------------------ kernels

@dataclass(frozen=True)
class _Gatherer:
    """How one fused kernel gathers: its pixel tile, channel chunk, sweeps of the input (the forward
    re-samples once per output-channel tile) and its per-value instruction kind."""
    tile_p: int
    chunk: int
    sweeps: int
    kind: str


def _gatherers(layer: dr.Layer) -> dict[str, _Gatherer]:
    fp = dr.fused_plan(layer)
    co_tiles = math.ceil(layer.channels / fp.tile_co)
    return {"fused forward": _Gatherer(fp.tile_p, fp.chunk_c, co_tiles, "fused_sample"),
            "fused backward A": _Gatherer(fp.tile_p_bwd, fp.chunk_a, 1, "fused_grad"),
            "fused backward B": _Gatherer(fp.tile_p_bwd, fp.chunk_b, 1, "fused_sample")}


def regather(kernels: Sequence[Kernel], layer: dr.Layer, dtype: str, layout: str, scenario: str,
             input_name: str = "input") -> list[Kernel]:
    """``kernels`` (a fused plan) with the gathering kernels' input reads costed by ``gather_count`` in
    ``layout`` (l2_passes = factor x sweeps; under "random" every sweep beyond the first a re-walk,
    which misses L2 when the image's input does not fit), their buffer renamed ``input_name``, and
    their sampling instructions those of ``sample_ops``."""
    gk = "nhwc" if layout == "nhwc" else "nchw"
    out = []
    for k in kernels:
        g = next((v for name, v in _gatherers(layer).items() if k.name.startswith(name)), None)
        if g is None:
            out.append(k)
            continue
        count = gather_count(layer, dtype, gk, scenario, g.tile_p, g.chunk)
        passes = count.factor * g.sweeps
        accesses = []
        for a in k.accesses:
            if a.buffer.startswith("input#"):
                sweeps = passes if scenario == "random" else 1.0
                a = replace(a, buffer=input_name + a.buffer[len("input"):], l2_passes=passes,
                            sweeps=max(1.0, sweeps), span=a.nbytes)
            accesses.append(a)
        extra = (sample_ops(g.kind, layout, dtype, g.chunk) - dr.OPS[g.kind]) * layer.samples(layer.batch) * g.sweeps
        out.append(replace(k, accesses=tuple(accesses), alu_ops=k.alu_ops + extra))
    return out


def _copies(what: str, tensors: Sequence[tuple[str, str, float]], images: range) -> list[Kernel]:
    """One copy kernel per (source, destination, bytes per image) -- per image of ``images``, except the
    weight (whole): read once, written once."""
    ks = []
    for src, dst, nbytes in tensors:
        if src.startswith("weight") or src.startswith("grad_weight"):
            acc = (Access(src, nbytes), Access(dst, nbytes, "w"))
        else:
            acc = (*per_image(src, nbytes, images), *per_image(dst, nbytes, images, op="w"))
        ks.append(elementwise(f"{what}: {src} -> {dst}", *acc))
    return ks


def layout_plan(algo: str, layer: dr.Layer, dtype: str, gpu: Gpu, asm: Assumptions, caller: str, kernels: str,
                scenario: str) -> tuple[list[Kernel], list[Kernel]]:
    """(forward, backward) kernels of ``algo`` ("fused" or "fused_target") in the ``kernels`` variant
    (``KERNEL_LAYOUTS``) for a ``caller`` whose tensors are NCHW or channels_last, gathers costed under
    ``scenario``, with the layout copies each direction makes (see the module docstring)."""
    if algo not in ALGOS or caller not in CALLERS or kernels not in KERNEL_LAYOUTS:
        raise ValueError(f"algo, caller, kernels: expected one of {ALGOS}, {CALLERS}, {KERNEL_LAYOUTS}; "
                         f"got {algo!r}, {caller!r}, {kernels!r}")
    z, everything = dr.Sizes.of(layer, dtype), range(layer.batch)
    fwd, bwd = dr.plan(algo, layer, dtype, gpu, asm)
    gathered = "input_nhwc" if kernels == "nhwc" and caller == "nchw" else "input"
    fwd, bwd = (regather(ks, layer, dtype, kernels, scenario, gathered) for ks in (fwd, bwd))
    if kernels == "nhwc" and caller == "nchw":
        copy = _copies("to NHWC", [("input", "input_nhwc", z.input)], everything)
        return copy + fwd, copy + bwd
    if caller == "nchw":
        return fwd, bwd
    # Every driver reads the weight NCHW (weight.contiguous(); grad_weight is NCHW): a channels_last
    # caller's weight is copied each direction and its gradient converted back.
    weight_in = _copies(".contiguous()", [("weight_cl", "weight", z.weight)], everything)
    grad_weight_out = _copies("consumer to channels_last", [("grad_weight", "grad_weight_cl", z.weight)], everything)
    if kernels == "nhwc":
        return weight_in + fwd, weight_in + bwd + grad_weight_out
    if kernels == "nchw-strided":
        copy = _copies("to NCHW", [("input_cl", "input", z.input)], everything)
        return copy + weight_in + fwd, copy + weight_in + bwd + grad_weight_out
    inputs = [("input_cl", "input", z.input), ("offset_cl", "offset", z.offset), ("mask_cl", "mask", z.mask),
              ("weight_cl", "weight", z.weight)]
    grad_in = "grad_input" if z.s != dr.ACC_BYTES else "grad_input_acc"
    fwd = (_copies(".contiguous()", inputs, everything) + fwd
           + _copies("consumer to channels_last", [("out", "out_cl", z.out)], everything))
    bwd = (_copies(".contiguous()", [("grad_out_cl", "grad_out", z.out)] + inputs, everything) + bwd
           + _copies("consumer to channels_last", [(grad_in, grad_in + "_cl", z.input),
                                                   ("grad_offset", "grad_offset_cl", z.offset),
                                                   ("grad_mask", "grad_mask_cl", z.mask),
                                                   ("grad_weight", "grad_weight_cl", z.weight)], everything))
    return fwd, bwd


def predict_layout(algo: str, mode: str, layer: dr.Layer, dtype: str, gpu: Gpu, caller: str, kernels: str,
                   scenario: str, asm: Assumptions = Assumptions()) -> float:
    """Predicted seconds of one benchmark call (``mode``) of ``layout_plan``'s kernels."""
    fwd, bwd = layout_plan(algo, layer, dtype, gpu, asm, caller, kernels, scenario)
    untimed, timed = dr.mode_kernels(fwd, bwd, mode)
    return sum(k.time_s for k in run_kernels(untimed, timed, gpu, dr.DTYPE_BYTES[dtype] == 2, asm))


# ------------------------------------------------------------------------------------------ reports

def _call(ratio: float) -> str:
    """'wins' / 'loses' / 'tie' for a speedup of NHWC over the NCHW alternative."""
    return "wins" if ratio > 1 + TIE else "loses" if ratio < 1 - TIE else "tie"


def layout_rows(layers: Sequence[dr.Layer], dtypes: Sequence[str], modes: Sequence[str], gpus: Sequence[Gpu],
                scenarios: Sequence[str] = SCENARIOS, algo: str = "fused",
                asm: Assumptions = Assumptions()) -> list[dict]:
    """One row per (gpu, case, dtype, mode, scenario): predicted microseconds of each (caller, kernels)
    pair, ``nchw_caller`` = t(nchw) / t(nhwc + its input copies), ``cl_caller`` = t(copying nchw +
    copies) / t(nhwc), ``cl_caller_strided`` = t(nchw-strided + input copies) / t(nhwc) (> 1: NHWC
    faster), and each one's call."""
    rows = []
    for gpu in gpus:
        for layer in layers:
            for dtype in dtypes:
                for mode in modes:
                    for scenario in scenarios:
                        us = {f"{caller}/{k}": predict_layout(algo, mode, layer, dtype, gpu, caller, k, scenario,
                                                             asm) * 1e6
                              for caller in CALLERS for k in KERNEL_LAYOUTS
                              if not (caller == "nchw" and k == "nchw-strided")}
                        ratios = {"nchw_caller": us["nchw/nchw"] / us["nchw/nhwc"],
                                  "cl_caller": us["channels_last/nchw"] / us["channels_last/nhwc"],
                                  "cl_caller_strided": us["channels_last/nchw-strided"] / us["channels_last/nhwc"]}
                        rows.append({"gpu": gpu.key, "case": layer.name, "dtype": dtype, "mode": mode,
                                     "offsets": scenario, "algo": algo, "us": us, "speedup_nhwc": ratios,
                                     "call": {k: _call(v) for k, v in ratios.items()}})
    return rows


def gather_rows(layers: Sequence[dr.Layer], dtypes: Sequence[str], scenarios: Sequence[str] = SCENARIOS,
                asm: Assumptions = Assumptions()) -> list[dict]:
    """One row per (case, dtype, scenario): the fused forward's gathers (its tile and chunk) in each
    layout, beside the main model's window factor (bytes, 1-pixel reach, no sectors)."""
    rows = []
    for layer in layers:
        fp = dr.fused_plan(layer)
        for dtype in dtypes:
            for scenario in scenarios:
                counts = {lay: gather_count(layer, dtype, lay, scenario, fp.tile_p, fp.chunk_c)
                          for lay in ("nchw", "nhwc")}
                rows.append({"case": layer.name, "dtype": dtype, "offsets": scenario,
                             "window_factor": dr.window_factor(layer, fp.tile_p, asm.offset_reach_px),
                             **{lay: {"load_sectors": g.load_sectors, "load_bytes": g.load_bytes,
                                      "load_efficiency": g.load_efficiency, "l2_per_value": g.l2_per_value,
                                      "factor": g.factor} for lay, g in counts.items()}})
    return rows


def gather_table(rows: Sequence[dict]) -> str:
    """Markdown: sectors of a warp-wide corner load and L2 bytes per sampled value, per layout."""
    lines = ["Gathers of the fused forward (model: sectors counted over enumerated corners of sampled blocks). A load: "
             "the sectors and distinct useful bytes of one warp-wide corner load (NCHW: 32 pixel-lanes x 1 channel; "
             "NHWC: 16-byte vectors of the chunk's channels). L2 B/value: SM<->L2 bytes per sampled value after L1 "
             "merges a block's gathers. factor: L2 bytes per input byte of one 9-tap sweep (the main model's "
             "window factor beside it).", "",
             "| case | dtype | offsets | NCHW load: sectors (useful B, eff.) | NHWC load: sectors (useful B, eff.) | "
             "NCHW L2 B/value | NHWC L2 B/value | NCHW / NHWC | factor NCHW / NHWC (window) |",
             "|" + " --- |" * 9]
    for r in rows:
        a, b = r["nchw"], r["nhwc"]
        lines.append(f"| {r['case']} | {r['dtype']} | {r['offsets']} | {a['load_sectors']:.1f} ({a['load_bytes']:.0f}, "
                     f"{a['load_efficiency']:.0%}) | {b['load_sectors']:.1f} ({b['load_bytes']:.0f}, "
                     f"{b['load_efficiency']:.0%}) | {a['l2_per_value']:.2f} | {b['l2_per_value']:.2f} | "
                     f"{a['l2_per_value'] / b['l2_per_value']:.1f}x | {a['factor']:.1f} / {b['factor']:.1f} "
                     f"({r['window_factor']:.1f}) |")
    return "\n".join(lines)


def layout_table(rows: Sequence[dict], gpu: Gpu) -> str:
    """Markdown: predicted microseconds per caller and kernel layout on ``gpu``, NHWC's speedups."""
    algo = rows[0]["algo"] if rows else "fused"
    lines = [f"Layouts on {gpu.name} (model, not measured; {algo} kernels): speedup = NCHW alternative / NHWC "
             "(> 1: NHWC faster); a channels_last caller's 'nchw' includes the driver's .contiguous() copies and "
             "the consumers' conversions of our NCHW outputs, 'nchw-strided' copies the input only.", "",
             "| case | dtype | mode | offsets | NCHW caller: nchw / nhwc (us) | speedup | CL caller: nchw / "
             "nchw-strided / nhwc (us) | speedup vs nchw | vs nchw-strided |", "|" + " --- |" * 9]
    for r in rows:
        if r["gpu"] != gpu.key:
            continue
        u, x = r["us"], r["speedup_nhwc"]
        lines.append(f"| {r['case']} | {r['dtype']} | {r['mode']} | {r['offsets']} | {u['nchw/nchw']:.0f} / "
                     f"{u['nchw/nhwc']:.0f} | {x['nchw_caller']:.2f}x {r['call']['nchw_caller']} | "
                     f"{u['channels_last/nchw']:.0f} / {u['channels_last/nchw-strided']:.0f} / "
                     f"{u['channels_last/nhwc']:.0f} | {x['cl_caller']:.2f}x {r['call']['cl_caller']} | "
                     f"{x['cl_caller_strided']:.2f}x {r['call']['cl_caller_strided']} |")
    return "\n".join(lines)


VERDICT_COLUMNS = (("nchw_caller", "forward", "NCHW caller, forward"), ("nchw_caller", "full", "NCHW caller, full"),
                   ("cl_caller", "forward", "CL caller, forward"), ("cl_caller", "full", "CL caller, full"),
                   ("cl_caller_strided", "forward", "CL caller, forward, vs nchw-strided"),
                   ("cl_caller_strided", "full", "CL caller, full, vs nchw-strided"))


def verdict_table(rows: Sequence[dict], gpu: Gpu) -> str:
    """Markdown: NHWC's predicted speedup and call per (case, dtype) on ``gpu`` for each kind of caller,
    with smooth offsets (the benchmark's N(0, 1) offsets where smooth is not among the rows) and, in
    brackets, random ones."""
    mine = [r for r in rows if r["gpu"] == gpu.key]
    scenarios = {r["offsets"] for r in mine}
    main = "smooth" if "smooth" in scenarios else sorted(scenarios)[0]
    worst = "random" if "random" in scenarios and main != "random" else None
    by = {(r["case"], r["dtype"], r["mode"], r["offsets"]): r for r in mine}
    head = ["case", "dtype"] + [c[2] for c in VERDICT_COLUMNS]
    lines = [f"Verdict on {gpu.name} (model, not measured): NHWC's speedup over the NCHW the caller would otherwise "
             f"run, {main} offsets" + (f" [{worst} offsets]" if worst else "") + f"; wins / loses beyond "
             f"{TIE:.0%}, else tie.", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for case, dtype in dict.fromkeys((r["case"], r["dtype"]) for r in mine):
        cells = [case, dtype]
        for ratio, mode, _ in VERDICT_COLUMNS:
            r = by.get((case, dtype, mode, main))
            if r is None:
                cells.append("n/a")
                continue
            cell = f"{r['speedup_nhwc'][ratio]:.2f}x {r['call'][ratio]}"
            w = by.get((case, dtype, mode, worst)) if worst else None
            cells.append(cell + (f" [{w['speedup_nhwc'][ratio]:.2f}x]" if w else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tally(rows: Sequence[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """How many (gpu, case, dtype) rows NHWC wins, ties and loses, per scenario and comparison, in full
    mode (forward where full is absent)."""
    mode = "full" if any(r["mode"] == "full" for r in rows) else "forward"
    out: dict[str, dict[str, dict[str, int]]] = {}
    for r in rows:
        if r["mode"] != mode:
            continue
        for ratio, call in r["call"].items():
            counts = out.setdefault(r["offsets"], {}).setdefault(ratio, {"wins": 0, "tie": 0, "loses": 0})
            counts[call] += 1
    return out


def tally_text(rows: Sequence[dict]) -> str:
    """The tally as one line per scenario."""
    mode = "full" if any(r["mode"] == "full" for r in rows) else "forward"
    names = {"nchw_caller": "NCHW callers",
             "cl_caller": "channels_last callers vs NCHW with copies (before 2026-12-02)",
             "cl_caller_strided": "channels_last callers vs a stride-aware NCHW driver"}
    lines = [f"NHWC variant, {mode} mode, over every (GPU, case, dtype) above (model, not measured):"]
    for scenario, by in tally(rows).items():
        parts = [f"{names[k]} {v['wins']} wins / {v['tie']} ties / {v['loses']} losses" for k, v in by.items()]
        lines.append(f"- {scenario} offsets: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def report(layers: Sequence[dr.Layer], dtypes: Sequence[str], modes: Sequence[str], gpus: Sequence[Gpu],
           asm: Assumptions = Assumptions(), algo: str = "fused", scenarios: Sequence[str] = SCENARIOS) -> dict:
    """The study as a JSON-ready dict: the forward's gathers, one row per (gpu, case, dtype, mode,
    scenario) (``layout_rows``; modes other than backward) and the tally."""
    rows = layout_rows(layers, dtypes, [m for m in modes if m != "backward"], gpus, scenarios, algo, asm)
    return {"kind": "prediction (model, not measured)", "algo": algo, "scenarios": list(scenarios),
            "tie": TIE, "gathers": gather_rows(layers, dtypes, scenarios, asm), "rows": rows, "tally": tally(rows)}


def report_text(rep: dict, gpus: Sequence[Gpu], detail: bool = True) -> str:
    """The study as markdown: the gathers, (with ``detail``) every row per GPU, the verdict per GPU and
    the tally."""
    parts = [gather_table(rep["gathers"])]
    if detail:
        parts += [layout_table(rep["rows"], gpu) for gpu in gpus]
    parts += [verdict_table(rep["rows"], gpu) for gpu in gpus]
    parts.append(tally_text(rep["rows"]))
    return "\n\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prints the layout study (the gathers, the rows, the verdict per GPU, the tally) for the benchmark's
    cases and, with --json, writes it; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", nargs="+", choices=list(GPUS), default=list(GPUS))
    parser.add_argument("--dtypes", nargs="+", choices=list(dr.DTYPE_BYTES), default=list(dr.DTYPE_BYTES))
    parser.add_argument("--modes", nargs="+", choices=("forward", "full"), default=["forward", "full"])
    parser.add_argument("--variant", choices=("fused", "fused_target"), default="fused",
                        help="the NCHW kernels the NHWC variant is a variant of (default: fused, as built)")
    parser.add_argument("--offsets", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS),
                        help="the offset fields (default: all)")
    parser.add_argument("--warm", action="store_true", help="L2 kept from an identical previous call")
    parser.add_argument("--json", default=None, help="write the study and its assumptions here")
    args = parser.parse_args(argv)
    asm = Assumptions(steady_state=args.warm)
    gpus = [GPUS[k] for k in args.gpus]
    rep = report(dr.benchmark_layers(), args.dtypes, args.modes, gpus, asm, args.variant, args.offsets)
    print(report_text(rep, gpus))
    if args.json:
        payload = {"model": "benchmarks.dcn_layouts", "assumptions": asdict(asm), "layouts": rep}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
