"""Tests of the train/ package: recipes and config, a few-step training whose loss falls, the CLI run ->
checkpoint -> evaluate round trip, exact resume, prediction, user errors (clear message, exit 2, no
traceback) and DDP with 2 CPU processes (gloo). Tiny images and a tiny U-Net keep it fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageChops

import models
from models.checkpoint import PIP_HINTS
from train import checkpoint as ckpt_io
from train.__main__ import main as train_main
from train.__main__ import run as train_run
from train.config import make_config
from train.data import build_dataset
from train.evaluate import evaluate_checkpoint
from train.evaluate import main as evaluate_main
from train.predict import main as predict_main
from train.plots import plot_curves
from train.recipes import recipe_for
from train.step import lr_at, make_loss, normalize, to_input

REPO = Path(__file__).resolve().parent.parent
TINY = ["--model", "unet", "--model-kwargs", '{"widths": [4, 8]}', "--size", "32", "32", "--limit", "4",
        "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread (and do not fight other jobs on a small shared CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ------------------------------------------------------------------------------------------ recipes


def test_recipes_and_overrides():
    r = recipe_for("hybridnetseg", "chase_db1", multiclass=False)
    assert (r["optimizer"], r["lr"], r["weight_decay"], r["loss"]) == ("adamw", 1e-3, 5e-4, "mixed")
    assert (r["batch_size"], r["epochs"], r["patience"]) == (1, 500, 30)
    assert recipe_for("hybridnetseg", "drive", False)["batch_size"] == 2
    m = recipe_for("msffnet", "folder", multiclass=True)
    assert (m["optimizer"], m["momentum"], m["lr"], m["epochs"], m["batch_size"]) == ("sgd", 0.9, 1e-3, 100, 4)
    assert (m["loss"], m["alpha"], m["lr_steps"]) == ("sace", 1.0, [80])
    assert m["augment"] == dict(hflip=0.5, rotate=10.0, brightness=0.2, contrast=0.2)
    assert lr_at(m, 79) == pytest.approx(1e-3) and lr_at(m, 80) == pytest.approx(1e-4)
    assert recipe_for("msffnet", "drive", multiclass=False)["loss"] == "bce_dice"     # binary fallback
    cfg = make_config({"model": "hybridnetseg", "dataset": "chase_db1", "data_root": "/x", "lr": 5e-4, "epochs": 3})
    assert (cfg["lr"], cfg["epochs"], cfg["batch_size"], cfg["size"], cfg["in_chans"]) == (5e-4, 3, 1, [960, 960], 3)
    assert make_config({"model": "msffnet", "dataset": "synthetic_multiclass"})["in_chans"] == 1
    noargs = make_config({})
    assert (noargs["model"], noargs["dataset"], noargs["size"], noargs["epochs"]) == ("hybridnetseg", "synthetic",
                                                                                     [64, 64], 30)


# ------------------------------------------------------------------------------------------ learning


def _batch(name, n, size, in_chans=3):
    ds = build_dataset(name, None, "train", size=(size, size), limit=n, in_chans=in_chans)
    items = [ds[i] for i in range(n)]
    x = normalize(to_input(torch.stack([it["image"] for it in items]), torch.device("cpu")))
    return x, torch.stack([it["label"] for it in items])


def _train_steps(model, loss_fn, x, y, steps, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_loss_falls_hybridnetseg_mixed():
    torch.manual_seed(0)
    x, y = _batch("synthetic", 2, 32)
    model = models.create_model("hybridnetseg")
    out = model.train()(x)
    assert isinstance(out, list) and len(out) == 4                  # the deep-supervision maps
    losses = _train_steps(model, make_loss("mixed", False), x, y, 8, 3e-3)
    assert losses[-1] < 0.93 * losses[0], losses


def test_loss_falls_multiclass_sace():
    torch.manual_seed(0)
    x, y = _batch("synthetic_multiclass", 2, 32, in_chans=1)
    model = models.create_model("unet", in_chans=1, num_classes=8, widths=(8, 16))
    losses = _train_steps(model, make_loss("sace", True, alpha=1.0), x, y, 10, 1e-2)
    assert losses[-1] < 0.8 * losses[0], losses


# ------------------------------------------------------------------------------------------ CLI runs


def test_run_checkpoint_evaluate_round_trip(tmp_path):
    out = tmp_path / "run"
    summary = train_run(TINY + ["--epochs", "1", "--val", "test", "--out", str(out)])
    for name in ("config.json", "metrics.jsonl", "curves.png", "best.pt", "last.pt", "eval/metrics.json",
                 "eval/metrics.md"):
        assert (out / name).exists(), name
    assert len(list((out / "eval" / "overlays").glob("*.png"))) == 4
    _assert_overlays_enlarged(out / "eval", (32, 32))
    assert Image.open(out / "curves.png").size == (960, 360)
    recs = _lines(out / "metrics.jsonl")
    assert len(recs) == 1 and recs[0]["epoch"] == 1 and recs[0]["val"]["auc"] is not None
    # the checkpoint alone rebuilds the model (weights_only load, model name and kwargs inside)
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["model"] == "unet" and ck["model_kwargs"]["widths"] == [4, 8] and ck["epoch"] == 1
    # evaluating best.pt on the test split at the input size reproduces the validation metrics
    res = evaluate_checkpoint(out / "best.pt", split="test", at_input_size=True, out=tmp_path / "ev",
                              progress=False, limit=4, save_images=False)["results"]
    for k in ("acc", "sen", "sp", "dice", "iou", "auc"):
        assert res["pooled_fov"][k] == pytest.approx(recs[0]["val"][k], abs=1e-6), k
    md = (out / "eval" / "metrics.md").read_text()
    assert "pixels of all images pooled, inside the FOV" in md and "per image over the whole image" in md
    js = json.loads((out / "eval" / "metrics.json").read_text())
    assert js["results"]["n_images"] == 4 and js["meta"]["model"] == "unet"
    assert summary["eval"] == str(out / "eval")


def test_evaluate_reuses_the_runs_eval_folder(tmp_path, capsys):
    """``python -m train.evaluate`` on a run's checkpoint, its own dataset and the test split, replaces
    the run's ``eval/`` (no second folder holding the same metrics); what it no longer writes (here:
    the images past --limit) is removed, so the folder holds one evaluation. Another split or dataset
    gets its own ``eval-<dataset>-<split>/``."""
    out = tmp_path / "run"
    train_run(TINY + ["--epochs", "1", "--val", "none", "--out", str(out)])
    assert len(list((out / "eval" / "overlays").glob("*.png"))) == 4
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--limit", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("eval")) == ["eval"]
    assert json.loads((out / "eval" / "metrics.json").read_text())["results"]["n_images"] == 2
    for sub in ("overlays", "probs"):
        assert len(list((out / "eval" / sub).glob("*.png"))) == 2, sub
    assert f"wrote {out / 'eval'}/metrics.json" in capsys.readouterr().out
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--split", "train", "--limit", "1",
                          "--no-images", "--no-progress"]) == 0
    assert json.loads((out / "eval-synthetic-train" / "metrics.json").read_text())["meta"]["split"] == "train"
    assert len(list((out / "eval" / "overlays").glob("*.png"))) == 2                 # the run's eval/ untouched


def _assert_overlays_enlarged(folder: Path, original: tuple[int, int]) -> None:
    """Overlays are large enough to judge by eye: images under 512 px are enlarged by a whole factor
    (nearest neighbour: each pixel a uniform k x k block) until their longer side is at least 512 px;
    the probability maps keep the original size (they are data)."""
    h, w = original
    k = max(1, -(-512 // max(h, w)))
    for png in sorted((folder / "overlays").glob("*.png")):
        ov = np.asarray(Image.open(png).convert("RGB"))
        assert ov.shape[0] == k * h and ov.shape[1] % (k * w) == 0, (png.name, ov.shape, original)
        assert max(ov.shape[:2]) >= 512
        blocks = ov.reshape(ov.shape[0] // k, k, ov.shape[1] // k, k, 3)
        assert (blocks == blocks[:, :1, :, :1]).all(), png.name
        assert Image.open(folder / "probs" / png.name).size == (w, h)


def test_resume_continues_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(TINY + ["--epochs", "2", "--no-eval", "--out", str(a)])
    train_run(TINY + ["--epochs", "1", "--no-eval", "--out", str(b)])
    assert len(_lines(b / "metrics.jsonl")) == 1
    train_run(["--out", str(b), "--resume", "--epochs", "2", "--no-eval", "--no-progress"])
    sa = torch.load(a / "last.pt", weights_only=True)
    sb = torch.load(b / "last.pt", weights_only=True)
    assert sb["epoch"] == 2 and [r["epoch"] for r in _lines(b / "metrics.jsonl")] == [1, 2]
    for k, v in sa["state_dict"].items():
        assert torch.equal(v, sb["state_dict"][k]), k
    assert _lines(a / "metrics.jsonl")[1]["train_loss"] == pytest.approx(_lines(b / "metrics.jsonl")[1]["train_loss"])


def test_holdout_validation(tmp_path):
    out = tmp_path / "h"
    train_run(TINY + ["--limit", "5", "--val", "holdout", "--epochs", "1", "--no-eval", "--out", str(out)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["val_resolved"] == "holdout" and len(cfg["val_ids"]) == 1          # 20% of 5 images


def test_multiclass_run_and_amp(tmp_path, capsys):
    out = tmp_path / "mc"
    train_run(["--model", "unet", "--model-kwargs", '{"widths": [4, 8]}', "--dataset", "synthetic_multiclass",
               "--loss", "sace", "--size", "32", "32", "--limit", "3", "--epochs", "1", "--amp", "--out", str(out),
               "--no-progress"])
    rec = _lines(out / "metrics.jsonl")[0]
    assert "mdice" in rec["val"] and "dice_vertebra" in rec["val"]
    ck = ckpt_io.load(out / "best.pt")
    assert ck["data"]["num_classes"] == 8 and ck["data"]["in_chans"] == 3 and ck["config"]["amp"] is True
    md = (out / "eval" / "metrics.md").read_text()
    assert "vertebra" in md and "mean Dice (fg)" in md
    _assert_overlays_enlarged(out / "eval", (32, 32))          # ground truth | prediction, side by side


def test_predict(tmp_path):
    out = tmp_path / "run"
    train_run(TINY + ["--epochs", "1", "--val", "none", "--no-eval", "--out", str(out)])
    inp = tmp_path / "in"
    inp.mkdir()
    raw = build_dataset("synthetic", None, "test", size=(40, 56), limit=2)
    for i in range(2):
        Image.fromarray(raw.original(i).image).save(inp / f"img{i}.png")
    assert predict_main([str(inp), "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "p"),
                         "--no-progress"]) == 0
    assert Image.open(tmp_path / "p" / "img0_prob.png").size == (32, 32)
    assert Image.open(tmp_path / "p" / "img0_mask_full.png").size == (56, 40)
    mask = np.asarray(Image.open(tmp_path / "p" / "img1_mask.png"))
    assert set(np.unique(mask).tolist()) <= {0, 255}
    # evaluation on another dataset (a folder of 56x40 images): scored at the original size
    (tmp_path / "f" / "images").mkdir(parents=True)
    (tmp_path / "f" / "masks").mkdir()
    for i in range(2):
        r = raw.original(i)
        Image.fromarray(r.image).save(tmp_path / "f" / "images" / f"s{i}.png")
        Image.fromarray(r.label * 255).save(tmp_path / "f" / "masks" / f"s{i}.png")
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--dataset", "folder", "--data-root",
                          str(tmp_path / "f"), "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"]
    assert res["n_images"] == 2 and res["pooled_fov"]["tp"] + res["pooled_fov"]["fp"] + res["pooled_fov"]["fn"] \
        + res["pooled_fov"]["tn"] == 2 * 40 * 56
    _assert_overlays_enlarged(tmp_path / "ev", (40, 56))
    # --init-from with the same model starts from those weights
    train_run(TINY + ["--epochs", "1", "--val", "none", "--no-eval", "--init-from", str(out / "best.pt"),
                      "--out", str(tmp_path / "init")])
    assert json.loads((tmp_path / "init" / "config.json").read_text())["init_from"] == str(out / "best.pt")


def test_plot_handles_missing_values(tmp_path):
    recs = [{"epoch": 1, "train_loss": 1.0, "val": {"dice": None, "auc": 0.5}, "best": True},
            {"epoch": 2, "train_loss": 0.5, "val": None, "best": False}]
    plot_curves(recs, tmp_path / "c.png", "dice")
    assert Image.open(tmp_path / "c.png").size == (960, 360)


def _axes_frame(img: Image.Image, x0: int, x1: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the black axes rectangle drawn in columns [x0, x1) of ``img``: its
    sides are the columns black over half the height (grid lines may paint over its top and bottom)."""
    black = (np.asarray(img.convert("RGB"))[:, x0:x1] == 0).all(-1)
    cols = np.where(black.sum(0) > 0.5 * black.shape[0])[0]
    rows = np.where(black[:, cols.min()])[0]
    return int(cols.min()) + x0, int(rows.min()), int(cols.max()) + x0, int(rows.max())


def test_plot_legend_stays_out_of_the_axes(tmp_path):
    """The legend never covers the lines: it is drawn outside the axes (here: validation metrics that rise
    to 1.0, so their lines run through the top-right corner where a legend inside would sit)."""
    from PIL import ImageDraw, ImageFont

    from plotting import draw_panel, line_panels

    rising = {name: [(e, 0.2 + 0.16 * e + 0.01 * i) for e in range(1, 6)]
              for i, name in enumerate(("dice", "auc", "sen", "sp", "a much longer series name"))}
    img = Image.new("RGB", (480, 360), "white")
    box = (0, 0, 480, 360)
    lay = draw_panel(ImageDraw.Draw(img), ImageFont.load_default(), box, "validation", rising, mark_x=5)
    (ax0, ay0, ax1, ay1), (lx0, ly0, lx1, ly1) = lay.axes, lay.legend
    assert lx1 <= ax0 or lx0 >= ax1 or ly1 <= ay0 or ly0 >= ay1, (lay.axes, lay.legend)       # disjoint
    assert box[0] <= lx0 and box[1] <= ly0 and lx1 <= box[2] and ly1 <= box[3], (box, lay.legend)  # not cut off
    # The pixels: the same charts with other series names differ only outside the axes frame.
    renamed = {f"series {i}": pts for i, pts in enumerate(rising.values())}
    a = line_panels([("t", rising, "epoch")], tmp_path / "a.png")
    b = line_panels([("t", renamed, "epoch")], tmp_path / "b.png")
    with Image.open(a) as ia, Image.open(b) as ib:
        fx0, fy0, fx1, fy1 = _axes_frame(ia, 0, 480)
        dx0, dy0, dx1, dy1 = ImageChops.difference(ia.convert("RGB"), ib.convert("RGB")).getbbox()
    assert dy0 > fy1 or dy1 <= fy0 or dx0 > fx1 or dx1 <= fx0, ((fx0, fy0, fx1, fy1), (dx0, dy0, dx1, dy1))


# ------------------------------------------------------------------------------------------ user errors


def _err(fn, argv, capsys) -> str:
    """Runs a CLI's main(argv); asserts exit status 2, no traceback and exactly one ``error:`` line on stderr,
    which it returns."""
    rc = fn(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_user_errors(tmp_path, capsys):
    assert "needs --data-root" in _err(train_main, ["--dataset", "drive"], capsys)
    assert "is not a folder" in _err(train_main, ["--dataset", "drive", "--data-root", str(tmp_path / "no")], capsys)
    assert "divisible by 16 (e.g. 48 48)" in _err(train_main, ["--size", "40", "40", "--out", str(tmp_path / "s")],
                                                  capsys)
    assert not (tmp_path / "s").exists()
    assert "unknown model 'nope'" in _err(train_main, ["--model", "nope"], capsys)
    assert "multi-class loss" in _err(train_main, ["--loss", "sace"], capsys)
    out = tmp_path / "run"
    train_run(TINY + ["--epochs", "1", "--val", "none", "--no-eval", "--out", str(out)])
    capsys.readouterr()
    assert "already holds a run" in _err(train_main, TINY + ["--out", str(out)], capsys)
    best = str(out / "best.pt")
    assert "holds a 'unet' model, not 'msffnet'" in _err(evaluate_main, ["--checkpoint", best, "--model", "msffnet"],
                                                         capsys)
    assert "does not exist" in _err(evaluate_main, ["--checkpoint", str(tmp_path / "none.pt")], capsys)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    assert "cannot read checkpoint" in _err(evaluate_main, ["--checkpoint", str(junk)], capsys)
    plain = tmp_path / "plain.pt"
    torch.save(models.create_model("unet", widths=(4, 8)).state_dict(), plain)
    assert "plain state dict" in _err(evaluate_main, ["--checkpoint", str(plain)], capsys)
    assert "holds a 'unet' model, not 'hybridnetseg'" in _err(
        train_main, ["--init-from", best, "--out", str(tmp_path / "i")], capsys)
    assert "does not fit the model" in _err(
        train_main, ["--model", "unet", "--init-from", best, "--size", "32", "32", "--out", str(tmp_path / "j")], capsys)
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    assert "cannot read image" in _err(predict_main, [str(bad), "--checkpoint", best, "--out", str(tmp_path / "p")],
                                       capsys)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    assert "divisible by 2" in _err(predict_main, [str(good), "--checkpoint", best, "--out", str(tmp_path / "p"),
                                                   "--size", "33", "32"], capsys)
    # labels out of range for the class count given
    root = tmp_path / "mc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.full((32, 32), 5, np.uint8)).save(root / "masks" / "a.png")
    assert "outside 0..2" in _err(train_main, TINY + ["--dataset", "folder", "--data-root", str(root), "--num-classes",
                                                      "3", "--loss", "ce", "--val", "none", "--out",
                                                      str(tmp_path / "f")], capsys)


# Arguments that cannot work: one error line, exit 2, and no --out folder left behind.
BAD_ARGS = {
    "patience<0": (["--patience", "-1"], "--patience must be >= 0"),
    "val-every=0": (["--val-every", "0"], "--val-every must be >= 1"),
    "val-every<0": (["--val-every", "-3"], "--val-every must be >= 1"),
    "kwargs-list": (["--model-kwargs", "[1, 2]"], "--model-kwargs must be a JSON object"),
    "kwargs-json": (["--model-kwargs", "{widths: [4]}"], "--model-kwargs '{widths: [4]}' is not valid JSON"),
    "kwargs-unknown": (["--model-kwargs", '{"widths": [4, 8], "depth": 3}'],
                       "cannot build model 'unet' with --model-kwargs"),
    "kwargs-classes": (["--model-kwargs", '{"widths": [4, 8], "num_classes": 3}'], "leave num_classes out"),
    "size-huge": (["--size", "160000", "160000"], "--size 160000 160000: H and W must be in 1..16384"),
    "size-zero": (["--size", "0", "32"], "H and W must be in 1..16384"),
    "size-divisor": (["--size", "33", "32"], "unet needs H and W divisible by 2 (e.g. 34 32)"),
    "lr-inf": (["--lr", "inf"], "--lr must be in (0, 3.4e+38], got inf"),
    "lr-float32": (["--lr", "1e39"], "--lr must be in (0, 3.4e+38], got 1e+39"),
    "weight-decay<0": (["--weight-decay", "-1"], "--weight-decay must be in [0, 3.4e+38], got -1"),
    "momentum>1": (["--optimizer", "sgd", "--momentum", "1.5"], "--momentum must be in [0, 1)"),
    "no-data-root": (["--dataset", "drive", "--data-root", "/nonexistent/drive"], "is not a folder"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_leave_no_out_folder(case, tmp_path, capsys):
    argv, message = BAD_ARGS[case]
    out = tmp_path / "run"
    line = _err(train_main, TINY + ["--epochs", "1", "--out", str(out)] + argv, capsys)
    assert message in line, line
    assert not out.exists()


def test_bad_model_kwargs_name_the_model_and_its_arguments(tmp_path, capsys):
    line = _err(train_main, TINY + ["--model-kwargs", '{"depth": 3}', "--out", str(tmp_path / "o")], capsys)
    assert "'depth'" in line and "unet takes: in_chans, num_classes, widths" in line, line


def test_size_too_large_for_memory(tmp_path, capsys, monkeypatch):
    import train.memory

    monkeypatch.setattr(train.memory, "device_memory", lambda dev: (2 ** 30, "the test's 1 GB"))
    out = tmp_path / "run"
    line = _err(train_main, TINY + ["--size", "4096", "4096", "--batch-size", "2", "--out", str(out)], capsys)
    assert "--size 4096 4096 with --batch-size 2: training unet needs at least" in line, line
    assert "per pixel, measured" in line and "more than the 1.0 GB of the test's 1 GB" in line, line
    assert not out.exists()


def test_activation_probe_leaves_the_model_alone():
    from train.memory import activation_bytes_per_pixel

    torch.manual_seed(0)
    model = models.create_model("unet", widths=(4, 8)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    per_px = activation_bytes_per_pixel(model, 3, model.input_divisor)
    # at least the two full-resolution 4-channel convs, BNs and ReLUs keep float32 maps for the backward pass
    assert per_px >= 2 * 3 * 4 * 4, per_px
    assert activation_bytes_per_pixel(model, 3, model.input_divisor, amp=True) < per_px      # bf16 maps
    assert not model.training and torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_torchvision(tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")] + ["torchvision"]:
        monkeypatch.setitem(sys.modules, name, None)        # import torchvision now fails as if not installed
    want = "error: model 'msffnet' needs torchvision (pip install torchvision==0.29.1)"
    out = tmp_path / "run"
    assert _err(train_main, ["--model", "msffnet", "--size", "32", "32", "--limit", "2", "--out", str(out)],
                capsys) == want
    assert not out.exists()
    ckpt = tmp_path / "msff.pt"
    torch.save({"format": ckpt_io.FORMAT, "model": "msffnet", "model_kwargs": {}, "state_dict": {},
                "data": {"dataset": "synthetic", "size": [32, 32], "in_chans": 1, "num_classes": 8}}, ckpt)
    assert _err(evaluate_main, ["--checkpoint", str(ckpt), "--out", str(tmp_path / "ev")], capsys) == want


def test_torchvision_pin_matches_requirements():
    pins = [ln.strip() for ln in (REPO / "requirements-test.txt").read_text().splitlines()
            if ln.startswith("torchvision")]
    assert pins == [PIP_HINTS["torchvision"]]


def test_one_error_line_for_a_multiline_message(capsys):
    from cli.errors import UserError, run_cli

    def body():
        raise UserError("first\n  second\n")

    assert run_cli(body) == 2
    assert capsys.readouterr().err == "error: first; second\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 1-epoch run of the tiny U-Net (best.pt = last.pt)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(TINY + ["--epochs", "1", "--val", "none", "--no-eval", "--out", str(out)])
    finally:
        torch.set_num_threads(n)
    return out


@pytest.mark.parametrize("flag", [["--patience", "-1"], ["--val-every", "0"], ["--epochs", "0"]])
def test_resume_checks_overrides(tiny_run, flag, capsys):
    before = (tiny_run / "last.pt").read_bytes()
    line = _err(train_main, ["--out", str(tiny_run), "--resume", "--no-progress"] + flag, capsys)
    assert line.startswith(f"error: {flag[0]} must be"), line
    assert (tiny_run / "last.pt").read_bytes() == before


def _nan_key(state: dict) -> str:
    return [k for k, v in state.items() if v.is_floating_point()][3]      # not the first: the error names it


# checkpoint entry damaged -> what the error says
BAD_CKPTS = {
    "no-data": (lambda ck: ck.pop("data"), "has no 'data' entry"),
    "data-not-dict": (lambda ck: ck.update(data=[1, 2]), "'data' must be a dict"),
    "no-size": (lambda ck: ck["data"].pop("size"), "'data' has no 'size' entry"),
    "huge-size": (lambda ck: ck["data"].update(size=[160000, 160000]),
                  "its 'data.size' 160000 160000: H and W must be in 1..16384"),
    "bad-classes": (lambda ck: ck["data"].update(num_classes=0), "'data.num_classes' must be an integer >= 1"),
    "zero-std": (lambda ck: ck["data"].update(std=0.0), "'data.std' must be a number > 0"),
    "kwargs-list": (lambda ck: ck.update(model_kwargs=[1, 2]), "'model_kwargs' must be a dict"),
    "kwargs-unknown": (lambda ck: ck["model_kwargs"].update(depth=3), "cannot build model 'unet' with the "
                       "arguments stored in checkpoint"),
    "state-not-dict": (lambda ck: ck.update(state_dict=[1]), "'state_dict' must be a dict of named tensors"),
    "nan": (lambda ck: ck["state_dict"][_nan_key(ck["state_dict"])].view(-1)[0].fill_(float("nan")),
            "holds non-finite weights: {key} (1 of"),
    "inf": (lambda ck: ck["state_dict"][_nan_key(ck["state_dict"])].fill_(float("inf")),
            "holds non-finite weights: {key} ("),
}


@pytest.mark.parametrize("case", list(BAD_CKPTS))
def test_damaged_checkpoint(case, tiny_run, tmp_path, capsys):
    damage, message = BAD_CKPTS[case]
    ck = torch.load(tiny_run / "best.pt", weights_only=True)
    message = message.format(key=_nan_key(ck["state_dict"]))
    damage(ck)
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    line = _err(evaluate_main, ["--checkpoint", str(bad), "--out", str(tmp_path / "ev"), "--no-progress"], capsys)
    assert str(bad) in line and message in line, line
    assert _err(predict_main, [str(image), "--checkpoint", str(bad), "--out", str(tmp_path / "p"),
                               "--no-progress"], capsys) == line
    assert not (tmp_path / "ev").exists() and not (tmp_path / "p").exists()


def test_nonfinite_init_from_and_empty_checkpoint(tiny_run, tmp_path, capsys):
    ck = torch.load(tiny_run / "best.pt", weights_only=True)
    BAD_CKPTS["nan"][0](ck)
    nan = tmp_path / "nan.pt"
    torch.save(ck, nan)
    out = tmp_path / "run"
    assert "holds non-finite weights" in _err(train_main, TINY + ["--init-from", str(nan), "--out", str(out)], capsys)
    assert not out.exists()
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert f"cannot read checkpoint {str(empty)!r}: the file is empty" in _err(
        evaluate_main, ["--checkpoint", str(empty)], capsys)
    ck = torch.load(tiny_run / "last.pt", weights_only=True)
    del ck["optimizer"]
    torch.save(ck, tmp_path / "noopt.pt")
    assert "has no 'optimizer' entry" in _err(train_main, ["--resume", str(tmp_path / "noopt.pt"), "--out",
                                                           str(tmp_path / "r")], capsys)


def test_diverging_run_stops_without_a_checkpoint(tmp_path, capsys):
    # One step per epoch: its loss is finite, the step (weight decay 1e38 x lr 100) leaves infinite weights.
    diverge = ["--optimizer", "sgd", "--lr", "100", "--weight-decay", "1e38", "--batch-size", "1", "--val", "none"]
    out = tmp_path / "w"
    line = _err(train_main, TINY + diverge + ["--limit", "1", "--out", str(out)], capsys)
    assert "the weights became non-finite" in line and "in epoch 1 (nothing was saved)" in line, line
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    # Two steps: the second step's loss is already non-finite.
    out = tmp_path / "l"
    line = _err(train_main, TINY + diverge + ["--limit", "2", "--out", str(out)], capsys)
    assert "the training loss became" in line and "in epoch 1 (nothing was saved)" in line, line
    assert not (out / "last.pt").exists()


def test_cli_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "train", "--dataset", "chase_db1", "--data-root", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, env=_env(), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: CHASE_DB1: no Image_NNL/R.jpg files"), r.stderr


# ------------------------------------------------------------------------------------------ DDP


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train",
           *TINY, "--epochs", "2", "--device", "cpu", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "DDP, 2 processes" in r.stdout
    assert r.stdout.count("epoch   2/2") == 1                     # only rank 0 prints
    recs = _lines(out / "metrics.jsonl")
    assert [x["epoch"] for x in recs] == [1, 2] and recs[0]["val"]["auc"] is not None
    ck = ckpt_io.load(out / "last.pt")
    assert not any(k.startswith("module.") for k in ck["state_dict"])   # saved unwrapped
    assert (out / "eval" / "metrics.json").exists()
