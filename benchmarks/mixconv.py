"""Benchmark of hybridops.mixed_depthwise_conv2d (MixConv) against its PyTorch alternatives.

    python -m benchmarks.mixconv [--quick] [--device cpu|cuda] [--json PATH] [--batches 1 2]

Compares, at the HybridNetSeg MixConv shapes (DESIGN-kernels.md), batch 1 and 2:

* ``ours``        -- hybridops.mixed_depthwise_conv2d (one launch per pass);
* ``composition`` -- split / one depthwise F.conv2d per group / cat, what timm's MixedConv2d runs
                     (hybridops.reference.mixed_depthwise_conv2d; cuDNN or oneDNN underneath);
* ``padded``      -- one depthwise F.conv2d at the largest kernel size with every group's weights
                     zero-padded to it (one launch, but k_max^2 taps for every channel).

in fp32 (and fp16 on CUDA), forward (under no_grad) and forward+backward (grads for input and
weights), NCHW (and channels-last outside --quick). Times are medians with p20/p80 over repeated
runs; the implementations are interleaved round by round so that load from other processes on a
shared machine hits them alike. Results are printed as a table and written as JSON (device, torch
version, git sha, date, every row and the ratios) to benchmarks/results/ unless --json says where.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

import hybridops
from hybridops import reference
from benchmarks._harness import device_name, git_sha
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
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    return f"{device_name(torch.device(device))} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"


def make_problem(channels, size, ks, stride, batch, dtype, device, channels_last):
    """Inputs and the three implementations as closures for one shape."""
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


def make_runner(fn, x, ws, w_pad, mode):
    if mode == "forward":
        def run():
            with torch.no_grad():
                fn(x, ws, w_pad)
        return run
    xg = x.detach().clone().requires_grad_()
    wsg = [w.detach().clone().requires_grad_() for w in ws]
    wpg = w_pad.detach().clone().requires_grad_()
    grad = None

    def run():
        nonlocal grad
        out = fn(xg, wsg, wpg)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        xg.grad = None
        wpg.grad = None
        for w in wsg:
            w.grad = None
    return run


def time_interleaved(runners: dict[str, Callable[[], None]], device: str, min_reps: int, max_reps: int,
                     budget_s: float) -> dict[str, list[float]]:
    """Per-run times (ms) of each runner, taken round-robin until every runner has `min_reps` runs
    and the budget is spent (or `max_reps` is reached)."""
    for run in runners.values():  # warm-up (allocator, cuDNN/oneDNN plan choice)
        run()
        run()
    _sync(device)
    times = {name: [] for name in runners}
    start = time.perf_counter()
    reps = 0
    while reps < max_reps and (reps < min_reps or time.perf_counter() - start < budget_s):
        for name, run in runners.items():
            if device == "cuda":
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                run()
                e.record()
                e.synchronize()
                times[name].append(s.elapsed_time(e))
            else:
                t0 = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - t0) * 1e3)
        reps += 1
    return times


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 representative shapes, NCHW only, fewer runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="output file (default: benchmarks/results/mixconv-<device>-<date>.json)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shapes", nargs="+", default=None, help="subset of shape names (see SHAPES)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per measurement")
    args = parser.parse_args(argv)

    device = args.device
    if device == "cuda" and not (torch.cuda.is_available() and hybridops.build_info()["cuda"]):
        print("CUDA requested but no GPU or hybridops was built without CUDA", file=sys.stderr)
        return 2
    names = args.shapes or (QUICK if args.quick else [s[0] for s in SHAPES])
    shapes = [s for s in SHAPES if s[0] in names]
    dtypes = [torch.float32] + ([torch.float16] if device == "cuda" else [])
    layouts = [False] if args.quick else [False, True]
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 1.0)
    min_reps, max_reps = (5, 50) if args.quick else (7, 200)

    rows = []
    header = f"{'shape':26s} {'N':>2s} {'dtype':8s} {'layout':6s} {'mode':16s} " + " ".join(
        f"{n + ' ms':>14s}" for n in IMPLS) + f" {'comp/ours':>9s} {'pad/ours':>8s}"
    print(f"# {_device_name(device)}; torch {torch.__version__}; hybridops {hybridops.__version__}")
    print(header)
    for name, channels, size, ks, stride in shapes:
        for batch in args.batches:
            for dtype in dtypes:
                for channels_last in layouts:
                    x, ws, w_pad, fns = make_problem(channels, size, ks, stride, batch, dtype, device, channels_last)
                    for mode in ("forward", "forward+backward"):
                        runners = {impl: make_runner(fns[impl], x, ws, w_pad, mode) for impl in IMPLS}
                        times = time_interleaved(runners, device, min_reps, max_reps, budget)
                        med = {impl: statistics.median(t) for impl, t in times.items()}
                        for impl, t in times.items():
                            rows.append({
                                "shape": name, "channels": channels, "size": size, "kernel_sizes": list(ks),
                                "stride": stride, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
                                "layout": "channels_last" if channels_last else "nchw", "mode": mode, "impl": impl,
                                "median_ms": med[impl], "p20_ms": quantile(t, 0.2), "p80_ms": quantile(t, 0.8),
                                "reps": len(t),
                                "speedup_vs_ours": med[impl] / med["ours"],
                            })
                        cells = " ".join(f"{med[i]:8.3f} ({quantile(times[i], 0.8) - quantile(times[i], 0.2):4.2f})"
                                         if med[i] < 1000 else f"{med[i]:14.1f}" for i in IMPLS)
                        print(f"{name:26s} {batch:2d} {str(dtype)[6:]:8s} {'cl' if channels_last else 'nchw':6s} "
                              f"{mode:16s} {cells} {med['composition'] / med['ours']:9.2f} "
                              f"{med['padded'] / med['ours']:8.2f}", flush=True)

    summary = {}
    for mode in ("forward", "forward+backward"):
        for base in ("composition", "padded"):
            ratios = [r["speedup_vs_ours"] for r in rows if r["mode"] == mode and r["impl"] == base]
            if ratios:
                summary[f"{mode}: {base}/ours"] = {
                    "geomean": float(torch.tensor(ratios).log().mean().exp()), "min": min(ratios), "max": max(ratios),
                    "n": len(ratios)}
    print("\n# ratios (baseline time / our time; > 1 means ours is faster)")
    for key, v in summary.items():
        print(f"{key:40s} geomean {v['geomean']:.2f}  min {v['min']:.2f}  max {v['max']:.2f}  ({v['n']} rows)")

    now = _dt.datetime.now(_dt.timezone.utc)
    result = {
        "benchmark": "mixconv", "device": _device_name(device), "device_kind": device,
        "torch": torch.__version__, "hybridops": hybridops.__version__, "build": hybridops.build_info(),
        "git_sha": git_sha(), "date": now.isoformat(timespec="seconds"), "quick": args.quick,
        "cpu_isa_cap": os.environ.get("HYBRIDOPS_CPU_ISA", ""), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "timing": "median/p20/p80 of per-run wall time (CUDA events on GPU), implementations interleaved",
        "summary": summary, "rows": rows,
    }
    path = args.json or os.path.join(
        RESULTS_DIR, f"mixconv-{device}{'-quick' if args.quick else ''}-{now.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
