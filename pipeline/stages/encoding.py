"""How well the classifier's layer encodes each world factor, by linear probes of ``r``.

Only a builtin generator knows the world factors of its latents (``world_factors``), so
this stage runs only for one. It answers why few units are labelled for a factor: a
factor the whole layer cannot predict (small ``layer_r2``) gives no unit a concept to
show, and a factor spread thinly over many units (large ``layer_r2``, few
``units_encoding``) gives no single unit's sweep a clear effect.

Every probe is fitted on the accepted train samples and scored on the accepted test
samples, so each R² is held out. The layer's probe is a ridge regression on all
standardised units, its strength chosen per factor by leave-one-out error on the train
samples (the hat-matrix shortcut); a unit's probe is a straight line on that unit alone. Breed factors differ
between classes by design, so a pooled R² also counts units that only tell the classes
apart; the ``within_class`` columns take each class's train means out of both the units
and the factor first and so count what the layer carries beyond the class.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.store import read_zarr, write_parquet
from pipeline.world import class_manifest

log = logging.getLogger(__name__)

COLUMNS = (
    "factor",
    "kind",
    "layer_r2",
    "units_encoding",
    "best_unit",
    "best_unit_r2",
    "layer_r2_within_class",
    "units_encoding_within_class",
)


def factor_kinds(world: str, factors: Sequence[str]) -> dict[str, str]:
    """``breed`` for the factors the world's class manifest lists as separating a pair of
    classes, ``nuisance`` for the rest (every factor of a world without a manifest)."""
    manifest = class_manifest(world)
    defining = {f for names in manifest.defining.values() for f in names} if manifest is not None else set()
    return {factor: "breed" if factor in defining else "nuisance" for factor in factors}


def ridge_predictions(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas: Sequence[float]
) -> np.ndarray:
    """Test predictions ``[N_test, F]`` of a ridge of each column of ``y_train [N, F]`` on
    ``x_train [N, U]``, both centred by the caller, with each column's strength
    (``alpha`` times N) the one of least leave-one-out error on the train rows."""
    n = len(x_train)
    u, s, vt = np.linalg.svd(x_train, full_matrices=False)
    uty = u.T @ y_train  # [K, F]
    best_error = np.full(y_train.shape[1], np.inf)
    best = np.zeros((x_train.shape[1], y_train.shape[1]))
    for alpha in alphas:
        shrink = s * s / (s * s + alpha * n)  # [K]
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u * u) @ shrink  # the hat matrix's diagonal [N]
        residual = (y_train - fitted) / (1.0 - leverage)[:, None]
        error = np.mean(residual**2, axis=0)
        better = error < best_error
        coefficients = vt.T @ ((s / (s * s + alpha * n))[:, None] * uty)
        best[:, better] = coefficients[:, better]
        best_error = np.where(better, error, best_error)
    return x_test @ best


def r2(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R² of each column against the target's own mean; NaN for a constant target."""
    residual = np.sum((target - predicted) ** 2, axis=0)
    return _explained(residual, target)


def unit_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Held-out R² ``[U, F]`` of each factor from a straight line through the origin on each
    unit alone (inputs centred by the caller; a constant unit predicts 0)."""
    variance = np.sum(x_train**2, axis=0)  # [U]
    covariance = x_train.T @ y_train  # [U, F]
    slope = np.divide(covariance, variance[:, None], out=np.zeros_like(covariance), where=variance[:, None] > 0)
    # sum_i (y_if - b_uf x_iu)^2 without the [N, U, F] array of predictions.
    residual = (
        np.sum(y_test**2, axis=0)[None, :]
        - 2.0 * slope * (x_test.T @ y_test)
        + slope**2 * np.sum(x_test**2, axis=0)[:, None]
    )
    return _explained(residual, y_test)


def _explained(residual: np.ndarray, target: np.ndarray) -> np.ndarray:
    total = np.sum((target - target.mean(axis=0)) ** 2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def encoding_table(
    r: np.ndarray,
    factors: pd.DataFrame,
    classes: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    kinds: Mapping[str, str],
    alphas: Sequence[float],
    min_unit_r2: float,
) -> pd.DataFrame:
    """One row per factor (see :data:`COLUMNS`) from the layer ``r [N, U]`` and the factors'
    values at the same rows; ``train`` and ``test`` are boolean row masks."""
    x = np.asarray(r, dtype=np.float64)
    y = factors.to_numpy(dtype=np.float64)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
    pooled = _scores(x, y - y[train].mean(axis=0), train, test, alphas)
    within = _scores(*_within_class(x, y, classes, train), train, test, alphas)
    rows = []
    for k, factor in enumerate(factors.columns):
        layer_r2, units = pooled[0][k], pooled[1][:, k]
        finite = np.isfinite(units)
        best = int(np.nanargmax(units)) if finite.any() else None
        rows.append(
            {
                "factor": factor,
                "kind": kinds[factor],
                "layer_r2": float(layer_r2),
                "units_encoding": int(np.sum(units[finite] >= min_unit_r2)),
                "best_unit": best,
                "best_unit_r2": float(units[best]) if best is not None else np.nan,
                "layer_r2_within_class": float(within[0][k]),
                "units_encoding_within_class": int(np.sum(np.nan_to_num(within[1][:, k], nan=-np.inf) >= min_unit_r2)),
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["best_unit"] = table["best_unit"].astype("Int64")
    return table


def _within_class(
    x: np.ndarray, y: np.ndarray, classes: np.ndarray, train: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Units and factors minus their class's train mean."""
    x, y = x.copy(), y.copy()
    for c in np.unique(classes):
        rows, fit = classes == c, (classes == c) & train
        if fit.any():
            x[rows] -= x[fit].mean(axis=0)
            y[rows] -= y[fit].mean(axis=0)
    return x, y


def _scores(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, alphas: Sequence[float]):
    layer = r2(ridge_predictions(x[train], y[train], x[test], alphas), y[test])
    units = unit_r2(x[train], y[train], x[test], y[test])
    return layer, units


def factor_encoding(
    latents_path: str | Path,
    activations_path: str | Path,
    out_path: str | Path,
    *,
    generator: Mapping[str, Any],
    alphas: Sequence[float],
    min_unit_r2: float,
) -> pd.DataFrame:
    """Write ``concepts/factor_encoding.parquet`` from the sampled latents' world factors
    (the builtin generator's ``world_factors`` of each sample's z, re-drawn from its seed)
    and the classifier's activations on them; accepted samples only."""
    from pipeline.models import load_generator
    from pipeline.stages.sample import latents_from_seeds

    gen = load_generator(generator)
    if not hasattr(gen, "world_factors"):
        raise ValueError("config key 'generator': the factor encoding needs a builtin generator, which knows its world")
    latents, attrs = read_zarr(latents_path, ["seed", "class", "split"])
    activations, _ = read_zarr(activations_path, ["r", "accepted"])
    classes = latents["class"]
    z = latents_from_seeds(gen, latents["seed"])
    with torch.no_grad():
        factors = gen.world_factors(z, torch.from_numpy(classes), float(attrs["truncation"]))
    train = activations["accepted"] & (latents["split"] == "train")
    test = activations["accepted"] & (latents["split"] == "test")
    if train.sum() < 2 or test.sum() < 2:
        raise ValueError(
            f"{latents_path}: the factor encoding needs at least 2 accepted train and test samples, "
            f"got {int(train.sum())} and {int(test.sum())}"
        )
    table = encoding_table(
        activations["r"],
        factors,
        classes,
        train,
        test,
        kinds=factor_kinds(gen.world, list(factors.columns)),
        alphas=alphas,
        min_unit_r2=min_unit_r2,
    )
    log.info(
        "factor encoding (%s world, %d train, %d test samples):\n%s",
        gen.world,
        int(train.sum()),
        int(test.sum()),
        table.to_string(index=False),
    )
    write_parquet(
        out_path,
        table,
        metadata={"world": gen.world, "train": int(train.sum()), "test": int(test.sum()), "min_unit_r2": min_unit_r2},
    )
    return table
