"""Training curves as a PNG, drawn with Pillow's ImageDraw (always available; matplotlib is not needed)
by the shared :mod:`plotting` helper.

Left panel: the training loss per epoch. Right panel: the validation metrics (pooled inside the FOV
for binary tasks: F1/Dice, AUC, Sen, Sp; mean Dice and IoU for multi-class) per epoch; the best
epoch is marked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from plotting import draw_panel

__all__ = ["plot_curves"]


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
    draw_panel(draw, font, (0, 0, 480, 360), "training loss", loss)
    draw_panel(draw, font, (480, 0, 960, 360), f"validation (monitor: {monitor})" if val else "validation", val,
               best[-1] if best else None, empty="no validation metrics (yet, or --val none)")
    path = Path(path)
    img.save(path)
    return path
