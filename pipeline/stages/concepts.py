"""Stage 7: which units are selective for which image measure, tested against null controls.

With the glass-box classifier of :mod:`pipeline.validation` as the classifier, the
``validation`` rule scores these concepts against the planted truth.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.measures import selected_measures
from pipeline.stages.common import ModelSetup, render_images
from pipeline.stages.perturb import sweep_domain
from pipeline.stages.samples import Samples
from pipeline.stats import (
    beyond_whole,
    held_out_residuals,
    tuning_beyond_whole,
    unit_concepts,
    unit_redundancy,
    unit_summary,
    unit_tuning,
    with_hierarchy,
    with_residual_tuning,
)
from pipeline.store import read_parquet, read_zarr, write_json, write_parquet
from pipeline.validation import (
    DEVELOPMENT_DRAWS,
    FUNCTION_SETS,
    PLANTED_ENTRYPOINT,
    glass_box_readings,
    is_planted_classifier,
    planted_agreement,
    score_validation,
    tuning_truths,
    unique_truths,
)

# How closely the planted activations recomputed from the re-rendered samples must follow the
# layer's: renders are quantised to 8 bits here, so not exactly.
MIN_PLANTED_AGREEMENT = 0.99

log = logging.getLogger(__name__)


def find_concepts(
    changes_path: str | Path,
    nulls_path: str | Path,
    concepts_path: str | Path,
    summary_path: str | Path,
    link_units_path: str | Path,
    link_path: str | Path,
    ranges_path: str | Path,
    latents_path: str | Path,
    activations_path: str | Path,
    observed_path: str | Path,
    tuning_path: str | Path,
    *,
    measures: str | list[str],
    n_boot: int,
    q: float,
    min_effect: float,
    seed: int,
    min_control_slope: float,
    min_association: float,
    permutations: int,
    redundancy_folds: int,
    workers: int = 1,
) -> None:
    """Write ``concepts/unit_concepts.parquet`` (the sweeps' tests), ``concepts/unit_tuning.parquet``
    (the association with the measures across natural samples) and ``concepts/unit_summary.parquet``;
    the bootstrap of the effects' intervals runs on ``workers`` threads.

    Both tables carry the label hierarchy's columns (:func:`pipeline.stats.beyond_whole`,
    :func:`pipeline.stats.tuning_beyond_whole`): whether each part measure changed beyond
    the whole object's, which decides whether it may carry a label. The sweeps' tests also
    carry the association of each unit's residual with each measure across the same natural
    samples (:func:`pipeline.stats.with_residual_tuning`; the residual is what the rest of
    the layer does not predict of the unit, :func:`pipeline.stats.held_out_residuals`, in
    ``redundancy_folds`` folds), which decides which of the sweep's changes the unique label
    may name. The summary also says where each unit's sweeps end against the generator's latent domain
    (:func:`pipeline.stages.perturb.sweep_domain`, from the link of ``link_path``, the ranges
    of ``ranges_path`` and the samples of ``latents_path``)."""
    changes = read_parquet(changes_path)
    nulls = read_parquet(nulls_path)
    selected = selected_measures(changes.columns, measures)
    column_p = read_parquet(link_units_path).set_index("unit")["p"]
    observed = read_parquet(observed_path)
    natural_scale = observed[[m for m in selected if m in observed.columns]].std()
    concepts = unit_concepts(
        changes,
        nulls,
        selected,
        n_boot=n_boot,
        seed=seed,
        q=q,
        min_effect=min_effect,
        column_p=column_p,
        natural_scale=natural_scale,
        workers=workers,
    )
    hierarchy = beyond_whole(changes, nulls, selected, seed=seed, q=q, min_effect=min_effect, column_p=column_p)
    concepts = with_hierarchy(concepts, hierarchy)
    units = np.sort(changes["unit"].unique())
    activations, _ = read_zarr(activations_path, ["r"])
    layer = activations["r"][observed["sample"].to_numpy()]
    association = {
        "r": layer[:, units],
        "units": units,
        "classes": observed["class"].to_numpy(),
        "observed": observed,
        "measures": selected,
        "permutations": permutations,
        "seed": seed,
        "q": q,
        "min_association": min_association,
    }
    tuning = with_hierarchy(unit_tuning(**association), tuning_beyond_whole(**association))
    residuals, r2 = held_out_residuals(layer, folds=redundancy_folds, seed=seed)
    residual_association = association | {"r": residuals[:, units]}
    concepts = with_residual_tuning(
        concepts,
        with_hierarchy(unit_tuning(**residual_association), tuning_beyond_whole(**residual_association)),
    )
    redundancy = unit_redundancy(r2, units)
    domain = sweep_domain(Samples(latents_path, activations_path), link_path, ranges_path, units)
    summary = unit_summary(
        concepts,
        changes,
        tuning,
        redundancy,
        domain,
        q=q,
        min_effect=min_effect,
        min_control_slope=min_control_slope,
        min_association=min_association,
    )
    log.info(
        "concepts: %d units x %d measures tested, %d selective pairs; %d of %d units controllable; "
        "%d unique and %d tuning labels; %d units' sweeps stay in the latent domain on every sample",
        len(units),
        len(selected),
        int(concepts["selective"].sum()),
        int(summary["controllable"].sum()),
        len(summary),
        int(summary["unique_measure"].notna().sum()),
        int(summary["tuning_measure"].notna().sum()),
        int((summary["sweep_in_domain"] == 1.0).sum()),
    )
    write_parquet(concepts_path, concepts)
    write_parquet(tuning_path, tuning)
    write_parquet(summary_path, summary)


def validate_concepts(
    concepts_path: str | Path,
    summary_path: str | Path,
    tuning_path: str | Path,
    latents_path: str | Path,
    activations_path: str | Path,
    observed_path: str | Path,
    out_path: str | Path,
    *,
    models: ModelSetup,
    batch_size: int,
    folds: int,
    seed: int,
) -> dict[str, Any]:
    """Write ``concepts/validation.json``: the concepts scored against the planted classifier's truth.

    Besides :func:`pipeline.validation.score_validation`'s figures, each planted unit's row
    holds its name and how its true measure fared in the sweep (``truth_effect``,
    ``truth_q``, ``truth_selective``) and across samples (``truth_association``), its
    unique truth (:func:`pipeline.validation.unique_truths`; None where the rest of the layer
    leaves the unit no component to read) with its residual's ``residual_association`` with
    every glass-box statistic and its ``residual_share``, and its tuning truth
    (:func:`pipeline.validation.tuning_truths`) with each component's
    ``component_association``. Both truths read the glass-box statistics of the samples of
    ``observed_path``, rendered again from ``latents_path`` with ``models``' generator, and
    the layer of ``activations_path``; ``folds`` and ``seed`` are the residuals' (the concepts
    stage's, so that the truth reads the residuals the label was confirmed by).
    ``null_units`` lists each null unit's selective measures of either label. Planted and
    null units that the run did not sweep are left out and counted in ``units_not_swept``.
    ``function_set`` names the planted set and ``development_set`` says whether the
    statistics were developed on it (every set of ``FUNCTION_SETS`` so far, and the draws of
    ``DEVELOPMENT_DRAWS``), so its figures do not speak for functions nothing was tuned on.
    """
    classifier = models.classifier or {}
    if not is_planted_classifier(classifier):
        raise ValueError(f"config key 'classifier': validation needs kind python with entrypoint {PLANTED_ENTRYPOINT}")
    loaded = models.load()
    model = loaded.classifier
    concepts = read_parquet(concepts_path)
    summary = read_parquet(summary_path)
    tuning = read_parquet(tuning_path)
    swept = set(summary["unit"].tolist())
    truth = {unit: measure for unit, measure in model.unit_truth.items() if unit in swept}
    if not any(measure is not None for measure in truth.values()):
        planted = [unit for unit, measure in model.unit_truth.items() if measure is not None]
        raise ValueError(f"config key 'units': none of the planted units {min(planted)}-{max(planted)} was swept")

    observed = read_parquet(observed_path)
    rows = observed["sample"].to_numpy()
    latents, _ = read_zarr(latents_path, ["w"])
    activations, _ = read_zarr(activations_path, ["r"])
    layer = activations["r"][rows]
    rendered = render_images(
        loaded.generator, torch.from_numpy(latents["w"][rows]), batch_size=batch_size, device=loaded.device
    )
    statistics, recomputed = glass_box_readings(model, rendered, batch_size)
    agreement = planted_agreement(model, recomputed, layer)
    if not agreement >= MIN_PLANTED_AGREEMENT:
        raise ValueError(
            f"{activations_path}: the planted units' activations do not follow their images rendered again from "
            f"{latents_path} (correlation {agreement:.3f}); the two come from different models"
        )
    classes = observed["class"].to_numpy()
    unique = unique_truths(model, layer, statistics, classes, folds=folds, seed=seed)
    unique = {unit: found for unit, found in unique.items() if unit in truth}
    tuned = tuning_truths(model, layer, statistics, classes)
    tuned = {unit: found for unit, found in tuned.items() if unit in truth}
    score = score_validation(
        summary,
        concepts,
        truth,
        tuning,
        {unit: found["measure"] for unit, found in unique.items()},
        {unit: found["measure"] for unit, found in tuned.items()},
    )
    by_test = concepts.set_index(["unit", "measure"])
    by_tuning = tuning.set_index(["unit", "measure"])
    for row in score["units"]:
        row["name"] = model.unit_names[row["unit"]]
        key = (row["unit"], row["truth"])
        tested = key in by_test.index
        row["truth_effect"] = _finite(by_test.loc[key, "effect"]) if tested else None
        row["truth_q"] = _finite(by_test.loc[key, "q"]) if tested else None
        row["truth_selective"] = bool(by_test.loc[key, "selective"]) if tested else False
        row["truth_association"] = _finite(by_tuning.loc[key, "association"]) if key in by_tuning.index else None
        row["residual_association"] = unique[row["unit"]]["association"]
        row["residual_share"] = unique[row["unit"]]["residual_share"]
        row["component_association"] = tuned[row["unit"]]["association"]
    null_ids = [unit for unit, measure in truth.items() if measure is None]
    score["null_units"] = [
        {
            "unit": int(unit),
            "name": model.unit_names[unit],
            "n_tests": len(tests),
            "selective_measures": sorted(tests.loc[tests["selective"], "measure"]),
            "tuning_selective_measures": sorted(tuning.loc[(tuning["unit"] == unit) & tuning["selective"], "measure"]),
        }
        for unit, tests in concepts[concepts["unit"].isin(null_ids)].groupby("unit", sort=True)
    ]
    score["units_not_swept"] = len(model.unit_truth) - len(truth)
    function_set = classifier.get("kwargs", {}).get("functions", "planted")
    score["function_set"] = function_set
    score["development_set"] = function_set in FUNCTION_SETS or function_set in DEVELOPMENT_DRAWS
    score["classifier"] = dict(classifier)
    log.info(
        "validation (%s set %s): unique precision %s recall %s, tuning precision %s recall %s over %d planted "
        "units; per-test null false-positive rate %s (unique), %s (tuning)",
        "development" if score["development_set"] else "held-back",
        function_set,
        score["unique_precision"],
        score["unique_recall"],
        score.get("tuning_precision"),
        score.get("tuning_recall"),
        score["n_planted"],
        score["unique_null_false_positive_rate"],
        score.get("tuning_null_false_positive_rate"),
    )
    write_json(out_path, score)
    return score


def _finite(value: Any) -> float | None:
    return None if pd.isna(value) or not math.isfinite(float(value)) else float(value)
