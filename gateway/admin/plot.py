"""The delivery-rate plot as inline SVG coordinates: pure arithmetic, rendered by the status template."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.admin.history import RatePoint

WIDTH, HEIGHT, MARGIN = 640, 180, 30


@dataclass(frozen=True, slots=True)
class PlotPoint:
    """One point of the plot: SVG coordinates and the figures it stands for."""

    x: float
    y: float
    events: int
    rate: float
    end: float


@dataclass(frozen=True, slots=True)
class Plot:
    """What the template draws: points, the polyline through them, the y-axis maximum."""

    points: list[PlotPoint]
    polyline: str
    max_rate: float
    span: float
    width: int = WIDTH
    height: int = HEIGHT
    margin: int = MARGIN


def build_plot(points: Sequence[RatePoint], now: float, span: float) -> Plot:
    """Map rates to an x axis of the last ``span`` seconds (right edge ``now``) and a y axis from 0."""
    top = max([p.rate for p in points] + [1.0])
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    plotted = []
    for p in points:
        x = MARGIN + inner_w * max(0.0, 1.0 - (now - p.end) / span)
        y = MARGIN + inner_h * (1.0 - p.rate / top)
        plotted.append(PlotPoint(round(x, 1), round(y, 1), p.events, p.rate, p.end))
    polyline = " ".join(f"{p.x},{p.y}" for p in plotted)
    return Plot(plotted, polyline, top, span)
