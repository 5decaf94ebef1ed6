"""Stage 5 with adaptive sampling: sweep a chunk's units look by look and stop decided units.

Each look renders the active units on their next base samples (:mod:`pipeline.adaptive`
draws the looks and decides), measures the renders right away, and the units whose
statistics are decided stop, so their remaining renders never happen. The job therefore
writes the chunk table itself, with the measure stage's columns and rows only for what was
rendered, plus a small JSON record of the renders saved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.adaptive import Design, SequentialTest, look_schedule
from pipeline.measures import selected_measures
from pipeline.stages.common import ModelSetup, region_attrs
from pipeline.stages.link import AffineLink, load_link
from pipeline.stages.measure import sweep_table
from pipeline.stages.perturb import chunk_sweeps, render_sweeps
from pipeline.stages.samples import Samples
from pipeline.store import read_parquet, write_json, write_parquet, write_zarr

log = logging.getLogger(__name__)


def pair_latents(link: AffineLink, r: torch.Tensor, units: np.ndarray, values: torch.Tensor) -> torch.Tensor:
    """Latents for setting unit ``units[n]`` of base activation ``r[n]`` to ``values[n, s]``: w [N, S, w_dim].

    The expression of :func:`pipeline.stages.perturb.sweep_latents`, for sweeps that do not
    form a units x samples grid (each unit has its own samples in a look).
    """
    with torch.no_grad():
        index = torch.as_tensor(units, dtype=torch.int64)
        offsets = values.float() - r[torch.arange(len(r)), index].float()[:, None]  # [N, S]
        return link(r)[:, None, :] + offsets[..., None] * link.weight[:, index].T[:, None, :]


def perturb_chunk_adaptive(
    table_path: str | Path,
    record_path: str | Path,
    renders_path: str | Path | None = None,
    *,
    samples: Samples,
    link_path: str | Path,
    ranges_path: str | Path,
    nulls_path: str | Path,
    link_units_path: str | Path,
    units: list[int],
    total_units: int,
    models: ModelSetup,
    steps: int,
    batch_size: int,
    adaptive: Mapping[str, Any],
    concepts: Mapping[str, Any],
    segmentation_path: str | Path | None = None,
) -> dict[str, Any]:
    """Sweep the chunk's units look by look (:mod:`pipeline.adaptive`) and measure as it goes.

    Writes ``tables/chunk-{k}.parquet`` (the measure stage's columns, rows only for rendered
    samples) and ``record_path``, a JSON of what was rendered and saved; with
    ``renders_path`` also the renders as ``renders/chunk-{k}.zarr`` on the units x samples
    grid, with ``rendered [K, P]`` marking the sweeps that exist. ``adaptive`` is the config's
    ``tuning.adaptive``; ``concepts`` holds ``measures``, ``q`` and ``min_effect`` as the
    concepts stage will use them, and ``total_units`` the units of the whole run.
    """
    rows, classes, r, unit_ids, values = chunk_sweeps(samples, ranges_path, units, steps)
    nulls = read_parquet(nulls_path)
    measures = selected_measures(nulls.columns, concepts["measures"])
    schedule = {
        int(u): look_schedule(rows, classes, adaptive["look_size"], (adaptive["seed"], int(u))) for u in unit_ids
    }
    design = Design.from_config(total_units * len(measures), schedule[int(unit_ids[0])], adaptive, concepts)
    link = load_link(link_path)
    loaded = models.load(segmentation_path)
    part_names = region_attrs(loaded.segmenter).get("part_names", ())
    sample_index, unit_index = pd.Index(rows), pd.Index(unit_ids)
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def render(sweep_units: np.ndarray, sweep_samples: np.ndarray) -> pd.DataFrame:
        at, of = sample_index.get_indexer(sweep_samples), unit_index.get_indexer(sweep_units)
        w = pair_latents(link, torch.from_numpy(r[at]), sweep_units, torch.from_numpy(values[of]))
        sweeps = render_sweeps(
            loaded,
            w,
            sweep_units,
            classes[at],
            values[of],
            batch_size=batch_size,
            label=f"perturb look {len(kept) + 1}: {len(np.unique(sweep_units))} units",
        )
        kept.append((of, at, sweeps["images"], sweeps["masks"]) if renders_path else (of, at, None, None))
        return sweep_table(
            sweep_units, sweep_samples, classes[at], sweeps, sweeps["images"], sweeps["masks"], part_names
        )

    column_p = read_parquet(link_units_path).set_index("unit")["p"]
    table, outcomes = SequentialTest(nulls, measures, design, column_p).run(render, schedule)
    fixed = len(unit_ids) * len(rows) * steps
    record = {
        "units": len(unit_ids),
        "samples": len(rows),
        "steps": steps,
        "looks": list(design.looks),
        "renders": len(table),
        "renders_fixed": fixed,
        "renders_saved": fixed - len(table),
        "tests": design.n_tests,
        "futility_p": design.futility_p,
        "efficacy_p": design.efficacy_p,
        "unit_outcomes": outcomes,
    }
    log.info(
        "adaptive: %d of the fixed design's %d renders (%d saved, %.2fx fewer); %d of %d units stopped early",
        len(table),
        fixed,
        fixed - len(table),
        fixed / max(len(table), 1),
        sum(outcome["look"] is not None for outcome in outcomes),
        len(unit_ids),
    )
    write_parquet(table_path, table)
    write_json(record_path, record)
    if renders_path:
        _write_kept_renders(renders_path, kept, unit_ids, rows, classes, steps, region_attrs(loaded.segmenter))
    return record


def _write_kept_renders(
    path: str | Path,
    kept: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    unit_ids: np.ndarray,
    rows: np.ndarray,
    classes: np.ndarray,
    steps: int,
    attrs: Mapping[str, Any],
) -> None:
    """The rendered sweeps on the units x samples grid; sweeps never rendered stay zero."""
    shape = (len(unit_ids), len(rows), steps)
    images = np.zeros((*shape, *kept[0][2].shape[2:]), dtype=np.uint8)
    masks = np.zeros((*shape, *kept[0][3].shape[2:]), dtype=kept[0][3].dtype)
    rendered = np.zeros(shape[:2], dtype=bool)
    for of, at, look_images, look_masks in kept:
        images[of, at], masks[of, at], rendered[of, at] = look_images, look_masks, True
    write_zarr(
        path,
        {
            "images": images,
            "masks": masks,
            "rendered": rendered,
            "unit": unit_ids,
            "sample": rows.astype(np.int64),
            "class": classes.astype(np.int64),
        },
        attrs={"steps": steps, **attrs},
    )
