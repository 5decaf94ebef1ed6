"""Null controls: what the measures do when no unit is tuned.

Two controls, both over the probe base samples and with the chunk tables' columns plus
``control``:

- ``random_direction``: sweeps along random unit-norm directions in activation space,
  each as long as a typical unit sweep (the median of high - low over units) and centred
  on the probe samples' mean projection. ``achieved`` is the re-encoded projection.
- ``rerender``: r is linked and rendered, re-encoded to r', which is linked and rendered
  again, and so on for ``steps`` renders. Nothing is requested, so the changes along this
  chain are the noise floor of the render -> re-encode cycle.

Control sweeps have negative ``unit`` ids: -1 for the re-render chain and -2, -3, ... for
the random directions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.stages.common import Encoded, load_models, prepare_device, render_and_encode
from pipeline.stages.link import AffineLink, load_link
from pipeline.stages.measure import sweep_table
from pipeline.stages.perturb import sweep_outcomes
from pipeline.stages.units import probe_rows
from pipeline.store import read_parquet, read_zarr, write_parquet

log = logging.getLogger(__name__)

RERENDER_UNIT = -1


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


def _direction_control(
    link: AffineLink, r: np.ndarray, classes: np.ndarray, directions: np.ndarray, span: float, steps: int, **render
) -> pd.DataFrame:
    d, p = len(directions), len(r)
    swept, requested = direction_sweeps(r, directions, span, steps)
    with torch.no_grad():
        w = link(torch.from_numpy(swept.reshape(-1, r.shape[1])))
    sweep_classes = torch.from_numpy(
        np.ascontiguousarray(np.broadcast_to(classes[None, :, None], (d, p, steps))).reshape(-1)
    )
    encoded = render_and_encode(
        w=w, keep_images=True, mask_classes=sweep_classes, label="null random_direction", **render
    )
    r_hat = encoded.r.reshape(d * p, steps, -1).astype(np.float64)
    unit_dirs = np.repeat(directions, p, axis=0)  # [D * P, U]
    tracked = np.einsum("nsu,nu->ns", r_hat, unit_dirs)
    outcomes = sweep_outcomes(encoded, (d * p, steps), tracked, np.tile(classes, d))
    change = outcomes.pop("r_change")
    along = np.einsum("nsu,nu->ns", change, unit_dirs)
    across = change - along[..., None] * unit_dirs[:, None, :]
    outcomes["others_mean_abs_change"] = np.abs(across).mean(axis=-1).astype(np.float32)
    outcomes["requested"] = np.repeat(requested, p, axis=0).astype(np.float32)
    return _control_table(
        "random_direction",
        np.repeat(-2 - np.arange(d), p),
        np.tile(np.arange(p), d),
        classes,
        d,
        outcomes,
        encoded,
        steps,
    )


def _rerender_control(link: AffineLink, r: np.ndarray, classes: np.ndarray, steps: int, **render) -> pd.DataFrame:
    current = torch.from_numpy(r)
    renders: list[Encoded] = []
    for step in range(steps):
        with torch.no_grad():
            w = link(current)
        encoded = render_and_encode(
            w=w,
            keep_images=True,
            mask_classes=torch.from_numpy(classes),
            label=f"null rerender {step + 1}/{steps}",
            **render,
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
    return _control_table(
        "rerender", np.full(len(r), RERENDER_UNIT), np.arange(len(r)), classes, 1, outcomes, chain, steps
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
) -> pd.DataFrame:
    n = len(unit)
    table = sweep_table(
        unit=unit,
        sample=sample_position,
        class_id=np.tile(classes, repeats),
        activation_columns=outcomes,
        images=encoded.images.reshape(n, steps, *encoded.images.shape[1:]),
        masks=encoded.masks.reshape(n, steps, *encoded.masks.shape[1:]),
    )
    table.insert(0, "control", control)
    return table


def null_controls(
    out_path: str | Path,
    *,
    latents_path: str | Path,
    activations_path: str | Path,
    link_path: str | Path,
    ranges_path: str | Path,
    classifier: Mapping[str, Any],
    generator: Mapping[str, Any],
    device: str,
    steps: int,
    directions: int,
    seed: int,
    batch_size: int,
) -> None:
    """Write ``tables/null_controls.parquet`` with both controls over the probe samples."""
    rows = probe_rows(latents_path, activations_path)
    latents, _ = read_zarr(latents_path, ["class"])
    activations, _ = read_zarr(activations_path, ["r"])
    r = activations["r"][rows]
    classes = latents["class"][rows].astype(np.int64)
    span = typical_span(read_parquet(ranges_path))
    link = load_link(link_path)
    torch_device = prepare_device(device)
    clf, gen = load_models(classifier, generator, torch_device)
    render = {"generator": gen, "classifier": clf, "batch_size": batch_size, "device": torch_device}
    log.info("nulls: %d random directions of length %.4g and a %d-step re-render chain", directions, span, steps)
    table = pd.concat(
        [
            _rerender_control(link, r, classes, steps, **render),
            _direction_control(
                link, r, classes, random_directions(directions, r.shape[1], seed), span, steps, **render
            ),
        ],
        ignore_index=True,
    )
    # Samples are global ids, as in the unit tables, so controls and sweeps can be paired.
    table["sample"] = rows[table["sample"].to_numpy()]
    write_parquet(out_path, table)
