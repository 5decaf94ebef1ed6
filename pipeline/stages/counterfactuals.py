"""The counterfactual stage: per class pair, search counterfactuals and say what changed; then summarise.

Per pair (origin -> target), :func:`counterfactual_pair` runs one search of
:mod:`pipeline.counterfactual` on held-out samples of the origin class and writes what it
found: which units carry the shift, how the image measures change from the original
render to the counterfactual, and the images. :func:`summarise_pairs` reads every pair:

- The units that carry the shift: each unit's share of the squared shift, the shift being
  measured per unit in standard deviations over the accepted samples (:func:`change_scale`),
  averaged over the samples that flipped.
- The measures that move most: of the measures whose bootstrap 95% CI of the mean change
  (over the samples that flipped) excludes 0, the ``top_measures`` with the largest
  |standardised mean change| (mean change over its standard deviation across samples, so
  measures in different units compare).
- Ground truth, where the world has a manifest (:func:`pipeline.world.class_manifest`):
  the share of those moved measures that read a factor separating the pair and move toward
  the target's values (:meth:`~pipeline.world.ClassManifest.expected_measure_moves`).
- The other methods of ``counterfactuals.compare``, searched on the same samples: flip rate
  on the re-encoded render, rate of flips with the latent in the generator's domain, and
  the median latent distance, beside the main method's.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.counterfactual import (
    METHODS,
    ActivationPrior,
    Counterfactuals,
    LatentDomain,
    search_mahalanobis,
    search_paper,
)
from pipeline.measures import (
    MAGNITUDE_QUANTITIES,
    measure_changes,
    measure_sweeps,
    object_masks,
    quantity_of,
    regions_from_labels,
    tested_measures,
)
from pipeline.models.protocols import Classifier
from pipeline.stages.common import ModelSetup, difference_image, open_segmenter, synthesize, tile
from pipeline.stages.link import load_link
from pipeline.stats import bootstrap_mean_ci
from pipeline.store import atomic_path, read_parquet, read_zarr, write_json, write_parquet, write_zarr
from pipeline.world import class_manifest

log = logging.getLogger(__name__)

PANEL_ROWS = 8
STD_FLOOR_FRACTION = 0.01


def counterfactual_pair(
    table_path: str | Path,
    images_path: str | Path,
    panel_path: str | Path,
    *,
    latents_path: str | Path,
    activations_path: str | Path,
    link_path: str | Path,
    unit_summary_path: str | Path,
    models: ModelSetup,
    origin: int,
    target: int,
    method: str,
    segmentation_path: str | Path | None = None,
    search: Mapping[str, Any],
    samples: int,
    top_units: int,
    batch_size: int,
) -> None:
    """Counterfactuals for up to ``samples`` accepted test samples of ``origin``, towards ``target``.

    ``method`` names the search and ``search`` holds its settings (the config section
    ``counterfactuals.<method>``). Writes ``{origin}-{target}.parquet`` (one row per sample,
    see :func:`pair_table`), ``.zarr`` (original, counterfactual and difference images uint8
    [N, H, W, 3], the shift [N, U], each unit's share of the squared standardised shift
    [N, U], success [N] and sample [N]) and a PNG panel of the first samples (original |
    counterfactual | difference per row). With ``segmentation_path`` (a trained
    ``segmentation/model.pt``) the regions of the measured changes are its parts, as in the
    sweeps' tables; otherwise the classifier's saliency marks the object.
    """
    if method not in METHODS:
        raise ValueError(f"counterfactuals.method: expected one of {METHODS}, got {method!r}")
    latents, _ = read_zarr(latents_path, ["class", "split", "w"])
    activations, _ = read_zarr(activations_path, ["r", "accepted"])
    training = activations["accepted"] & (latents["split"] == "train")
    domain = LatentDomain.fit(latents["w"][training])
    prior = ActivationPrior.fit(activations["r"][training])
    candidates = np.flatnonzero(activations["accepted"] & (latents["split"] == "test") & (latents["class"] == origin))
    if candidates.size == 0:
        raise ValueError(f"{activations_path}: no accepted test sample of class {origin} to start counterfactuals from")
    rows = candidates[:samples]
    unit_scale = change_scale(activations["r"][activations["accepted"]].std(axis=0, dtype=np.float64))

    loaded = models.load()
    clf, gen, torch_device = loaded.classifier, loaded.generator, loaded.device
    link = load_link(link_path).to(torch_device)
    r = torch.from_numpy(activations["r"][rows]).to(torch_device)
    log.info("counterfactuals %d -> %d by %s: %d samples, settings %s", origin, target, method, len(rows), dict(search))
    if method == "mahalanobis":
        result = search_mahalanobis(clf, gen, link, r, origin, target, prior=prior, batch=batch_size, **search)
    else:
        result = search_paper(clf, gen, link, r, origin, target, batch=batch_size, **search)
    log.info(
        "counterfactuals %d -> %d by %s: %d of %d flipped", origin, target, method, result.success.sum(), len(rows)
    )

    with torch.no_grad():
        rendered = link(torch.from_numpy(result.r_counterfactual).to(torch_device)).cpu().numpy()
    labels, part_names = None, ()
    segmenter = open_segmenter(gen, segmentation_path, torch_device)
    if segmenter is not None:
        with segmenter, torch.no_grad():
            latents = torch.stack([link(r).cpu(), torch.from_numpy(rendered)], dim=1)  # [N, 2, w_dim]
            labels = pair_label_maps(gen, segmenter, latents, batch_size, torch_device)
        part_names = segmenter.part_names
    image_changes = pair_measure_changes(
        clf,
        result.original,
        result.counterfactual,
        np.full(len(rows), origin),
        result.predicted,
        torch_device,
        labels=labels,
        part_names=part_names,
    )
    shares = unit_shares(result.shift, unit_scale)
    table = pair_table(result, rows, shares, unit_scale, read_parquet(unit_summary_path), image_changes, top_units)
    position = table.columns.get_loc("shift_l2") + 1
    table.insert(position, "shift_mahalanobis", prior.lengths(result.shift))
    table.insert(position + 1, "latent_distance", domain.distances(rendered))
    table.insert(position + 2, "in_domain", table["latent_distance"] <= domain.radius)
    settings = {
        "origin": origin,
        "target": target,
        "method": method,
        **search,
        "latent_domain_radius": domain.radius,
        "prior_shrinkage": prior.shrinkage,
    }
    write_parquet(table_path, table, metadata={k: json.dumps(v) for k, v in settings.items()})
    write_zarr(
        images_path,
        {
            "original": result.original,
            "counterfactual": result.counterfactual,
            "difference": difference_image(result.original, result.counterfactual),
            "shift": result.shift.astype(np.float32),
            "unit_share": shares.astype(np.float32),
            "success": result.success,
            "sample": rows.astype(np.int64),
        },
        attrs=settings,
    )
    write_panel(panel_path, result.original, result.counterfactual)


def pair_measure_changes(
    classifier: Classifier,
    original: np.ndarray,
    counterfactual: np.ndarray,
    original_classes: np.ndarray,
    counterfactual_classes: np.ndarray,
    device: torch.device,
    labels: np.ndarray | None = None,
    part_names: Sequence[str] = (),
) -> pd.DataFrame:
    """Image-measure changes from each original (uint8 [N, H, W, 3]) to its counterfactual, one row per sample.

    With part label maps ``labels`` (uint8 [N, 2, H, W]: original, counterfactual; 0 the
    background, k part ``part_names[k - 1]``) the object is the union of the parts and each
    part adds its ``part:<name>`` measures. Without them each image's object region is the
    one its own class marks in the classifier's saliency: the origin's in the original, the
    predicted class's in the counterfactual.
    """
    pairs = np.stack([original, counterfactual], axis=1)  # [N, 2, H, W, 3]
    n, _, height, width, _ = pairs.shape
    if labels is not None:
        masks, parts = regions_from_labels(labels, part_names)
    else:
        images = torch.from_numpy(pairs.reshape(n * 2, height, width, 3)).to(device).permute(0, 3, 1, 2).float() / 255
        classes = torch.from_numpy(np.stack([original_classes, counterfactual_classes], axis=1).reshape(-1)).to(device)
        masks = object_masks(classifier, images, classes.long()).cpu().numpy().reshape(n, 2, height, width)
        parts = None
    measured = measure_sweeps(pairs, masks, parts)
    measured.insert(0, "sample", np.repeat(np.arange(n), 2))
    measured.insert(1, "step", np.tile([0, 1], n))
    changes = measure_changes(measured, tested_measures(measured.columns), by=("sample",))
    return changes.drop(columns="sample")


def pair_label_maps(
    generator: Any, segmenter: Any, latents: torch.Tensor, batch_size: int, device: torch.device
) -> np.ndarray:
    """Part label maps uint8 ``[N, 2, H, W]`` of the renders of ``latents [N, 2, w_dim]``.

    The segmenter reads the generator's features, so the pair is synthesised once more: the
    same latents give the same renders the search measured.
    """
    flat = latents.reshape(-1, latents.shape[-1])
    maps = []
    for start in range(0, len(flat), batch_size):
        images = synthesize(generator, flat[start : start + batch_size].to(device))
        maps.append(segmenter.label_maps(images.shape[-2:]).cpu().numpy())
    joined = np.concatenate(maps)
    return joined.reshape(len(latents), 2, *joined.shape[-2:])


def change_scale(unit_std: np.ndarray) -> np.ndarray:
    """Per-unit divisor for activation changes: the unit's std, floored at a fraction of the median std.

    Units that barely vary over the data (dead or nearly constant) would otherwise rank first
    for any tiny change.
    """
    active = unit_std[unit_std > 0]
    floor = STD_FLOOR_FRACTION * float(np.median(active)) if active.size else 1.0
    return np.maximum(unit_std, floor)


def unit_shares(shift: np.ndarray, unit_scale: np.ndarray) -> np.ndarray:
    """Each unit's share of the squared standardised shift, [N, U]; rows sum to 1 (0 for no shift)."""
    squared = (np.asarray(shift, dtype=np.float64) / unit_scale) ** 2
    total = squared.sum(axis=1, keepdims=True)
    return np.divide(squared, total, out=np.zeros_like(squared), where=total > 0)


def pair_table(
    result: Counterfactuals,
    rows: np.ndarray,
    shares: np.ndarray,
    unit_scale: np.ndarray,
    unit_summary: pd.DataFrame,
    image_changes: pd.DataFrame,
    top_units: int,
) -> pd.DataFrame:
    """The per-sample counterfactual table.

    Columns: sample (row in latents.zarr), success, steps, start/final probabilities of origin
    and target, predicted, shift_l2; ``top_units`` (the units that carry most of the shift:
    the largest shares of the squared standardised shift), ``top_shares`` (those shares),
    ``top_changes`` (their signed changes in standard deviations, see :func:`change_scale`)
    and ``top_concepts`` (each unit's top measure, "" when it has none); then one column per
    tested image measure with its change from the original to the counterfactual.
    """
    order = np.argsort(-shares, axis=1, kind="stable")[:, :top_units]
    change = result.shift / unit_scale
    concept_of = _top_concepts(unit_summary, shares.shape[1])
    table = pd.DataFrame(
        {
            "sample": rows.astype(np.int64),
            "success": result.success,
            "steps": result.steps,
            "start_prob_origin": result.start_prob_origin,
            "start_prob_target": result.start_prob_target,
            "prob_origin": result.prob_origin,
            "prob_target": result.prob_target,
            "predicted": result.predicted,
            "shift_l2": result.shift_l2,
            "top_units": list(order.astype(np.int64)),
            "top_shares": list(np.take_along_axis(shares, order, axis=1).astype(np.float32)),
            "top_changes": list(np.take_along_axis(change, order, axis=1).astype(np.float32)),
            "top_concepts": [concept_of[units].tolist() for units in order],
        }
    )
    return pd.concat([table, image_changes.reset_index(drop=True)], axis=1)


def _top_concepts(unit_summary: pd.DataFrame, num_units: int) -> np.ndarray:
    """Each unit's top measure ("" when it has none) as an object array indexed by unit."""
    missing = [c for c in ("unit", "unique_measure") if c not in unit_summary.columns]
    if missing:
        raise KeyError(f"unit summary: column {missing[0]!r} is missing")
    concepts = np.full(num_units, "", dtype=object)
    known = unit_summary.dropna(subset=["unique_measure"])
    known = known[(known["unit"] >= 0) & (known["unit"] < num_units)]
    concepts[known["unit"].to_numpy(dtype=np.int64)] = known["unique_measure"].astype(str).to_numpy()
    return concepts


def write_panel(path: str | Path, original: np.ndarray, counterfactual: np.ndarray, rows: int = PANEL_ROWS) -> None:
    """A PNG with one row per sample: original, counterfactual, difference."""
    shown = slice(0, min(rows, len(original)))
    triples = np.stack(
        [original[shown], counterfactual[shown], difference_image(original[shown], counterfactual[shown])], axis=1
    )
    with atomic_path(path) as tmp:
        Image.fromarray(tile(triples)).save(tmp, format="PNG")


def summarise_pairs(
    table_paths: Sequence[str | Path],
    images_paths: Sequence[str | Path],
    comparison_paths: Mapping[str, Sequence[str | Path]],
    unit_summary_path: str | Path,
    summary_table_path: str | Path,
    summary_units_path: str | Path,
    summary_json_path: str | Path,
    *,
    n_boot: int,
    seed: int,
    top_measures: int,
    top_units: int,
    world: str | None,
) -> None:
    """Aggregate every pair of the main method over its successful samples, and compare the methods.

    ``table_paths`` and ``images_paths`` are the main method's pairs, in the same order;
    ``comparison_paths`` maps each compared method to its pair tables. Writes
    ``summary.json`` (see :func:`pair_summary`; per pair and over all pairs, for the main
    method and under ``methods`` for every method), ``summary.parquet`` (one row per pair
    and measure, :func:`concept_movement`) and ``summary_units.parquet`` (per pair, the
    ``top_units`` units with the largest mean share of the squared shift, :func:`unit_movement`).
    """
    effects = read_parquet(unit_summary_path)
    manifest = class_manifest(world) if world is not None else None
    main = [_read_pair(path) for path in table_paths]
    pairs, measure_rows, unit_rows = [], [], []
    for (metadata, table), images_path in zip(main, images_paths, strict=True):
        origin, target = int(metadata["origin"]), int(metadata["target"])
        flipped = table[table["success"]]
        expected = manifest.expected_measure_moves(origin, target) if manifest is not None else None
        movement = concept_movement(flipped, effects, n_boot=n_boot, seed=seed, top=top_measures, expected=expected)
        measure_rows.append(movement.assign(origin=origin, target=target))
        arrays, _ = read_zarr(images_path, ["unit_share", "success"])
        shares = arrays["unit_share"][arrays["success"]]
        unit_rows.append(unit_movement(shares, effects, top_units).assign(origin=origin, target=target))
        pairs.append(
            {
                **pair_summary(metadata, table),
                "moved_measures": movement.loc[movement["moved"], "measure"].tolist(),
                "ground_truth_share": ground_truth_share(movement) if manifest is not None else None,
            }
        )
    methods = [method_summary(main)]
    methods += [method_summary([_read_pair(path) for path in paths]) for paths in comparison_paths.values()]
    write_json(
        summary_json_path,
        {
            "method": methods[0]["method"],
            "world": world,
            "ground_truth": (
                f"measures moved toward the target along factors that separate the pair, from the manifest of {world!r}"
                if manifest is not None
                else f"no class manifest for world {world!r}: no ground-truth share"
            ),
            "top_measures": top_measures,
            "pairs": pairs,
            **{key: methods[0][key] for key in ("success_rate", "success_in_domain_rate", "median_latent_distance")},
            "methods": methods,
        },
    )
    leading = ["origin", "target"]
    frame = pd.concat(measure_rows, ignore_index=True) if measure_rows else pd.DataFrame(columns=[*leading, "measure"])
    write_parquet(summary_table_path, frame[[*leading, *[c for c in frame.columns if c not in leading]]])
    units = pd.concat(unit_rows, ignore_index=True) if unit_rows else pd.DataFrame(columns=[*leading, "unit"])
    write_parquet(summary_units_path, units[[*leading, *[c for c in units.columns if c not in leading]]])


def _read_pair(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    metadata = pq.read_schema(path).metadata or {}
    settings = {key.decode(): json.loads(value) for key, value in metadata.items() if not key.startswith(b"pandas")}
    return settings, read_parquet(path)


def pair_summary(metadata: Mapping[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """One pair's counts, rates and medians: ``n``, ``n_success`` (the re-encoded render is the
    target), ``n_success_in_domain`` (and its latent in the generator's domain), their rates,
    the medians of steps, shift (L2 and Mahalanobis) and latent distance, the domain's
    radius and the mean final target probability."""
    flipped = table[table["success"]]
    return {
        "origin": int(metadata["origin"]),
        "target": int(metadata["target"]),
        "method": metadata["method"],
        "n": len(table),
        "n_success": len(flipped),
        "n_success_in_domain": int(flipped["in_domain"].sum()),
        "success_rate": float(table["success"].mean()),
        "success_in_domain_rate": float((table["success"] & table["in_domain"]).mean()),
        "median_steps": float(table["steps"].median()),
        "median_shift_l2": float(table["shift_l2"].median()),
        "median_shift_mahalanobis": float(table["shift_mahalanobis"].median()),
        "median_latent_distance": float(table["latent_distance"].median()),
        "latent_domain_radius": float(metadata["latent_domain_radius"]),
        "mean_prob_target": float(table["prob_target"].mean()),
    }


def method_summary(pairs: Sequence[tuple[Mapping[str, Any], pd.DataFrame]]) -> dict[str, Any]:
    """One method over all its pairs (metadata and table each): the rates and the median latent
    distance over all samples pooled, and each pair's."""
    tables = [table for _, table in pairs]
    pooled = pd.concat(tables, ignore_index=True) if tables else None
    return {
        "method": pairs[0][0]["method"] if pairs else None,
        "n": 0 if pooled is None else len(pooled),
        "success_rate": None if pooled is None else float(pooled["success"].mean()),
        "success_in_domain_rate": None if pooled is None else float((pooled["success"] & pooled["in_domain"]).mean()),
        "median_latent_distance": None if pooled is None else float(pooled["latent_distance"].median()),
        "pairs": [
            {
                key: summary[key]
                for key in (
                    "origin",
                    "target",
                    "n",
                    "success_rate",
                    "success_in_domain_rate",
                    "median_latent_distance",
                    "median_shift_mahalanobis",
                )
            }
            for summary in (pair_summary(metadata, table) for metadata, table in pairs)
        ],  # fmt: skip
    }


def concept_movement(
    flipped: pd.DataFrame,
    unit_summary: pd.DataFrame,
    *,
    n_boot: int,
    seed: int,
    top: int,
    expected: Mapping[str, int] | None,
) -> pd.DataFrame:
    """Per measure, how the successful counterfactuals of one pair move it.

    ``image_change`` (mean over samples) with its percentile bootstrap 95% CI,
    ``image_effect`` (mean over the standard deviation of the change), ``consistency`` (the
    share of samples changing in the mean's direction); ``moved``: among the ``top``
    largest |image_effect| of the measures whose CI excludes 0, magnitudes (``image.motion``)
    left out; ``expected_sign`` and
    ``toward_target`` (the change has that sign) where a manifest gives ``expected`` (the
    measures of factors that separate the pair, with the sign toward the target), else NaN.
    ``unit_share`` is the share of the top units' slots whose top concept is the measure
    and ``unit_direction`` the mean sign in which they push it. Rows by decreasing |effect|.
    """
    measures = tested_measures(flipped.columns)
    frame = pd.DataFrame({"measure": measures, "n_success": len(flipped)})
    if flipped.empty:
        columns = ("image_change", "image_ci_low", "image_ci_high", "image_effect", "consistency", "unit_direction")
        frame = frame.assign(**dict.fromkeys(columns, np.nan), unit_share=0.0)
    else:
        changes = flipped[measures].to_numpy(dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN measures and single samples give NaN
            mean = np.nanmean(changes, axis=0)
            frame["image_change"] = mean
            frame["image_ci_low"], frame["image_ci_high"] = bootstrap_mean_ci(changes, n_boot=n_boot, seed=seed)
            frame["image_effect"] = mean / np.nanstd(changes, axis=0, ddof=1)
            frame["consistency"] = np.mean(np.sign(changes) == np.sign(mean), axis=0)
        frame["unit_share"], frame["unit_direction"] = _unit_labels(flipped, unit_summary, measures)

    excludes_zero = (frame["image_ci_low"] > 0) | (frame["image_ci_high"] < 0)
    # A magnitude (how far the image moved) grows with any change at all and points nowhere.
    directional = ~frame["measure"].map(quantity_of).isin(MAGNITUDE_QUANTITIES)
    ranked = frame["image_effect"].abs().where(excludes_zero & directional)
    ranked = ranked.sort_values(ascending=False, na_position="last")
    frame["moved"] = frame.index.isin(ranked.dropna().index[:top])
    if expected is None:
        frame["expected_sign"] = np.nan
        frame["toward_target"] = np.nan
    else:
        frame["expected_sign"] = frame["measure"].map(expected).astype(float)
        toward = np.sign(frame["image_change"]) == frame["expected_sign"]
        frame["toward_target"] = toward.astype(float).where(frame["expected_sign"].notna())
    return frame.sort_values("image_effect", key=np.abs, ascending=False, na_position="last", kind="stable")


def _unit_labels(
    flipped: pd.DataFrame, unit_summary: pd.DataFrame, measures: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    slots = pd.DataFrame(
        {
            "unit": np.concatenate(flipped["top_units"].to_numpy()),
            "change": np.concatenate(flipped["top_changes"].to_numpy()),
            "measure": np.concatenate(flipped["top_concepts"].to_numpy()),
        }
    )
    unique_effect = unit_summary.set_index("unit")["unique_effect"].reindex(slots["unit"]).to_numpy()
    slots["direction"] = np.sign(slots["change"].to_numpy()) * np.sign(unique_effect)
    labelled = slots.groupby("measure")["direction"].agg(["size", "mean"]).reindex(measures)
    return labelled["size"].fillna(0).to_numpy() / len(slots), labelled["mean"].to_numpy()


def ground_truth_share(movement: pd.DataFrame) -> float | None:
    """Of the moved measures, the share that read a factor separating the pair and move toward the
    target's values; None when no measure moved."""
    moved = movement[movement["moved"]]
    if moved.empty:
        return None
    return float((moved["toward_target"] == 1).mean())


def unit_movement(shares: np.ndarray, unit_summary: pd.DataFrame, top: int) -> pd.DataFrame:
    """The ``top`` units with the largest mean share of the squared shift over the given samples.

    ``shares`` [N, U] are the successful samples' shares (:func:`unit_shares`). Columns:
    ``unit``, ``mean_share``, ``n_top`` (samples in which the unit is among the ``top``
    largest shares), ``unique_measure`` (its unique label, "" when none).
    """
    if len(shares) == 0:
        return pd.DataFrame({"unit": pd.Series(dtype=np.int64), "mean_share": [], "n_top": [], "unique_measure": []})
    mean = shares.mean(axis=0)
    order = np.argsort(-mean, kind="stable")[:top]
    per_sample_top = np.argsort(-shares, axis=1, kind="stable")[:, :top]
    return pd.DataFrame(
        {
            "unit": order.astype(np.int64),
            "mean_share": mean[order],
            "n_top": [int((per_sample_top == unit).any(axis=1).sum()) for unit in order],
            "unique_measure": _top_concepts(unit_summary, shares.shape[1])[order].tolist(),
        }
    )
