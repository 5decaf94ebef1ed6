"""The geometry of the small inline SVG plots of the unit pages; ``templates/svg.html`` draws them.

A report has one page per unit; its plots as inline SVG cost microseconds each, keep every
page one file, and stay sharp at any zoom. The overview figures, of which there are few,
are drawn with matplotlib instead (see :mod:`pipeline.reporting.figures`). Coordinates are
SVG user units, rounded as they are printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SELECTIVE_COLOUR = "#1f77b4"
OTHER_COLOUR = "#b9cde0"
LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Bars:
    """An effect-bar chart: ``ticks`` (x, label, stroke), ``rows`` (label, y of its text, and the
    bar and whisker of finite effects), the axis extent."""

    width: int
    height: int
    top: int
    axis_y: float
    ticks: list[tuple[str, str, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    label_x: int = 0
    title_x: str = ""


@dataclass
class Lines:
    """A response plot: the frame, the dashed diagonal, axis labels and one polyline per sample."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    diagonal: str
    low: str
    high: str
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (points, colour, label)


def effect_bars(
    measures: Sequence[str],
    effect: np.ndarray,
    ci_low: np.ndarray,
    ci_high: np.ndarray,
    selective: np.ndarray,
    *,
    width: int = 560,
    row_height: int = 16,
    label_width: int = 170,
) -> Bars:
    """Horizontal bars of each measure's effect with its CI as whiskers; selective bars dark.

    NaN effects (a measure undefined for this unit) are listed without a bar.
    """
    effect, ci_low, ci_high = (np.asarray(a, dtype=np.float64) for a in (effect, ci_low, ci_high))
    finite = np.concatenate([a[np.isfinite(a)] for a in (effect, ci_low, ci_high)] + [np.zeros(1)])
    limit = _nice_limit(float(np.abs(finite).max()))
    plot_left, plot_right = label_width, width - 12
    top, height = 8, 8 + row_height * len(measures) + 40

    def x_of(value: float) -> float:
        return plot_left + (value + limit) / (2 * limit) * (plot_right - plot_left)

    chart = Bars(
        width, height, top, height - 38, label_x=label_width - 6, title_x=f"{(plot_left + plot_right) / 2:.1f}"
    )
    for tick in (-limit, -limit / 2, 0.0, limit / 2, limit):
        chart.ticks.append((f"{x_of(tick):.1f}", _fmt(tick), "#888" if tick == 0 else "#e4e4e4"))
    for row, name in enumerate(measures):
        y = top + row * row_height
        middle = y + row_height / 2
        item: dict = {"name": name, "text_y": f"{middle + 4:.1f}", "bar": None, "whisker": None}
        if math.isfinite(effect[row]):
            left, right = sorted((x_of(0.0), x_of(float(np.clip(effect[row], -limit, limit)))))
            item["bar"] = {
                "x": f"{left:.1f}",
                "y": y + 2,
                "width": f"{max(right - left, 0.5):.1f}",
                "height": row_height - 4,
                "colour": SELECTIVE_COLOUR if selective[row] else OTHER_COLOUR,
                "title": f"{name}: effect {effect[row]:.2f}" + (" (selective)" if selective[row] else ""),
            }
            if math.isfinite(ci_low[row]) and math.isfinite(ci_high[row]):
                low, high = (x_of(float(np.clip(v, -limit, limit))) for v in (ci_low[row], ci_high[row]))
                item["whisker"] = {
                    "low": f"{low:.1f}",
                    "high": f"{high:.1f}",
                    "y": f"{middle:.1f}",
                    "y0": f"{middle - 3:.1f}",
                    "y1": f"{middle + 3:.1f}",
                }
        chart.rows.append(item)
    return chart


def response_lines(
    requested: np.ndarray,
    achieved: np.ndarray,
    labels: Sequence[str],
    *,
    width: int = 320,
    height: int = 220,
) -> Lines:
    """Achieved (re-encoded) against requested activation, one line per sample, with y = x dashed.

    ``requested`` and ``achieved`` are [samples, steps].
    """
    requested, achieved = np.asarray(requested, dtype=np.float64), np.asarray(achieved, dtype=np.float64)
    values = np.concatenate([requested[np.isfinite(requested)], achieved[np.isfinite(achieved)]])
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    left, right, top, bottom = 56, width - 10, 10, height - 34

    def point(x: float, y: float) -> str:
        px = left + (x - low) / (high - low) * (right - left)
        py = bottom - (y - low) / (high - low) * (bottom - top)
        return f"{px:.1f},{py:.1f}"

    plot = Lines(
        width, height, left, right, top, bottom, f"{point(low, low)} {point(high, high)}", _fmt(low), _fmt(high)
    )
    for k, label in enumerate(labels):
        points = " ".join(
            point(x, y) for x, y in zip(requested[k], achieved[k], strict=True) if math.isfinite(x) and math.isfinite(y)
        )
        plot.lines.append((points, LINE_COLOURS[k % len(LINE_COLOURS)], label))
    return plot


def _nice_limit(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is at least ``value`` (1 for zero)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * 10**exponent >= value:
            return step * 10**exponent
    return 10.0 ** (exponent + 1)


def _fmt(value: float) -> str:
    return f"{value:.3g}"
