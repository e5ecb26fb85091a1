"""Which ONNX form of MixConv runs faster in ONNX Runtime: one Conv per channel group, or one
depthwise Conv with kernels zero-padded to the largest size? (Chooses hybridops.deploy's default.)

    python -m benchmarks.onnx_mixconv [--quick] [--json PATH]

Times ONNX Runtime (CPU) on HybridNetSeg's MixConv shapes (batch 1) for both export styles.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

import hybridops
from benchmarks._harness import Row, measure, print_table, write_json

# (case, channels, size, kernel sizes, stride)
CASES = [
    ("144@128^2 k3,5,7", 144, 128, (3, 5, 7), 1),
    ("240@128^2 k3,5", 240, 128, (3, 5), 1),
    ("240@128^2 k3,5,7 s2", 240, 128, (3, 5, 7), 2),
    ("480@64^2 k3,5", 480, 64, (3, 5), 1),
    ("480@64^2 k3,5,7,9 s2", 480, 64, (3, 5, 7, 9), 2),
]


def run(quick: bool) -> list[Row]:
    from hybridops.deploy import export_onnx, onnx_session

    rows = []
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for name, channels, size, kernels, stride in (CASES[:2] if quick else CASES):
            module = hybridops.MixedDepthwiseConv2d(channels, kernels, stride=stride).eval()
            x = torch.randn(1, channels, size, size)
            timings = {}
            for style in ("per_group", "padded"):
                path = export_onnx(module, x, os.path.join(tmp, f"{style}.onnx"), mixconv=style)
                session = onnx_session(path)
                feed = {session.get_inputs()[0].name: x.numpy()}
                timings[style] = measure(lambda: session.run(None, feed), cpu, warmup=3, reps=10 if quick else 30)
            rows.append(Row("mixconv-onnx", name, "forward", "float32", timings["per_group"],
                            "one padded depthwise Conv", timings["padded"]))
            print_table(rows[-1:])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = run(args.quick)
    print()
    print("ours = one Conv per group; peer = one zero-padded depthwise Conv; speedup > 1: per-group is faster")
    print_table(rows)
    print("wrote", write_json(rows, torch.device("cpu"), "onnx_mixconv", args.json))


if __name__ == "__main__":
    main()
