"""Line charts as PNG files, drawn with Pillow alone (no matplotlib), shared by ``train`` (the training
curves) and ``benchmarks`` (latency and op timings). It imports none of the project's packages, so
both may use it without one reaching into the other.

Public API:
    line_panels(panels, path)      side-by-side line charts written to a PNG
    draw_panel(draw, font, box, ...)   one chart into a Pillow drawing; returns its PanelLayout
    PanelLayout                    where a chart put its axes and its legend
"""
from plotting.lines import PanelLayout, draw_panel, line_panels

__all__ = ["PanelLayout", "draw_panel", "line_panels"]
