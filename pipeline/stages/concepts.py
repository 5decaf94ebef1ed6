"""Stage 7: which units are selective for which image measure, tested against null controls.

With the glass-box classifier of :mod:`pipeline.validation` as the classifier, the
``validation`` rule scores these concepts against the planted truth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.measures import selected_measures
from pipeline.models import load_classifier
from pipeline.stats import unit_concepts, unit_summary
from pipeline.store import read_parquet, write_json, write_parquet
from pipeline.validation import score_validation

PLANTED_ENTRYPOINT = "pipeline.validation:planted_classifier"

log = logging.getLogger(__name__)


def find_concepts(
    changes_path: str | Path,
    nulls_path: str | Path,
    concepts_path: str | Path,
    summary_path: str | Path,
    link_units_path: str | Path,
    *,
    measures: str | list[str],
    n_boot: int,
    q: float,
    min_effect: float,
    seed: int,
) -> None:
    """Write ``concepts/unit_concepts.parquet`` and ``concepts/unit_summary.parquet``."""
    changes = read_parquet(changes_path)
    nulls = read_parquet(nulls_path)
    selected = selected_measures(changes.columns, measures)
    column_p = read_parquet(link_units_path).set_index("unit")["p"]
    concepts = unit_concepts(
        changes, nulls, selected, n_boot=n_boot, seed=seed, q=q, min_effect=min_effect, column_p=column_p
    )
    summary = unit_summary(concepts, changes)
    log.info(
        "concepts: %d units x %d measures tested, %d selective pairs",
        changes["unit"].nunique(),
        len(selected),
        int(concepts["selective"].sum()),
    )
    write_parquet(concepts_path, concepts)
    write_parquet(summary_path, summary)


def is_planted_classifier(spec: Mapping[str, Any]) -> bool:
    """Whether a classifier spec is the glass-box classifier, whose concepts can be validated."""
    return spec.get("kind") == "python" and spec.get("entrypoint") == PLANTED_ENTRYPOINT


def validate_concepts(
    concepts_path: str | Path,
    summary_path: str | Path,
    out_path: str | Path,
    *,
    classifier: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``concepts/validation.json``: the concepts scored against the planted classifier's truth.

    Besides :func:`pipeline.validation.score_validation`'s figures, each planted unit's row
    holds its name and how its true measure fared (``truth_effect``, ``truth_q``,
    ``truth_selective``), and ``null_units`` lists each null unit's selective measures.
    Planted and null units that the run did not sweep are left out and counted in
    ``units_not_swept``.
    """
    if not is_planted_classifier(classifier):
        raise ValueError(f"config key 'classifier': validation needs kind python with entrypoint {PLANTED_ENTRYPOINT}")
    model = load_classifier(classifier)
    concepts = read_parquet(concepts_path)
    summary = read_parquet(summary_path)
    swept = set(summary["unit"].tolist())
    truth = {unit: measure for unit, measure in model.unit_truth.items() if unit in swept}
    if not any(measure is not None for measure in truth.values()):
        planted = [unit for unit, measure in model.unit_truth.items() if measure is not None]
        raise ValueError(f"config key 'units': none of the planted units {min(planted)}-{max(planted)} was swept")

    score = score_validation(summary, concepts, truth)
    by_test = concepts.set_index(["unit", "measure"])
    for row in score["units"]:
        row["name"] = model.unit_names[row["unit"]]
        key = (row["unit"], row["truth"])
        tested = key in by_test.index
        row["truth_effect"] = _finite(by_test.loc[key, "effect"]) if tested else None
        row["truth_q"] = _finite(by_test.loc[key, "q"]) if tested else None
        row["truth_selective"] = bool(by_test.loc[key, "selective"]) if tested else False
    null_tests = concepts[concepts["unit"].isin([unit for unit, measure in truth.items() if measure is None])]
    score["null_units"] = [
        {
            "unit": int(unit),
            "name": model.unit_names[unit],
            "n_tests": len(tests),
            "selective_measures": sorted(tests.loc[tests["selective"], "measure"]),
        }
        for unit, tests in null_tests.groupby("unit", sort=True)
    ]
    score["units_not_swept"] = len(model.unit_truth) - len(truth)
    score["classifier"] = dict(classifier)
    log.info(
        "validation: precision %s, recall %s over %d planted units; null FDR %s over %d tests",
        score["precision"],
        score["recall"],
        score["n_planted"],
        score["null_fdr"],
        score["n_null_tests"],
    )
    write_json(out_path, score)
    return score


def _finite(value: Any) -> float | None:
    return None if pd.isna(value) or not math.isfinite(float(value)) else float(value)
