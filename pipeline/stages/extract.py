"""Stage 2: render every sampled latent and record the classifier's activations and logits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.stages.common import ModelSetup
from pipeline.store import read_zarr, write_zarr

log = logging.getLogger(__name__)


def extract_activations(
    latents_path: str | Path,
    out_path: str | Path,
    *,
    models: ModelSetup,
    require_correct: bool,
    batch_size: int,
) -> None:
    """Write ``activations.zarr``: r [N, U], logits [N, C], pred [N] and accepted [N].

    ``accepted`` marks samples predicted as their own class (all samples when the classifier
    has no head or ``require_correct`` is off); later stages use accepted samples only.
    """
    latents, _ = read_zarr(latents_path, ["w", "class"])
    loaded = models.load()
    encoded = loaded.encode(torch.from_numpy(latents["w"]), batch_size=batch_size, label="extract")
    n = len(latents["w"])
    if encoded.logits is None:
        logits = np.zeros((n, 0), dtype=np.float32)
        pred = np.full(n, -1, dtype=np.int64)
        accepted = np.ones(n, dtype=bool)
    else:
        logits = encoded.logits
        pred = logits.argmax(axis=1).astype(np.int64)
        accepted = pred == latents["class"] if require_correct else np.ones(n, dtype=bool)
    if not accepted.any():
        raise ValueError(f"{latents_path}: no sample is classified as its own class; the accepted set is empty")
    log.info("extract: %d of %d samples accepted", int(accepted.sum()), n)
    write_zarr(
        out_path,
        {"r": encoded.r, "logits": logits, "pred": pred, "accepted": accepted},
        attrs={
            "classifier": dict(models.classifier),
            "num_units": loaded.classifier.num_units,
            "num_classes": loaded.classifier.num_classes,
        },
    )
