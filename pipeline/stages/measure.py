"""Stage 6: turn a chunk's renders into the long activation-change table.

One row per (unit, sample, step) with the re-encoded activation columns from the
perturbation stage and the image measures of ``pipeline.measures`` (raw values per render;
the statistics take differences). Chunk tables are gathered into one sorted table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.measures import measure_sweeps, regions_from_labels
from pipeline.store import read_parquet, read_zarr, write_parquet

log = logging.getLogger(__name__)

KEY_COLUMNS = ("unit", "class", "sample", "step")
ACTIVATION_COLUMNS = (
    "requested",
    "achieved",
    "achieved_change",
    "others_mean_abs_change",
    "pred",
    "pred_prob",
    "target_prob",
    "w_distance",
)


def sweep_table(
    unit: np.ndarray,
    sample: np.ndarray,
    class_id: np.ndarray,
    activation_columns: Mapping[str, np.ndarray],
    images: np.ndarray,
    masks: np.ndarray,
    part_names: Sequence[str] = (),
) -> pd.DataFrame:
    """The long table of N sweeps of S steps, rows in (sweep, step) order.

    ``unit``, ``sample`` and ``class_id`` are [N]; each activation column is [N, S];
    ``images`` uint8 [N, S, H, W, 3] and ``masks`` [N, S, H, W] feed the image measures:
    bool object masks, or, with ``part_names``, part label maps (the object is their union).
    """
    n, steps = activation_columns["requested"].shape
    frame = pd.DataFrame(
        {
            "unit": np.repeat(unit.astype(np.int64), steps),
            "class": np.repeat(class_id.astype(np.int64), steps),
            "sample": np.repeat(sample.astype(np.int64), steps),
            "step": np.tile(np.arange(steps, dtype=np.int64), n),
            **{name: np.asarray(activation_columns[name]).reshape(n * steps) for name in ACTIVATION_COLUMNS},
        }
    )
    measures = measure_regions(images, masks, part_names)
    if len(measures) != len(frame):
        raise ValueError(f"pipeline.measures.measure_sweeps returned {len(measures)} rows for {len(frame)} renders")
    return pd.concat([frame, measures.reset_index(drop=True)], axis=1)


def measure_regions(images: np.ndarray, masks: np.ndarray, part_names: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`pipeline.measures.measure_sweeps` of ``images [N, S, H, W, 3]`` in ``masks [N, S, H, W]``:
    bool object masks, or, with ``part_names``, part label maps (the object is their union)."""
    if part_names:
        object_masks, parts = regions_from_labels(masks, part_names)
        return measure_sweeps(images, object_masks, parts)
    return measure_sweeps(images, masks)


def measure_chunk(renders_path: str | Path, out_path: str | Path) -> None:
    """Write ``tables/chunk-{k}.parquet`` from ``renders/chunk-{k}.zarr``."""
    arrays, attrs = read_zarr(renders_path)
    k, p, steps = arrays["requested"].shape
    table = sweep_table(
        unit=np.repeat(arrays["unit"], p),
        sample=np.tile(arrays["sample"], k),
        class_id=np.tile(arrays["class"], k),
        activation_columns={name: arrays[name].reshape(k * p, steps) for name in ACTIVATION_COLUMNS},
        images=arrays["images"].reshape(k * p, steps, *arrays["images"].shape[3:]),
        masks=arrays["masks"].reshape(k * p, steps, *arrays["masks"].shape[3:]),
        part_names=attrs.get("part_names", ()),
    )
    log.info("measure: %d rows, %d columns", len(table), table.shape[1])
    write_parquet(out_path, table)


def gather_tables(table_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """Write ``tables/activation_changes.parquet``: all chunk tables, sorted by unit, sample, step."""
    table = read_parquet(list(table_paths))
    table = table.sort_values(["unit", "sample", "step"], kind="stable").reset_index(drop=True)
    duplicated = table.duplicated(["unit", "sample", "step"])
    if duplicated.any():
        unit, sample = table.loc[duplicated, ["unit", "sample"]].to_numpy()[0]
        raise ValueError(f"activation tables: unit {unit} and sample {sample} appear in more than one chunk")
    log.info("gather: %d rows from %d chunk tables", len(table), len(table_paths))
    write_parquet(out_path, table)
