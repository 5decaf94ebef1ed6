"""Which units the report shows, and in what order: shared by the strips stage and the site.

The strips stage renders exactly the units the site will show, so both ask these functions
with the same ``report`` settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Shown:
    """The units of a report: ``ranked`` (every unit), ``pages`` (those with a page), the
    ``galleries`` (per measure, its top units) and ``swept`` (every unit a strip is shown of)."""

    ranked: list[int]
    pages: list[int]
    galleries: dict[str, list[int]]
    swept: list[int]


def shown_units(concepts: pd.DataFrame, *, max_units: int, top_units: int) -> Shown:
    """The report's units: pages for the ``max_units`` strongest, galleries of ``top_units`` per measure."""
    ranked = rank_units(concepts)
    pages = ranked[:max_units]
    galleries = {measure: top_units_for(concepts, measure, top_units) for measure in measure_order(concepts)}
    swept = list(dict.fromkeys([*pages, *(u for units in galleries.values() for u in units)]))
    return Shown(ranked, pages, galleries, swept)


def rank_units(concepts: pd.DataFrame) -> list[int]:
    """Units with selective measures first, each group by decreasing largest |effect|, ties by id."""
    strength = concepts.assign(
        magnitude=concepts["effect"].abs().fillna(0.0),
        selective_magnitude=concepts["effect"].abs().where(concepts["selective"], 0.0),
    )
    per_unit = strength.groupby("unit").agg(selective=("selective_magnitude", "max"), any=("magnitude", "max"))
    order = per_unit.reset_index().sort_values(
        ["selective", "any", "unit"], ascending=[False, False, True], kind="stable"
    )
    return [int(u) for u in order["unit"]]


def measure_order(concepts: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(concepts["measure"]))


def top_units_for(concepts: pd.DataFrame, measure: str, count: int) -> list[int]:
    """The ``count`` units with the largest |effect| on ``measure``, selective ones first."""
    rows = concepts[concepts["measure"] == measure].assign(magnitude=lambda f: f["effect"].abs())
    rows = rows.dropna(subset=["magnitude"]).sort_values(["selective", "magnitude"], ascending=False, kind="stable")
    return [int(u) for u in rows["unit"].head(count)]


def strip_samples(classes: np.ndarray, count: int) -> np.ndarray:
    """Positions of ``count`` samples taking the classes in turn (first of each class, then second, ...)."""
    rank_in_class = pd.Series(classes).groupby(classes).cumcount().to_numpy()
    return np.lexsort((classes, rank_in_class))[:count]


def slug(measure: str) -> str:
    """A file name for a measure (``part:ear.hue`` -> ``part_ear.hue``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", measure)
