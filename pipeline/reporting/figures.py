"""The overview figures, drawn with matplotlib's Agg backend straight to small PNGs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.reporting.svg import OTHER_COLOUR, SELECTIVE_COLOUR
from pipeline.store import atomic_path

DPI = 90
HISTOGRAM_BINS = 30
HISTOGRAM_COLUMNS = 4


def effect_histograms(concepts: pd.DataFrame, path: str | Path) -> None:
    """One small histogram of effects over units per measure; the selective units stacked on top.

    Effects beyond the 1st and 99th percentile over all measures are clipped into the end
    bins, so one extreme unit does not squeeze every other histogram to a single bar.
    """
    measures = list(dict.fromkeys(concepts["measure"]))
    effects = concepts["effect"].to_numpy(dtype=np.float64)
    finite = effects[np.isfinite(effects)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (-1.0, 1.0)
    low, high = min(low, -1e-3), max(high, 1e-3)
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    rows = math.ceil(len(measures) / HISTOGRAM_COLUMNS)
    figure = Figure(figsize=(2.6 * HISTOGRAM_COLUMNS, 0.5 + 1.6 * rows), dpi=DPI)
    # Fixed margins: tight_layout would cost seconds on a grid of this many axes.
    axes = figure.subplots(
        rows,
        HISTOGRAM_COLUMNS,
        squeeze=False,
        sharex=True,
        gridspec_kw={
            "left": 0.05,
            "right": 0.99,
            "top": 1 - 0.3 / (0.5 + 1.6 * rows),
            "bottom": 0.5 / (0.5 + 1.6 * rows),
            "hspace": 0.55,
            "wspace": 0.25,
        },
    )
    by_measure = dict(tuple(concepts.groupby("measure", sort=False)))
    for axis, measure in zip(axes.flat, measures, strict=False):
        group = by_measure[measure]
        values = np.clip(group["effect"].to_numpy(dtype=np.float64), low, high)
        chosen = group["selective"].to_numpy(dtype=bool)
        axis.hist(
            [values[~chosen & np.isfinite(values)], values[chosen & np.isfinite(values)]],
            bins=edges,
            stacked=True,
            color=[OTHER_COLOUR, SELECTIVE_COLOUR],
        )
        axis.set_title(f"{measure} ({int(chosen.sum())} sel.)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.axvline(0, color="#666", linewidth=0.6)
    for axis in list(axes.flat)[len(measures) :]:
        axis.set_visible(False)
    figure.supxlabel("effect (in spreads of random directions)", fontsize=8)
    _save(figure, path)


def selective_counts_chart(counts: pd.DataFrame, path: str | Path) -> None:
    """Horizontal stacked bars: units selective per measure, split by the effect's sign."""
    counts = counts.iloc[::-1]
    figure = Figure(figsize=(6.0, 0.6 + 0.22 * len(counts)), dpi=DPI)
    axis = figure.add_subplot()
    positions = np.arange(len(counts))
    axis.barh(positions, counts["increase"], color=SELECTIVE_COLOUR, label="increases")
    axis.barh(positions, counts["decrease"], left=counts["increase"], color="#ff7f0e", label="decreases")
    axis.set_yticks(positions, counts["measure"], fontsize=7)
    axis.tick_params(axis="x", labelsize=7)
    axis.set_xlabel("selective units", fontsize=8)
    axis.legend(fontsize=7, loc="lower right", frameon=False)
    figure.tight_layout()
    _save(figure, path)


def validation_hits(planted: pd.DataFrame, path: str | Path, label: str = "unique") -> None:
    """Per true measure of the planted units: how many got it as their ``label`` label, another one, or none."""
    correct, measure = planted[f"{label}_correct"], planted[f"{label}_measure"]
    outcome = np.where(correct, "correct", np.where(measure.isna(), "none", "other"))
    counts = pd.crosstab(planted["truth"], outcome).reindex(columns=["correct", "other", "none"], fill_value=0)
    figure = Figure(figsize=(6.0, 0.7 + 0.25 * len(counts)), dpi=DPI)
    axis = figure.add_subplot()
    positions = np.arange(len(counts))
    left = np.zeros(len(counts))
    for column, colour, legend in (
        ("correct", SELECTIVE_COLOUR, f"{label} label: the true measure"),
        ("other", "#ff7f0e", f"{label} label: another measure"),
        ("none", OTHER_COLOUR, f"no {label} label"),
    ):
        axis.barh(positions, counts[column], left=left, color=colour, label=legend)
        left += counts[column].to_numpy()
    axis.set_yticks(positions, counts.index, fontsize=7)
    axis.tick_params(axis="x", labelsize=7)
    axis.set_xlabel("planted units", fontsize=8)
    axis.legend(fontsize=7, loc="lower right", frameon=False)
    figure.tight_layout()
    _save(figure, path)


def _save(figure: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
