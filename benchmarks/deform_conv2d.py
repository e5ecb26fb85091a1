"""DCNv2 benchmark: hybridops.deform_conv2d against torchvision.ops.deform_conv2d.

    python -m benchmarks.deform_conv2d [--device cpu|cuda] [--quick] [--dtypes float32 float16 ...]
                                       [--algo fused im2col] [--layouts nchw channels_last]
                                       [--json PATH] [--time-limit SECONDS]

Cases: HybridNetSeg's three DCN layers at batch 2 (3x3, stride 1, padding 1, one offset group)
and a detection-style layer (256ch@64x64, batch 8). Modes (``benchmarks._harness.MODES``):
forward (no_grad), backward (the gradients of input, offset, weight, bias and mask, with the
forward run untimed before each call) and full (forward + backward). Both ops get identical inputs
and are timed interleaved in the same run (``measure_interleaved``); results are appended as JSON
under benchmarks/results/. ``--time-limit`` stops early and writes what was measured
(``benchmarks._harness.TimeLimit``).
``--algo`` times ours once per HYBRIDOPS_DCN_ALGO value (fused, im2col, auto), all in the same
interleaved run as the peer; each row then carries ``extra["algo"]`` and its case name ends in
``[algo]``. Without it ours runs with the environment as it is (the ``auto`` heuristic by default).
``--layouts`` times each case once per layout of the caller's tensors: ``nchw`` (contiguous, the
default) and ``channels_last`` (input, offset and mask channels-last, as a channels_last model
hands them over; both ops get the same tensors, and torchvision copies them to NCHW itself); a
channels_last row's case name ends in ``{channels_last}``; with it every row carries ``extra["layout"]``.
"""
from __future__ import annotations

import argparse
import itertools
import os
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

import hybridops
from benchmarks._harness import (MODES, Row, Step, TimeLimit, add_time_limit_argument, measure_interleaved, op_step,
                                 print_table, summarize, try_step, write_json)

PEER_NAME = "torchvision.ops.deform_conv2d"
ALGO_ENV = "HYBRIDOPS_DCN_ALGO"
ALGOS = ("fused", "im2col", "auto")
LAYOUTS = ("nchw", "channels_last")

# (case name, batch, channels, height/width)
CASES = [
    ("hybridnetseg 16ch@256^2 b2", 2, 16, 256),
    ("hybridnetseg 40ch@128^2 b2", 2, 40, 128),
    ("hybridnetseg 80ch@64^2 b2", 2, 80, 64),
    ("detection 256ch@64^2 b8", 8, 256, 64),
]
QUICK_CASES = [
    ("hybridnetseg 16ch@128^2 b2", 2, 16, 128),
    ("hybridnetseg 40ch@64^2 b2", 2, 40, 64),
]


def make_inputs(batch: int, channels: int, size: int, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """``[x [B, C, S, S], offset [B, 18, S, S], weight [C, C, 3, 3], bias [C], mask [B, 9, S, S]]``,
    fixed seed, for a 3x3 stride-1 padding-1 DCNv2 layer with one offset group."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g)
    weight = torch.randn(channels, channels, 3, 3, generator=g) * (1.0 / (9 * channels) ** 0.5)
    offset = torch.randn(batch, 18, size, size, generator=g)
    mask = torch.sigmoid(torch.randn(batch, 9, size, size, generator=g))
    bias = torch.randn(channels, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, offset, weight, bias, mask)]


def in_layout(inputs: Sequence[Tensor], layout: str) -> list[Tensor]:
    """``inputs`` (``make_inputs``' five) with x, offset and mask in ``layout`` ("nchw" as they are,
    "channels_last" converted); weight and bias as they are."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    if layout == "nchw":
        return list(inputs)
    return [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 and i != 2 else t
            for i, t in enumerate(inputs)]


def make_step(op: Callable, inputs: Sequence[Tensor], mode: str) -> Step:
    """The ``op_step`` of ``op(x, offset, weight, bias, stride=1, padding=1, dilation=1, mask)`` in
    ``mode``, on its own copies of ``inputs`` in their layouts (all five are leaves: every gradient is
    computed)."""
    leaves = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in inputs]
    x, offset, weight, bias, mask = leaves
    return op_step(lambda: op(x, offset, weight, bias, 1, 1, 1, mask), leaves, mode)


def with_algo(step: Step, algo: Optional[str]) -> Step:
    """``step`` with HYBRIDOPS_DCN_ALGO set to ``algo`` around each of its calls (its previous value
    restored after); ``algo=None`` returns ``step`` unchanged."""
    if algo is None:
        return step

    def scoped(fn: Callable) -> Callable:
        def call(*args):
            previous = os.environ.get(ALGO_ENV)
            os.environ[ALGO_ENV] = algo
            try:
                return fn(*args)
            finally:
                if previous is None:
                    del os.environ[ALGO_ENV]
                else:
                    os.environ[ALGO_ENV] = previous
        return call

    return Step(run=scoped(step.run), prepare=scoped(step.prepare) if step.prepare is not None else None)


def _peer() -> tuple[Optional[Callable], str]:
    """torchvision's deform_conv2d and the peer name (which says when it is not installed)."""
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d
    except ImportError:
        return None, PEER_NAME + " (not installed)"
    return tv_deform_conv2d, PEER_NAME


def run(device: torch.device, dtypes: list[torch.dtype], quick: bool, limit: Optional[TimeLimit] = None,
        rows: Optional[list[Row]] = None, algos: Optional[Sequence[str]] = None,
        layouts: Sequence[str] = ("nchw",)) -> list[Row]:
    """One Row per (case, dtype, layout, mode, algo): ours (under each of ``algos``, see ``with_algo``;
    None: once, as the environment says) and torchvision measured interleaved on the same tensors in
    ``layout`` (``in_layout``), appended to ``rows`` (returned) as they come; ``limit`` may stop before
    the end."""
    variants = list(algos) if algos else [None]
    tv_deform_conv2d, peer_base = _peer()
    limit = limit or TimeLimit()
    reps = 5 if quick else (10 if device.type == "cpu" else 50)
    rows = [] if rows is None else rows
    tag_layout = any(lay != "nchw" for lay in layouts)  # rows carry extra["layout"]
    # Layout outermost: under a time limit every NCHW row comes before the channels_last ones.
    for layout, (name, batch, channels, size), dtype in itertools.product(layouts, QUICK_CASES if quick else CASES,
                                                                          dtypes):
        if limit.expired:
            limit.skip(len(MODES))
            continue
        inputs = in_layout(make_inputs(batch, channels, size, dtype, device), layout)
        case = name if layout == "nchw" else f"{name} {{{layout}}}"
        for mode in MODES:
            if not limit.allow():
                continue
            steps = {f"ours[{a}]": with_algo(make_step(hybridops.deform_conv2d, inputs, mode), a)
                     for a in variants}
            peer_name = peer_base
            if tv_deform_conv2d is not None:
                peer_step = make_step(tv_deform_conv2d, inputs, mode)
                error = try_step(peer_step)  # e.g. no bf16 kernel
                if error is None:
                    steps["peer"] = peer_step
                else:
                    peer_name += f" (failed: {error[:60]})"
            timings = measure_interleaved(steps, device, warmup=2, reps=reps)
            for a in variants:
                extra = ({} if a is None else {"algo": a}) | ({"layout": layout} if tag_layout else {})
                rows.append(Row("deform_conv2d", case if a is None else f"{case} [{a}]", mode,
                                str(dtype).replace("torch.", ""), timings[f"ours[{a}]"], peer_name,
                                timings.get("peer"), extra=extra))
                print_table(rows[-1:], header=len(rows) == 1)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=None, help="default: float32 (CPU); float32 float16 bfloat16 (CUDA)")
    parser.add_argument("--quick", action="store_true", help="small CI-sized cases")
    parser.add_argument("--algo", nargs="+", choices=ALGOS, default=None,
                        help="time ours under each HYBRIDOPS_DCN_ALGO value in the same run (default: as set)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["nchw"],
                        help="the callers' tensor layouts to time (default: nchw)")
    parser.add_argument("--json", default=None, help="results path (default: benchmarks/results/...)")
    add_time_limit_argument(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    names = args.dtypes or (["float32"] if device.type == "cpu" else ["float32", "float16", "bfloat16"])
    dtypes = [getattr(torch, n) for n in names]
    limit, rows = TimeLimit(args.time_limit), []
    with limit.guard():
        run(device, dtypes, args.quick, limit, rows, args.algo, args.layouts)
    print()
    print_table(rows)
    by = ("dtype",) + (("algo",) if args.algo else ()) + (("layout",) if args.layouts != ["nchw"] else ())
    summary = summarize(rows, by=by)
    path = write_json(rows, device, "deform_conv2d", args.json,
                      extra={"summary": summary, "time_limit": limit.record()})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
