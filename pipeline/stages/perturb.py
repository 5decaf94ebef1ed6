"""Stage 5: sweep each unit of a chunk over its range, render, and re-encode every render.

Because the link is affine (w = W r + b), setting unit i of base activation r to the value v
gives ``w = link(r) + W[:, i] * (v - r_i)``: every (unit, sample, step) latent of a chunk is
one broadcast expression, rendered in batches. Each render is classified again, so the
tables say how far the unit really moved, what else moved, and what the class became.

With ``tuning.adaptive`` a chunk is swept by :mod:`pipeline.stages.perturb_adaptive` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.counterfactual import LatentDomain
from pipeline.stages.common import Encoded, Models, ModelSetup, region_attrs, softmax
from pipeline.stages.link import AffineLink, load_link
from pipeline.stages.samples import Samples
from pipeline.stages.units import probe_samples
from pipeline.store import read_parquet, read_zarr, write_zarr

log = logging.getLogger(__name__)


def sweep_values(low: np.ndarray, high: np.ndarray, steps: int) -> np.ndarray:
    """[K, steps] values from low to high, evenly spaced, per unit."""
    return low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, steps)[None, :]


def sweep_latents(link: AffineLink, r: torch.Tensor, units: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    """Latents for setting unit ``units[k]`` of every base sample to ``values[k, s]``.

    ``r [P, U]`` are the base activations; returns w [K, P, S, w_dim].
    """
    with torch.no_grad():
        base = link(r)  # [P, w_dim]
        index = torch.as_tensor(list(units), dtype=torch.int64)
        directions = link.weight[:, index].T  # [K, w_dim]
        offsets = values.float()[:, None, :] - r[:, index].float().T[:, :, None]  # [K, P, S]
        return base[None, :, None, :] + offsets[..., None] * directions[:, None, None, :]


def sweep_outcomes(
    encoded: Encoded, shape: tuple[int, ...], tracked: np.ndarray, classes: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-render activation columns of a sweep, as arrays of ``shape`` = [N, S].

    ``tracked [N, S]`` is the re-encoded value of what the sweep moves (the unit, or the
    projection on a direction); ``classes [N]`` is each sweep's original class.
    """
    r_hat = encoded.r.reshape(*shape, -1)
    outcomes = {
        "achieved": tracked.astype(np.float32),
        "achieved_change": (tracked - tracked[:, :1]).astype(np.float32),
    }
    if encoded.logits is None:
        outcomes |= {
            "pred": np.full(shape, -1, dtype=np.int64),
            "pred_prob": np.full(shape, np.nan, dtype=np.float32),
            "target_prob": np.full(shape, np.nan, dtype=np.float32),
        }
    else:
        probabilities = softmax(encoded.logits).reshape(*shape, -1)
        outcomes |= {
            "pred": probabilities.argmax(axis=-1).astype(np.int64),
            "pred_prob": probabilities.max(axis=-1).astype(np.float32),
            "target_prob": np.take_along_axis(
                probabilities, np.broadcast_to(classes[:, None, None], (*shape, 1)), axis=-1
            )[..., 0].astype(np.float32),
        }
    outcomes["r_change"] = r_hat - r_hat[:, :1]
    return outcomes


def render_sweeps(
    models: Models,
    w: torch.Tensor,
    units: np.ndarray,
    classes: np.ndarray,
    requested: np.ndarray,
    *,
    batch_size: int,
    label: str,
) -> dict[str, np.ndarray]:
    """Render and re-encode N sweeps of S steps: latents ``w [N, S, w_dim]`` of unit ``units[n]``
    on a base sample of class ``classes[n]``, set to ``requested [N, S]``. With a segmenter
    among the ``models`` the masks are its part label maps (see
    :func:`pipeline.stages.common.render_and_encode`).

    Returns per render ([N, S, ...]): images, masks, requested, others_mean_abs_change,
    w_distance (:func:`w_distances`) and the columns of :func:`sweep_outcomes`.
    """
    n, steps = requested.shape
    encoded = models.encode(
        w.reshape(-1, w.shape[-1]),
        batch_size=batch_size,
        label=label,
        keep_images=True,
        mask_classes=torch.from_numpy(np.ascontiguousarray(np.repeat(classes, steps))),
    )
    r_hat = encoded.r.reshape(n, steps, -1)
    tracked = np.take_along_axis(r_hat, np.asarray(units)[:, None, None], axis=-1)[..., 0]
    outcomes = sweep_outcomes(encoded, (n, steps), tracked, classes)
    change = np.abs(outcomes.pop("r_change"))
    tuned_change = np.abs(outcomes["achieved_change"])
    others = (change.sum(axis=-1) - tuned_change) / max(1, change.shape[-1] - 1)
    height, width = encoded.images.shape[1:3]
    return {
        "images": encoded.images.reshape(n, steps, height, width, 3),
        "masks": encoded.masks.reshape(n, steps, height, width),
        "requested": requested.astype(np.float32),
        "others_mean_abs_change": others.astype(np.float32),
        "w_distance": w_distances(w),
        **outcomes,
    }


def w_distances(w: torch.Tensor | np.ndarray) -> np.ndarray:
    """How far each step of sweeps ``w [N, S, w_dim]`` is from its first step in w, float32 [N, S].

    The statistics compare sweeps per unit of this distance (:mod:`pipeline.stats`).
    """
    w = torch.as_tensor(w, dtype=torch.float64)
    return torch.linalg.vector_norm(w - w[:, :1], dim=-1).float().numpy()


def chunk_sweeps(
    samples: Samples, ranges_path: str | Path, units: Sequence[int], steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a chunk sweeps: probe sample ids [P], their classes [P] and activations r [P, U],
    the unit ids [K] and their sweep values [K, steps]."""
    rows, probe = probe_samples(samples, latents=("class",), activations=("r",))
    ranges = read_parquet(ranges_path).set_index("unit")
    missing = sorted(set(units) - set(ranges.index))
    if missing:
        raise ValueError(f"{ranges_path}: no range for unit {missing[0]}")
    unit_ids = np.asarray(units, dtype=np.int64)
    values = sweep_values(ranges.loc[unit_ids, "low"].to_numpy(), ranges.loc[unit_ids, "high"].to_numpy(), steps)
    return rows, probe["class"], probe["r"], unit_ids, values


# Units whose sweep ends are placed against the latent domain at once (bounds the memory).
DOMAIN_UNIT_BLOCK = 256


def sweep_domain(
    samples: Samples, link_path: str | Path, ranges_path: str | Path, units: Sequence[int]
) -> pd.DataFrame:
    """Per unit of ``units``: where its sweeps end against the generator's latent domain.

    The domain is the counterfactuals' (:class:`pipeline.counterfactual.LatentDomain` of the
    accepted training latents: within the 99th percentile of their standardised distance
    from their mean). Each sweep's two ends (its range's low and high, every probe sample)
    are rebuilt as :func:`perturb_chunk` renders them. ``sweep_end_distance``: the median
    over the unit's probe samples of the farther end's distance in domain radii (1: the
    edge); ``sweep_in_domain``: the share of its sweeps whose both ends lie inside.
    """
    latents, _ = read_zarr(samples.latents_path, ["w"])
    domain = LatentDomain.fit(latents["w"][samples.rows("train")])
    link = load_link(link_path)
    _, _, r, unit_ids, values = chunk_sweeps(samples, ranges_path, units, 2)
    ends = np.empty((len(unit_ids), len(r)))
    for start in range(0, len(unit_ids), DOMAIN_UNIT_BLOCK):
        block = slice(start, start + DOMAIN_UNIT_BLOCK)
        w = sweep_latents(link, torch.from_numpy(r), unit_ids[block], torch.from_numpy(values[block])).numpy()
        distances = domain.distances(w.reshape(-1, w.shape[-1])).reshape(w.shape[:3])
        ends[block] = distances.max(axis=2) / domain.radius
    return pd.DataFrame(
        {"sweep_end_distance": np.median(ends, axis=1), "sweep_in_domain": (ends <= 1.0).mean(axis=1)},
        index=pd.Index(unit_ids, name="unit"),
    )


def perturb_chunk(
    out_path: str | Path,
    *,
    samples: Samples,
    link_path: str | Path,
    ranges_path: str | Path,
    units: list[int],
    models: ModelSetup,
    steps: int,
    batch_size: int,
    segmentation_path: str | Path | None = None,
) -> None:
    """Write ``renders/chunk-{k}.zarr`` for the chunk's ``units`` over all probe samples.

    Arrays (K units, P samples, S steps): images uint8 [K, P, S, H, W, 3], masks [K, P, S, H,
    W] (bool object masks, or with ``segmentation_path`` uint8 part label maps, the part names
    in the attribute ``part_names``), and per render: requested, achieved, achieved_change,
    others_mean_abs_change, w_distance, pred, pred_prob, target_prob; plus unit [K], sample
    [P], class [P]. The attribute ``regions`` says which region source made the masks.
    """
    rows, classes, r, unit_ids, values = chunk_sweeps(samples, ranges_path, units, steps)
    k, p = len(unit_ids), len(rows)
    w = sweep_latents(load_link(link_path), torch.from_numpy(r), unit_ids, torch.from_numpy(values))

    loaded = models.load(segmentation_path)
    log.info("perturb: %d units x %d samples x %d steps = %d renders", k, p, steps, k * p * steps)
    sweeps = render_sweeps(
        loaded,
        w.reshape(k * p, steps, -1),
        np.repeat(unit_ids, p),
        np.tile(classes, k),
        np.repeat(values, p, axis=0),
        batch_size=batch_size,
        label=f"perturb units {unit_ids[0]}-{unit_ids[-1]}",
    )
    grid = {name: array.reshape(k, p, *array.shape[1:]) for name, array in sweeps.items()}
    write_zarr(
        out_path,
        {
            "images": grid.pop("images"),
            "masks": grid.pop("masks"),
            "unit": unit_ids,
            "sample": rows.astype(np.int64),
            "class": classes.astype(np.int64),
            "requested": grid.pop("requested"),
            "others_mean_abs_change": grid.pop("others_mean_abs_change"),
            **grid,
        },
        attrs={"steps": steps, **region_attrs(loaded.segmenter)},
    )

