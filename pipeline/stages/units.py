"""Stage 4: each unit's tuning range over the probe samples.

The paper swept each unit from its minimum to its maximum over the base samples; the
quantiles make that configurable ([0, 1] is the paper's choice) so that one outlier does
not set the whole range.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.store import read_zarr, write_parquet


def probe_rows(latents_path: str | Path, activations_path: str | Path) -> np.ndarray:
    """Indices of the accepted probe samples: the base samples every sweep starts from."""
    latents, _ = read_zarr(latents_path, ["split"])
    activations, _ = read_zarr(activations_path, ["accepted"])
    rows = np.flatnonzero(activations["accepted"] & (latents["split"] == "probe"))
    if rows.size == 0:
        raise ValueError(f"{activations_path}: no accepted probe sample; raise samples.probe or samples.max_draws")
    return rows


def compute_ranges(r: np.ndarray, range_quantiles: Sequence[float]) -> pd.DataFrame:
    """Per unit: low/high (the quantiles of r over samples), mean and std."""
    low, high = np.quantile(r.astype(np.float64), list(range_quantiles), axis=0)
    return pd.DataFrame(
        {
            "unit": np.arange(r.shape[1], dtype=np.int64),
            "low": low,
            "high": high,
            "mean": r.mean(axis=0, dtype=np.float64),
            "std": r.std(axis=0, dtype=np.float64),
        }
    )


def unit_ranges(
    latents_path: str | Path,
    activations_path: str | Path,
    out_path: str | Path,
    *,
    range_quantiles: Sequence[float],
) -> None:
    """Write ``units/ranges.parquet`` for every unit of the classifier."""
    rows = probe_rows(latents_path, activations_path)
    activations, _ = read_zarr(activations_path, ["r"])
    ranges = compute_ranges(activations["r"][rows], range_quantiles)
    write_parquet(out_path, ranges, metadata={"range_quantiles": list(range_quantiles), "probe_samples": len(rows)})
