"""Evaluate a checkpoint: ``python -m train.evaluate --checkpoint CKPT [--dataset D --data-root P]``.

The model is rebuilt from the checkpoint alone (name, constructor arguments, input size, channels and
normalisation are stored in it); the dataset defaults to the one it was trained on. Each test image is
resized to the training size, run through the model, and its probabilities are resized back to the
image's original size, where the metrics are computed against the original labels (``--at-input-size``
scores at the training size instead).

Writes to ``--out``. The default is the run's own ``eval/`` next to the checkpoint when the evaluation
is the one ``python -m train`` ends with (the checkpoint's dataset, the test split): it replaces that
folder instead of writing a second one with the same metrics. Any other dataset or split goes to
``eval-<dataset>-<split>/`` next to the checkpoint. A folder that already holds an evaluation
(``metrics.json``) keeps only this one: probability maps and overlays it does not write again are removed.

* ``metrics.json`` -- both conventions (``pooled_fov``: pixels inside the FOV of all images pooled;
  ``per_image``: each image over all its pixels, then mean and std), per-image values, and the run's
  details (checkpoint, model, dataset, size, device, versions, date, git sha, the command);
* ``metrics.md`` -- a markdown table laid out like the papers' tables (Acc, Sen, Sp, F1, IoU, AUC; for
  multi-class the per-class Dice and their mean), plus the per-image table;
* ``probs/<id>.png`` -- probability maps (binary; 0-255 grey) or colour-coded class maps (multi-class);
* ``overlays/<id>.png`` -- binary: true positives green, false positives red, false negatives blue on
  black (true negatives), outside the FOV dark grey, as in the papers' figures; multi-class: the
  ground truth (left) and the prediction (right) in class colours over the image. An image whose
  longer side is under 512 px (the synthetic demo's 64x64) is enlarged by a whole factor, each pixel a
  uniform block, until it reaches 512 px, so it can be judged by eye; larger images stay at their size.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cli.args import check_input_size
from cli.errors import UserError, run_cli
from train import checkpoint as ckpt_io
from train.data import SegmentationDataset, build_dataset
from train.data.base import resize_image
from train.distributed import resolve_device
from train.infer import pad_to_multiple
from train.metrics import BINARY_METRICS, METRIC_LABELS, BinaryEvaluator, MulticlassEvaluator, nan_to_none

__all__ = ["load_for_inference", "infer", "Split", "open_split", "predict_original", "write_report",
           "split_parser", "evaluate_checkpoint", "class_palette", "run_inference_cli", "main"]

OVERLAY_COLOURS = {"tp": (0, 200, 0), "fp": (230, 30, 30), "fn": (40, 90, 255), "tn": (0, 0, 0), "out": (48, 48, 48)}
OVERLAY_MIN_SIDE = 512      # overlays of smaller images are enlarged (nearest neighbour) to at least this


def enlarge(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``image`` ``[H', W', ...]`` repeated ``k`` times along both axes, ``k`` the smallest whole factor
    that brings the longer side of ``shape`` (the scene's ``(H, W)``) to :data:`OVERLAY_MIN_SIDE` (1 if it
    is there already)."""
    k = max(1, -(-OVERLAY_MIN_SIDE // max(int(shape[0]), int(shape[1]))))
    return image if k == 1 else np.repeat(np.repeat(image, k, 0), k, 1)


def load_for_inference(path, device: torch.device, expect_model: Optional[str] = None):
    """(model in eval mode on ``device``, checkpoint dict); the checkpoint's structure and the finiteness
    of its weights are checked (:class:`cli.errors.CheckpointError`)."""
    ckpt = ckpt_io.load(path, purpose="inference")
    model = ckpt_io.build_model(ckpt, path, expect_model).to(device).eval()
    return model, ckpt


@torch.no_grad()
def infer(model: nn.Module, images: Tensor, ckpt: dict, device: torch.device, amp: bool = False) -> Tensor:
    """uint8 ``[N, C, H, W]`` images at the model's input size -> probabilities ``[N, K, H, W]`` (float32):
    sigmoid for binary models (K = 1), softmax over the classes otherwise."""
    data = ckpt["data"]
    x = images.to(device).float().div_(255.0)
    x = (x - data.get("mean", 0.5)) / data.get("std", 0.5)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
        out = model(x)
    logits = (out[0] if isinstance(out, (list, tuple)) else out).float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)


@dataclass
class Split:
    """A checkpoint's model, ready for inference, and the dataset split it runs over (``size``: the
    input size; ``native``: crop-trained, so the whole native image is the input)."""
    model: nn.Module
    ckpt: dict
    ds: SegmentationDataset
    device: torch.device
    root: Optional[str]
    same: bool                  # the checkpoint's own dataset
    native: bool
    size: list[int]
    divisor: int


def open_split(checkpoint, *, dataset: Optional[str] = None, data_root: Optional[str] = None, split: str = "test",
               size: Optional[Sequence[int]] = None, device: str = "auto", limit: Optional[int] = None,
               expect_model: Optional[str] = None) -> Split:
    """Loads ``checkpoint`` and builds the split it is evaluated on (the dataset, root and size default to
    the checkpoint's); bad checkpoints, sizes and data raise :class:`cli.errors.UserError`."""
    dev = resolve_device(device)
    model, ckpt = load_for_inference(checkpoint, dev, expect_model)
    data = ckpt["data"]
    same = dataset is None or dataset == data["dataset"]
    name = data["dataset"] if dataset is None else dataset
    root = data_root if data_root is not None else (data.get("data_root") if same else None)
    native = size is None and bool(data.get("native"))     # crop-trained: the whole native image
    divisor = int(getattr(model, "input_divisor", 16))
    size = check_input_size(list(size) if size is not None else data["size"], divisor, ckpt["model"],
                            what="--size" if size is not None else f"the size stored in {str(checkpoint)!r}")
    ds = build_dataset(name, root, split, size=size, in_chans=data["in_chans"], num_classes=data["num_classes"],
                       limit=limit, seed=data.get("seed", 0), observer=data.get("observer", 1))
    if ds.num_classes != data["num_classes"]:
        raise UserError(f"{ds.describe()} has {ds.num_classes} class(es) but the checkpoint's model predicts "
                        f"{data['num_classes']}")
    return Split(model, ckpt, ds, dev, root, same, native, list(size), divisor)


def predict_original(sp: Split, image: np.ndarray, amp: bool = False, at_input_size: bool = False) -> Tensor:
    """uint8 image ``[h, w, C]`` -> probabilities ``[1, K, h, w]`` at the image's own size: the whole
    image zero-padded to the model's multiple (``sp.native``), else resized to ``sp.size`` and the
    probabilities resized back (bilinear); ``at_input_size`` keeps them at ``sp.size`` ``[1, K, H, W]``."""
    h, w = image.shape[:2]
    if sp.native:
        padded, _ = pad_to_multiple(torch.from_numpy(image).permute(2, 0, 1)[None], sp.divisor)
        return infer(sp.model, padded, sp.ckpt, sp.device, amp)[..., :h, :w]
    prob = infer(sp.model, resize_image(image, sp.size)[None], sp.ckpt, sp.device, amp)
    if at_input_size or (h, w) == tuple(sp.size):
        return prob
    return F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)


def class_palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours: class 0 black, then distinct hues."""
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]
    out = [base[i] if i < len(base) else tuple(int(v) for v in np.random.default_rng(i).integers(40, 255, 3))
           for i in range(n)]
    return np.array(out, np.uint8)


def binary_overlay(pred: np.ndarray, label: np.ndarray, fov: np.ndarray) -> np.ndarray:
    img = np.zeros(pred.shape + (3,), np.uint8)
    img[pred & label] = OVERLAY_COLOURS["tp"]
    img[pred & ~label] = OVERLAY_COLOURS["fp"]
    img[~pred & label] = OVERLAY_COLOURS["fn"]
    img[~fov & ~pred & ~label] = OVERLAY_COLOURS["out"]
    return img


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _fmt(v, std=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" if std is None or (isinstance(std, float) and math.isnan(std)) else f"{v:.4f} ± {std:.4f}"


def markdown_table(res: dict, meta: dict) -> str:
    """The paper-style markdown table of a result from :func:`evaluate_checkpoint`."""
    name = f"{meta['model']} (this run)"
    lines = [f"# {meta['model']} on {meta['dataset']} ({meta['split']}, {res['n_images']} images)", "",
             f"Checkpoint `{meta['checkpoint']}` (epoch {meta['epoch']}), input "
             + ("the whole native image (zero-padded to the model's multiple), " if meta.get("native") else
                f"{meta['size'][0]}x{meta['size'][1]}, ") +
             f"metrics at the {'input' if meta['at_input_size'] else 'original image'} size"
             + (f", threshold {res['threshold']}" if "threshold" in res else "") + f", device {meta['device']}.", ""]
    if "pooled_fov" in res:
        cols = [METRIC_LABELS[k] for k in BINARY_METRICS]
        lines += ["| Method | Convention | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        p, m, s = res["pooled_fov"], res["per_image"]["mean"], res["per_image"]["std"]
        lines.append(f"| {name} | pixels of all images pooled, inside the FOV | "
                     + " | ".join(_fmt(p[k]) for k in BINARY_METRICS) + " |")
        lines.append(f"| {name} | per image over the whole image, mean ± std | "
                     + " | ".join(_fmt(m[k], s[k]) for k in BINARY_METRICS) + " |")
        lines += ["", "Overlays: green = true positive, red = false positive, blue = false negative, "
                  "black = true negative, dark grey = outside the FOV.", "", "## Per image (whole image)", "",
                  "| Image | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for im in res["images"]:
            lines.append(f"| {im['id']} | " + " | ".join(_fmt(im[k]) for k in BINARY_METRICS) + " |")
    else:
        classes = res["classes"]
        pooled, per = res["pooled"], res["per_image"]
        lines += ["| Method | Convention | " + " | ".join(classes[1:]) + " | mean Dice (fg) | mean IoU (fg) |",
                  "|---|---|" + "---|" * (len(classes) + 1)]
        lines.append(f"| {name} | Dice, pixels of all images pooled | "
                     + " | ".join(_fmt(pooled["dice"][c]) for c in classes[1:])
                     + f" | {_fmt(pooled['mdice'])} | {_fmt(pooled['miou'])} |")
        lines.append(f"| {name} | Dice per image, then mean | "
                     + " | ".join(_fmt(per["dice"][c]) for c in classes[1:])
                     + f" | {_fmt(per['mdice'])} | {_fmt(per['miou'])} |")
        lines += ["", f"Background Dice (pooled): {_fmt(pooled['dice'][classes[0]])}; pixel accuracy (pooled): "
                  f"{_fmt(pooled['acc'])}. Means are over the foreground classes; a class absent from both label "
                  "and prediction of an image is left out of that image's mean.", "",
                  "## Per image", "", "| Image | " + " | ".join(classes[1:]) + " | mean Dice |",
                  "|---|" + "---|" * len(classes)]
        for im in res["images"]:
            lines.append(f"| {im['id']} | " + " | ".join(_fmt(im["dice"][c]) for c in classes[1:])
                         + f" | {_fmt(im['mdice'])} |")
    return "\n".join(lines) + "\n"


def default_out(checkpoint: Path, own_test: bool, dataset: str, split: str) -> Path:
    """Where an evaluation goes without ``--out``: the run's ``eval/`` next to the checkpoint for the one
    ``python -m train`` ends with (``own_test``: the checkpoint's dataset, the test split), else
    ``eval-<dataset>-<split>/`` next to it."""
    return checkpoint.parent / ("eval" if own_test else f"eval-{dataset}-{split}")


def _earlier_images(out: Path) -> set[Path]:
    """The probability maps and overlays of an earlier evaluation in ``out`` (a folder with a
    ``metrics.json``); nothing for any other folder, whose files are not ours to remove."""
    if not (out / "metrics.json").is_file():
        return set()
    return {p for sub in ("probs", "overlays") for p in (out / sub).glob("*.png")}


def evaluate_checkpoint(checkpoint, *, dataset: Optional[str] = None, data_root: Optional[str] = None,
                        split: str = "test", size: Optional[Sequence[int]] = None, out=None, device: str = "auto",
                        threshold: float = 0.5, save_images: bool = True, progress: bool = True,
                        limit: Optional[int] = None, expect_model: Optional[str] = None, at_input_size: bool = False,
                        amp: bool = False) -> dict:
    """Evaluates ``checkpoint`` and writes the files listed in the module docstring; returns
    ``{"results": ..., "table": markdown, "out": dir}``."""
    checkpoint = Path(checkpoint)
    sp = open_split(checkpoint, dataset=dataset, data_root=data_root, split=split, size=size, device=device,
                    limit=limit, expect_model=expect_model)
    model, ckpt, ds, dev, root, native, size = sp.model, sp.ckpt, sp.ds, sp.device, sp.root, sp.native, sp.size
    data = ckpt["data"]
    multiclass = ds.num_classes > 1
    own_test = sp.same and split == "test" and root == data.get("data_root")
    out = Path(out) if out is not None else default_out(checkpoint, own_test, ds.name, split)
    out.mkdir(parents=True, exist_ok=True)
    stale = _earlier_images(out)
    ev = MulticlassEvaluator(ds.num_classes, data.get("class_names") or ds.class_names) if multiclass \
        else BinaryEvaluator(threshold)
    palette = class_palette(ds.num_classes)
    t0 = time.perf_counter()
    it = range(len(ds))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"evaluate {ds.name}/{split}", unit="img", leave=False, file=sys.stderr)
    for i in it:
        raw = ds.original(i)
        prob = predict_original(sp, raw.image, amp, at_input_size)     # [1, K, h, w] (or [1, K, H, W])
        if at_input_size and not native:
            item = ds[i]
            label, fov = item["label"].to(dev), item["fov"].to(dev)
        else:
            label = torch.from_numpy(raw.label).to(dev)
            fov = torch.from_numpy(raw.fov).to(dev)
        iid = ds.ids[i]
        if multiclass:
            pred = prob[0].argmax(0)
            ev.add(pred, label, fov, iid)
            if save_images:
                p, lab = pred.cpu().numpy(), label.cpu().numpy()
                grey = raw.image.mean(2) if not at_input_size else ds[i]["image"].float().mean(0).numpy()
                grey = np.repeat(grey[..., None], 3, 2)
                blend = lambda cls: (0.55 * grey + 0.45 * palette[cls]).clip(0, 255).astype(np.uint8)  # noqa: E731
                _save_png(palette[p], out / "probs" / f"{iid}.png")
                overlay = np.concatenate([blend(lab), blend(p)], 1)
                _save_png(enlarge(overlay, lab.shape), out / "overlays" / f"{iid}.png")
        else:
            p = prob[0, 0]
            ev.add(p, label, fov, iid)
            if save_images:
                pn = p.cpu().numpy()
                _save_png(np.round(pn * 255).astype(np.uint8), out / "probs" / f"{iid}.png")
                overlay = binary_overlay(pn >= threshold, label.cpu().numpy().astype(bool), fov.cpu().numpy())
                _save_png(enlarge(overlay, pn.shape), out / "overlays" / f"{iid}.png")
    written = {out / sub / f"{iid}.png" for sub in ("probs", "overlays") for iid in ds.ids} if save_images else set()
    for path in stale - written:
        path.unlink(missing_ok=True)
    res = ev.result()
    meta = {"checkpoint": str(checkpoint), "model": ckpt["model"], "model_kwargs": ckpt.get("model_kwargs"),
            "epoch": ckpt.get("epoch"), "dataset": ds.name, "data_root": root, "split": split, "size": list(size),
            "at_input_size": at_input_size and not native, "native": native, "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
            "seconds": round(time.perf_counter() - t0, 2)}
    return write_report(out, "metrics", res, meta, markdown_table)


def write_report(out: Path, stem: str, res: dict, meta: dict, render: Callable[[dict, dict], str]) -> dict:
    """Adds the provenance (versions, git sha, date, command) to ``meta``, writes ``out/<stem>.json``
    (``{"meta", "results"}``, NaN as null) and ``out/<stem>.md`` (``render(res, meta)``); returns
    ``{"results", "meta", "table", "out"}``."""
    from cli.provenance import command_line, git_sha, utc_timestamp, versions
    meta.update({"versions": versions(), "git_sha": git_sha(), "date": utc_timestamp(), "command": command_line()})
    table = render(res, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(nan_to_none({"meta": meta, "results": res}), indent=2) + "\n")
    (out / f"{stem}.md").write_text(table)
    return {"results": res, "meta": meta, "table": table, "out": str(out)}


def split_parser(prog: str, description: str, checkpoint_help: str) -> argparse.ArgumentParser:
    """A parser with the arguments that pick a checkpoint and the split it runs over: ``--checkpoint``,
    ``--dataset``, ``--data-root``, ``--split`` (``train.evaluate``, ``train.error_analysis``)."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", help="dataset folder (default: the checkpoint's, for the same dataset)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    return p


def build_parser() -> argparse.ArgumentParser:
    p = split_parser("python -m train.evaluate", __doc__.split("\n\n")[0], "a best.pt / last.pt written by python -m train")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input size (default: the training size)")
    p.add_argument("--out", help="output folder (default: the run's eval/ for its own dataset's test split, "
                                 "else eval-<dataset>-<split>, next to the checkpoint)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--model", help="fail unless the checkpoint holds this model")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument("--at-input-size", action="store_true", help="score at the training size, not the original")
    p.add_argument("--amp", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--no-images", action="store_true", help="skip the probability maps and overlays")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_inference_cli(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                      body: Callable[[argparse.Namespace], None]) -> int:
    """The ``main`` of ``train.evaluate`` and ``train.predict``: parses ``argv``, checks ``--threshold``,
    then runs ``body(args)`` through :func:`cli.errors.run_cli` (0, or 2 after one ``error:`` line)."""
    args = parser.parse_args(argv)

    def checked() -> None:
        if not 0.0 < args.threshold < 1.0:
            raise UserError(f"--threshold must be in (0, 1), got {args.threshold}")
        body(args)

    return run_cli(checked)


def _cli(args: argparse.Namespace) -> None:
    r = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_root=args.data_root, split=args.split,
                            size=args.size, out=args.out, device=args.device, threshold=args.threshold,
                            save_images=not args.no_images, progress=not args.no_progress, limit=args.limit,
                            expect_model=args.model, at_input_size=args.at_input_size, amp=args.amp)
    print(r["table"])
    print(f"wrote {r['out']}/metrics.json, metrics.md, probs/, overlays/")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_inference_cli(build_parser(), argv, _cli)


if __name__ == "__main__":
    sys.exit(main())
