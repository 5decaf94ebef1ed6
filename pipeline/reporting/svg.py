"""Small inline SVG plots for the per-unit pages.

A report has one page per unit; drawing their plots as SVG text costs microseconds each,
keeps every page one file, and stays sharp at any zoom. The overview figures, of which
there are few, are drawn with matplotlib instead (see :mod:`pipeline.reporting.figures`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

SELECTIVE_COLOUR = "#1f77b4"
OTHER_COLOUR = "#b9cde0"
LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
FONT = "font-family='system-ui, sans-serif' font-size='11'"


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
) -> str:
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

    parts = [_open(width, height, "effect of the unit on each measure, with confidence intervals")]
    for tick in (-limit, -limit / 2, 0.0, limit / 2, limit):
        x = x_of(tick)
        stroke = "#888" if tick == 0 else "#e4e4e4"
        parts.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{height - 38}' stroke='{stroke}'/>")
        parts.append(f"<text x='{x:.1f}' y='{height - 24}' text-anchor='middle' {FONT}>{_fmt(tick)}</text>")
    parts.append(
        f"<text x='{(plot_left + plot_right) / 2:.1f}' y='{height - 6}' text-anchor='middle' {FONT}>"
        "effect (spreads of random directions)</text>"
    )
    for row, name in enumerate(measures):
        y = top + row * row_height
        middle = y + row_height / 2
        parts.append(
            f"<text x='{label_width - 6}' y='{middle + 4:.1f}' text-anchor='end' {FONT}>{html.escape(name)}</text>"
        )
        if not math.isfinite(effect[row]):
            continue
        left, right = sorted((x_of(0.0), x_of(float(np.clip(effect[row], -limit, limit)))))
        colour = SELECTIVE_COLOUR if selective[row] else OTHER_COLOUR
        label = f"{name}: effect {effect[row]:.2f}" + (" (selective)" if selective[row] else "")
        parts.append(
            f"<rect x='{left:.1f}' y='{y + 2}' width='{max(right - left, 0.5):.1f}' height='{row_height - 4}' "
            f"fill='{colour}'><title>{html.escape(label)}</title></rect>"
        )
        if math.isfinite(ci_low[row]) and math.isfinite(ci_high[row]):
            low, high = (x_of(float(np.clip(v, -limit, limit))) for v in (ci_low[row], ci_high[row]))
            parts.append(f"<line x1='{low:.1f}' y1='{middle:.1f}' x2='{high:.1f}' y2='{middle:.1f}' stroke='#222'/>")
            for x in (low, high):
                tick = f"x1='{x:.1f}' y1='{middle - 3:.1f}' x2='{x:.1f}' y2='{middle + 3:.1f}'"
                parts.append(f"<line {tick} stroke='#222'/>")
    parts.append("</svg>")
    return "".join(parts)


def response_lines(
    requested: np.ndarray,
    achieved: np.ndarray,
    labels: Sequence[str],
    *,
    width: int = 320,
    height: int = 220,
) -> str:
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

    parts = [
        _open(width, height, "re-encoded activation against requested activation per sample"),
        f"<rect x='{left}' y='{top}' width='{right - left}' height='{bottom - top}' fill='none' stroke='#ccc'/>",
        f"<polyline points='{point(low, low)} {point(high, high)}' fill='none' stroke='#999' stroke-dasharray='4 3'/>",
        f"<text x='{(left + right) / 2:.0f}' y='{height - 6}' text-anchor='middle' {FONT}>requested</text>",
        f"<text x='10' y='{(top + bottom) / 2:.0f}' text-anchor='middle' transform='rotate(-90 10 "
        f"{(top + bottom) / 2:.0f})' {FONT}>achieved</text>",
        f"<text x='{left}' y='{bottom + 14}' text-anchor='middle' {FONT}>{_fmt(low)}</text>",
        f"<text x='{right}' y='{bottom + 14}' text-anchor='middle' {FONT}>{_fmt(high)}</text>",
        f"<text x='{left - 4}' y='{bottom}' text-anchor='end' {FONT}>{_fmt(low)}</text>",
        f"<text x='{left - 4}' y='{top + 9}' text-anchor='end' {FONT}>{_fmt(high)}</text>",
    ]
    for k, label in enumerate(labels):
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        points = " ".join(
            point(x, y) for x, y in zip(requested[k], achieved[k], strict=True) if math.isfinite(x) and math.isfinite(y)
        )
        parts.append(
            f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='1.5'>"
            f"<title>{html.escape(label)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{html.escape(label)}'>"
    )


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
