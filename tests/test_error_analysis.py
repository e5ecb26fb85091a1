"""Tests of ``train.error_analysis`` (where a checkpoint's errors are) and ``train.distance`` (exact
Euclidean distances, local vessel width): widths of drawn lines, distance-to-rim bins on a disc FOV,
counts that add up to the evaluator's, an end-to-end run on a tiny checkpoint, and CLI user errors.
Tiny generated images only."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.distance import distance_to, vessel_width
from train.error_analysis import RIM_EDGES, ErrorTally, analyse_checkpoint
from train.error_analysis import main as errors_main
from train.error_report import markdown_report
from train.evaluate import evaluate_checkpoint
from train.metrics import BinaryEvaluator

from tests.test_train import _err, _one_thread, tiny_run  # noqa: F401  (fixtures: one torch thread, a tiny run)


def _brute_distance(target: torch.Tensor) -> torch.Tensor:
    """float ``[H, W]``: the exact distance to the nearest True pixel of ``target``, by brute force."""
    ys, xs = torch.nonzero(target, as_tuple=True)
    yy, xx = torch.meshgrid(torch.arange(target.shape[0]), torch.arange(target.shape[1]), indexing="ij")
    return ((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).float().sqrt().amin(-1)


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = np.mgrid[:h, :w]
    return torch.from_numpy((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)


# ------------------------------------------------------------------------------------------ geometry


def test_distance_is_exact_up_to_the_radius():
    g = torch.rand(31, 37, generator=torch.Generator().manual_seed(0)) < 0.03
    ref = _brute_distance(g)
    d = distance_to(g, 6)
    near = ref <= 6
    assert torch.equal(d[near], ref[near]) and torch.isinf(d[~near]).all()
    assert torch.equal(distance_to(g, 60), ref)
    framed = distance_to(torch.zeros(5, 9, dtype=torch.bool), 5, border=True)    # the frame is the target
    assert framed[0].tolist() == [1.0] * 9 and framed[2, 4] == 3.0
    with pytest.raises(ValueError, match="radius"):
        distance_to(g, -1)
    with pytest.raises(ValueError, match="bool"):
        distance_to(g.float(), 3)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6, 9])
def test_width_of_straight_lines(width):
    """Every pixel of a straight vessel of ``width`` px, horizontal or vertical, edge pixels included,
    reads ``width`` (even widths too: the width is computed on the 2x grid). Only the corners of its
    square ends may read less (no disc of that width reaches into a corner)."""
    lab = torch.zeros(30, 50, dtype=torch.bool)
    lab[8:8 + width, 3:47] = True
    for lab in (lab, lab.T.contiguous()):
        w = vessel_width(lab)
        body = lab.clone()
        body[:, :3 + width] = body[:, 47 - width:] = False          # away from the ends (of the horizontal one)
        if lab.shape[0] == 50:
            body = lab.clone()
            body[:3 + width] = body[47 - width:] = False
        assert w[body].unique().tolist() == [width]
        assert w[lab].max() == width and (w[~lab] == 0).all()


def test_width_bins_of_lines_1_3_6_and_a_branch_off_a_trunk():
    """Lines 1, 3 and 6 px wide land in the thin, medium and wide bins; an oblique line 3 px across reads
    3 px away from its cut ends; a 1 px branch leaving a 9 px trunk stays thin away from the junction."""
    lab = torch.zeros(80, 80, dtype=torch.bool)
    lab[5, 5:75] = True                                                                 # 1 px
    lab[15:50, 30:33] = True                                                            # 3 px
    lab[60:66, 5:75] = True                                                             # 6 px
    tally = ErrorTally()
    tally.add(torch.zeros(80, 80), lab, torch.ones(80, 80, dtype=torch.bool))         # predicts nothing: all FN
    bins = {b["bin"].split()[0]: b for b in tally.result()["by_width"]}
    assert [bins[k]["label_px"] for k in ("thin", "medium", "wide")] == [70, 35 * 3, 6 * 70]
    assert all(b["sen"] == 0.0 for b in bins.values())
    assert [bins[k]["share_of_fn"] for k in ("thin", "medium", "wide")] == [70 / 595, 105 / 595, 420 / 595]
    yy, xx = np.mgrid[:80, :80]
    oblique = torch.from_numpy((np.abs(yy - xx - 10) / np.sqrt(2) < 1.5) & (xx > 30) & (xx < 60))
    middle = oblique & torch.from_numpy((xx > 36) & (xx < 54))
    assert vessel_width(oblique)[middle].unique().tolist() == [3]
    trunk = torch.zeros(40, 40, dtype=torch.bool)
    trunk[20:29, :] = True
    trunk[:20, 15] = True                                                               # the branch
    assert vessel_width(trunk)[:14, 15].unique().tolist() == [1]
    assert vessel_width(trunk)[20:29, 30].unique().tolist() == [9]


# ------------------------------------------------------------------------------------------ breakdown


def test_rim_bins_on_a_disc_fov():
    """Pixels of a disc FOV fall in the rim bins by their exact distance to the nearest pixel outside the
    disc; a predicted ring on the rim is all false positives in the 0-10 px band."""
    fov = _disc(90, 90, 44, 44, 42)
    rim = _brute_distance(~fov)
    want = [int(((rim > lo) & (rim <= hi) & fov).sum()) for lo, hi in ((0, 10), (10, 30), (30, 1e9))]
    ring = fov & (rim <= 3)
    tally = ErrorTally()
    tally.add(ring.float(), torch.zeros_like(fov), fov)
    rows = tally.result()["by_rim_distance"]
    assert [r["bin"] for r in rows] == ["0-10 px", "10-30 px", "> 30 px"] and RIM_EDGES == (10, 30)
    assert [r["px"] for r in rows] == want and min(want) > 0
    assert rows[0]["fp"] == int(ring.sum()) and rows[0]["share_of_fp"] == 1.0
    assert rows[1]["fp"] == rows[2]["fp"] == 0 and rows[2]["sp"] == 1.0
    fp = tally.result()["false_positives"]
    assert fp["near"] == 0 and fp["far"] == int(ring.sum())            # no vessel anywhere: all isolated


def test_false_positives_near_and_far_and_false_negatives_by_kind():
    lab = torch.zeros(40, 60, dtype=torch.bool)
    lab[10:15, 5:55] = True                                             # a 5 px vessel
    pred = lab.clone()
    pred[15:17, 5:55] = True                                            # drawn 2 px wider below: near FP
    pred[30:32, 40:42] = True                                           # an isolated blob: far FP
    pred[10, 5:55] = False                                              # its top row missed: edge FN
    pred[12, 20:25] = False                                             # a hole in its core: inside FN
    tally = ErrorTally()
    tally.add(pred.float(), lab, torch.ones_like(lab))
    res = tally.result()
    assert res["false_positives"] == {"near_px": 2, "near": 100, "far": 4, "near_share": 100 / 104,
                                      "far_share": 4 / 104}
    assert res["false_negatives"]["edge"] == 50 and res["false_negatives"]["inside"] == 5
    assert res["false_negatives"]["thin"] == 0
    thin = torch.zeros(20, 30, dtype=torch.bool)
    thin[5:7, 2:28] = True                                              # 2 px: every pixel is an edge pixel
    tally = ErrorTally()
    tally.add(torch.zeros(20, 30), thin, torch.ones_like(thin))
    assert tally.result()["false_negatives"] == {"thin": 52, "edge": 0, "inside": 0, "thin_share": 1.0,
                                                 "edge_share": 0.0, "inside_share": 0.0}


def test_counts_add_up_to_the_evaluators():
    """TP, FP, FN, TN of the breakdown equal ``train.metrics``' pooled FOV counts at the same threshold,
    and every bin table sums to them."""
    g = torch.Generator().manual_seed(1)
    tally, ev = ErrorTally(threshold=0.4), BinaryEvaluator(threshold=0.4)
    for k in range(3):
        label = torch.rand(48, 56, generator=g) < 0.2
        label[20:26, :] = True
        prob = (0.6 * label.float() + 0.5 * torch.rand(48, 56, generator=g)).clamp(0, 1)
        fov = _disc(48, 56, 23 + k, 27, 24)                              # clipped by the frame at the top
        tally.add(prob, label, fov, f"im{k}")
        ev.add(prob, label, fov, f"im{k}")
    res, ref = tally.result(), ev.result()["pooled_fov"]
    assert {k: res["pooled_fov"][k] for k in ("tp", "fp", "fn", "tn")} == {k: ref[k] for k in ("tp", "fp", "fn", "tn")}
    assert res["pooled_fov"]["dice"] == pytest.approx(ref["dice"])
    rim = res["by_rim_distance"]
    for k in ("tp", "fp", "fn", "tn"):
        assert sum(r[k] for r in rim) == ref[k], k
    for table in (res["by_width"], res["width_histogram"]):
        assert sum(b["label_px"] for b in table) == ref["tp"] + ref["fn"]
        assert sum(b["fn"] for b in table) == ref["fn"]
    assert res["false_positives"]["near"] + res["false_positives"]["far"] == ref["fp"]
    fn = res["false_negatives"]
    assert fn["thin"] + fn["edge"] + fn["inside"] == ref["fn"] and fn["thin"] == res["by_width"][0]["fn"]
    assert sorted(im["id"] for im in res["images"]) == ["im0", "im1", "im2"]
    md = markdown_report(res, {"model": "m", "dataset": "d", "split": "test", "checkpoint": "c.pt", "epoch": 1,
                               "native": True})
    assert "* FOV rim: the " in md and "* False positives: " in md and "| im0 |" in md
    assert [im["dice"] for im in res["images"]] == sorted(im["dice"] for im in res["images"])   # worst first


# ------------------------------------------------------------------------------------------ checkpoint, CLI


def test_checkpoint_end_to_end_matches_the_evaluation(tiny_run, tmp_path, capsys):
    """On a tiny checkpoint, the analysis runs the evaluation's inference: its FOV counts equal
    ``train.evaluate``'s; the CLI writes errors/ next to the checkpoint and prints the table."""
    ev = evaluate_checkpoint(tiny_run / "best.pt", out=tmp_path / "ev", progress=False, limit=3,
                             save_images=False)["results"]["pooled_fov"]
    r = analyse_checkpoint(tiny_run / "best.pt", out=tmp_path / "er", limit=3, progress=False)
    assert {k: r["results"]["pooled_fov"][k] for k in ("tp", "fp", "fn", "tn")} == \
        {k: ev[k] for k in ("tp", "fp", "fn", "tn")}
    assert errors_main(["--checkpoint", str(tiny_run / "best.pt"), "--limit", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "## By vessel width" in out and "## By distance to the FOV rim" in out and "## Findings" in out
    js = json.loads((tiny_run / "errors" / "errors.json").read_text())
    assert js["results"]["n_images"] == 2 and js["meta"]["split"] == "test"
    assert (tiny_run / "errors" / "errors.md").read_text().startswith("# Where the errors are")


@pytest.mark.parametrize("argv, match", [
    (["--threshold", "1.5"], "--threshold must be in"),
    (["--max-width", "3"], "--max-width must be in 5.."),
    (["--limit", "0"], "--limit must be >= 1"),
])
def test_bad_arguments(tiny_run, argv, match, tmp_path, capsys):
    out = tmp_path / "e"
    line = _err(errors_main, ["--checkpoint", str(tiny_run / "best.pt"), "--out", str(out)] + argv, capsys)
    assert match in line and not out.exists()


def test_missing_checkpoint(tmp_path, capsys):
    line = _err(errors_main, ["--checkpoint", str(tmp_path / "none.pt")], capsys)
    assert "none.pt" in line
