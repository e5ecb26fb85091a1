"""Markdown tables from benchmark results files, for README and issue notes.

    python -m benchmarks.report benchmarks/results/<file>.json [...]

* a latency file (``python -m benchmarks.latency``): batch-1 latency (p50) of each model per input
  size, dtype and mode, with each model's ratio to HybridNetSeg on hybridops, and the training steps;
* an op file (``deform_conv2d``, ``mixconv``, ``losses``): ours vs each peer per case and mode
  (p50 ms and speedup = peer / ours), then the summary (geomean/min/max of the speedup) if present.

Every table names the device, the date and the file it came from, so a GPU session can paste its
measurements without retyping numbers.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REFERENCE_MODEL = "hybridnetseg"


def _source(payload: dict, path: str) -> str:
    env = payload.get("environment", {})
    threads = f", {env['threads']} threads" if env.get("device") == "cpu" and env.get("threads") else ""
    return (f"{env.get('device_name', '?')} ({env.get('device', '?')}{threads}), torch {env.get('torch', '?')}, "
            f"{str(env.get('date', '?'))[:10]}, git {env.get('git_sha', '?')}; source: `{path}`")


def latency_tables(payload: dict, path: str) -> str:
    """One row per model, one column per (size, dtype, mode): p50 seconds and the ratio to
    HybridNetSeg on hybridops (> 1: that model is slower)."""
    models = payload["models"]
    columns: list[tuple] = []
    for m in models:
        for r in m["inference"]:
            key = (tuple(r["size"]), r["dtype"], r["mode"])
            if "p50_ms" in r and key not in columns:
                columns.append(key)
    p50 = {(m["model"], (tuple(r["size"]), r["dtype"], r["mode"])): r["p50_ms"]
           for m in models for r in m["inference"] if "p50_ms" in r}
    head = ["model", "params (M)"] + [f"{h}x{w} {d} {mode}" for (h, w), d, mode in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for m in models:
        cells = [m["label"], f"{m['params_m']:.3f}"]
        for col in columns:
            t = p50.get((m["model"], col))
            ref = p50.get((REFERENCE_MODEL, col))
            if t is None:
                cells.append("-")
            elif ref is None or m["model"] == REFERENCE_MODEL:
                cells.append(f"{t / 1e3:.3f} s")
            else:
                cells.append(f"{t / 1e3:.3f} s ({t / ref:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    steps = [(m["label"], r) for m in models for r in m.get("train_step", []) if "p50_ms" in r]
    if steps:
        lines += ["", "| model | training step (s) | batch | size |", "| --- | --- | --- | --- |"]
        lines += [f"| {label} | {r['p50_ms'] / 1e3:.3f} | {r['batch']} | {r['size'][0]}x{r['size'][1]} |"
                  for label, r in steps]
    return "\n".join(lines + ["", "Batch-1 p50 latency; (Nx) = time / HybridNetSeg on hybridops. " + _source(payload, path)])


def op_tables(payload: dict, path: str) -> str:
    """One row per (case, mode, dtype, peer): ours and peer p50 (ms) and the speedup."""
    lines = ["| case | mode | dtype | ours (ms) | peer (ms) | speedup | peer |", "|" + " --- |" * 7]
    for r in payload["rows"]:
        peer = r.get("peer")
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        peer_ms = f"{peer['p50_ms']:.3f}" if peer else "-"
        lines.append(f"| {r['case']} | {r['mode']} | {r['dtype']} | {r['ours']['p50_ms']:.3f} | {peer_ms} | {speed} | "
                     f"{r['peer_name']} |")
    summary = payload.get("summary")
    if summary:
        lines += ["", "| group | geomean speedup | min | max | rows |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {key.replace(' | ', ' / ')} | {v['geomean']:.2f}x | {v['min']:.2f}x | {v['max']:.2f}x | {v['n']} |"
                  for key, v in summary.items()]
    return "\n".join(lines + ["", "speedup = peer p50 / ours p50 (> 1: ours is faster). " + _source(payload, path)])


def read_results(path: str) -> tuple[str, dict]:
    """``(kind, payload)`` of a benchmark results file: ``"latency"`` (``python -m benchmarks.latency``,
    with ``models``) or ``"op"`` (an op benchmark, with ``rows``); ValueError for any other JSON."""
    payload = json.loads(Path(path).read_text())
    if "models" in payload:
        return "latency", payload
    if "rows" in payload:
        return "op", payload
    raise ValueError(f"{path}: not a latency or op benchmark results file")


def report(path: str) -> str:
    """The markdown for one results file."""
    kind, payload = read_results(path)
    return (latency_tables if kind == "latency" else op_tables)(payload, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="benchmark results JSON files")
    args = parser.parse_args(argv)
    print("\n\n".join(report(p) for p in args.results))


if __name__ == "__main__":
    main()
