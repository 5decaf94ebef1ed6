"""Tuning strips rendered on the fly from the link and the generator, plus what else moves.

Renders are temporary in the workflow, so the report renders the strips it shows again:
the same sweep as the perturbation stage (set one unit of a probe sample's activation to
values from its low to its high end, map through the link, render). Each render is also
re-encoded, which gives every other unit's response to the sweep: the co-changing units.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.models.protocols import Classifier, Generator
from pipeline.stages.common import render_and_encode, tile
from pipeline.stages.link import AffineLink
from pipeline.stages.perturb import sweep_latents, sweep_values

THUMBNAIL_TILE = 96
UNITS_PER_BLOCK = 32


@dataclass(frozen=True)
class Thumbnail:
    png: bytes
    width: int
    height: int
    tile: int  # side of one image in the PNG, in pixels

    def display_width(self, tile: int) -> int:
        """The width to show it at so that one image is ``tile`` CSS pixels high."""
        return round(self.width * tile / self.tile)


@dataclass(frozen=True)
class UnitSweep:
    unit: int
    values: np.ndarray  # float [steps], the requested activations
    strip: Thumbnail  # one row per sample, one column per step
    co_change: np.ndarray  # float [U], mean change of every unit from the first to the last step, in stds


def strip_samples(classes: np.ndarray, count: int) -> np.ndarray:
    """Positions of ``count`` samples taking the classes in turn (first of each class, then second, ...)."""
    rank_in_class = pd.Series(classes).groupby(classes).cumcount().to_numpy()
    return np.lexsort((classes, rank_in_class))[:count]


def unit_sweeps(
    classifier: Classifier,
    generator: Generator,
    link: AffineLink,
    r: np.ndarray,
    units: Sequence[int],
    ranges: pd.DataFrame,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
) -> Iterator[UnitSweep]:
    """Sweep each of ``units`` over its range on the base activations ``r [P, U]``, in blocks.

    ``ranges`` is indexed by unit with columns low, high and std (``units/ranges.parquet``).
    """
    std = ranges["std"].reindex(np.arange(r.shape[1])).to_numpy(dtype=np.float64)
    scale = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    base = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))
    for start in range(0, len(units), UNITS_PER_BLOCK):
        block = np.asarray(units[start : start + UNITS_PER_BLOCK], dtype=np.int64)
        low, high = (ranges.loc[block, end].to_numpy(dtype=np.float64) for end in ("low", "high"))
        values = sweep_values(low, high, steps)
        w = sweep_latents(link, base, block, torch.from_numpy(values))  # [K, P, S, w_dim]
        encoded = render_and_encode(
            generator,
            classifier,
            w.reshape(-1, w.shape[-1]),
            batch_size=batch_size,
            device=device,
            label=f"report strips, units {block[0]}-{block[-1]}",
            keep_images=True,
        )
        k, p = len(block), len(r)
        images = encoded.images.reshape(k, p, steps, *encoded.images.shape[1:])
        r_hat = encoded.r.reshape(k, p, steps, -1)
        co_change = (r_hat[:, :, -1] - r_hat[:, :, 0]).mean(axis=1) / scale
        for position, unit in enumerate(block):
            yield UnitSweep(int(unit), values[position], thumbnail(images[position]), co_change[position])


def thumbnail(images: np.ndarray, *, max_tile: int = THUMBNAIL_TILE, gap: int = 2) -> Thumbnail:
    """uint8 [rows, cols, H, W, 3] -> the tiled grid as a PNG whose images are at most ``max_tile`` px."""
    canvas = Image.fromarray(tile(images, gap=gap))
    side = images.shape[2]
    if side > max_tile:
        factor = max_tile / side
        canvas = canvas.resize((round(canvas.width * factor), round(canvas.height * factor)), Image.Resampling.LANCZOS)
        side = max_tile
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return Thumbnail(buffer.getvalue(), canvas.width, canvas.height, side)
