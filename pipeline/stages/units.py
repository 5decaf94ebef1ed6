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

from pipeline.stages.samples import Samples
from pipeline.store import write_parquet


def probe_samples(
    samples: Samples, latents: Sequence[str] = (), activations: Sequence[str] = ()
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The accepted probe samples, the base samples every sweep starts from: their ids and the
    named arrays at them (:meth:`Samples.read`)."""
    rows, arrays = samples.read("probe", latents, activations)
    if rows.size == 0:
        raise ValueError(
            f"{samples.activations_path}: no accepted probe sample; raise samples.probe or samples.max_draws"
        )
    return rows, arrays


def probe_rows(latents_path: str | Path, activations_path: str | Path) -> np.ndarray:
    """Ids of the accepted probe samples (:func:`probe_samples`)."""
    return probe_samples(Samples(latents_path, activations_path))[0]


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


def unit_ranges(samples: Samples, out_path: str | Path, *, range_quantiles: Sequence[float]) -> None:
    """Write ``units/ranges.parquet`` for every unit of the classifier."""
    rows, arrays = probe_samples(samples, activations=("r",))
    ranges = compute_ranges(arrays["r"], range_quantiles)
    write_parquet(out_path, ranges, metadata={"range_quantiles": list(range_quantiles), "probe_samples": len(rows)})
