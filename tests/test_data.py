"""Tests of train.data (every loader on fixtures written here, CHASE_DB1 on the real copy when present),
train.augment (image/label alignment, seeding) and train.metrics (hand-computed cases, exact AUC).
CPU only, tiny images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli.errors import DatasetError
from train.augment import Augment
from train.data import build_dataset, derive_fov, get_spec, list_datasets
from train.metrics import BinaryEvaluator, MulticlassEvaluator, counts, roc_auc, scores_from_counts

REPO = Path(__file__).resolve().parent.parent
CHASE = Path(os.environ.get("HYBRIDOPS_CHASE_DB1", REPO.parent / "shared" / "data" / "CHASE_DB1"))


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _vessels(h, w, seed=0):
    a = np.zeros((h, w), np.uint8)
    rng = np.random.default_rng(seed)
    a[rng.integers(0, h), :] = 255
    a[:, rng.integers(0, w)] = 255
    return a


def _save(arr, path: Path, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    img.save(path)


# ------------------------------------------------------------------------------------------ loaders


def make_drive(root: Path, n_train=3, n_test=2, h=36, w=40):
    for i in range(n_train):
        num = 21 + i
        ext = ".TIF" if i == 0 else ".tif"            # case-insensitive extensions
        _save(_rgb(h, w, num), root / "training" / "images" / f"{num}_training{ext}")
        _save(_vessels(h, w, num), root / "training" / "1st_manual" / f"{num}_manual1.gif")
        if i != 1:                                     # training masks are optional
            _save(np.full((h, w), 255, np.uint8), root / "training" / "mask" / f"{num}_training_mask.gif")
    for i in range(n_test):
        num = f"{i + 1:02d}"
        _save(_rgb(h, w, i), root / "test" / "images" / f"{num}_test.tif")
        _save(_vessels(h, w, i), root / "test" / "1st_manual" / f"{num}_manual1.gif")
        m = np.zeros((h, w), np.uint8)
        m[2:-2, 2:-2] = 255
        _save(m, root / "test" / "mask" / f"{num}_test_mask.gif")
    return root


def test_drive(tmp_path):
    root = make_drive(tmp_path / "DRIVE")
    tr = build_dataset("drive", str(root), "train", size=(32, 32))
    te = build_dataset("drive", str(root), "test", size=(32, 32))
    assert tr.ids == ["21", "22", "23"] and te.ids == ["01", "02"]
    item = tr[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert item["label"].shape == (32, 32) and set(item["label"].unique().tolist()) <= {0, 1}
    assert item["fov"].dtype == torch.bool
    raw = te.original(0)
    assert raw.image.shape == (36, 40, 3) and raw.label.shape == (36, 40)
    assert raw.fov.sum() == 32 * 36                     # the mask file, not a derived FOV
    assert raw.label.max() == 1 and raw.label.sum() == np.count_nonzero(_vessels(36, 40, 0))
    assert tr.original(1).fov.shape == (36, 40)        # missing training mask: derived


def test_drive_missing_label(tmp_path):
    root = make_drive(tmp_path / "DRIVE")
    (root / "test" / "1st_manual" / "02_manual1.gif").unlink()
    with pytest.raises(DatasetError, match=r"02_test.tif \(no 1st_manual/02_manual1.gif\)"):
        build_dataset("drive", str(root), "test")
    with pytest.raises(DatasetError, match="needs --data-root"):
        build_dataset("drive", None, "train")
    with pytest.raises(DatasetError, match="no training/ folder"):
        build_dataset("drive", str(tmp_path), "train")


def test_hrf(tmp_path):
    root = tmp_path / "HRF"
    for cat, ext in (("dr", ".JPG"), ("g", ".jpg"), ("h", ".jpg")):
        for i in range(1, 7):
            stem = f"{i:02d}_{cat}"
            _save(_rgb(24, 36, i), root / "images" / f"{stem}{ext}")
            _save(_vessels(24, 36, i), root / "manual1" / f"{stem}.tif")
            _save(np.full((24, 36), 255, np.uint8), root / "mask" / f"{stem}_mask.tif")
    tr = build_dataset("hrf", str(root), "train", size=(16, 32))
    te = build_dataset("hrf", str(root), "test", size=(16, 32))
    assert len(tr) == 15 and te.ids == ["06_dr", "06_g", "06_h"]
    assert tr.ids[:5] == [f"{i:02d}_dr" for i in range(1, 6)]
    assert te[0]["image"].shape == (3, 16, 32)
    assert get_spec("hrf").default_size == (784, 1168)


def test_folder_binary_and_multiclass(tmp_path):
    root = tmp_path / "mri"
    for i in range(3):
        _save(np.random.default_rng(i).integers(0, 255, (20, 24), dtype=np.uint8), root / "images" / f"c{i}.png")
        lab = np.zeros((20, 24), np.uint8)
        lab[2:8, 3:9] = 1
        lab[10:12, 10:20] = 3
        img = Image.fromarray(lab, mode="L").convert("P")       # palette PNG: raw indices are the classes
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        img.save(root / "masks" / f"c{i}.png")
    ds = build_dataset("folder", str(root), "train", size=(16, 16), in_chans=1)
    assert ds.num_classes == 4 and len(ds) == 3                 # inferred: max + 1
    assert ds[0]["image"].shape == (1, 16, 16)
    assert set(ds[0]["label"].unique().tolist()) <= {0, 1, 3}
    assert ds[0]["fov"].all()
    raw = ds.original(0)
    assert raw.label[2, 3] == 1 and raw.label[10, 15] == 3
    # explicit class count too small: a clear error
    with pytest.raises(DatasetError, match=r"outside 0\.\.2"):
        build_dataset("folder", str(root), "train", num_classes=3).original(0)
    # binary 0/255 masks are inferred as binary
    broot = tmp_path / "bin"
    _save(_rgb(8, 8), broot / "images" / "a.jpg")
    _save(_vessels(8, 8), broot / "masks" / "a_mask.png")
    bds = build_dataset("folder", str(broot), "test", size=(8, 8))
    assert bds.num_classes == 1 and bds[0]["label"].max() == 1


def test_folder_mismatch_and_unreadable(tmp_path):
    root = tmp_path / "f"
    _save(_rgb(8, 8), root / "images" / "a.png")
    _save(_rgb(8, 8), root / "images" / "b.png")
    _save(_vessels(8, 8), root / "masks" / "a.png")
    _save(_vessels(8, 8), root / "masks" / "zzz.png")
    with pytest.raises(DatasetError, match="have no mask with the same name"):
        build_dataset("folder", str(root), "train")
    (root / "images" / "b.png").unlink()
    with pytest.raises(DatasetError, match="have no image with the same name.*zzz.png"):
        build_dataset("folder", str(root), "train")
    (root / "masks" / "zzz.png").unlink()
    (root / "images" / "a.png").write_text("not an image")
    ds = build_dataset("folder", str(root), "train", num_classes=1)
    with pytest.raises(DatasetError, match="cannot read image"):
        ds[0]
    _save(_rgb(8, 10), root / "images" / "a.png")
    with pytest.raises(DatasetError, match=r"label .* is 8x8 \(WxH\) but image .* is 10x8"):
        build_dataset("folder", str(root), "train", num_classes=1)[0]


def test_folder_splits(tmp_path):
    for split in ("train", "val", "test"):
        _save(_rgb(8, 8), tmp_path / split / "images" / f"{split}1.png")
        _save(_vessels(8, 8), tmp_path / split / "masks" / f"{split}1.png")
    assert build_dataset("folder", str(tmp_path), "val", size=(8, 8)).ids == ["val1"]
    assert build_dataset("folder", str(tmp_path), "test", size=(8, 8)).ids == ["test1"]


def test_synthetic():
    a = build_dataset("synthetic", None, "train", size=(64, 64))
    b = build_dataset("synthetic", None, "train", size=(64, 64))
    v = build_dataset("synthetic", None, "val", size=(64, 64))
    assert len(a) == 16 and len(v) == 4
    assert torch.equal(a[3]["image"], b[3]["image"]) and torch.equal(a[3]["label"], b[3]["label"])
    assert not torch.equal(a[0]["image"], v[0]["image"])
    frac = a[0]["label"].float().mean().item()
    assert 0.01 < frac < 0.25
    fov = a[0]["fov"].float().mean().item()
    assert 0.5 < fov < 0.8                                   # a circular FOV
    assert not (a[0]["label"].bool() & ~a[0]["fov"]).any()
    mc = build_dataset("synthetic_multiclass", None, "train", size=(64, 64), limit=3)
    assert mc.num_classes == 8 and mc.in_chans == 1 and len(mc) == 3
    present = set(torch.cat([mc[i]["label"].flatten() for i in range(3)]).unique().tolist())
    assert len(present) >= 7
    areas = torch.bincount(mc[0]["label"].flatten().long(), minlength=8).float()
    assert areas[1] > 10 * max(areas[5].item(), areas[7].item(), 1)    # very different sizes
    rgb = build_dataset("synthetic_multiclass", None, "test", size=(32, 32), in_chans=3)
    assert rgb[0]["image"].shape == (3, 32, 32)


def test_registry_errors():
    assert {"drive", "chase_db1", "hrf", "folder", "synthetic", "synthetic_multiclass"} <= set(list_datasets())
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        get_spec("nope")
    assert get_spec("CHASE").name == "chase_db1"
    with pytest.raises(DatasetError, match="no 'val' split"):
        build_dataset("folder", "/", "val")


@pytest.mark.skipif(not (CHASE / "Image_01L.jpg").exists(), reason=f"CHASE_DB1 not found at {CHASE}")
def test_chase_db1_real():
    tr = build_dataset("chase_db1", str(CHASE), "train", size=(64, 64))
    te = build_dataset("chase_db1", str(CHASE), "test", size=(64, 64))
    assert tr.ids == ["Image_01L", "Image_01R", "Image_02L", "Image_02R", "Image_03L", "Image_03R", "Image_04L",
                      "Image_04R"]
    assert len(te) == 20 and te.ids[0] == "Image_05L" and te.ids[-1] == "Image_14R"
    assert get_spec("chase_db1").default_size == (960, 960)
    raw = tr.original(0)
    assert raw.image.shape == (960, 999, 3) and raw.label.shape == (960, 999)
    assert set(np.unique(raw.label).tolist()) == {0, 1}
    assert 0.05 < raw.label.mean() < 0.12
    assert 0.6 < raw.fov.mean() < 0.72                       # the derived FOV disc
    assert (raw.label.astype(bool) & ~raw.fov).sum() < 0.01 * raw.label.sum()
    assert raw.fov[480, 500] and not raw.fov[0, 0] and not raw.fov[480, 5]
    item = tr[0]
    assert item["image"].shape == (3, 64, 64) and item["label"].shape == (64, 64)
    obs2 = build_dataset("chase_db1", str(CHASE), "train", size=(64, 64), observer=2).original(0)
    assert not np.array_equal(obs2.label, raw.label)


def test_derive_fov_disc():
    h, w = 60, 70
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 30) ** 2 + (xx - 35) ** 2 <= 25 ** 2
    img = np.zeros((h, w, 3), np.uint8)
    img[disc] = (120, 60, 20)
    img[30, 20:30] = (5, 2, 0)                                # a dark vessel inside: must be filled
    img[2, 2] = (200, 200, 200)                               # a speck outside: must be removed
    fov = derive_fov(img)
    assert fov[30, 25] and not fov[2, 2]
    assert (fov ^ disc).sum() <= 0.03 * disc.sum()


# ------------------------------------------------------------------------------------------ augmentation


def _blocky(n=2, h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = (torch.rand(n, h // 4, w // 4, generator=g) > 0.6).repeat_interleave(4, 1).repeat_interleave(4, 2)
    return lab.float()[:, None].repeat(1, 3, 1, 1), lab.to(torch.uint8)


def test_augment_flips_exact():
    image, label = _blocky()
    fov = torch.ones_like(label, dtype=torch.bool)
    img, lab, f = Augment(hflip=1.0)(image, label, fov, torch.Generator().manual_seed(0))
    assert torch.equal(lab, label.flip(-1)) and torch.equal(img, image.flip(-1)) and f.all()
    img, lab, _ = Augment(vflip=1.0)(image, label, fov, torch.Generator().manual_seed(0))
    assert torch.equal(lab, label.flip(-2)) and torch.equal(img, image.flip(-2))


def test_augment_keeps_alignment():
    image, label = _blocky(n=4)
    fov = torch.ones_like(label, dtype=torch.bool)
    aug = Augment(hflip=0.5, vflip=0.5, rotate=30, scale=(0.8, 1.2), shift=0.1)
    img, lab, f = aug(image, label, fov, torch.Generator().manual_seed(1))
    assert img.shape == image.shape and lab.dtype == torch.uint8 and f.dtype == torch.bool
    # the label moved with the image: where the (bilinear) image is clearly 0 or 1, the label agrees
    sure = (img[:, 0] - 0.5).abs() > 0.45
    agree = ((img[:, 0] > 0.5) == lab.bool())[sure].float().mean()
    assert sure.float().mean() > 0.5 and agree > 0.995
    assert not torch.equal(lab, label)
    assert not f.all() and not (lab.bool() & ~f).any()        # pixels from outside: label 0, FOV off


def test_augment_multiclass_ids_and_seed():
    label = torch.randint(0, 8, (2, 16, 16), dtype=torch.uint8).repeat_interleave(2, 1).repeat_interleave(2, 2)
    image = torch.rand(2, 1, 32, 32)
    aug = Augment(hflip=0.5, rotate=10, brightness=0.2, contrast=0.2, gamma=0.2)
    a = aug(image, label, None, torch.Generator().manual_seed(5))
    b = aug(image, label, None, torch.Generator().manual_seed(5))
    c = aug(image, label, None, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert set(a[1].unique().tolist()) <= set(range(8)) and a[2] is None
    assert a[0].min() >= 0 and a[0].max() <= 1


def test_augment_colour_only_keeps_geometry():
    image, label = _blocky()
    img, lab, _ = Augment(brightness=0.3, contrast=0.3, saturation=0.3)(image, label, None,
                                                                         torch.Generator().manual_seed(0))
    assert torch.equal(lab, label) and not torch.equal(img, image)
    with pytest.raises(ValueError, match="hflip is a probability"):
        Augment(hflip=2)


# ------------------------------------------------------------------------------------------ metrics


def test_binary_counts_by_hand():
    pred = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    tgt = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    assert counts(pred, tgt) == (2, 1, 1, 2)
    s = scores_from_counts(2, 1, 1, 2)
    assert s["acc"] == pytest.approx(4 / 6) and s["sen"] == pytest.approx(2 / 3) and s["sp"] == pytest.approx(2 / 3)
    assert s["dice"] == pytest.approx(4 / 6) and s["iou"] == pytest.approx(2 / 4)
    fov = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    assert counts(pred, tgt, fov) == (2, 1, 0, 2)


def test_auc_by_hand():
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(torch.tensor([0.5, 0.5, 0.5, 0.9]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.75)
    assert roc_auc(torch.tensor([0.2, 0.2, 0.2]), torch.tensor([0, 1, 1])) == pytest.approx(0.5)
    assert roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([1, 0])) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([0, 1])) == 0.0
    assert np.isnan(roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([1, 1])))


def test_auc_matches_mann_whitney():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(300, generator=g) * 20).round() / 20           # many ties
    y = torch.rand(300, generator=g) < 0.3 + 0.4 * s
    pos, neg = s[y], s[~y]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).double().sum() + 0.5 * (diff == 0).double().sum()) / diff.numel()
    assert roc_auc(s, y) == pytest.approx(expected.item(), abs=1e-12)


def test_binary_evaluator_conventions():
    ev = BinaryEvaluator(0.5)
    p1 = torch.tensor([[0.9, 0.2], [0.6, 0.1]])
    l1 = torch.tensor([[1, 0], [0, 0]])
    f1 = torch.tensor([[1, 1], [0, 1]])                            # the FP at (1, 0) is outside the FOV
    p2 = torch.tensor([[0.3, 0.8], [0.7, 0.4]])
    l2 = torch.tensor([[1, 1], [0, 0]])
    ev.add(p1, l1, f1, "a")
    ev.add(p2, l2, None, "b")
    r = ev.result()
    # pooled inside the FOV: image a (3 pixels): TP 1, TN 2; image b: TP 1, FN 1, FP 1, TN 1
    assert (r["pooled_fov"]["tp"], r["pooled_fov"]["fp"], r["pooled_fov"]["fn"], r["pooled_fov"]["tn"]) == (2, 1, 1, 3)
    assert r["pooled_fov"]["dice"] == pytest.approx(4 / 6)
    # per image over the whole image: a: TP1 FP1 TN2 -> dice 2/3; b: TP1 FP1 FN1 TN1 -> dice 1/2
    assert r["images"][0]["dice"] == pytest.approx(2 / 3) and r["images"][1]["dice"] == pytest.approx(0.5)
    assert r["per_image"]["mean"]["dice"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert r["images"][0]["sp"] == pytest.approx(2 / 3)


def test_multiclass_evaluator():
    ev = MulticlassEvaluator(3, ["bg", "a", "b"])
    label = torch.tensor([[0, 1, 1], [2, 2, 0]])
    pred = torch.tensor([[0, 1, 0], [2, 1, 0]])
    ev.add(pred, label, None, "x")
    r = ev.result()
    # class a: TP 1, FP 1, FN 1 -> 0.5; class b: TP 1, FN 1 -> 2/3
    assert r["pooled"]["dice"]["a"] == pytest.approx(0.5) and r["pooled"]["dice"]["b"] == pytest.approx(2 / 3)
    assert r["pooled"]["mdice"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert ev.summary()["dice_b"] == pytest.approx(2 / 3)
    ev.add(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), None, "empty")
    assert r["images"][0]["dice"]["bg"] == pytest.approx(0.8)      # bg: TP 2, FP 1, FN 0
    assert np.isnan(ev.result()["images"][1]["mdice"])          # no foreground anywhere: left out
    assert ev.result()["per_image"]["mdice"] == pytest.approx((0.5 + 2 / 3) / 2)
