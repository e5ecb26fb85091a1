"""Where a binary checkpoint's errors are: ``python -m train.error_analysis --checkpoint CKPT``.

Runs the checkpoint over a split exactly as ``train.evaluate`` does (the same model loading and
inference: the whole native image when the checkpoint was crop-trained, else resized and the
probabilities resized back; scored at the original size, threshold 0.5) and splits the confusion
counts of the pixels inside the FOV, pooled over the split's images, by where the pixels are:

1. **vessel width** -- each labelled vessel pixel gets the local width of the vessel it belongs to
   (:func:`train.distance.vessel_width`: the diameter of the widest disc inside the label that covers
   the pixel, computed at 2x so even widths are exact; capped at ``--max-width``). Bins: thin (<= 2 px),
   medium (3-4 px), wide (>= 5 px); per bin the label pixels, the sensitivity, and the bin's share of
   all false negatives (also per whole width in ``errors.json``);
2. **distance to the FOV rim** -- each FOV pixel's Euclidean distance to the nearest pixel outside the
   FOV or outside the image (a FOV clipped by the frame, as CHASE_DB1's at top and bottom, ends there).
   Bins: 0-10 px, 10-30 px, > 30 px (upper bounds included); per bin the pixels, FP, FN, Sen, Sp, F1
   and the shares of all FP and FN;
3. **false positives near vs far** -- within 2 px of a labelled vessel pixel (the vessel's width or
   boundary drawn differently) or farther (isolated detections: noise, the rim, the optic disc's edge);
   **false negatives** on thin vessels (<= 2 px, all of whose pixels are edge pixels), on the
   outermost pixels of wider vessels (a 4-neighbour is background: the width drawn differently) or
   inside them (a vessel's core missed);
4. **per image** -- F1, Sen, Sp inside the FOV, worst first.

The counts add up to the evaluator's (``train.metrics``) TP, FP, FN, TN over the FOV. Writes
``errors.json`` and ``errors.md`` to ``--out`` (default: ``errors/`` next to the checkpoint for its own
dataset's test split, else ``errors-<dataset>-<split>/``) and prints the Markdown.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from cli.errors import DatasetError, UserError
from train.distance import MAX_RADIUS, distance_to, vessel_width
from train.evaluate import open_split, predict_original, run_inference_cli, split_parser, write_report
from train.error_report import markdown_report
from train.metrics import scores_from_counts

__all__ = ["WIDTH_BINS", "RIM_EDGES", "NEAR_PX", "ErrorTally", "analyse_checkpoint", "main"]

WIDTH_BINS = (("thin (<= 2 px)", 1, 2), ("medium (3-4 px)", 3, 4), ("wide (>= 5 px)", 5, None))
RIM_EDGES = (10, 30)           # distance-to-rim bins: (0, 10], (10, 30], > 30 px
NEAR_PX = 2                    # a false positive within this distance of a labelled vessel is "near"
KINDS = ("tp", "fp", "fn", "tn")


class ErrorTally:
    """Accumulates the error breakdown image by image (binary segmentation, pixels inside the FOV).

    ``add(prob, label, fov, image_id)``: ``prob`` float ``[H, W]`` in [0, 1], ``label`` and ``fov`` bool
    (or 0/1) ``[H, W]``; ``result()`` the pooled breakdown (see the module docstring).
    """

    def __init__(self, threshold: float = 0.5, max_width: int = 12) -> None:
        if not 5 <= max_width <= MAX_RADIUS:
            raise UserError(f"--max-width must be in 5..{MAX_RADIUS} (the wide bin starts at 5 px), got {max_width}")
        self.threshold, self.max_width = float(threshold), int(max_width)
        self.width = {k: torch.zeros(max_width + 1, dtype=torch.int64) for k in ("label", "fn")}
        self.rim = {k: torch.zeros(len(RIM_EDGES) + 1, dtype=torch.int64) for k in KINDS}
        self.fp_near = self.fn_edge = self.fn_inside = 0
        self.images: list[dict] = []

    def add(self, prob: Tensor, label: Tensor, fov: Tensor, image_id: str = "") -> dict:
        label, fov = label.detach().cpu().bool(), fov.detach().cpu().bool()
        pred = prob.detach().cpu() >= self.threshold
        masks = {"tp": pred & label & fov, "fp": pred & ~label & fov, "fn": ~pred & label & fov,
                 "tn": ~pred & ~label & fov}
        width = vessel_width(label, self.max_width)                                     # [H, W] int64
        for key, m in (("label", label & fov), ("fn", masks["fn"])):
            self.width[key] += torch.bincount(width[m], minlength=self.max_width + 1)
        rim = distance_to(~fov, RIM_EDGES[-1], border=True)                             # [H, W], inf far in
        band = torch.bucketize(rim, torch.tensor(RIM_EDGES, dtype=rim.dtype))          # 0, 1, 2 (right-closed)
        for k in KINDS:
            self.rim[k] += torch.bincount(band[masks[k]], minlength=len(RIM_EDGES) + 1)
        self.fp_near += int((masks["fp"] & (distance_to(label, NEAR_PX) <= NEAR_PX)).sum())
        wider = masks["fn"] & (width > WIDTH_BINS[0][2])                              # FN on vessels >= 3 px
        edge = distance_to(~label, 1, border=True) <= 1                                 # a 4-neighbour is background
        self.fn_edge += int((wider & edge).sum())
        self.fn_inside += int((wider & ~edge).sum())
        c = {k: int(m.sum()) for k, m in masks.items()}
        rec = {"id": image_id, **c, **scores_from_counts(c["tp"], c["fp"], c["fn"], c["tn"])}
        self.images.append(rec)
        return rec

    def totals(self) -> dict[str, int]:
        """TP, FP, FN, TN over the FOV pixels of all images (equal to ``train.metrics``' pooled counts)."""
        return {k: int(self.rim[k].sum()) for k in KINDS}

    def by_width(self) -> tuple[list[dict], list[dict]]:
        """(the three width bins, the per-width histogram 1..max_width; the last is ``>= max_width``)."""
        lab, fn = self.width["label"], self.width["fn"]
        all_lab, all_fn = int(lab[1:].sum()), int(fn[1:].sum())

        def row(name: str, lo: int, hi: Optional[int]) -> dict:
            n, f = int(lab[lo:None if hi is None else hi + 1].sum()), int(fn[lo:None if hi is None else hi + 1].sum())
            return {"bin": name, "min_px": lo, "max_px": hi, "label_px": n, "share_of_label": _div(n, all_lab),
                    "tp": n - f, "fn": f, "sen": _div(n - f, n), "share_of_fn": _div(f, all_fn)}

        bins = [row(*b) for b in WIDTH_BINS]
        hist = [row(f">= {w} px" if w == self.max_width else f"{w} px", w, None if w == self.max_width else w)
                for w in range(1, self.max_width + 1)]
        return bins, hist

    def by_rim(self) -> list[dict]:
        """Per distance-to-rim bin: pixels, vessel pixels, TP/FP/FN/TN, Sen, Sp, F1 and shares of FP, FN."""
        tot = self.totals()
        edges = (0,) + RIM_EDGES
        out = []
        for i in range(len(RIM_EDGES) + 1):
            c = {k: int(self.rim[k][i]) for k in KINDS}
            name = f"{edges[i]}-{edges[i + 1]} px" if i < len(RIM_EDGES) else f"> {edges[-1]} px"
            s = scores_from_counts(c["tp"], c["fp"], c["fn"], c["tn"])
            out.append({"bin": name, "px": sum(c.values()), "vessel_px": c["tp"] + c["fn"], **c, "sen": s["sen"],
                        "sp": s["sp"], "dice": s["dice"], "share_of_fp": _div(c["fp"], tot["fp"]),
                        "share_of_fn": _div(c["fn"], tot["fn"])})
        return out

    def result(self) -> dict:
        tot = self.totals()
        bins, hist = self.by_width()
        return {"threshold": self.threshold, "n_images": len(self.images), "max_width": self.max_width,
                "pooled_fov": {**tot, **scores_from_counts(tot["tp"], tot["fp"], tot["fn"], tot["tn"])},
                "by_width": bins, "width_histogram": hist, "by_rim_distance": self.by_rim(),
                "false_positives": {"near_px": NEAR_PX, "near": self.fp_near, "far": tot["fp"] - self.fp_near,
                                    "near_share": _div(self.fp_near, tot["fp"]),
                                    "far_share": _div(tot["fp"] - self.fp_near, tot["fp"])},
                "false_negatives": {"thin": tot["fn"] - self.fn_edge - self.fn_inside, "edge": self.fn_edge,
                                    "inside": self.fn_inside,
                                    "thin_share": _div(tot["fn"] - self.fn_edge - self.fn_inside, tot["fn"]),
                                    "edge_share": _div(self.fn_edge, tot["fn"]),
                                    "inside_share": _div(self.fn_inside, tot["fn"])},
                "images": sorted(self.images, key=lambda r: (r["dice"] != r["dice"], r["dice"]))}


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def analyse_checkpoint(checkpoint, *, dataset: Optional[str] = None, data_root: Optional[str] = None,
                       split: str = "test", out=None, device: str = "auto", threshold: float = 0.5,
                       max_width: int = 12, limit: Optional[int] = None, amp: bool = False,
                       progress: bool = True) -> dict:
    """Runs ``checkpoint`` over the split and writes ``errors.json``, ``errors.md`` (module docstring);
    returns ``{"results", "meta", "table", "out"}``."""
    checkpoint = Path(checkpoint)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    tally = ErrorTally(threshold, max_width)
    sp = open_split(checkpoint, dataset=dataset, data_root=data_root, split=split, device=device, limit=limit)
    if sp.ds.num_classes > 1:
        raise UserError(f"the error analysis is for binary segmentation; {sp.ds.describe()}")
    own_test = sp.same and split == "test" and sp.root == sp.ckpt["data"].get("data_root")
    out = Path(out) if out is not None else checkpoint.parent / ("errors" if own_test else f"errors-{sp.ds.name}-{split}")
    t0 = time.perf_counter()
    it = range(len(sp.ds))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"errors {sp.ds.name}/{split}", unit="img", leave=False, file=sys.stderr)
    for i in it:
        raw = sp.ds.original(i)
        if raw.label is None:
            raise DatasetError(f"{sp.ds.describe()}: image {sp.ds.ids[i]!r} has no label")
        prob = predict_original(sp, raw.image, amp)[0, 0]                            # [h, w]
        tally.add(prob, torch.from_numpy(raw.label), torch.from_numpy(raw.fov), sp.ds.ids[i])
    meta = {"checkpoint": str(checkpoint), "model": sp.ckpt["model"], "epoch": sp.ckpt.get("epoch"),
            "dataset": sp.ds.name, "data_root": sp.root, "split": split, "native": sp.native, "size": sp.size,
            "device": str(sp.device), "seconds": round(time.perf_counter() - t0, 2)}
    return write_report(out, "errors", tally.result(), meta, markdown_report)


def build_parser() -> argparse.ArgumentParser:
    p = split_parser("python -m train.error_analysis", __doc__.split("\n\n")[0], "a best.pt / last.pt of a binary model")
    p.add_argument("--out", help="output folder (default: errors/ next to the checkpoint for its own test split, "
                                 "else errors-<dataset>-<split>/)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--max-width", type=int, default=12, help="widths from this on share one histogram bin")
    p.add_argument("--limit", type=int, help="the first N images only")
    p.add_argument("--amp", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _cli(args: argparse.Namespace) -> None:
    r = analyse_checkpoint(args.checkpoint, dataset=args.dataset, data_root=args.data_root, split=args.split,
                           out=args.out, device=args.device, threshold=args.threshold, max_width=args.max_width,
                           limit=args.limit, amp=args.amp, progress=not args.no_progress)
    print(r["table"])
    print(f"wrote {r['out']}/errors.json, errors.md")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_inference_cli(build_parser(), argv, _cli)


if __name__ == "__main__":
    sys.exit(main())
