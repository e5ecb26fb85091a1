"""Benchmark of the fused losses against eager PyTorch and torch.compile of the same eager code.

    python -m benchmarks.losses [--quick] [--device cpu|cuda] [--json PATH] [--reps N] [--time-limit SECONDS]

Cases (full size; ``--quick`` divides H and W by 4 and takes fewer repetitions):
  * bce_dice:  2x1x512x512 fp32 logits, float32 labels
  * mixed:     2x1x512x512 labels, 5 fp32 logit maps at 512, 512, 256, 128, 64 (+ the mean-map term)
  * sace:      4x8x512x512 fp32 logits, int64 labels (size-adaptive cross-entropy, alpha=1, per image)

``ours`` is ``hybridops.losses.*`` (the Triton kernels on CUDA, the PyTorch path on the CPU); the
peers are ``eager`` (``hybridops.losses.reference``, plain PyTorch) and ``torch.compile`` of that
same eager code. Modes (``benchmarks._harness.MODES``): ``forward`` (no_grad), ``backward``
(``torch.autograd.grad`` of the loss w.r.t. the logits, the loss itself computed untimed before each
call) and ``full`` (loss and its gradients, both timed); gradients go through ``autograd.grad``, so
no gradient accumulation is timed. Each (case, mode) gives one row per peer, sharing ours' timing.

Timing (``benchmarks._harness.measure_interleaved`` with ``flush_l2``): ours and both peers are
timed round by round in one run; on CUDA every call is timed with CUDA events after a 256 MiB write
that evicts the inputs from L2 (they would otherwise stay cached between repetitions: 4-32 MiB
against 50 MiB of L2 on an H100); on the CPU with perf_counter. p20/p50/p80 over the repetitions;
peak memory is what a timed call allocates above what was allocated just before it (CUDA only).

On CUDA each row's ``extra`` also has the floor: the bytes the mode must move at least, at the copy
bandwidth measured on the same GPU, and ``x_floor`` = ours p50 / floor. ``I`` = the logits and the
target, read once; ``G`` = the gradients w.r.t. the logits (as many bytes as the logits), written:
  * forward:  I        (read the inputs once, reduce to a scalar);
  * backward: I + G    (the forward's result is a scalar, so the backward reads the inputs again
                        and writes the gradients);
  * full:     2 I + G  (forward then backward, as the old ``fwd+bwd`` mode).
Every run also checks ours and compile against eager (loss and gradients; ``max_abs_diff``).

Results are printed and written with ``benchmarks/_harness.py`` (device name, torch version, git
sha, date) to ``benchmarks/results/losses-<device>-<date>.json`` unless ``--json`` names a file.
On the CPU ``ours`` is the PyTorch path, so a CPU run only checks the harness. ``--time-limit``
stops early and writes what was measured (``benchmarks._harness.TimeLimit``).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, List, Optional

import torch

import hybridops.losses as L
from benchmarks._harness import (MODES, Row, Step, TimeLimit, add_time_limit_argument, copy_bandwidth,
                                 measure_interleaved, op_step, print_table, summarize, write_json)
from hybridops.losses import reference as R


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def make_cases(device: torch.device, quick: bool) -> List[dict]:
    s = 128 if quick else 512
    gen = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    label = (torch.rand(2, 1, s, s, generator=gen) > 0.7).float().to(device)
    maps = [randn(2, 1, s // f, s // f) for f in (1, 1, 2, 4, 8)]
    ce_labels = torch.randint(0, 8, (4, s, s), generator=gen).to(device)
    return [
        dict(op="bce_dice", case=f"2x1x{s}x{s}", inputs=[randn(2, 1, s, s)], target=label,
             ours=lambda xs, g: L.bce_dice_loss(xs[0], g), eager=lambda xs, g: R.bce_dice_loss(xs[0], g)),
        dict(op="mixed", case=f"2x1x{s}x{s} maps {'/'.join(str(m.shape[-1]) for m in maps)}+mean", inputs=maps,
             target=label, ours=lambda xs, g: L.mixed_loss(xs, g), eager=lambda xs, g: R.mixed_loss(xs, g)),
        dict(op="sace", case=f"4x8x{s}x{s}", inputs=[randn(4, 8, s, s)], target=ce_labels,
             ours=lambda xs, g: L.size_adaptive_cross_entropy(xs[0], g),
             eager=lambda xs, g: R.size_adaptive_cross_entropy(xs[0], g)),
    ]


def floor_bytes(mode: str, in_bytes: int, grad_bytes: int) -> int:
    """Bytes ``mode`` must move at least: ``in_bytes`` (logits + target) read per pass over the
    inputs, ``grad_bytes`` (the logits' gradients) written by the backward (see the module doc)."""
    return {"forward": in_bytes, "backward": in_bytes + grad_bytes, "full": 2 * in_bytes + grad_bytes}[mode]


def make_step(fn: Callable, xs: List[torch.Tensor], g: torch.Tensor, mode: str) -> Step:
    """The ``op_step`` of the loss ``fn(xs, g)`` in ``mode``, on its own leaf copies of the logits
    ``xs``; the gradients are ``torch.autograd.grad(loss, xs)`` (``accumulate=False``)."""
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    return op_step(lambda: fn(leaves, g), leaves, mode, accumulate=False)


def _max_abs_diff(fn: Callable, eager: Callable, xs, g) -> dict:
    a_in = [x.detach().requires_grad_() for x in xs]
    b_in = [x.detach().requires_grad_() for x in xs]
    a, b = fn(a_in, g), eager(b_in, g)
    ga, gb = torch.autograd.grad(a, a_in), torch.autograd.grad(b, b_in)
    return dict(loss=float((a.detach().float() - b.detach().float()).abs()),
                grad=max(float((u - v).abs().max()) for u, v in zip(ga, gb)))


def run(device: torch.device, quick: bool, reps: Optional[int], limit: Optional[TimeLimit] = None,
        rows: Optional[List[Row]] = None) -> List[Row]:
    """Per case and mode, ours, eager and torch.compile(eager) measured interleaved: 2 Rows, appended
    to ``rows`` (returned) as they come; ``limit`` may stop before the end."""
    warmup = 2 if quick else 10
    reps = reps or (5 if quick else 50)
    limit = limit or TimeLimit()
    bandwidth = copy_bandwidth(device)
    rows = [] if rows is None else rows
    for case in make_cases(device, quick):
        if limit.expired:  # before the case's torch.compile, which takes seconds
            limit.skip(len(MODES))
            continue
        xs, g = case["inputs"], case["target"]
        in_bytes = _nbytes(xs) + _nbytes([g])
        t0 = time.perf_counter()
        compiled = torch.compile(case["eager"], dynamic=False)
        diffs = {"ours": _max_abs_diff(case["ours"], case["eager"], xs, g),
                 "compile": _max_abs_diff(compiled, case["eager"], xs, g)}
        compile_s = time.perf_counter() - t0
        impls = {"ours": case["ours"], "eager PyTorch": case["eager"], "torch.compile(eager)": compiled}
        for mode in MODES:
            if not limit.allow():
                continue
            steps = {name: make_step(fn, xs, g, mode) for name, fn in impls.items()}
            timings = measure_interleaved(steps, device, warmup=warmup, reps=reps, max_seconds=60, flush_l2=True)
            ours = timings["ours"]
            nbytes = floor_bytes(mode, in_bytes, _nbytes(xs))
            extra = dict(floor_bytes=nbytes, max_abs_diff_vs_eager=diffs["ours"],
                         kernels="triton" if (device.type == "cuda" and L.HAS_TRITON) else "pytorch")
            if bandwidth:
                floor_ms = nbytes / bandwidth * 1e3
                extra.update(copy_bandwidth_gbs=bandwidth / 1e9, floor_ms=floor_ms, x_floor=ours.p50_ms / floor_ms)
            for peer_name in ("eager PyTorch", "torch.compile(eager)"):
                peer = timings[peer_name]
                row_extra = dict(extra)
                if peer_name.startswith("torch.compile"):
                    row_extra.update(peer_max_abs_diff_vs_eager=diffs["compile"], compile_and_check_s=compile_s)
                rows.append(Row(case["op"], case["case"], mode, "float32", ours, peer_name, peer, row_extra))
                print(f"  {case['op']} {mode}: ours {ours.p50_ms:.3f} ms, {peer_name} {peer.p50_ms:.3f} ms", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="H and W / 4, 5 repetitions (harness check)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="results path (default: benchmarks/results/...)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 50, quick 5)")
    add_time_limit_argument(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    limit, rows = TimeLimit(args.time_limit), []
    with limit.guard():
        run(device, args.quick, args.reps, limit, rows)
    print()
    print_table(rows)
    for r in rows:
        if "x_floor" in r.extra and r.peer_name.startswith("eager"):
            print(f"{r.op:<9} {r.mode:<8} ours p50 = {r.extra['x_floor']:.2f} x floor "
                  f"({r.extra['floor_bytes'] / 2 ** 20:.1f} MiB at {r.extra['copy_bandwidth_gbs']:.0f} GB/s); "
                  f"peak {r.ours.peak_mib:.1f} MiB vs eager {r.peer.peak_mib:.1f} MiB")
    summary = summarize(rows)
    path = write_json(rows, device, "losses" + ("-quick" if args.quick else ""), args.json,
                      extra={"summary": summary, "time_limit": limit.record()})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
