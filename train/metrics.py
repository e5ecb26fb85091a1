"""Segmentation metrics of the retinal-vessel and lumbar-MRI literature, exact and without sklearn.

Binary (threshold 0.5 on the probability), from the confusion counts TP, FP, FN, TN::

    Acc = (TP + TN) / all    Sen = TP / (TP + FN)    Sp = TN / (TN + FP)
    F1 = Dice = 2 TP / (2 TP + FP + FN)               IoU = TP / (TP + FP + FN)
    AUC = area under the ROC curve of the probabilities (exact: every distinct score is a threshold,
          ties handled as sklearn's ``roc_auc_score``: one step per group of equal scores)

Two conventions are used in papers and both are reported, labelled:

* ``pooled_fov`` -- the pixels inside the field of view of all test images are pooled into one
  confusion matrix and one ROC curve (DRIVE/CHASE_DB1/HRF papers, HybridNetSeg's Table 3).
* ``per_image`` -- each image is scored over all its pixels (FOV ignored, background included), then
  the scores are averaged over images (mean and standard deviation).

Undefined values (Sen of an image with no vessel, AUC with one class only, Dice/IoU when neither the
label nor the prediction has the class) are NaN, left out of the means, and written as ``null`` in JSON.

Multi-class (argmax of the logits): per-class Dice and IoU and their mean over the foreground classes
(all but class 0), pooled over the pixels of all images and per image then averaged.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["BINARY_METRICS", "METRIC_LABELS", "counts", "scores_from_counts", "roc_auc", "BinaryEvaluator",
           "MulticlassEvaluator", "nan_to_none"]

BINARY_METRICS = ("acc", "sen", "sp", "dice", "iou", "auc")
METRIC_LABELS = {"acc": "Acc", "sen": "Sen", "sp": "Sp", "dice": "F1 (Dice)", "iou": "IoU", "auc": "AUC",
                 "mdice": "mean Dice", "miou": "mean IoU"}


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def counts(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` of bool tensors ``pred`` and ``target`` (restricted to ``mask``)."""
    pred, target = pred.bool(), target.bool()
    if mask is not None:
        pred, target = pred[mask.bool()], target[mask.bool()]
    tp = int((pred & target).sum())
    fp = int((pred & ~target).sum())
    fn = int((~pred & target).sum())
    tn = int(pred.numel()) - tp - fp - fn
    return tp, fp, fn, tn


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Acc, Sen, Sp, Dice, IoU from the confusion counts (NaN where a denominator is 0)."""
    return {"acc": _div(tp + tn, tp + fp + fn + tn), "sen": _div(tp, tp + fn), "sp": _div(tn, tn + fp),
            "dice": _div(2 * tp, 2 * tp + fp + fn), "iou": _div(tp, tp + fp + fn)}


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Exact area under the ROC curve (NaN unless both classes occur).

    Sorts the scores once (descending), takes the cumulative TP and FP counts at the last index of
    every group of equal scores and integrates with the trapezoid rule, as sklearn does; equal to the
    Mann-Whitney U statistic with ties counted 1/2.
    """
    s = scores.detach().flatten().float()
    y = labels.detach().flatten().bool()
    n = s.numel()
    pos = int(y.sum())
    neg = n - pos
    if pos == 0 or neg == 0:
        return float("nan")
    s, order = torch.sort(s, descending=True, stable=True)
    y = y[order]
    del order
    last = torch.nonzero(s[1:] != s[:-1]).flatten()
    last = torch.cat([last, torch.tensor([n - 1], device=last.device)])
    tps = torch.cumsum(y, 0, dtype=torch.int64)[last].double()
    fps = (last + 1).double() - tps
    tpr = torch.cat([tps.new_zeros(1), tps / pos])
    fpr = torch.cat([fps.new_zeros(1), fps / neg])
    return float(torch.trapezoid(tpr, fpr))


def _nanmean(values: Sequence[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")


def _nanstd(values: Sequence[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    if len(v) < 2:
        return float("nan") if not v else 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def nan_to_none(obj):
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


class BinaryEvaluator:
    """Accumulates binary predictions image by image and reports both conventions.

    ``add(prob, label, fov, image_id)``: ``prob`` float ``[H, W]`` in [0, 1], ``label`` and ``fov`` bool
    (or 0/1) ``[H, W]`` on any device. ``result()`` gives ``{"pooled_fov": {...}, "per_image": {"mean",
    "std"}, "images": [...]}``; ``summary()`` the flat pooled-FOV dict used for model selection.
    ``auc=False`` skips the AUC (no scores are kept).
    """

    def __init__(self, threshold: float = 0.5, auc: bool = True) -> None:
        self.threshold, self.auc = float(threshold), auc
        self.pooled = [0, 0, 0, 0]
        self.scores: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.images: list[dict] = []

    def add(self, prob: Tensor, label: Tensor, fov: Optional[Tensor] = None, image_id: str = "") -> dict:
        label = label.bool()
        fov = torch.ones_like(label) if fov is None else fov.bool()
        pred = prob >= self.threshold
        c_fov = counts(pred, label, fov)
        for k in range(4):
            self.pooled[k] += c_fov[k]
        if self.auc:
            self.scores.append(prob[fov].float().cpu())
            self.labels.append(label[fov].cpu())
        whole = scores_from_counts(*counts(pred, label))
        whole["auc"] = roc_auc(prob, label) if self.auc else float("nan")
        rec = {"id": image_id, **whole}
        self.images.append(rec)
        return rec

    def merge(self, other: "BinaryEvaluator") -> None:
        """Adds another evaluator's images (DDP: the shards of the other ranks)."""
        self.pooled = [a + b for a, b in zip(self.pooled, other.pooled)]
        self.scores += other.scores
        self.labels += other.labels
        self.images += other.images

    def pooled_fov(self) -> dict[str, float]:
        out = scores_from_counts(*self.pooled)
        out["auc"] = (roc_auc(torch.cat(self.scores), torch.cat(self.labels))
                      if self.auc and self.scores else float("nan"))
        return out

    def per_image(self) -> dict[str, dict[str, float]]:
        return {"mean": {k: _nanmean([im[k] for im in self.images]) for k in BINARY_METRICS},
                "std": {k: _nanstd([im[k] for im in self.images]) for k in BINARY_METRICS}}

    def summary(self) -> dict[str, float]:
        return self.pooled_fov()

    def result(self) -> dict:
        tp, fp, fn, tn = self.pooled
        return {
            "threshold": self.threshold,
            "n_images": len(self.images),
            "pooled_fov": {**self.pooled_fov(), "tp": tp, "fp": fp, "fn": fn, "tn": tn},
            "per_image": self.per_image(),
            "images": self.images,
        }

    def state(self) -> dict:
        return {"pooled": self.pooled, "scores": self.scores, "labels": self.labels, "images": self.images}

    def load_state(self, st: dict) -> "BinaryEvaluator":
        self.pooled, self.scores, self.labels, self.images = st["pooled"], st["scores"], st["labels"], st["images"]
        return self


class MulticlassEvaluator:
    """Per-class Dice/IoU for multi-class predictions.

    ``add(pred, label, fov, image_id)``: ``pred`` and ``label`` integer class ids ``[H, W]``; pixels
    outside ``fov`` (if given) are left out. ``result()``: ``{"pooled": {...}, "per_image": {...},
    "images": [...]}``; ``summary()`` the flat pooled dict (``mdice``, ``miou``, ``acc``, ``dice_<class>``).
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None) -> None:
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else [f"class{c}" for c in range(num_classes)]
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.images: list[dict] = []

    def _confusion(self, pred: Tensor, label: Tensor, fov: Optional[Tensor]) -> Tensor:
        c = self.num_classes
        pred, label = pred.long().flatten(), label.long().flatten()
        if fov is not None:
            keep = fov.bool().flatten()
            pred, label = pred[keep], label[keep]
        return torch.bincount(label * c + pred, minlength=c * c).view(c, c).cpu()   # rows: truth

    def _scores(self, conf: Tensor) -> dict:
        tp = conf.diag().double()
        fp = conf.sum(0).double() - tp
        fn = conf.sum(1).double() - tp
        dice, iou = {}, {}
        for c, name in enumerate(self.class_names):
            dice[name] = _div(2 * tp[c].item(), (2 * tp[c] + fp[c] + fn[c]).item())
            iou[name] = _div(tp[c].item(), (tp[c] + fp[c] + fn[c]).item())
        fg = self.class_names[1:]
        return {"acc": _div(tp.sum().item(), conf.sum().item()), "dice": dice, "iou": iou,
                "mdice": _nanmean([dice[n] for n in fg]), "miou": _nanmean([iou[n] for n in fg])}

    def add(self, pred: Tensor, label: Tensor, fov: Optional[Tensor] = None, image_id: str = "") -> dict:
        self.conf += self._confusion(pred, label, fov)
        rec = {"id": image_id, **self._scores(self._confusion(pred, label, None))}
        self.images.append(rec)
        return rec

    def merge(self, other: "MulticlassEvaluator") -> None:
        self.conf += other.conf
        self.images += other.images

    def summary(self) -> dict[str, float]:
        s = self._scores(self.conf)
        out = {"acc": s["acc"], "mdice": s["mdice"], "miou": s["miou"]}
        out.update({f"dice_{n}": v for n, v in s["dice"].items()})
        return out

    def result(self) -> dict:
        per = {"dice": {n: _nanmean([im["dice"][n] for im in self.images]) for n in self.class_names},
               "iou": {n: _nanmean([im["iou"][n] for im in self.images]) for n in self.class_names},
               "mdice": _nanmean([im["mdice"] for im in self.images]),
               "miou": _nanmean([im["miou"] for im in self.images]),
               "acc": _nanmean([im["acc"] for im in self.images])}
        return {"n_images": len(self.images), "classes": self.class_names, "pooled": self._scores(self.conf),
                "per_image": per, "images": self.images}

    def state(self) -> dict:
        return {"conf": self.conf, "images": self.images}

    def load_state(self, st: dict) -> "MulticlassEvaluator":
        self.conf, self.images = st["conf"], st["images"]
        return self
