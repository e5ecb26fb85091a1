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
