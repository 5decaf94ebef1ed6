"""The run's validation summary: the planted-unit scores plus the world's own ground truth.

The planted units say whether the statistics find known concepts; the world's class
manifest (:func:`pipeline.world.class_manifest`) says whether the classifier's own labelled
units read what tells its classes apart. A unit's label counts as class-defining when its
measure is a part quantity (``part:{name}.{quantity}``) that the manifest lists for a factor
separating at least one pair of classes. Whole-object and background measures never count:
they do not say which part the unit reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.store import read_json, read_parquet, write_json
from pipeline.world import ClassManifest, class_manifest

log = logging.getLogger(__name__)

# The two labels of a unit (pipeline.stats.unit_summary) and the column holding each one's measure.
LABEL_COLUMNS = {"unique": "unique_measure", "tuning": "tuning_measure"}
PART_PREFIX = "part:"


def defining_measures(manifest: ClassManifest) -> set[str]:
    """The part measures the manifest lists for factors that separate at least one pair of classes."""
    defining = {factor for factors in manifest.defining.values() for factor in factors}
    return {
        measure
        for factor in defining
        for measure in manifest.factor_measures.get(factor, {})
        if measure.startswith(PART_PREFIX)
    }


def label_agreement(
    summary: pd.DataFrame, manifest: ClassManifest | None, excluded_units: Iterable[int] = ()
) -> dict[str, dict[str, Any]]:
    """Per label present in ``summary``: how many of its units carry that label
    (``labelled_units``), how many of those name a class-defining part measure
    (``breed_defining_labelled``) and their share (``breed_defining_share``).

    Units in ``excluded_units`` (planted and null units) are left out. Without a manifest the
    count and the share are None; with no labelled unit the share is None.
    """
    own = summary[~summary["unit"].isin(list(excluded_units))]
    measures = defining_measures(manifest) if manifest is not None else set()
    agreement = {}
    for label, column in LABEL_COLUMNS.items():
        if column not in own:
            continue
        labelled = own[column].dropna()
        hits = int(labelled.isin(measures).sum()) if manifest is not None else None
        agreement[label] = {
            "breed_defining_share": hits / len(labelled) if hits is not None and len(labelled) else None,
            "breed_defining_labelled": hits,
            "labelled_units": len(labelled),
        }
    return agreement


def summarise_validation(
    scores_path: str | Path,
    summary_path: str | Path,
    out_path: str | Path,
    *,
    world: str | None,
    regions: str,
) -> dict[str, Any]:
    """Write ``validation/validation.json``: the planted scores of ``scores_path`` as they are,
    plus ``world``: its ``name``, ``regions`` (``segmentation`` or ``saliency``: what the run
    measured in), the manifest's ``defining_measures`` and, per label, the agreement of the
    units of ``summary_path`` with them (:func:`label_agreement`; the units the scores name as
    planted or null are left out).
    """
    scores = read_json(scores_path)
    summary = read_parquet(summary_path)
    planted = {row["unit"] for row in scores.get("units", [])} | {row["unit"] for row in scores.get("null_units", [])}
    manifest = class_manifest(world) if world is not None else None
    agreement = label_agreement(summary, manifest, planted)
    result = {
        **scores,
        "world": {
            "name": world,
            "regions": regions,
            "defining_measures": sorted(defining_measures(manifest)) if manifest is not None else [],
            **agreement,
        },
    }
    for label, figures in agreement.items():
        log.info(
            "%s labels: %s of %d labelled units name a class-defining part measure of world %s",
            label,
            figures["breed_defining_labelled"],
            figures["labelled_units"],
            world,
        )
    write_json(out_path, result)
    return result
