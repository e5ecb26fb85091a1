"""Training curves as a PNG, drawn with Pillow's ImageDraw (always available; matplotlib is not needed).

Left panel: the training loss per epoch. Right panel: the validation metrics (pooled inside the FOV
for binary tasks: F1/Dice, AUC, Sen, Sp; mean Dice and IoU for multi-class) per epoch; the best
epoch is marked.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["plot_curves", "line_panels"]

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 if lo else -0.5, hi + 0.5 if hi else 0.5
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]


def _panel(draw, font, box, title: str, series: dict[str, list[tuple[float, float]]], mark_x: Optional[float] = None,
           empty: str = "no data yet", xlabel: str = "epoch"):
    x0, y0, x1, y1 = box
    left, bottom = x0 + 56, y1 - 34
    top, right = y0 + 26, x1 - 12
    draw.text((x0 + 56, y0 + 6), title, fill=(0, 0, 0), font=font)
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if not pts:
        draw.text((left + 10, top + 10), empty, fill=(120, 120, 120), font=font)
        return
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    xlo, xhi = min(xs), max(max(xs), min(xs) + 1)
    yticks = _nice_ticks(min(ys), max(ys))
    ylo, yhi = yticks[0], yticks[-1]

    def px(x, y):
        return (left + (x - xlo) / (xhi - xlo) * (right - left), bottom - (y - ylo) / (yhi - ylo) * (bottom - top))

    for t in yticks:
        _, yy = px(xlo, t)
        draw.line([left, yy, right, yy], fill=(225, 225, 225))
        draw.text((x0 + 4, yy - 6), f"{t:.3g}", fill=(0, 0, 0), font=font)
    for t in _nice_ticks(xlo, xhi):
        if xlo <= t <= xhi and abs(t - round(t)) < 1e-9:
            xx, _ = px(t, ylo)
            draw.line([xx, bottom, xx, bottom + 4], fill=(0, 0, 0))
            draw.text((xx - 6, bottom + 6), f"{int(round(t))}", fill=(0, 0, 0), font=font)
    draw.text(((left + right) / 2 - 3 * len(xlabel), bottom + 18), xlabel, fill=(0, 0, 0), font=font)
    if mark_x is not None:
        xx, _ = px(mark_x, ylo)
        draw.line([xx, top, xx, bottom], fill=(180, 180, 180), width=1)
    for i, (name, s) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        s = [p for p in s if math.isfinite(p[1])]
        if len(s) > 1:
            draw.line([px(*p) for p in s], fill=colour, width=2)
        for p in s:
            cx, cy = px(*p)
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
        ly = top + 6 + 14 * i
        draw.line([right - 110, ly + 6, right - 92, ly + 6], fill=colour, width=2)
        draw.text((right - 88, ly), name, fill=(0, 0, 0), font=font)


def plot_curves(records: Sequence[dict], path: Path, monitor: str = "dice") -> Path:
    """Writes the curves of ``metrics.jsonl`` records (dicts with ``epoch``, ``train_loss``, ``val``) to ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (960, 360), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    loss = {"train loss": [(r["epoch"], float(r["train_loss"])) for r in records if r.get("train_loss") is not None]}
    val_keys: list[str] = []
    for r in records:
        for k in (r.get("val") or {}):
            if k not in val_keys and (k in (monitor, "auc", "sen", "sp", "mdice", "miou", "dice")):
                val_keys.append(k)
    val_keys.sort(key=lambda k: (k != monitor, k))
    val = {k: [(r["epoch"], float(r["val"][k])) for r in records
               if r.get("val") and r["val"].get(k) is not None] for k in val_keys[:5]}
    best = [r["epoch"] for r in records if r.get("best")]
    _panel(draw, font, (0, 0, 480, 360), "training loss", loss)
    _panel(draw, font, (480, 0, 960, 360), f"validation (monitor: {monitor})" if val else "validation", val,
           best[-1] if best else None, empty="no validation metrics (yet, or --val none)")
    path = Path(path)
    img.save(path)
    return path


def line_panels(panels: Sequence[tuple[str, dict[str, list[tuple[float, float]]], str]], path: Path,
                panel_size: tuple[int, int] = (480, 360)) -> Path:
    """Writes side-by-side line charts to ``path``: each panel is ``(title, {name: [(x, y), ...]}, xlabel)``."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = panel_size
    img = Image.new("RGB", (w * max(1, len(panels)), h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (title, series, xlabel) in enumerate(panels):
        _panel(draw, font, (i * w, 0, (i + 1) * w, h), title, series, xlabel=xlabel)
    path = Path(path)
    img.save(path)
    return path
