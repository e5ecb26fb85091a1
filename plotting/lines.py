"""Line charts drawn with Pillow's ImageDraw: axes with "nice" ticks, one coloured line per series, an
optional marker line (e.g. the best epoch), and a legend."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["PanelLayout", "draw_panel", "line_panels", "COLOURS"]

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]

Box = tuple[float, float, float, float]
Series = dict[str, list[tuple[float, float]]]


@dataclass(frozen=True)
class PanelLayout:
    """Where :func:`draw_panel` put things, as ``(x0, y0, x1, y1)`` pixel boxes: the axes (the data area)
    and the legend (None when no series was drawn)."""
    axes: Box
    legend: Optional[Box]


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


_ROW = 14                  # legend row height (px)
_SWATCH, _GAP, _SPACING = 18, 4, 16   # legend: line sample, gap to the name, space between entries


def _legend_rows(draw, font, names: Sequence[str], width: float) -> list[list[tuple[int, str, float]]]:
    """The legend entries ``(series index, name, entry width)`` laid out left to right in rows no wider
    than ``width`` (an entry wider than a row gets a row of its own)."""
    rows: list[list[tuple[int, str, float]]] = [[]]
    used = 0.0
    for i, name in enumerate(names):
        w = _SWATCH + _GAP + draw.textlength(name, font=font)
        if rows[-1] and used + _SPACING + w > width:
            rows.append([])
            used = 0.0
        used += (_SPACING if rows[-1] else 0) + w
        rows[-1].append((i, name, w))
    return rows if rows[0] else []


def _draw_legend(draw, font, rows: list[list[tuple[int, str, float]]], x: float, y: float) -> Box:
    """Draws the legend rows from ``(x, y)`` (top left); returns the box they cover."""
    x_max = x
    for r, row in enumerate(rows):
        xx, yy = x, y + _ROW * r
        for i, name, w in row:
            colour = COLOURS[i % len(COLOURS)]
            draw.line([xx, yy + 6, xx + _SWATCH, yy + 6], fill=colour, width=2)
            draw.text((xx + _SWATCH + _GAP, yy), name, fill=(0, 0, 0), font=font)
            xx += w + _SPACING
        x_max = max(x_max, xx - _SPACING)
    return (x, y, x_max, y + _ROW * len(rows))


def draw_panel(draw, font, box: Box, title: str, series: Series, mark_x: Optional[float] = None,
               empty: str = "no data yet", xlabel: str = "epoch") -> PanelLayout:
    """Draws one line chart into ``box`` of a Pillow ``ImageDraw``: ``series`` maps a name to its
    ``(x, y)`` points (non-finite y are left out), ``mark_x`` draws a grey vertical line there, ``empty``
    is the text shown when no series has a finite point. The legend sits below the x-axis label, outside
    the axes, so it never covers a line (the axes give up the rows it needs)."""
    x0, y0, x1, y1 = box
    left, top, right = x0 + 56, y0 + 26, x1 - 12
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    rows = _legend_rows(draw, font, list(series), right - left) if pts else []
    bottom = y1 - 34 - (_ROW * len(rows) + 4 if rows else 0)
    draw.text((x0 + 56, y0 + 6), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if not pts:
        draw.text((left + 10, top + 10), empty, fill=(120, 120, 120), font=font)
        return PanelLayout((left, top, right, bottom), None)
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
    for i, s in enumerate(series.values()):
        colour = COLOURS[i % len(COLOURS)]
        s = [p for p in s if math.isfinite(p[1])]
        if len(s) > 1:
            draw.line([px(*p) for p in s], fill=colour, width=2)
        for p in s:
            cx, cy = px(*p)
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
    legend = _draw_legend(draw, font, rows, left, bottom + 34)
    return PanelLayout((left, top, right, bottom), legend)


def line_panels(panels: Sequence[tuple[str, Series, str]], path: Path,
                panel_size: tuple[int, int] = (480, 360)) -> Path:
    """Writes side-by-side line charts to ``path``: each panel is ``(title, {name: [(x, y), ...]}, xlabel)``."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = panel_size
    img = Image.new("RGB", (w * max(1, len(panels)), h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (title, series, xlabel) in enumerate(panels):
        draw_panel(draw, font, (i * w, 0, (i + 1) * w, h), title, series, xlabel=xlabel)
    path = Path(path)
    img.save(path)
    return path
