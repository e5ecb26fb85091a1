"""PNG plots of benchmark results (drawn with Pillow; matplotlib is not needed).

    python -m benchmarks.plots benchmarks/results/latency-*.json benchmarks/results/deform_conv2d-*.json --out DIR

* a latency results file (``python -m benchmarks.latency``): batch-1 latency (p50) against input
  size for each model, one panel per dtype/mode (run the benchmark with several ``--sizes``);
* an op results file (``deform_conv2d``, ``losses``, ``mixconv``-style rows of ours vs a peer):
  p50 time of ours and of each peer per case, one panel per mode.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from train.plots import line_panels


def plot_latency(payload: dict, path: Path) -> Path:
    panels: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for m in payload["models"]:
        for r in m["inference"]:
            if "p50_ms" not in r:
                continue
            series = panels.setdefault((r["dtype"], r["mode"]), {})
            series.setdefault(m["model"], []).append((float(r["size"][0]), r["p50_ms"]))
    device = payload["environment"]["device_name"]
    return line_panels([(f"{device}: {dtype} {mode}, batch 1, ms", {k: sorted(v) for k, v in s.items()},
                         "input height (px)") for (dtype, mode), s in sorted(panels.items())], path)


def plot_rows(payload: dict, path: Path) -> Path:
    modes: dict[str, dict[str, list[tuple[float, float]]]] = {}
    cases: dict[str, list[str]] = {}
    for r in payload["rows"]:
        mode = r["mode"]
        names = cases.setdefault(mode, [])
        if r["case"] not in names:
            names.append(r["case"])
        x = float(names.index(r["case"]))
        series = modes.setdefault(mode, {})
        series.setdefault("ours", [])
        if (x, r["ours"]["p50_ms"]) not in series["ours"]:
            series["ours"].append((x, r["ours"]["p50_ms"]))
        if r.get("peer"):
            series.setdefault(r["peer_name"][:28], []).append((x, r["peer"]["p50_ms"]))
    panels = [(f"{payload.get('benchmark', 'op')} {mode}: p50 ms per case", s,
               "case: " + ", ".join(f"{i}={c[:18]}" for i, c in enumerate(cases[mode]))[:70])
              for mode, s in modes.items()]
    return line_panels(panels, path)


def plot_file(results: str, out_dir: str) -> Path:
    with open(results) as f:
        payload = json.load(f)
    out = Path(out_dir) / (Path(results).stem + ".png")
    if "models" in payload:
        return plot_latency(payload, out)
    if "rows" in payload:
        return plot_rows(payload, out)
    raise ValueError(f"{results}: not a latency or op benchmark results file")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="benchmark results JSON files")
    parser.add_argument("--out", default="benchmarks/results/plots", help="output folder")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for results in args.results:
        print("wrote", plot_file(results, args.out))


if __name__ == "__main__":
    main()
