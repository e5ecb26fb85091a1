"""DCNv2 benchmark: hybridops.deform_conv2d against torchvision.ops.deform_conv2d.

    python -m benchmarks.deform_conv2d [--device cpu|cuda] [--quick] [--dtypes float32 float16 ...] [--json PATH]

Cases: HybridNetSeg's three DCN layers at batch 2 (3x3, stride 1, padding 1, one offset group)
and a detection-style layer (256ch@64x64, batch 8). Modes: forward, and forward+backward (all
gradients). Both ops get identical inputs; results are appended as JSON under benchmarks/results/.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch

import hybridops
from benchmarks._harness import Row, measure, print_table, write_json

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


def make_inputs(batch: int, channels: int, size: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g)
    weight = torch.randn(channels, channels, 3, 3, generator=g) * (1.0 / (9 * channels) ** 0.5)
    offset = torch.randn(batch, 18, size, size, generator=g)
    mask = torch.sigmoid(torch.randn(batch, 9, size, size, generator=g))
    bias = torch.randn(channels, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, offset, weight, bias, mask)]


def _step(op: Callable, inputs, backward: bool) -> Callable[[], None]:
    x, offset, weight, bias, mask = inputs
    if backward:
        leaves = [t.detach().requires_grad_() for t in inputs]

        def run():
            out = op(leaves[0], leaves[1], leaves[2], leaves[3], 1, 1, 1, leaves[4])
            out.backward(torch.ones_like(out))
        return run

    def run_fwd():
        with torch.no_grad():
            op(x, offset, weight, bias, 1, 1, 1, mask)
    return run_fwd


def run(device: torch.device, dtypes: list[torch.dtype], quick: bool) -> list[Row]:
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d
    except ImportError:
        tv_deform_conv2d = None
    rows = []
    for name, batch, channels, size in (QUICK_CASES if quick else CASES):
        for dtype in dtypes:
            inputs = make_inputs(batch, channels, size, dtype, device)
            for mode in ("forward", "fwd+bwd"):
                backward = mode == "fwd+bwd"
                reps = 5 if quick else (10 if device.type == "cpu" else 50)
                ours = measure(_step(hybridops.deform_conv2d, inputs, backward), device, warmup=2, reps=reps)
                peer = None
                peer_name = "torchvision.ops.deform_conv2d"
                if tv_deform_conv2d is not None:
                    try:
                        peer = measure(_step(tv_deform_conv2d, inputs, backward), device, warmup=2, reps=reps)
                    except (RuntimeError, NotImplementedError) as exc:  # e.g. no bf16 kernel
                        peer_name += f" (failed: {str(exc).splitlines()[0][:60]})"
                else:
                    peer_name += " (not installed)"
                rows.append(Row("deform_conv2d", name, mode, str(dtype).replace("torch.", ""), ours, peer_name, peer))
                print_table(rows[-1:])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=None, help="default: float32 (CPU); float32 float16 bfloat16 (CUDA)")
    parser.add_argument("--quick", action="store_true", help="small CI-sized cases")
    parser.add_argument("--json", default=None, help="results path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    names = args.dtypes or (["float32"] if device.type == "cpu" else ["float32", "float16", "bfloat16"])
    dtypes = [getattr(torch, n) for n in names]
    rows = run(device, dtypes, args.quick)
    print()
    print_table(rows)
    path = write_json(rows, device, "deform_conv2d", args.json)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
