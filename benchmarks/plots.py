"""PNG plots of benchmark results (drawn with Pillow; matplotlib is not needed).

    python -m benchmarks.plots benchmarks/results/latency-*.json benchmarks/results/deform_conv2d-*.json --out DIR

* a latency results file (``python -m benchmarks.latency``): batch-1 latency (p50) against input
  size for each model, one panel per dtype/mode (run the benchmark with several ``--sizes``);
* an op results file (``deform_conv2d``, ``losses``, ``mixconv``-style rows of ours vs a peer):
  p50 time of ours and of each peer per case, one panel per mode (forward, backward, full; per
  mode and dtype when the file has several dtypes).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.report import read_results
from plotting import line_panels


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


def _peer_label(peer_name: str) -> str:
    """A legend label: the peer's name without its parenthesised note, e.g. "padded"."""
    return peer_name.split(" (")[0][:28]


def plot_rows(payload: dict, path: Path) -> Path:
    """One panel per mode (per mode and dtype when the rows have several dtypes): p50 ms of ours and
    of each peer against the case index. Rows of one case and mode that share ours' timing (one
    row per peer, as every op benchmark writes them) give one "ours" point."""
    rows = payload["rows"]
    by_dtype = len({r.get("dtype") for r in rows}) > 1
    panels: dict[str, dict[str, dict[float, float]]] = {}
    cases: dict[str, list[str]] = {}
    for r in rows:
        panel = f"{r['mode']} {r['dtype']}" if by_dtype else r["mode"]
        names = cases.setdefault(panel, [])
        if r["case"] not in names:
            names.append(r["case"])
        x = float(names.index(r["case"]))
        series = panels.setdefault(panel, {})
        series.setdefault("ours", {})[x] = r["ours"]["p50_ms"]
        if r.get("peer"):
            series.setdefault(_peer_label(r["peer_name"]), {})[x] = r["peer"]["p50_ms"]
    out = [(f"{payload.get('benchmark', 'op')} {panel}: p50 ms per case",
            {name: sorted(points.items()) for name, points in series.items()},
            "case: " + ", ".join(f"{i}={c[:18]}" for i, c in enumerate(cases[panel]))[:70])
           for panel, series in panels.items()]
    return line_panels(out, path)


def plot_file(results: str, out_dir: str) -> Path:
    """Draws one results file (:func:`benchmarks.report.read_results`) to ``out_dir/<its name>.png``."""
    kind, payload = read_results(results)
    out = Path(out_dir) / (Path(results).stem + ".png")
    return (plot_latency if kind == "latency" else plot_rows)(payload, out)


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
