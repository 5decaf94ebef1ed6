"""Null controls: what the measures do when no unit is tuned.

Two controls, both over the probe base samples and with the chunk tables' columns plus
``control``:

- ``random_direction``: sweeps along random unit-norm directions in the link's
  standardised activation space (r minus its mean, over its standard deviation, both over
  the accepted train samples the link was fitted on), each as long as a typical unit sweep
  there (the median of (high - low) / std over units) and centred on the probe samples'
  mean projection, then mapped back to raw r. ``requested`` and ``achieved`` are the set
  and the re-encoded projections, in standardised units.
- ``rerender``: r is linked and rendered, re-encoded to r', which is linked and rendered
  again, and so on for ``steps`` renders. Nothing is requested, so the changes along this
  chain are the noise floor of the render -> re-encode cycle, and its ``w_distance`` is how
  far that cycle alone wanders in w.

Control sweeps have negative ``unit`` ids: -1 for the re-render chain and -2, -3, ... for
the random directions.

Why the standardised space: units can differ in scale many times over (a ReLU unit that
rarely fires next to one of unit variance), so a raw random direction would in effect sweep
the few largest-scale units, and its length, the median raw range, would suit none of them.
In the space the link was fitted in every unit counts alike, and a unit's own sweep (its
range, a few of its standard deviations) is measured in the same units as a direction's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.stages.common import Encoded, Models, ModelSetup, region_attrs
from pipeline.stages.link import AffineLink, load_link, standardisation
from pipeline.stages.measure import sweep_table
from pipeline.stages.perturb import sweep_outcomes, w_distances
from pipeline.stages.samples import Samples
from pipeline.stages.units import probe_samples
from pipeline.store import read_parquet, write_parquet

log = logging.getLogger(__name__)

RERENDER_UNIT = -1


def link_standardisation(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit mean and std [U] (float64) of r over the accepted train samples: the link's standardisation.

    The link stage fits its ridge on exactly these rows with :func:`standardisation`, so
    recomputing it here gives the space the link was fitted in.
    """
    rows, train = samples.read("train", activations=("r",))
    if rows.size == 0:
        raise ValueError(f"{samples.activations_path}: no accepted train sample to standardise activations with")
    mean, std = standardisation(torch.from_numpy(train["r"]).double())
    return mean.numpy(), std.numpy()


def standardised_ranges(ranges: pd.DataFrame, mean: np.ndarray, std: np.ndarray) -> pd.DataFrame:
    """``ranges`` with low and high in the link's standardised units."""
    units = ranges["unit"].to_numpy()
    if units.min() < 0 or units.max() >= len(mean):
        raise ValueError(f"unit ranges: unit ids must be below the classifier's {len(mean)} units")
    return ranges.assign(
        low=(ranges["low"] - mean[units]) / std[units], high=(ranges["high"] - mean[units]) / std[units]
    )


def typical_span(ranges: pd.DataFrame) -> float:
    """The median sweep length (high - low) over units that vary at all."""
    spans = (ranges["high"] - ranges["low"]).to_numpy()
    spans = spans[spans > 0]
    if spans.size == 0:
        raise ValueError("unit ranges: every unit is constant over the probe samples; nothing can be swept")
    return float(np.median(spans))


def random_directions(count: int, num_units: int, seed: int) -> np.ndarray:
    """[count, num_units] directions, uniform on the unit sphere, from ``seed``."""
    directions = np.random.default_rng(seed).standard_normal((count, num_units))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def direction_sweeps(r: np.ndarray, directions: np.ndarray, span: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Activations [D, P, S, U] swept along each direction, and the requested projections [D, S]."""
    projections = r.astype(np.float64) @ directions.T  # [P, D]
    centre = projections.mean(axis=0)
    requested = centre[:, None] + span * (np.linspace(0.0, 1.0, steps) - 0.5)[None, :]
    offsets = requested[:, None, :] - projections.T[:, :, None]  # [D, P, S]
    swept = r[None, :, None, :] + offsets[..., None] * directions[:, None, None, :]
    return swept.astype(np.float32), requested


def standardised_direction_sweeps(
    r: np.ndarray, directions: np.ndarray, span: float, steps: int, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Raw activations [D, P, S, U] swept along ``directions`` of the standardised space
    ``(r - mean) / std``, and the requested projections [D, S] there (``span`` in standardised units)."""
    swept, requested = direction_sweeps((r - mean) / std, directions, span, steps)
    return (swept * std + mean).astype(np.float32), requested


def _direction_control(
    models: Models,
    link: AffineLink,
    r: np.ndarray,
    classes: np.ndarray,
    directions: np.ndarray,
    span: float,
    steps: int,
    mean: np.ndarray,
    std: np.ndarray,
    batch_size: int,
) -> pd.DataFrame:
    """Sweeps along ``directions`` [D, U] of the standardised space; ``span`` is in standardised units."""
    d, p = len(directions), len(r)
    swept, requested = standardised_direction_sweeps(r, directions, span, steps, mean, std)
    with torch.no_grad():
        w = link(torch.from_numpy(swept.reshape(-1, r.shape[1])))
    sweep_classes = torch.from_numpy(
        np.ascontiguousarray(np.broadcast_to(classes[None, :, None], (d, p, steps))).reshape(-1)
    )
    encoded = models.encode(
        w, batch_size=batch_size, keep_images=True, mask_classes=sweep_classes, label="null random_direction"
    )
    r_hat = (encoded.r.reshape(d * p, steps, -1) - mean) / std
    unit_dirs = np.repeat(directions, p, axis=0)  # [D * P, U]
    tracked = np.einsum("nsu,nu->ns", r_hat, unit_dirs)
    outcomes = sweep_outcomes(encoded, (d * p, steps), tracked, np.tile(classes, d))
    change = outcomes.pop("r_change") / std
    along = np.einsum("nsu,nu->ns", change, unit_dirs)
    # What moved besides the direction, back in raw units to compare with the units' tables.
    across = (change - along[..., None] * unit_dirs[:, None, :]) * std
    outcomes["others_mean_abs_change"] = np.abs(across).mean(axis=-1).astype(np.float32)
    outcomes["requested"] = np.repeat(requested, p, axis=0).astype(np.float32)
    outcomes["w_distance"] = w_distances(w.reshape(d * p, steps, -1))
    return _control_table(
        "random_direction",
        np.repeat(-2 - np.arange(d), p),
        np.tile(np.arange(p), d),
        classes,
        d,
        outcomes,
        encoded,
        steps,
        region_attrs(models.segmenter).get("part_names", ()),
    )


def _rerender_control(
    models: Models, link: AffineLink, r: np.ndarray, classes: np.ndarray, steps: int, batch_size: int
) -> pd.DataFrame:
    current = torch.from_numpy(r)
    renders: list[Encoded] = []
    latents: list[torch.Tensor] = []
    for step in range(steps):
        with torch.no_grad():
            w = link(current)
        latents.append(w)
        encoded = models.encode(
            w,
            batch_size=batch_size,
            keep_images=True,
            mask_classes=torch.from_numpy(classes),
            label=f"null rerender {step + 1}/{steps}",
        )
        renders.append(encoded)
        current = torch.from_numpy(encoded.r)
    chain = Encoded(
        r=np.stack([e.r for e in renders], axis=1).reshape(len(r) * steps, -1),
        logits=None
        if renders[0].logits is None
        else np.stack([e.logits for e in renders], axis=1).reshape(len(r) * steps, -1),
        images=np.stack([e.images for e in renders], axis=1).reshape(len(r) * steps, *renders[0].images.shape[1:]),
        masks=np.stack([e.masks for e in renders], axis=1).reshape(len(r) * steps, *renders[0].masks.shape[1:]),
    )
    nothing = np.full((len(r), steps), np.nan)
    outcomes = sweep_outcomes(chain, (len(r), steps), nothing, classes)
    outcomes["others_mean_abs_change"] = np.abs(outcomes.pop("r_change")).mean(axis=-1).astype(np.float32)
    outcomes["requested"] = nothing.astype(np.float32)
    outcomes["w_distance"] = w_distances(torch.stack(latents, dim=1))
    return _control_table(
        "rerender",
        np.full(len(r), RERENDER_UNIT),
        np.arange(len(r)),
        classes,
        1,
        outcomes,
        chain,
        steps,
        region_attrs(models.segmenter).get("part_names", ()),
    )


def _control_table(
    control: str,
    unit: np.ndarray,
    sample_position: np.ndarray,
    classes: np.ndarray,
    repeats: int,
    outcomes: Mapping[str, np.ndarray],
    encoded: Encoded,
    steps: int,
    part_names: Sequence[str],
) -> pd.DataFrame:
    n = len(unit)
    table = sweep_table(
        unit=unit,
        sample=sample_position,
        class_id=np.tile(classes, repeats),
        activation_columns=outcomes,
        images=encoded.images.reshape(n, steps, *encoded.images.shape[1:]),
        masks=encoded.masks.reshape(n, steps, *encoded.masks.shape[1:]),
        part_names=part_names,
    )
    table.insert(0, "control", control)
    return table


def null_controls(
    out_path: str | Path,
    *,
    samples: Samples,
    link_path: str | Path,
    ranges_path: str | Path,
    models: ModelSetup,
    steps: int,
    directions: int,
    seed: int,
    batch_size: int,
    segmentation_path: str | Path | None = None,
) -> None:
    """Write ``tables/null_controls.parquet`` with both controls over the probe samples; with
    ``segmentation_path`` the regions come from that part segmenter, else from saliency."""
    rows, probe = probe_samples(samples, latents=("class",), activations=("r",))
    r, classes = probe["r"], probe["class"].astype(np.int64)
    mean, std = link_standardisation(samples)
    span = typical_span(standardised_ranges(read_parquet(ranges_path), mean, std))
    link = load_link(link_path)
    loaded = models.load(segmentation_path)
    log.info(
        "nulls: %d random directions of standardised length %.4g and a %d-step re-render chain", directions, span, steps
    )
    table = pd.concat(
        [
            _rerender_control(loaded, link, r, classes, steps, batch_size),
            _direction_control(
                loaded,
                link,
                r,
                classes,
                random_directions(directions, r.shape[1], seed),
                span,
                steps,
                mean,
                std,
                batch_size,
            ),
        ],
        ignore_index=True,
    )
    # Samples are global ids, as in the unit tables, so controls and sweeps can be paired.
    table["sample"] = rows[table["sample"].to_numpy()]
    write_parquet(out_path, table)
