"""Measure the sampled renders themselves, for each unit's tuning across natural samples.

The extract stage renders every sampled latent but keeps only the classifier's view of it.
This stage renders the accepted samples again (the same latents, so the same images and
activations) and measures them with the sweeps' own code path, one step per sample, so
``r`` of ``activations.zarr`` and these measures describe the same images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.stages.common import ModelSetup, region_attrs
from pipeline.stages.measure import measure_regions
from pipeline.store import read_zarr, write_parquet

log = logging.getLogger(__name__)


def observed_rows(classes: np.ndarray, accepted: np.ndarray, per_class: int) -> np.ndarray:
    """Sample ids to measure: the first ``per_class`` accepted samples of each class."""
    rows = [np.flatnonzero(accepted & (classes == c))[:per_class] for c in np.unique(classes)]
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def measure_samples(
    latents_path: str | Path,
    activations_path: str | Path,
    out_path: str | Path,
    *,
    models: ModelSetup,
    per_class: int,
    batch_size: int,
    segmentation_path: str | Path | None = None,
) -> None:
    """Write ``tables/sample_measures.parquet``: ``sample``, ``class`` and every image measure,
    in the regions the sweeps use (the part segmenter's with ``segmentation_path``); its
    metadata key ``regions`` says which (``segmentation`` or ``saliency``)."""
    latents, _ = read_zarr(latents_path, ["w", "class"])
    activations, _ = read_zarr(activations_path, ["accepted"])
    rows = observed_rows(latents["class"], activations["accepted"], per_class)
    loaded = models.load(segmentation_path)
    classes = latents["class"][rows]
    encoded = loaded.encode(
        torch.from_numpy(latents["w"][rows]),
        batch_size=batch_size,
        label="observe",
        keep_images=True,
        mask_classes=torch.from_numpy(classes),
    )
    regions = region_attrs(loaded.segmenter)
    part_names = regions.get("part_names", ())
    measures = measure_regions(encoded.images[:, None], encoded.masks[:, None], part_names)
    table = pd.concat(
        [pd.DataFrame({"sample": rows.astype(np.int64), "class": classes.astype(np.int64)}), measures], axis=1
    )
    log.info("observe: %d samples measured, %d measures", len(table), measures.shape[1])
    write_parquet(out_path, table, metadata={"regions": regions["regions"]})
