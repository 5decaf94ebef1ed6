"""How a part's measures relate to the whole object's: the label hierarchy's one definition.

A part measure ``part:P.Q`` has a whole-object counterpart ``object.Q`` when the object is
measured for quantity Q too (shape and appearance quantities; the parts' own ellipse axes
and offsets ``major``, ``minor``, ``dx``, ``dy`` have none). When every part moves with the
whole, each part measure changes about as the object's does, and whichever of them a sweep
happens to move most reliably would win a label that belongs to the whole. So a part
measure may carry a label only where the part changed differently from the whole: its
*relative* measure (:func:`relative_measures`) must itself change. The relative measure of
each quantity kind:

- positions, eccentricity and appearance (``x``, ``y``, ``eccentricity``, ``luminance``,
  ``saturation``, ``redness``, ``entropy``): the part's value minus the object's. Its
  change is the part's change minus the object's (for ``x``, ``y`` it is the part's
  offset from the object's centre, the paper's ``dx``, ``dy``).
- circular quantities (``hue``, ``orientation``): the signed circular difference, so its
  change is the part's turn beyond the object's.
- sizes (``area``): the part's share of the object's area. A part that grows with the
  whole keeps its share; a difference of areas would count every growth of the whole as
  the part's, and a log ratio is undefined for a part that vanishes.

The relative measure is named ``part:P/object.Q``: its quantity is still Q, so changes
along a sweep are computed as Q's are (circularly for hue and orientation).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from pipeline.measures.image import CIRCULAR_QUANTITIES, quantity_of, region_quantities, wrap

PART_PREFIX = "part:"
WHOLE_REGION = "object"
# Sizes: the part's share of the whole, not a difference (see the module docstring).
SHARE_QUANTITIES: frozenset[str] = frozenset({"area"})


def whole_counterpart(measure: str) -> str | None:
    """``"part:tail.y"`` -> ``"object.y"``; None for a measure that is no part's or whose
    quantity the object is not measured for."""
    region, _, quantity = measure.rpartition(".")
    if not region.startswith(PART_PREFIX) or "/" in region:
        return None
    if quantity not in region_quantities(WHOLE_REGION):
        return None
    return f"{WHOLE_REGION}.{quantity}"


def relative_name(measure: str) -> str:
    """``"part:tail.y"`` -> ``"part:tail/object.y"``, the name of its relative measure."""
    region, _, quantity = measure.rpartition(".")
    return f"{region}/{WHOLE_REGION}.{quantity}"


def part_whole_pairs(measures: Iterable[str]) -> dict[str, str]:
    """Each part measure among ``measures`` whose whole-object counterpart is among them too,
    mapped to that counterpart, in the given order."""
    measures = list(measures)
    present = set(measures)
    pairs = {}
    for measure in measures:
        whole = whole_counterpart(measure)
        if whole is not None and whole in present:
            pairs[measure] = whole
    return pairs


def relative_measures(table: pd.DataFrame, measures: Iterable[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """``table`` with one relative column per part measure of ``measures`` that has its
    whole-object counterpart there (see the module docstring), and the map from each such part
    measure to its relative column's name. Rows, index and the other columns are kept."""
    pairs = part_whole_pairs(m for m in measures if m in table.columns)
    columns = {}
    for part, whole in pairs.items():
        quantity = quantity_of(part)
        part_values = table[part].to_numpy(dtype=np.float64)
        whole_values = table[whole].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            if quantity in SHARE_QUANTITIES:
                relative = np.where(whole_values > 0, part_values / whole_values, np.nan)
            elif quantity in CIRCULAR_QUANTITIES:
                relative = wrap(part_values - whole_values, CIRCULAR_QUANTITIES[quantity])
            else:
                relative = part_values - whole_values
        columns[relative_name(part)] = relative
    relative_table = pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)
    return relative_table, {part: relative_name(part) for part in pairs}
