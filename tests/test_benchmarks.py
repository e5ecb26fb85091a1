"""The benchmarks run end to end (CI-sized); timings are never asserted."""
from __future__ import annotations

import json

import torch

from benchmarks import deform_conv2d, latency


def test_latency_quick_runs_and_writes_json(tmp_path, capsys):
    path = tmp_path / "latency.json"
    latency.main(["--quick", "--no-onnx", "--models", "hybridnetseg", "unet", "--json", str(path)])
    payload = json.loads(path.read_text())
    assert payload["environment"]["torch"] == torch.__version__
    by_key = {m["model"]: m for m in payload["models"]}
    assert set(by_key) == {"hybridnetseg", "unet"}
    assert abs(by_key["hybridnetseg"]["params_m"] - 0.709946) < 1e-6
    assert by_key["hybridnetseg"]["inference"][0]["p50_ms"] > 0
    assert by_key["unet"]["train_step"][0]["batch"] == 2
    assert "Table 5 (reproduced)" in capsys.readouterr().out


def test_deform_conv2d_benchmark_harness(tmp_path, monkeypatch):
    monkeypatch.setattr(deform_conv2d, "QUICK_CASES", [("tiny 4ch@16^2 b1", 1, 4, 16)])
    path = tmp_path / "dcn.json"
    deform_conv2d.main(["--quick", "--device", "cpu", "--json", str(path)])
    rows = json.loads(path.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"forward", "fwd+bwd"}
    assert all(r["ours"]["p50_ms"] > 0 for r in rows)


def test_plots_from_results_files(tmp_path):
    from PIL import Image

    from benchmarks import plots

    latency = {"environment": {"device_name": "cpu"}, "models": [
        {"model": m, "inference": [{"size": [s, s], "dtype": "float32", "mode": "eager", "p50_ms": t * s}
                                   for s in (64, 128)]} for m, t in (("hybridnetseg", 1.0), ("unet", 3.0))]}
    timing = {"p20_ms": 1.0, "p50_ms": 2.0, "p80_ms": 3.0, "reps": 3, "peak_mib": None}
    ops = {"benchmark": "deform_conv2d", "rows": [
        {"op": "deform_conv2d", "case": c, "mode": m, "dtype": "float32", "ours": timing, "peer_name": "tv",
         "peer": dict(timing, p50_ms=4.0)} for c in ("a", "b") for m in ("forward", "fwd+bwd")]}
    for name, payload in (("latency", latency), ("ops", ops)):
        src = tmp_path / f"{name}.json"
        src.write_text(json.dumps(payload))
        png = plots.plot_file(str(src), str(tmp_path))
        with Image.open(png) as img:
            assert img.size[0] >= 480 and img.size[1] == 360
