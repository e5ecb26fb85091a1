"""The Markdown report of ``train.error_analysis``: a few findings in words, then one table per breakdown.

    text = markdown_report(results, meta)    # results: ErrorTally.result(); meta: the run's details
"""
from __future__ import annotations

import math
from typing import Optional

__all__ = ["markdown_report", "findings"]


def _pct(v: Optional[float]) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


def _num(v: Optional[float]) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.4f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def findings(res: dict) -> list[str]:
    """One sentence per breakdown, from the numbers alone: where the false negatives and positives are."""
    w, rim, fp, fn = res["by_width"], res["by_rim_distance"], res["false_positives"], res["false_negatives"]
    most_fn = max(w, key=lambda b: b["fn"])
    out = [f"Vessel width: {most_fn['bin']} vessels hold {_pct(most_fn['share_of_label'])} of the labelled pixels and "
           f"{_pct(most_fn['share_of_fn'])} of the false negatives; Sen by width: "
           + ", ".join(f"{b['bin']} {_num(b['sen'])}" for b in w) + "."]
    all_px = sum(b["px"] for b in rim)
    if res["pooled_fov"]["fp"]:
        top = max(rim, key=lambda b: b["fp"] / b["px"] if b["px"] else 0.0)
        out.append(f"FOV rim: the {top['bin']} band ({_pct(top['px'] / all_px)} of the FOV) has the most false "
                   f"positives per pixel ({_pct(top['fp'] / top['px'])} of its pixels, {_pct(top['share_of_fp'])} of all FP).")
        out.append(f"False positives: {_pct(fp['near_share'])} lie within {fp['near_px']} px of a labelled vessel (width "
                   f"or boundary drawn differently), {_pct(fp['far_share'])} farther (isolated detections).")
    else:
        out.append("No false positives.")
    out.append("F1 by distance to the rim: " + ", ".join(f"{b['bin']} {_num(b['dice'])}" for b in rim) + ".")
    if res["pooled_fov"]["fn"]:
        out.append(f"False negatives: {_pct(fn['thin_share'])} on thin vessels, {_pct(fn['edge_share'])} on the outermost "
                   f"pixels of wider ones, {_pct(fn['inside_share'])} inside wider ones.")
    if res["images"]:
        im = res["images"][0]
        out.append(f"Worst image: {im['id']} (F1 {_num(im['dice'])}, Sen {_num(im['sen'])}, Sp {_num(im['sp'])}).")
    return out


def markdown_report(res: dict, meta: dict) -> str:
    """The report of one analysis (``res`` from :meth:`train.error_analysis.ErrorTally.result`)."""
    p = res["pooled_fov"]
    lines = [f"# Where the errors are: {meta['model']} on {meta['dataset']} ({meta['split']}, {res['n_images']} images)",
             "", f"Checkpoint `{meta['checkpoint']}` (epoch {meta['epoch']}), "
             + ("the whole native image as input" if meta.get("native") else f"input {meta['size'][0]}x{meta['size'][1]}")
             + f", scored at the original size, threshold {res['threshold']}, pixels inside the FOV of all images "
             f"pooled: F1 {_num(p['dice'])}, Sen {_num(p['sen'])}, Sp {_num(p['sp'])} "
             f"(TP {p['tp']}, FP {p['fp']}, FN {p['fn']}, TN {p['tn']}).", ""]
    lines += ["## Findings", ""] + [f"* {s}" for s in findings(res)]

    def width_row(b: dict) -> list[str]:
        return [b["bin"], str(b["label_px"]), _pct(b["share_of_label"]), str(b["tp"]), str(b["fn"]), _num(b["sen"]),
                _pct(b["share_of_fn"])]

    head = ["width", "label px", "share of label px", "TP", "FN", "Sen", "share of all FN"]
    lines += ["", "## By vessel width (labelled pixels inside the FOV; local width = widest inscribed disc)", ""]
    lines += _table(head, [width_row(b) for b in res["by_width"]])
    lines += ["", "Per width:", ""] + _table(head, [width_row(b) for b in res["width_histogram"]])
    lines += ["", "## By distance to the FOV rim (or the image's edge)", ""]
    lines += _table(["distance", "px", "vessel px", "TP", "FP", "FN", "Sen", "Sp", "F1", "share of FP", "share of FN"],
                    [[b["bin"], str(b["px"]), str(b["vessel_px"]), str(b["tp"]), str(b["fp"]), str(b["fn"]),
                      _num(b["sen"]), _num(b["sp"]), _num(b["dice"]), _pct(b["share_of_fp"]), _pct(b["share_of_fn"])]
                     for b in res["by_rim_distance"]])
    fp, fn = res["false_positives"], res["false_negatives"]
    lines += ["", "## False positives near vs far from a vessel; false negatives by kind", ""]
    lines += _table(["errors", "where", "px", "share"],
                    [["FP", f"within {fp['near_px']} px of a labelled vessel", str(fp["near"]), _pct(fp["near_share"])],
                     ["FP", f"farther than {fp['near_px']} px", str(fp["far"]), _pct(fp["far_share"])],
                     ["FN", "on a thin vessel (<= 2 px)", str(fn["thin"]), _pct(fn["thin_share"])],
                     ["FN", "outermost pixel of a vessel >= 3 px", str(fn["edge"]), _pct(fn["edge_share"])],
                     ["FN", "inside a vessel >= 3 px", str(fn["inside"]), _pct(fn["inside_share"])]])
    lines += ["", "## Per image (inside the FOV), worst F1 first", ""]
    lines += _table(["image", "F1", "Sen", "Sp", "FP", "FN"],
                    [[im["id"], _num(im["dice"]), _num(im["sen"]), _num(im["sp"]), str(im["fp"]), str(im["fn"])]
                     for im in res["images"]])
    return "\n".join(lines) + "\n"
