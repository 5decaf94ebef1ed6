"""The report's tuning strips: each shown unit swept on a few probe samples, rendered again.

Renders are temporary in the workflow, so the strips are rendered here once more: the same
sweep as the perturbation stage (set one unit of a probe sample's activation to values from
its low to its high end, map through the link, render). Each render is also re-encoded,
which gives every other unit's response to the sweep: the co-changing units. With a part
segmenter, each frame's part map comes from the generator's features of the same synthesis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.reporting.images import THUMBNAIL_TILE, fit_frames, fit_label_maps
from pipeline.reporting.selection import shown_units, strip_samples
from pipeline.stages.common import Models, ModelSetup
from pipeline.stages.link import AffineLink, load_link
from pipeline.stages.perturb import sweep_latents, sweep_values
from pipeline.stages.samples import Samples
from pipeline.stages.units import probe_samples
from pipeline.store import read_parquet, write_zarr

log = logging.getLogger(__name__)

UNITS_PER_BLOCK = 32


def render_strips(
    out_path: str | Path,
    *,
    samples: Samples,
    link_path: str | Path,
    ranges_path: str | Path,
    concepts_path: str | Path,
    models: ModelSetup,
    max_units: int,
    top_units: int,
    strip_samples_count: int,
    steps: int,
    batch_size: int,
    segmentation_path: str | Path | None = None,
) -> None:
    """Write ``report_strips.zarr``: the strips of every unit the report shows.

    The units are those of :func:`pipeline.reporting.selection.shown_units` for ``max_units``
    and ``top_units``; the samples the first ``strip_samples_count`` probe samples taking the
    classes in turn. Arrays (K units, P samples, S steps): images uint8 [K, P, S, h, w, 3]
    with h, w at most ``THUMBNAIL_TILE``; unit [K]; values [K, S] (the requested
    activations); co_change [K, U] (mean change of every unit's re-encoded activation from
    the first to the last step, in its standard deviations); sample [P] and class [P]; with
    ``segmentation_path`` also parts uint8 [K, P, S, h, w] (0 = background, k = part k).
    Attributes: steps, and with a segmenter part_names and segmenter (train, held_out, mean_iou).
    """
    concepts = read_parquet(concepts_path)
    units = shown_units(concepts, max_units=max_units, top_units=top_units).swept
    rows, probe = probe_samples(samples, latents=("class",), activations=("r",))
    chosen = strip_samples(probe["class"], strip_samples_count)
    ranges = read_parquet(ranges_path).set_index("unit")
    # The strips are pictures of the generator's renders, drawn in fp32 whatever the sweeps ran at.
    loaded = replace(models.load(segmentation_path), precision="fp32")
    swept = sweep_units(
        loaded, load_link(link_path), probe["r"][chosen], units, ranges, steps=steps, batch_size=batch_size
    )
    log.info("strips: %d units x %d samples x %d steps", len(units), len(chosen), steps)
    attrs: dict = {"steps": steps}
    if loaded.segmenter is not None:
        record = loaded.segmenter.record
        attrs["part_names"] = list(loaded.segmenter.part_names)
        attrs["segmenter"] = {key: record.get(key) for key in ("train", "held_out", "mean_iou")}
    write_zarr(
        out_path,
        {
            "unit": np.asarray(units, dtype=np.int64),
            "sample": rows[chosen].astype(np.int64),
            "class": probe["class"][chosen].astype(np.int64),
            **swept,
        },
        attrs=attrs,
    )


def sweep_units(
    models: Models,
    link: AffineLink,
    r: np.ndarray,
    units: Sequence[int],
    ranges: pd.DataFrame,
    *,
    steps: int,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Sweep each of ``units`` over its range on the base activations ``r [P, U]``, in blocks.

    ``ranges`` is indexed by unit with columns low, high and std (``units/ranges.parquet``).
    Returns the arrays of :func:`render_strips` but unit, sample and class.
    """
    std = ranges["std"].reindex(np.arange(r.shape[1])).to_numpy(dtype=np.float64)
    scale = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    base = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))
    blocks: dict[str, list[np.ndarray]] = {"images": [], "values": [], "co_change": []}
    if models.segmenter is not None:
        blocks["parts"] = []
    for start in range(0, len(units), UNITS_PER_BLOCK):
        block = np.asarray(units[start : start + UNITS_PER_BLOCK], dtype=np.int64)
        low, high = (ranges.loc[block, end].to_numpy(dtype=np.float64) for end in ("low", "high"))
        values = sweep_values(low, high, steps)
        w = sweep_latents(link, base, block, torch.from_numpy(values))  # [K, P, S, w_dim]
        k, p = len(block), len(r)
        encoded = models.encode(
            w.reshape(-1, w.shape[-1]),
            batch_size=batch_size,
            label=f"report strips, units {block[0]}-{block[-1]}",
            keep_images=True,
            # The classes only ask for region maps; with a segmenter those are its part maps.
            mask_classes=None if models.segmenter is None else torch.zeros(k * p * steps, dtype=torch.int64),
        )
        images = fit_frames(encoded.images, THUMBNAIL_TILE)
        blocks["images"].append(images.reshape(k, p, steps, *images.shape[1:]))
        if models.segmenter is not None:
            parts = fit_label_maps(encoded.masks, images.shape[1:3])
            blocks["parts"].append(parts.reshape(k, p, steps, *parts.shape[1:]))
        r_hat = encoded.r.reshape(k, p, steps, -1)
        blocks["values"].append(values)
        blocks["co_change"].append((r_hat[:, :, -1] - r_hat[:, :, 0]).mean(axis=1) / scale)
    return {name: np.concatenate(arrays) for name, arrays in blocks.items()}
