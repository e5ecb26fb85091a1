"""The benchmarks run end to end (CI-sized); timings are never asserted."""
from __future__ import annotations

import json
import os

import pytest
import torch

from benchmarks import _harness, deform_conv2d, latency
from benchmarks._harness import MODES, Row, Step, Timing, measure_interleaved, op_step, summarize


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
    payload = json.loads(path.read_text())
    rows = payload["rows"]
    assert [r["mode"] for r in rows] == list(MODES)
    assert all(r["ours"]["p50_ms"] > 0 for r in rows)
    assert {v["mode"] for v in payload["summary"].values()} <= set(MODES)


def test_deform_conv2d_benchmark_algo_flag(tmp_path, monkeypatch):
    """--algo fused im2col: one row per algorithm in the same interleaved run (same peer timing),
    grouped by algorithm in the summary; HYBRIDOPS_DCN_ALGO is set only around our calls."""
    monkeypatch.setattr(deform_conv2d, "QUICK_CASES", [("tiny 4ch@16^2 b1", 1, 4, 16)])
    monkeypatch.delenv("HYBRIDOPS_DCN_ALGO", raising=False)
    path = tmp_path / "dcn.json"
    deform_conv2d.main(["--quick", "--device", "cpu", "--algo", "fused", "im2col", "--json", str(path)])
    payload = json.loads(path.read_text())
    rows = payload["rows"]
    assert [(r["mode"], r["extra"]["algo"]) for r in rows] == [(m, a) for m in MODES for a in ("fused", "im2col")]
    assert all(r["case"].endswith(f"[{r['extra']['algo']}]") for r in rows)
    for mode in MODES:  # one peer measurement per mode, shared by both algorithms' rows
        assert len({json.dumps(r["peer"]) for r in rows if r["mode"] == mode}) == 1
    assert {(v["mode"], v["algo"]) for v in payload["summary"].values()} == {(m, a) for m in MODES
                                                                             for a in ("fused", "im2col")}
    assert "HYBRIDOPS_DCN_ALGO" not in os.environ


def test_deform_conv2d_benchmark_layouts_flag(tmp_path, monkeypatch):
    """--layouts nchw channels_last: each case timed for both callers' layouts (ours and the peer on
    the same channels-last x, offset and mask), rows tagged and grouped by layout; the traffic
    model's --measured comparison predicts only the NCHW rows."""
    from benchmarks import dcn_roofline
    monkeypatch.setattr(deform_conv2d, "QUICK_CASES", [("tiny 4ch@16^2 b1", 1, 4, 16)])
    path = tmp_path / "dcn.json"
    deform_conv2d.main(["--quick", "--device", "cpu", "--layouts", "nchw", "channels_last", "--json", str(path)])
    payload = json.loads(path.read_text())
    rows = payload["rows"]
    assert [(r["mode"], r["extra"]["layout"]) for r in rows] == ([(m, "nchw") for m in MODES]
                                                                 + [(m, "channels_last") for m in MODES])
    assert all(r["case"].endswith("{channels_last}") == (r["extra"]["layout"] == "channels_last") for r in rows)
    assert {(v["mode"], v["layout"]) for v in payload["summary"].values()} == {(m, lay) for m in MODES
                                                                               for lay in ("nchw", "channels_last")}
    inputs = deform_conv2d.in_layout(deform_conv2d.make_inputs(1, 4, 8, torch.float32, torch.device("cpu")),
                                     "channels_last")
    assert [t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in inputs] == [
        True, True, False, False, True]
    payload["environment"].update(device="cuda:0", device_name="NVIDIA H200")
    _, compared = dcn_roofline.compare_measured(payload, dcn_roofline.Assumptions())
    assert [r["predicted"] is None for r in compared] == [False] * len(MODES) + [True] * len(MODES)


def test_deform_conv2d_with_algo_sets_env_only_during_the_call(monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "auto")
    seen = []
    step = deform_conv2d.with_algo(_harness.Step(run=lambda _: seen.append(os.environ["HYBRIDOPS_DCN_ALGO"]),
                                                 prepare=lambda: seen.append(os.environ["HYBRIDOPS_DCN_ALGO"])),
                                   "im2col")
    step.run(step.prepare())
    assert seen == ["im2col", "im2col"] and os.environ["HYBRIDOPS_DCN_ALGO"] == "auto"
    assert deform_conv2d.with_algo(step, None) is step


def test_mixconv_benchmark_runs_and_writes_json(tmp_path, monkeypatch):
    """benchmarks/mixconv.py end to end on a tiny shape (timings are never asserted)."""
    from benchmarks import mixconv

    monkeypatch.setattr(mixconv, "SHAPES", [("tiny 6@12 k3,5 s2", 6, 12, (3, 5), 2)])
    monkeypatch.setattr(mixconv, "QUICK", ["tiny 6@12 k3,5 s2"])
    path = tmp_path / "mixconv.json"
    assert mixconv.main(["--quick", "--device", "cpu", "--batches", "1", "--budget", "0", "--json", str(path)]) == 0
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == "mixconv" and payload["quick"] is True
    assert payload["environment"]["torch"] == torch.__version__ and payload["environment"]["git_sha"]
    rows = payload["rows"]
    peers = set(mixconv.PEERS.values())
    assert {(r["mode"], r["peer_name"]) for r in rows} == {(m, p) for m in MODES for p in peers}
    assert len(rows) == len(MODES) * len(peers)
    for r in rows:
        assert r["case"] == "tiny 6@12 k3,5 s2 b1 nchw" and r["dtype"] == "float32"
        assert r["extra"] == dict(shape="tiny 6@12 k3,5 s2", channels=6, size=12, kernel_sizes=[3, 5], stride=2,
                                  batch=1, layout="nchw")
        for t in (r["ours"], r["peer"]):
            assert t["p50_ms"] > 0 and t["p20_ms"] <= t["p80_ms"] and t["reps"] >= 3
        assert r["speedup"] == pytest.approx(r["peer"]["p50_ms"] / r["ours"]["p50_ms"])
    for mode in MODES:  # the two rows of one measurement share ours' timing
        assert len({json.dumps(r["ours"]) for r in rows if r["mode"] == mode}) == 1
    summary = payload["summary"]
    assert {(v["mode"], v["layout"], v["peer_name"]) for v in summary.values()} == {
        (m, "nchw", p) for m in MODES for p in peers}
    assert all(v["n"] == 1 and v["min"] <= v["geomean"] <= v["max"] for v in summary.values())


# ------------------------------------------------------------------------------------------- harness

class _Recorder:
    """Steps that log their calls: prepare(name) returns a token that run(name) must receive."""

    def __init__(self):
        self.log: list[tuple[str, str]] = []
        self.tokens = 0

    def step(self, name: str) -> Step:
        def prepare():
            self.tokens += 1
            self.log.append(("prepare", name))
            return (name, self.tokens)

        def run(arg):
            assert arg == (name, self.tokens)  # run gets the value of the prepare just before it
            self.log.append(("run", name))
        return Step(run=run, prepare=prepare)


def test_measure_interleaved_round_robin_with_prepare():
    rec = _Recorder()
    steps = {"a": rec.step("a"), "b": rec.step("b"), "c": lambda: rec.log.append(("run", "c"))}
    timings = measure_interleaved(steps, torch.device("cpu"), warmup=2, reps=4, max_seconds=1e9)
    assert list(timings) == ["a", "b", "c"]
    assert all(isinstance(t, Timing) and t.reps == 4 and t.peak_mib is None for t in timings.values())
    # every run of a step with prepare directly follows its own prepare (the token check in run)
    prepares = [name for kind, name in rec.log if kind == "prepare"]
    assert prepares == [name for kind, name in rec.log if kind == "run" and name != "c"]
    runs = [name for kind, name in rec.log if kind == "run"]
    assert runs[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, step by step
    timed = runs[6:]
    assert len(timed) == 3 * 4  # then round by round, each step once per round
    assert all(sorted(timed[i:i + 3]) == ["a", "b", "c"] for i in range(0, len(timed), 3))


def test_measure_interleaved_stops_after_max_seconds_with_three_rounds():
    timings = measure_interleaved({"x": lambda: None, "y": lambda: None}, "cpu", warmup=1, reps=1000,
                                  max_seconds=0.0)
    assert [t.reps for t in timings.values()] == [3, 3]
    assert _harness.measure(lambda: None, torch.device("cpu"), warmup=1, reps=5).reps == 5


def _counting_call(x: torch.Tensor):
    calls = []

    def call():
        calls.append(torch.is_grad_enabled())
        return x * 3.0
    return call, calls


def test_op_step_backward_runs_the_forward_in_prepare_and_clears_grads():
    x = torch.randn(4, 5, requires_grad=True)
    call, calls = _counting_call(x)
    grad = torch.randn(4, 5)
    step = op_step(call, [x], "backward", grad=grad)
    x.grad = torch.full_like(x, 7.0)
    out = step.prepare()
    assert calls == [True] and x.grad is None and out.requires_grad
    step.run(out)
    assert calls == [True]  # the timed part does not run the forward
    torch.testing.assert_close(x.grad, 3.0 * grad)
    step.run(step.prepare())  # grads were cleared, not accumulated
    torch.testing.assert_close(x.grad, 3.0 * grad)


def test_op_step_forward_and_full():
    x = torch.randn(3, 3, requires_grad=True)
    call, calls = _counting_call(x)
    fwd = op_step(call, [x], "forward")
    assert fwd.prepare is None
    out = fwd.run(None)
    assert calls == [False] and not out.requires_grad and x.grad is None

    call, calls = _counting_call(x)
    full = op_step(call, [x], "full")
    x.grad = torch.ones_like(x)
    arg = full.prepare()
    assert x.grad is None and calls == []
    full.run(arg)
    full.run(full.prepare())
    assert calls == [True, True]
    grad = _harness._default_grad(call())  # fixed: standard normal from seed 0
    torch.testing.assert_close(x.grad, 3.0 * grad)


def test_op_step_autograd_grad_keeps_grad_fields_empty():
    x = torch.randn(6, requires_grad=True)
    step = op_step(lambda: (x * x).sum(), [x], "full", accumulate=False)
    (gx,) = step.run(step.prepare())
    torch.testing.assert_close(gx, 2 * x.detach())  # a one-element output gets grad 1: d loss / d x
    assert x.grad is None
    with pytest.raises(ValueError, match="mode"):
        op_step(lambda: x, [x], "fwd+bwd")


def test_default_grad_keeps_channels_last():
    out = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    g = _harness._default_grad(out)
    assert g.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(g, _harness._default_grad(out.contiguous()))


def _row(mode: str, layout: str, peer: str, ours_ms: float, peer_ms: float) -> Row:
    def t(ms):
        return Timing(ms, ms, ms, 3)
    return Row("op", f"case {layout}", mode, "float32", t(ours_ms), peer, t(peer_ms), {"layout": layout})


def test_summarize_groups_by_mode_extra_keys_and_peer(tmp_path, capsys):
    rows = [_row("forward", "nchw", "p", 1.0, 2.0), _row("forward", "nchw", "p", 1.0, 8.0),
            _row("forward", "channels_last", "p", 2.0, 1.0), _row("full", "nchw", "q", 1.0, 3.0),
            Row("op", "no peer", "full", "float32", Timing(1, 1, 1, 3), "missing", None)]
    summary = summarize(rows, by=("layout",))
    assert list(summary) == ["forward | nchw | p", "forward | channels_last | p", "full | nchw | q"]
    s = summary["forward | nchw | p"]
    assert (s["mode"], s["layout"], s["peer_name"], s["n"]) == ("forward", "nchw", "p", 2)
    assert s["geomean"] == pytest.approx(4.0) and (s["min"], s["max"]) == (2.0, 8.0)
    assert summary["forward | channels_last | p"]["geomean"] == pytest.approx(0.5)
    assert "forward | nchw | p" in capsys.readouterr().out
    assert list(summarize(rows, show=False)) == ["forward | p", "full | q"]

    path = _harness.write_json(rows, torch.device("cpu"), "unit", str(tmp_path / "sub" / "r.json"),
                               extra={"summary": summary})
    payload = json.loads(open(path).read())
    assert list(payload) == ["benchmark", "environment", "summary", "rows"]
    assert payload["summary"] == json.loads(json.dumps(summary)) and payload["rows"][0]["speedup"] == 2.0
    with pytest.raises(ValueError, match="reserved"):
        _harness.write_json(rows, torch.device("cpu"), "unit", str(tmp_path / "x.json"), extra={"rows": []})


def test_plots_from_results_files(tmp_path):
    from PIL import Image

    from benchmarks import plots

    latency = {"environment": {"device_name": "cpu"}, "models": [
        {"model": m, "inference": [{"size": [s, s], "dtype": "float32", "mode": "eager", "p50_ms": t * s}
                                   for s in (64, 128)]} for m, t in (("hybridnetseg", 1.0), ("unet", 3.0))]}
    timing = {"p20_ms": 1.0, "p50_ms": 2.0, "p80_ms": 3.0, "reps": 3, "peak_mib": None}
    ops = {"benchmark": "deform_conv2d", "rows": [
        {"op": "deform_conv2d", "case": c, "mode": m, "dtype": "float32", "ours": timing, "peer_name": "tv",
         "peer": dict(timing, p50_ms=4.0)} for c in ("a", "b") for m in MODES]}
    # mixconv-style: two peers per (case, mode) sharing ours' timing, two dtypes -> a panel per mode and dtype
    mix = {"benchmark": "mixconv", "rows": [
        {"op": "mixed_depthwise_conv2d", "case": c, "mode": m, "dtype": d, "ours": timing, "peer_name": p,
         "peer": dict(timing, p50_ms=4.0)}
        for c in ("a b1 nchw", "a b1 channels_last") for d in ("float32", "float16") for m in MODES
        for p in ("composition (split/conv/cat)", "padded (one depthwise conv at k_max)")]}
    for name, payload, panels in (("latency", latency, 1), ("ops", ops, 3), ("mix", mix, 6)):
        src = tmp_path / f"{name}.json"
        src.write_text(json.dumps(payload))
        png = plots.plot_file(str(src), str(tmp_path))
        with Image.open(png) as img:
            assert img.size == (480 * panels, 360)


def test_report_markdown_tables(tmp_path, capsys):
    from benchmarks import report

    env = {"device": "cpu", "device_name": "Some CPU", "threads": 2, "torch": torch.__version__,
           "date": "2026-11-23T00:00:00+00:00", "git_sha": "abc123"}
    latency = {"environment": env, "models": [
        {"model": m, "label": m.upper(), "params_m": p,
         "inference": [{"size": [s, s], "dtype": "float32", "mode": "eager", "p50_ms": t * s} for s in (64, 128)],
         "train_step": [{"size": [64, 64], "batch": 2, "dtype": "float32", "p50_ms": 10.0 * t}]}
        for m, p, t in (("hybridnetseg", 0.71, 1.0), ("unet", 31.0, 3.0))]}
    timing = {"p20_ms": 1.0, "p50_ms": 2.0, "p80_ms": 3.0, "reps": 3, "peak_mib": None}
    ops = {"benchmark": "mixconv", "environment": env,
           "summary": {"full | nchw | composition": {"geomean": 2.0, "min": 1.5, "max": 3.0, "n": 2}},
           "rows": [{"case": "a b1 nchw", "mode": "full", "dtype": "float32", "ours": timing, "peer_name": "composition",
                     "peer": dict(timing, p50_ms=4.0), "speedup": 2.0}]}
    paths = []
    for name, payload in (("latency", latency), ("ops", ops)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(payload))
    report.main([str(p) for p in paths])
    out = capsys.readouterr().out
    assert "| UNET | 31.000 | 0.192 s (3.00x) | 0.384 s (3.00x) |" in out
    assert "| HYBRIDNETSEG | 0.010 | 2 | 64x64 |" in out
    assert "| a b1 nchw | full | float32 | 2.000 | 4.000 | 2.00x | composition |" in out
    assert "| full / nchw / composition | 2.00x | 1.50x | 3.00x | 2 |" in out  # the group key is one cell
    assert "Some CPU (cpu, 2 threads)" in out and str(paths[0]) in out


def test_geomean_stays_within_min_and_max():
    """exp(mean(log(x))) rounds up for this value: a one-row group used to report geomean > max."""
    from benchmarks._harness import geomean
    x = 145.88895080160944
    assert geomean([x]) == x and geomean([x, x, x]) == x
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    rows = [_row("forward", "nchw", "p", 1.0, x)]
    s = summarize(rows, show=False)["forward | p"]
    assert s["min"] <= s["geomean"] <= s["max"]


# ------------------------------------------------------------------------------------- --time-limit

def test_time_limit_runs_the_first_measurement_then_counts_what_it_skips():
    limit = _harness.TimeLimit(1e-9)
    assert not limit.expired            # nothing started yet: the first measurement always runs
    assert limit.allow() and limit.expired
    assert not limit.allow()
    limit.skip(3)
    assert limit.record() == {"time_limit_s": 1e-9, "complete": False, "measured": 1, "skipped": 4,
                              "interrupted": False}
    unlimited = _harness.TimeLimit(None)
    assert all(unlimited.allow() for _ in range(5)) and not unlimited.expired
    assert unlimited.record()["complete"] is True
    with pytest.raises(ValueError, match="time limit must be > 0"):
        _harness.TimeLimit(0)


def test_time_limit_guard_ends_the_block_quietly_on_sigterm(capsys):
    import os
    import signal
    import time

    before = signal.getsignal(signal.SIGTERM)
    limit = _harness.TimeLimit(None)
    done = []
    with limit.guard():
        limit.allow()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        done.append("not reached")
    assert done == [] and limit.interrupted and limit.record()["complete"] is False
    assert signal.getsignal(signal.SIGTERM) is before
    assert "interrupted" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_time_limit_flag_rejects_bad_values(value, capsys):
    with pytest.raises(SystemExit):
        deform_conv2d.main(["--device", "cpu", "--time-limit", value])
    err = capsys.readouterr().err
    assert "argument --time-limit: must be a number > 0" in err and repr(value) in err


def test_deform_conv2d_time_limit_writes_what_it_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(deform_conv2d, "QUICK_CASES", [("tiny 4ch@16^2 b1", 1, 4, 16), ("tiny 4ch@8^2 b1", 1, 4, 8)])
    path = tmp_path / "dcn.json"
    deform_conv2d.main(["--quick", "--device", "cpu", "--time-limit", "1e-9", "--json", str(path)])
    payload = json.loads(path.read_text())
    assert [(r["case"], r["mode"]) for r in payload["rows"]] == [("tiny 4ch@16^2 b1", "forward")]
    assert payload["time_limit"] == {"time_limit_s": 1e-9, "complete": False, "measured": 1, "skipped": 5,
                                     "interrupted": False}


def test_mixconv_time_limit_writes_what_it_measured(tmp_path, monkeypatch):
    from benchmarks import mixconv

    monkeypatch.setattr(mixconv, "SHAPES", [("tiny 6@12 k3,5 s2", 6, 12, (3, 5), 2)])
    path = tmp_path / "mixconv.json"
    assert mixconv.main(["--device", "cpu", "--batches", "1", "2", "--budget", "0", "--time-limit", "1e-9",
                         "--json", str(path)]) == 0
    payload = json.loads(path.read_text())
    assert {(r["case"], r["mode"]) for r in payload["rows"]} == {("tiny 6@12 k3,5 s2 b1 nchw", "forward")}
    assert payload["time_limit"]["measured"] == 1 and payload["time_limit"]["skipped"] == 2 * 2 * 3 - 1


def test_losses_time_limit_writes_what_it_measured(tmp_path, monkeypatch):
    from benchmarks import losses

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # the limit is under test, not inductor
    path = tmp_path / "losses.json"
    losses.main(["--quick", "--device", "cpu", "--reps", "2", "--time-limit", "1e-9", "--json", str(path)])
    payload = json.loads(path.read_text())
    assert {(r["op"], r["mode"]) for r in payload["rows"]} == {("bce_dice", "forward")}
    assert payload["time_limit"]["measured"] == 1 and payload["time_limit"]["skipped"] == 3 * 3 - 1


def test_latency_time_limit_keeps_eager_float32_first(tmp_path):
    path = tmp_path / "latency.json"
    latency.main(["--quick", "--no-onnx", "--models", "hybridnetseg", "unet", "--time-limit", "1e-9",
                  "--json", str(path)])
    payload = json.loads(path.read_text())
    by_key = {m["model"]: m for m in payload["models"]}
    assert [(r["dtype"], r["mode"]) for r in by_key["hybridnetseg"]["inference"]] == [("float32", "eager")]
    assert by_key["unet"]["inference"] == [] and by_key["unet"]["train_step"] == []
    assert by_key["unet"]["params_m"] > 30  # the table's static columns are always there
    assert payload["time_limit"] == {"time_limit_s": 1e-9, "complete": False, "measured": 1, "skipped": 3,
                                     "interrupted": False}
