"""Benchmark of the fused losses against eager PyTorch and torch.compile of the same eager code.

    python -m benchmarks.losses [--quick] [--device cpu|cuda] [--json PATH] [--reps N]

Cases (full size; ``--quick`` divides H and W by 4 and takes fewer repetitions):
  * bce_dice:  2x1x512x512 fp32 logits, float32 labels
  * mixed:     2x1x512x512 labels, 5 fp32 logit maps at 512, 512, 256, 128, 64 (+ the mean-map term)
  * sace:      4x8x512x512 fp32 logits, int64 labels (size-adaptive cross-entropy, alpha=1, per image)

``ours`` is ``hybridops.losses.*`` (the Triton kernels on CUDA, the PyTorch path on the CPU); the
peers are ``eager`` (``hybridops.losses.reference``, plain PyTorch) and ``torch.compile`` of that
same eager code. Modes: ``forward`` and ``fwd+bwd`` (``torch.autograd.grad`` of the loss w.r.t. the
logits, so no gradient accumulation is timed). Each (case, mode) gives one row per peer.

Timing (``benchmarks/_harness.measure`` with ``flush_l2``): on CUDA every repetition is timed with
CUDA events after a 256 MiB write that evicts the inputs from L2 (they would otherwise stay cached
between repetitions: 4-32 MiB against 50 MiB of L2 on an H100); on the CPU with perf_counter.
p20/p50/p80 over the repetitions; peak memory is what the timed calls allocate above what was
allocated before them (CUDA only). On CUDA each row's ``extra`` also has
the floor: the bytes the loss must move (forward: read the inputs once; fwd+bwd: read them twice and
write the gradients) at the copy bandwidth measured on the same GPU, and ``x_floor`` = p50 / floor.
Every run also checks ours and compile against eager (loss and gradients; ``max_abs_diff``).

Results are printed and written with ``benchmarks/_harness.py`` (device name, torch version, git
sha, date) to ``benchmarks/results/losses-<device>-<date>.json`` unless ``--json`` names a file.
On the CPU ``ours`` is the PyTorch path, so a CPU run only checks the harness.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, List, Optional

import torch

import hybridops.losses as L
from benchmarks._harness import Row, copy_bandwidth, measure, print_table, write_json
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


def _step(fn: Callable, xs: List[torch.Tensor], g: torch.Tensor, backward: bool) -> Callable[[], object]:
    if backward:
        leaves = [x.detach().requires_grad_() for x in xs]
        return lambda: torch.autograd.grad(fn(leaves, g), leaves)

    def forward():
        with torch.no_grad():
            return fn(xs, g)
    return forward


def _max_abs_diff(fn: Callable, eager: Callable, xs, g) -> dict:
    a_in = [x.detach().requires_grad_() for x in xs]
    b_in = [x.detach().requires_grad_() for x in xs]
    a, b = fn(a_in, g), eager(b_in, g)
    ga, gb = torch.autograd.grad(a, a_in), torch.autograd.grad(b, b_in)
    return dict(loss=float((a.detach().float() - b.detach().float()).abs()),
                grad=max(float((u - v).abs().max()) for u, v in zip(ga, gb)))


def run(device: torch.device, quick: bool, reps: Optional[int]) -> List[Row]:
    warmup = 2 if quick else 10
    reps = reps or (5 if quick else 50)
    def timed(fn):
        return measure(fn, device, warmup=warmup, reps=reps, max_seconds=60, flush_l2=True)

    bandwidth = copy_bandwidth(device)
    rows = []
    for case in make_cases(device, quick):
        xs, g = case["inputs"], case["target"]
        in_bytes = _nbytes(xs) + _nbytes([g])
        t0 = time.perf_counter()
        compiled = torch.compile(case["eager"], dynamic=False)
        diffs = {"ours": _max_abs_diff(case["ours"], case["eager"], xs, g),
                 "compile": _max_abs_diff(compiled, case["eager"], xs, g)}
        compile_s = time.perf_counter() - t0
        for mode in ("forward", "fwd+bwd"):
            backward = mode == "fwd+bwd"
            ours = timed(_step(case["ours"], xs, g, backward))
            floor_bytes = 2 * in_bytes + _nbytes(xs) if backward else in_bytes
            extra = dict(floor_bytes=floor_bytes, max_abs_diff_vs_eager=diffs["ours"],
                         kernels="triton" if (device.type == "cuda" and L.HAS_TRITON) else "pytorch")
            if bandwidth:
                floor_ms = floor_bytes / bandwidth * 1e3
                extra.update(copy_bandwidth_gbs=bandwidth / 1e9, floor_ms=floor_ms, x_floor=ours.p50_ms / floor_ms)
            for peer_name, peer_fn in (("eager PyTorch", case["eager"]), ("torch.compile(eager)", compiled)):
                peer = timed(_step(peer_fn, xs, g, backward))
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
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    rows = run(device, args.quick, args.reps)
    print()
    print_table(rows)
    for r in rows:
        if "x_floor" in r.extra and r.peer_name.startswith("eager"):
            print(f"{r.op:<9} {r.mode:<8} ours p50 = {r.extra['x_floor']:.2f} x floor "
                  f"({r.extra['floor_bytes'] / 2 ** 20:.1f} MiB at {r.extra['copy_bandwidth_gbs']:.0f} GB/s); "
                  f"peak {r.ours.peak_mib:.1f} MiB vs eager {r.peer.peak_mib:.1f} MiB")
    path = write_json(rows, device, "losses" + ("-quick" if args.quick else ""), args.json)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
