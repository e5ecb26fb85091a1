"""Benchmark of hybridops.mixed_depthwise_conv2d (MixConv) against its PyTorch alternatives.

    python -m benchmarks.mixconv [--quick] [--device cpu|cuda] [--json PATH] [--batches 1 2]
                                 [--shapes NAME ...] [--budget SECONDS] [--time-limit SECONDS]

Compares, at the HybridNetSeg MixConv shapes (DESIGN-kernels.md), batch 1 and 2:

* ``ours``        -- hybridops.mixed_depthwise_conv2d (one launch per pass);
* ``composition`` -- split / one depthwise F.conv2d per group / cat, what timm's MixedConv2d runs
                     (hybridops.reference.mixed_depthwise_conv2d; cuDNN or oneDNN underneath);
* ``padded``      -- one depthwise F.conv2d at the largest kernel size with every group's weights
                     zero-padded to it (one launch, but k_max^2 taps for every channel).

in fp32 (and fp16 on CUDA), NCHW and channels-last (NCHW only with --quick), in the three modes of
``benchmarks._harness.MODES``: forward (no_grad), backward (gradients of input and weights, the
forward run untimed before each call) and full (forward + backward). The three implementations are
timed interleaved, round by round, in one ``measure_interleaved`` call per (shape, batch, dtype,
layout, mode), so that load from other processes on a shared machine hits them alike; ``--budget``
is the seconds one such call may take (at least 3 rounds); ``--time-limit`` the seconds after which
no new measurement starts (``benchmarks._harness.TimeLimit``: what was measured is written).

Peak extra memory: every implementation also runs once more, untimed, for its peak memory above
what was allocated before the call (``Timing.peak_mib``; the ``peak MiB`` columns). On CUDA that is
``torch.cuda.max_memory_allocated``; on the CPU it is the process's resident high-water mark
(``VmHWM``) after resetting it to the current resident size (``echo 5 > /proc/self/clear_refs``,
Linux >= 4.0) with freed heap memory first returned to the system (``malloc_trim``), so that pages
the call touches for the first time -- its outputs, copies and scratch buffers -- are what counts.
Elsewhere the column is empty.

Each measurement gives two ``Row``s sharing ours' timing: peer ``composition (split/conv/cat)`` and
peer ``padded (one depthwise conv at k_max)``; ``case`` is ``"<shape> b<batch> <layout>"`` and
``extra`` holds shape, channels, size, kernel_sizes, stride, batch, layout. The speedup summary per
(mode, layout, peer) is printed and stored as ``summary`` in the JSON written by
``benchmarks._harness.write_json`` (default ``benchmarks/results/mixconv-<device>-<date>.json``).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

import hybridops
from benchmarks._harness import (MODES, Row, Step, TimeLimit, Timing, add_time_limit_argument, device_name,
                                 measure_interleaved, op_step, summarize, write_json)
from hybridops import reference
from hybridops.nn.mixed_conv import split_channels

# (name, channels, H (= W) of the input, kernel sizes, stride) -- HybridNetSeg at 512x512 input.
SHAPES = [
    ("96@256->128 k3 s2", 96, 256, (3,), 2),
    ("72@128 k3", 72, 128, (3,), 1),
    ("144@128 k3,5,7", 144, 128, (3, 5, 7), 1),
    ("240@128 k3,5", 240, 128, (3, 5), 1),
    ("240@128->64 k3,5,7 s2", 240, 128, (3, 5, 7), 2),
    ("480@64 k3,5", 480, 64, (3, 5), 1),
    ("480@64->32 k3,5,7,9 s2", 480, 64, (3, 5, 7, 9), 2),
    ("240@32 k3,5", 240, 32, (3, 5), 1),
    ("360@32 k3,5", 360, 32, (3, 5), 1),
]
# --quick: one shape per distinct configuration that matters most (k3 s2 at high resolution, the
# 3-kernel stride-1 block, the 480-channel block repeated three times, the 4-kernel stride-2 block).
QUICK = ["96@256->128 k3 s2", "144@128 k3,5,7", "480@64 k3,5", "480@64->32 k3,5,7,9 s2"]

IMPLS = ("ours", "composition", "padded")
PEERS = {"composition": "composition (split/conv/cat)", "padded": "padded (one depthwise conv at k_max)"}
LAYOUTS = ("nchw", "channels_last")


def make_problem(channels: int, size: int, ks: Sequence[int], stride: int, batch: int, dtype: torch.dtype,
                 device: Union[str, torch.device], channels_last: bool) -> tuple[Tensor, list[Tensor], Tensor, dict]:
    """Inputs and the three implementations for one shape (fixed seed):

    * ``x`` [batch, channels, size, size] (channels-last memory when asked);
    * ``ws`` one depthwise weight [c_i, 1, k_i, k_i] per kernel size, channels split as timm does;
    * ``w_pad`` [channels, 1, k_max, k_max]: every group's weights zero-padded to the largest kernel;
    * ``{"ours" | "composition" | "padded": fn(x, ws, w_pad) -> [batch, channels, size/stride, size/stride]}``.
    """
    splits = split_channels(channels, len(ks))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g).to(device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ws = [(torch.randn(c, 1, k, k, generator=g) / k).to(device=device, dtype=dtype) for c, k in zip(splits, ks)]
    kmax = max(ks)
    w_pad = torch.cat([F.pad(w, [(kmax - w.shape[-1]) // 2] * 4) for w in ws])  # [C, 1, kmax, kmax]

    def ours(x, ws, w_pad):
        return hybridops.mixed_depthwise_conv2d(x, ws, None, stride)

    def composition(x, ws, w_pad):
        return reference.mixed_depthwise_conv2d(x, ws, None, stride)

    def padded(x, ws, w_pad):
        return F.conv2d(x, w_pad, None, stride, kmax // 2, 1, channels)

    return x, ws, w_pad, {"ours": ours, "composition": composition, "padded": padded}


def make_step(fn, x: Tensor, ws: Sequence[Tensor], w_pad: Tensor, mode: str, impl: str) -> Step:
    """The ``op_step`` of ``fn(x, ws, w_pad)`` (one of ``make_problem``'s implementations, named
    ``impl``) in ``mode``, on its own leaf copies; the leaves are the tensors ``impl`` uses: x and
    ``w_pad`` for ``padded``, x and ``ws`` for the others."""
    xg = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    wsg = [w.detach().clone().requires_grad_() for w in ws]
    wpg = w_pad.detach().clone().requires_grad_()
    leaves = [xg, wpg] if impl == "padded" else [xg, *wsg]
    return op_step(lambda: fn(xg, wsg, wpg), leaves, mode)


def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_peak_extra_mib(step: Step) -> Optional[float]:
    """Peak resident memory (MiB) of one ``step.run(step.prepare())`` above the resident size just
    before it (``prepare`` runs first, outside the measurement), or None where Linux's
    ``/proc/self/clear_refs`` is unavailable. See the module doc."""
    arg = step.prepare() if step.prepare is not None else None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current VmRSS
    except OSError:
        return None
    base = _status_kib("VmRSS")
    out = step.run(arg)
    peak = _status_kib("VmHWM")
    del out, arg
    return None if base is None or peak is None else max(0, peak - base) / 1024


def measure_case(x: Tensor, ws: Sequence[Tensor], w_pad: Tensor, fns: dict, mode: str, device: torch.device,
                 reps: int, budget_s: float) -> dict[str, Timing]:
    """``{impl: Timing}`` of the three implementations in ``mode``, measured interleaved; on the CPU
    ``peak_mib`` is filled by one more untimed call each (:func:`cpu_peak_extra_mib`)."""
    steps = {impl: make_step(fns[impl], x, ws, w_pad, mode, impl) for impl in IMPLS}
    timings = measure_interleaved(steps, device, warmup=2, reps=reps, max_seconds=budget_s)
    if device.type == "cpu":
        for impl in IMPLS:
            timings[impl].peak_mib = cpu_peak_extra_mib(steps[impl])
    return timings


def case_rows(shape: tuple, batch: int, dtype: torch.dtype, layout: str, mode: str,
              timings: dict[str, Timing]) -> list[Row]:
    """The two Rows (one per peer, sharing ours' Timing) of one measurement."""
    name, channels, size, ks, stride = shape
    extra = dict(shape=name, channels=channels, size=size, kernel_sizes=list(ks), stride=stride, batch=batch,
                 layout=layout)
    return [Row("mixed_depthwise_conv2d", f"{name} b{batch} {layout}", mode, str(dtype).replace("torch.", ""),
                timings["ours"], peer_name, timings[impl], dict(extra))
            for impl, peer_name in PEERS.items()]


def _print_header(device: torch.device) -> None:
    print(f"# {device_name(device)} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}); "
          f"torch {torch.__version__}; hybridops {hybridops.__version__}")
    print(f"{'shape':26s} {'N':>2s} {'dtype':8s} {'layout':6s} {'mode':8s} "
          + " ".join(f"{n + ' ms (p80-p20)':>24s}" for n in IMPLS) + f" {'comp/ours':>9s} {'pad/ours':>8s} "
          + f"{'peak MiB ours/comp/pad':>24s}")


def _print_line(name: str, batch: int, dtype: torch.dtype, layout: str, mode: str, t: dict[str, Timing]) -> None:
    cells = " ".join(f"{t[i].p50_ms:14.3f} ({t[i].p80_ms - t[i].p20_ms:7.3f})" for i in IMPLS)
    peaks = "/".join("-" if t[i].peak_mib is None else f"{t[i].peak_mib:.0f}" for i in IMPLS)
    print(f"{name:26s} {batch:2d} {str(dtype)[6:]:8s} {'cl' if layout == 'channels_last' else layout:6s} "
          f"{mode:8s} {cells} {t['composition'].p50_ms / t['ours'].p50_ms:9.2f} "
          f"{t['padded'].p50_ms / t['ours'].p50_ms:8.2f} {peaks:>24s}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 representative shapes, NCHW only, fewer runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="output file (default: benchmarks/results/mixconv-<device>-<date>.json)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shapes", nargs="+", default=None, help="subset of shape names (see SHAPES)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per measurement (3 implementations interleaved, >= 3 rounds); "
                             "default 0.5 (quick) or 1.0")
    add_time_limit_argument(parser)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not (torch.cuda.is_available() and hybridops.build_info()["built_with_cuda"]):
        print("CUDA requested but no GPU or hybridops was built without CUDA", file=sys.stderr)
        return 2
    names = args.shapes or (QUICK if args.quick else [s[0] for s in SHAPES])
    unknown = sorted(set(names) - {s[0] for s in SHAPES})
    if unknown:
        parser.error(f"--shapes: unknown {unknown}; known: {[s[0] for s in SHAPES]}")
    shapes = [s for s in SHAPES if s[0] in names]
    dtypes = [torch.float32] + ([torch.float16] if device.type == "cuda" else [])
    layouts = LAYOUTS[:1] if args.quick else LAYOUTS
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 1.0)
    reps = 50 if args.quick else 200

    rows: list[Row] = []
    limit = TimeLimit(args.time_limit)
    _print_header(device)
    with limit.guard():
        for shape in shapes:
            name, channels, size, ks, stride = shape
            for batch in args.batches:
                for dtype in dtypes:
                    for layout in layouts:
                        if limit.expired:
                            limit.skip(len(MODES))
                            continue
                        x, ws, w_pad, fns = make_problem(channels, size, ks, stride, batch, dtype, device,
                                                         layout == "channels_last")
                        for mode in MODES:
                            if not limit.allow():
                                continue
                            timings = measure_case(x, ws, w_pad, fns, mode, device, reps, budget)
                            rows += case_rows(shape, batch, dtype, layout, mode, timings)
                            _print_line(name, batch, dtype, layout, mode, timings)

    summary = summarize(rows, by=("layout",))
    extra = {"quick": args.quick, "budget_s": budget, "cpu_isa_cap": os.environ.get("HYBRIDOPS_CPU_ISA", ""),
             "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "summary": summary,
             "time_limit": limit.record()}
    path = write_json(rows, device, "mixconv", args.json, extra=extra)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
