"""Crop training at the native resolution (``--crop``, ``--recipe chase_db1_cpu``), whole-image
inference, the run recipes (``--recipe``), the cosine schedule and ``--max-minutes``. Images are
generated in ``tmp_path`` (a fundus-like disc FOV, vessel-like lines) at sizes that are not multiples
of 16, so padding and cropping back are exercised; a tiny U-Net keeps every run to seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from train.__main__ import main as train_main
from train.__main__ import run as train_run
from train.config import make_config
from train.data import build_dataset
from train.data.crops import CropDataset, crop_window, native_item
from cli.errors import UserError
from train.infer import forward_whole, pad_to_multiple
from train.schedule import lr_for
from train.step import normalize, to_input

from tests.test_train import _lines, _one_thread  # noqa: F401  (_one_thread: autouse, one torch thread)

H, W = 45, 58                       # native size of the generated images: not multiples of 16
TINY = ["--model", "unet", "--model-kwargs", '{"widths": [4, 8]}', "--no-progress", "--threads", "1"]


@pytest.fixture
def fundus(tmp_path) -> Path:
    """A folder dataset of 4 generated H x W fundus-like images with an off-centre disc FOV."""
    root = tmp_path / "fundus"
    for sub in ("images", "masks", "fov"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 20) ** 2 + (xx - 30) ** 2 <= 18 ** 2
    rng = np.random.default_rng(0)
    for k in range(4):
        label = np.zeros((H, W), bool)
        for _ in range(3):
            r = rng.integers(5, H - 5)
            label[r, :] = True
            label[:, rng.integers(5, W - 5)] = True
        label &= disc
        img = (rng.random((H, W, 3)) * 40 + disc[..., None] * 150 - label[..., None] * 80).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"im{k}.png")
        Image.fromarray((label * 255).astype(np.uint8)).save(root / "masks" / f"im{k}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "fov" / f"im{k}.png")
    return root


def _ds(root: Path):
    return build_dataset("folder", str(root), "train", size=(32, 32), num_classes=1)


# ------------------------------------------------------------------------------------------ crops


def test_crops_are_native_pixels_centred_inside_the_fov(fundus):
    ds = _ds(fundus)
    crops = CropDataset(ds, [0, 1, 2], crop=(16, 24), crops_per_image=5, seed=3)
    assert len(crops) == 15
    for k in range(len(crops)):
        it = crops[(2, k)]
        assert it["image"].shape == (3, 16, 24) and it["label"].shape == it["fov"].shape == (16, 24)
        assert it["image"].dtype == torch.uint8 and it["fov"].dtype == torch.bool
        nat = native_item(ds, it["index"])
        assert nat["image"].shape == (3, H, W)               # no resizing anywhere
        cy, cx = it["centre"].tolist()
        assert nat["fov"][cy, cx]                            # the centre lies inside the FOV
        assert it["index"] == [0, 1, 2][k // 5]
        # the crop is the native window around the centre (zeros past the border), pixel for pixel
        top, left = cy - 8, cx - 12
        assert torch.equal(it["image"], crop_window(nat["image"], top, left, 16, 24))
        assert torch.equal(it["image"][:, 8, 12], nat["image"][:, cy, cx])
        assert torch.equal(it["label"], crop_window(nat["label"], top, left, 16, 24))


def test_crop_window_pads_with_zeros_past_the_border():
    t = torch.arange(1, 13, dtype=torch.uint8).view(3, 4)
    out = crop_window(t, -1, 2, 3, 3)
    assert torch.equal(out, torch.tensor([[0, 0, 0], [3, 4, 0], [7, 8, 0]], dtype=torch.uint8))


def test_crops_are_deterministic_per_seed_and_epoch(fundus):
    a = CropDataset(_ds(fundus), [0, 1], crop=(16, 16), crops_per_image=4, seed=0)
    b = CropDataset(_ds(fundus), [0, 1], crop=(16, 16), crops_per_image=4, seed=0)     # a fresh process
    other = CropDataset(_ds(fundus), [0, 1], crop=(16, 16), crops_per_image=4, seed=1)
    cen = lambda d, e: [tuple(d[(e, k)]["centre"].tolist()) for k in range(len(d))]  # noqa: E731
    assert cen(a, 5) == cen(b, 5)
    assert torch.equal(a[(5, 3)]["image"], b[(5, 3)]["image"])
    assert cen(a, 5) != cen(a, 6)
    assert cen(a, 5) != cen(other, 5)


# ------------------------------------------------------------------------------------------ inference


def test_padded_whole_image_inference():
    torch.manual_seed(0)
    model = models.create_model("unet", widths=(4, 8)).eval()
    prepare = lambda t: normalize(to_input(t, torch.device("cpu")))  # noqa: E731
    odd = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8)
    padded, hw = pad_to_multiple(odd, 16)
    assert hw == (H, W) and padded.shape[-2:] == (48, 64) and padded[..., H:, :].eq(0).all()
    with torch.no_grad():
        out = forward_whole(model, odd, 16, prepare)
        assert out.shape == (1, 1, H, W)
        assert torch.equal(out, model(prepare(padded))[..., :H, :W])
        even = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
        assert torch.equal(forward_whole(model, even, 16, prepare), model(prepare(even)))
    with pytest.raises(ValueError, match="divisor"):
        pad_to_multiple(odd, 0)


# ------------------------------------------------------------------------------------------ recipes


def test_recipe_resolution_and_precedence():
    cpu = make_config({"recipe": "chase_db1_cpu", "dataset": "chase_db1", "data_root": "/x"})
    assert (cpu["crop"], cpu["size"], cpu["crops_per_image"], cpu["epochs"], cpu["batch_size"]) == \
        ([320, 320], [320, 320], 20, 20, 1)
    assert (cpu["optimizer"], cpu["lr"], cpu["weight_decay"], cpu["loss"]) == ("adamw", 1e-3, 5e-4, "mixed")
    assert (cpu["schedule"], cpu["warmup_steps"], cpu["min_lr"], cpu["val"], cpu["patience"]) == \
        ("cosine", 100, 1e-5, "none", 0)
    flags = make_config({"recipe": "chase_db1_cpu", "dataset": "chase_db1", "data_root": "/x", "crop": [320, 320],
                         "epochs": 3, "lr": 5e-4, "crops_per_image": 7, "val": "test", "max_minutes": 2.5})
    assert (flags["crop"], flags["size"], flags["epochs"], flags["lr"], flags["crops_per_image"], flags["val"],
            flags["max_minutes"]) == ([320, 320], [320, 320], 3, 5e-4, 7, "test", 2.5)
    paper = make_config({"recipe": "paper", "dataset": "chase_db1", "data_root": "/x"})
    default = make_config({"dataset": "chase_db1", "data_root": "/x"})
    assert (paper["size"], paper["batch_size"], paper["epochs"], paper["patience"], paper["crop"]) == \
        ([960, 960], 1, 500, 30, None)
    assert {k: v for k, v in paper.items() if k != "recipe"} == {k: v for k, v in default.items() if k != "recipe"}
    assert make_config({"recipe": "paper"})["epochs"] == 500          # no synthetic demo shortcut
    assert make_config({})["epochs"] == 30 and make_config({})["crop"] is None
    with pytest.raises(UserError, match="unknown --recipe 'fast'; available: paper, chase_db1_cpu"):
        make_config({"recipe": "fast"})


@pytest.mark.parametrize("args, match", [
    ({"crop": [384, 384], "size": [256, 256]}, "--size 256 256 and --crop 384 384 disagree"),
    ({"crops_per_image": 4}, "--crops-per-image 4 needs --crop"),
    ({"crop": [30, 30], "crops_per_image": 0}, "--crops-per-image must be >= 1"),
    ({"schedule": "cosine", "min_lr": 1.0}, "--min-lr must be in"),
    ({"warmup_steps": -1}, "--warmup-steps must be >= 0"),
    ({"max_minutes": 0}, "--max-minutes must be > 0"),
])
def test_bad_crop_settings(args, match):
    with pytest.raises(UserError, match=match):
        make_config(args)


def test_unknown_recipe_is_one_error_line(capsys, tmp_path):
    assert train_main(["--recipe", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown --recipe 'nope'; available: paper, chase_db1_cpu"]
    assert not (tmp_path / "r").exists()


def test_cosine_schedule():
    cfg = {"schedule": "cosine", "lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 4, "epochs": 3, "lr_steps": [],
           "lr_gamma": 0.1}
    lrs = [lr_for(cfg, e, s, 10) for e in range(3) for s in range(10)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[-1] == pytest.approx(1e-5) and all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lr_for(dict(cfg, schedule="step", lr_steps=[1]), 2, 5, 10) == pytest.approx(1e-4)


# ------------------------------------------------------------------------------------------ runs


def test_crop_recipe_end_to_end(fundus, tmp_path):
    out = tmp_path / "run"
    rc = train_main(["--recipe", "chase_db1_cpu", "--dataset", "folder", "--data-root", str(fundus),
                     "--crop", "32", "32", "--crops-per-image", "2", "--epochs", "2", "--warmup-steps", "2", "--out", str(out)] + TINY)
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"] == "chase_db1_cpu" and cfg["crop"] == [32, 32] and cfg["schedule"] == "cosine"
    recs = _lines(out / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2] and recs[0]["lr"] == pytest.approx(5e-4)
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["data"]["native"] is True and ck["epoch"] == 2
    res = json.loads((out / "eval" / "metrics.json").read_text())
    assert res["meta"]["native"] is True and res["results"]["n_images"] == 4
    assert Image.open(out / "eval" / "probs" / "im0.png").size == (W, H)     # scored at the native size


def test_crop_training_resumes_exactly(fundus, tmp_path, monkeypatch):
    import train.loop as loop

    common = ["--recipe", "chase_db1_cpu", "--dataset", "folder", "--data-root", str(fundus), "--crop", "16", "16",
              "--crops-per-image", "3", "--warmup-steps", "2", "--val", "holdout", "--no-eval", "--epochs", "2"] + TINY
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(common + ["--out", str(a)])
    real = loop._epoch

    def interrupted(run, epoch):          # the run is killed before its second epoch
        if epoch == 1:
            raise KeyboardInterrupt
        return real(run, epoch)

    monkeypatch.setattr(loop, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(common + ["--out", str(b)])
    monkeypatch.setattr(loop, "_epoch", real)
    train_run(["--out", str(b), "--resume", "--no-eval", "--no-progress"])
    sa, sb = (torch.load(p / "last.pt", weights_only=True) for p in (a, b))
    assert sb["epoch"] == 2
    assert [r["lr"] for r in _lines(a / "metrics.jsonl")] == [r["lr"] for r in _lines(b / "metrics.jsonl")]
    for k, v in sa["state_dict"].items():
        assert torch.equal(v, sb["state_dict"][k]), k


def test_max_minutes_stops_and_records(fundus, tmp_path, capsys):
    out = tmp_path / "run"
    summary = train_run(["--dataset", "folder", "--data-root", str(fundus), "--crop", "16", "16", "--crops-per-image",
                         "3", "--epochs", "50", "--val", "none", "--max-minutes", "1e-9", "--out", str(out)] + TINY)
    assert summary["stopped_early"] and summary["stopped"]["reason"] == "max_minutes"
    assert summary["epochs_done"] == 1 and summary["stopped"]["epochs_planned"] == 50
    part = summary["stopped"]["partial_epoch"]                   # the clock ran out inside epoch 1
    assert part["images"] == 2 and part["of"] == 12           # one batch of 2, at least one step
    assert json.loads((out / "config.json").read_text())["stopped"] == summary["stopped"]
    recs = _lines(out / "metrics.jsonl")
    assert len(recs) == 1 and recs[0]["stopped"] == "max_minutes" and recs[0]["partial"] == part
    assert torch.load(out / "best.pt", weights_only=True)["config"]["stopped"] == summary["stopped"]
    assert (out / "eval" / "metrics.json").exists()
    assert "--max-minutes 1e-09: stopping after epoch 1 of 50" in capsys.readouterr().out
    train_run(["--out", str(out), "--resume", "--epochs", "2", "--max-minutes", "60", "--no-eval", "--no-progress"])
    assert "stopped" not in json.loads((out / "config.json").read_text())      # the resumed run ran to its end
    assert [r.get("stopped") for r in _lines(out / "metrics.jsonl")] == ["max_minutes", None]
