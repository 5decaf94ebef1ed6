"""Counterfactual explanations: the smallest activation shift that flips the class.

For activations ``r`` of images of class ``origin`` a shift ``s`` is optimised, as in the
paper, with the loss

    -logit_target(r - s) + w_origin * logit_origin(r - s) - w_cos * cos(link(r), link(r - s))

where the logits come from the classifier's head and ``link`` maps activations to the
generator's latent space. Every ``check_every`` steps the shifted activation ``relu(r - s)``
is rendered through link and generator and classified again; a sample succeeds when its
render is classified as ``target``. Each sample stops on its own success or at ``max_steps``.

The search runs many samples at once. The loss is a sum of per-sample terms and both
optimisers act element-wise, so a batch gives the same shifts as one sample at a time.

Nothing in the loss bounds how far the latent travels (the cosine ignores its length), and
a classifier may call an image the generator was never trained to make, a flat colour
field say, by any class. So every counterfactual's latent is placed against the training
latents (:class:`LatentDomain`): a flip counts as in the generator's domain only if its
latent is no farther from their mean, in their standard deviations, than 99 % of them.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.device import run_with_backoff
from pipeline.measures import measure_changes, measure_sweeps, object_masks, tested_measures
from pipeline.models.protocols import Classifier, Generator
from pipeline.stages.common import load_models, prepare_device, synthesize, tile, to_uint8
from pipeline.stages.link import load_link
from pipeline.store import atomic_path, read_parquet, read_zarr, write_json, write_parquet, write_zarr

log = logging.getLogger(__name__)

Link = Callable[[torch.Tensor], torch.Tensor]

OPTIMIZERS = ("sgd", "adam")
PANEL_ROWS = 8
STD_FLOOR_FRACTION = 0.01
PROGRESS_SECONDS = 10.0
DOMAIN_QUANTILE = 0.99


@dataclass(frozen=True)
class LatentDomain:
    """Where the generator's training-time latents lie: their mean and std per latent dim,
    and the ``DOMAIN_QUANTILE`` quantile of their standardised distance from the mean."""

    mean: np.ndarray
    std: np.ndarray
    radius: float

    @classmethod
    def fit(cls, w: np.ndarray) -> LatentDomain:
        if len(w) < 2:
            raise ValueError(f"latent domain: needs at least 2 latents, got {len(w)}")
        w = np.asarray(w, dtype=np.float64)
        std = w.std(axis=0)
        domain = cls(w.mean(axis=0), np.where(std > 0, std, 1.0), 0.0)
        return cls(domain.mean, domain.std, float(np.quantile(domain.distances(w), DOMAIN_QUANTILE)))

    def distances(self, w: np.ndarray) -> np.ndarray:
        """Standardised distance of each latent ``w [N, w_dim]`` from the mean, [N]."""
        return np.linalg.norm((np.asarray(w, dtype=np.float64) - self.mean) / self.std, axis=1)


@dataclass(frozen=True)
class Counterfactuals:
    """One row per searched sample.

    ``original`` is the render of ``link(r)``, not the sample's own generator image, so that
    original and counterfactual differ only by the shift. Probabilities are those of the
    re-classified renders; ``steps`` counts optimiser steps up to the check that first saw
    the target class (``max_steps`` where none did).
    """

    success: np.ndarray  # bool [B]
    steps: np.ndarray  # int64 [B]
    start_prob_origin: np.ndarray  # float32 [B], render of link(r)
    start_prob_target: np.ndarray  # float32 [B]
    prob_origin: np.ndarray  # float32 [B], render of link(relu(r - s))
    prob_target: np.ndarray  # float32 [B]
    predicted: np.ndarray  # int64 [B], class of the counterfactual render
    shift: np.ndarray  # float32 [B, U], the optimised s
    shift_l2: np.ndarray  # float32 [B]
    r_counterfactual: np.ndarray  # float32 [B, U], relu(r - s)
    original: np.ndarray  # uint8 [B, H, W, 3]
    counterfactual: np.ndarray  # uint8 [B, H, W, 3]


def search(
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    *,
    lr: float = 0.5,
    max_steps: int = 2000,
    w_origin: float = 0.6,
    w_cos: float = 10.0,
    check_every: int = 10,
    batch: int = 64,
    optimizer: str = "sgd",
) -> Counterfactuals:
    """Search a counterfactual shift for every row of ``r`` [B, U], from ``origin`` to ``target``.

    ``link`` maps activations [B, U] to latents w [B, w_dim] (every synthesis layer gets the
    same w) and must be differentiable.
    Models and link must already sit on ``r``'s device. ``batch`` bounds how many samples are
    optimised together; it is halved when the GPU runs out of memory.
    """
    head = classifier.head
    if head is None:
        raise ValueError("counterfactuals need a classifier with a head (logits); this one has none")
    num_classes = classifier.num_classes
    for name, value in (("origin", origin), ("target", target)):
        if num_classes is not None and not 0 <= value < num_classes:
            raise ValueError(f"counterfactuals.{name}: class {value} is outside [0, {num_classes})")
    if origin == target:
        raise ValueError(f"counterfactuals: origin and target are the same class ({origin})")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"counterfactuals.optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if max_steps < 1 or check_every < 1 or batch < 1:
        raise ValueError("counterfactuals: max_steps, check_every and batch must be >= 1")
    if r.ndim != 2:
        raise ValueError(f"counterfactuals: r must be [samples, units], got shape {tuple(r.shape)}")

    parts: list[Counterfactuals] = []

    def step(rows: slice) -> None:
        parts.append(
            _search_batch(
                classifier,
                generator,
                link,
                r[rows].detach().float(),
                origin,
                target,
                lr=lr,
                max_steps=max_steps,
                w_origin=w_origin,
                w_cos=w_cos,
                check_every=check_every,
                optimizer=optimizer,
            )
        )

    run_with_backoff(step, r.shape[0], batch)
    return Counterfactuals(
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in Counterfactuals.__dataclass_fields__}
    )


def difference_image(original: np.ndarray, counterfactual: np.ndarray) -> np.ndarray:
    """Signed difference as uint8, mid-grey where nothing changed: 128 + (cf - orig) / 2."""
    delta = counterfactual.astype(np.int16) - original.astype(np.int16)
    return np.clip(128 + delta // 2, 0, 255).astype(np.uint8)


def _search_batch(
    classifier: Classifier,
    generator: Generator,
    link: Link,
    r: torch.Tensor,
    origin: int,
    target: int,
    *,
    lr: float,
    max_steps: int,
    w_origin: float,
    w_cos: float,
    check_every: int,
    optimizer: str,
) -> Counterfactuals:
    n = r.shape[0]
    device = r.device
    with torch.no_grad():
        w_reference = link(r)
        start_images = _quantised(synthesize(generator, link(r)))
        start_probs = _probabilities(classifier, start_images)

    # A zero start keeps the search from inventing changes that no class term asks for.
    shift = torch.zeros_like(r, requires_grad=True)
    step_size = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]([shift], lr=lr)

    done = torch.zeros(n, dtype=torch.bool, device=device)
    steps = torch.full((n,), max_steps, dtype=torch.int64)
    final_shift = torch.zeros_like(r)
    final_images = torch.empty_like(start_images)
    final_probs = torch.empty_like(start_probs)

    last_report = time.perf_counter()
    for step in range(1, max_steps + 1):
        shifted = r - shift
        logits = classifier.head(shifted)
        closeness = F.cosine_similarity(w_reference, link(shifted), dim=1)
        loss = -logits[:, target] + w_origin * logits[:, origin] - w_cos * closeness
        # Only the shift's gradient: the models' parameters may require grad and must stay untouched.
        (shift.grad,) = torch.autograd.grad(loss[~done].sum(), shift)
        step_size.step()
        with torch.no_grad():
            # Adam's momentum would keep moving a finished sample even with a zero gradient.
            shift[done] = final_shift[done]

        if step % check_every and step < max_steps:
            continue
        active = (~done).nonzero().squeeze(1)
        with torch.no_grad():
            candidate = shift[active].detach()
            images = _quantised(synthesize(generator, link(torch.relu(r[active] - candidate))))
            probs = _probabilities(classifier, images)
        flipped = probs.argmax(1) == target
        # Failures keep their last check, so every sample ends with a rendered counterfactual.
        keep = flipped | (step == max_steps)
        rows = active[keep]
        final_shift[rows] = candidate[keep]
        final_images[rows] = images[keep]
        final_probs[rows] = probs[keep]
        done[active[flipped]] = True
        steps[active[flipped].cpu()] = step
        if time.perf_counter() - last_report > PROGRESS_SECONDS:
            log.info("counterfactuals %d -> %d: step %d, %d of %d flipped", origin, target, step, int(done.sum()), n)
            last_report = time.perf_counter()
        if bool(done.all()):
            break

    r_counterfactual = torch.relu(r - final_shift)
    return Counterfactuals(
        success=done.cpu().numpy(),
        steps=steps.numpy(),
        start_prob_origin=start_probs[:, origin].cpu().numpy(),
        start_prob_target=start_probs[:, target].cpu().numpy(),
        prob_origin=final_probs[:, origin].cpu().numpy(),
        prob_target=final_probs[:, target].cpu().numpy(),
        predicted=final_probs.argmax(1).cpu().numpy(),
        shift=final_shift.cpu().numpy(),
        shift_l2=final_shift.norm(dim=1).cpu().numpy(),
        r_counterfactual=r_counterfactual.cpu().numpy(),
        original=to_uint8(start_images),
        counterfactual=to_uint8(final_images),
    )


def _quantised(images: torch.Tensor) -> torch.Tensor:
    # Judging the 8-bit image that is stored keeps a flip near the boundary from being lost on saving.
    return (images * 255).round() / 255


def _probabilities(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(classifier.head(classifier.features(images)), dim=1)


def counterfactual_pair(
    table_path: str | Path,
    images_path: str | Path,
    panel_path: str | Path,
    *,
    latents_path: str | Path,
    activations_path: str | Path,
    link_path: str | Path,
    unit_summary_path: str | Path,
    classifier: Mapping[str, Any],
    generator: Mapping[str, Any],
    device: str,
    origin: int,
    target: int,
    samples: int,
    max_steps: int,
    lr: float,
    w_origin: float,
    w_cos: float,
    check_every: int,
    optimizer: str,
    top_units: int,
    batch_size: int,
) -> None:
    """Counterfactuals for up to ``samples`` accepted test samples of ``origin``, towards ``target``.

    Writes ``counterfactuals/{origin}-{target}.parquet`` (one row per sample, see
    :func:`pair_table`), ``.zarr`` (original, counterfactual and difference images uint8
    [N, H, W, 3], the shift [N, U], success [N] and sample [N]) and a PNG panel of the first
    samples (original | counterfactual | difference per row) for the Snakemake report.
    """
    latents, _ = read_zarr(latents_path, ["class", "split", "w"])
    activations, _ = read_zarr(activations_path, ["r", "accepted"])
    domain = LatentDomain.fit(latents["w"][activations["accepted"] & (latents["split"] == "train")])
    candidates = np.flatnonzero(activations["accepted"] & (latents["split"] == "test") & (latents["class"] == origin))
    if candidates.size == 0:
        raise ValueError(f"{activations_path}: no accepted test sample of class {origin} to start counterfactuals from")
    rows = candidates[:samples]
    accepted_r = activations["r"][activations["accepted"]]
    unit_std = accepted_r.std(axis=0, dtype=np.float64)

    torch_device = prepare_device(device)
    clf, gen = load_models(classifier, generator, torch_device)
    link = load_link(link_path).to(torch_device)
    log.info("counterfactuals %d -> %d: %d samples, at most %d steps", origin, target, len(rows), max_steps)
    result = search(
        clf,
        gen,
        link,
        torch.from_numpy(activations["r"][rows]).to(torch_device),
        origin,
        target,
        lr=lr,
        max_steps=max_steps,
        w_origin=w_origin,
        w_cos=w_cos,
        check_every=check_every,
        batch=batch_size,
        optimizer=optimizer,
    )
    log.info(
        "counterfactuals %d -> %d: %d of %d flipped (median %d steps)",
        origin,
        target,
        int(result.success.sum()),
        len(rows),
        int(np.median(result.steps)),
    )
    image_changes = pair_measure_changes(clf, result, origin, torch_device)
    with torch.no_grad():
        rendered = link(torch.from_numpy(result.r_counterfactual).to(torch_device)).cpu().numpy()
    concepts = read_parquet(unit_summary_path)
    table = pair_table(result, rows, activations["r"][rows], unit_std, concepts, image_changes, top_units)
    table.insert(table.columns.get_loc("shift_l2") + 1, "latent_distance", domain.distances(rendered))
    table.insert(table.columns.get_loc("latent_distance") + 1, "in_domain", table["latent_distance"] <= domain.radius)
    settings = {
        "origin": origin,
        "target": target,
        "max_steps": max_steps,
        "lr": lr,
        "w_origin": w_origin,
        "w_cos": w_cos,
        "check_every": check_every,
        "optimizer": optimizer,
        "latent_domain_radius": domain.radius,
    }
    write_parquet(table_path, table, metadata={k: json.dumps(v) for k, v in settings.items()})
    write_zarr(
        images_path,
        {
            "original": result.original,
            "counterfactual": result.counterfactual,
            "difference": difference_image(result.original, result.counterfactual),
            "shift": result.shift.astype(np.float32),
            "success": result.success,
            "sample": rows.astype(np.int64),
        },
        attrs=settings,
    )
    write_panel(panel_path, result.original, result.counterfactual)


def pair_measure_changes(
    classifier: Classifier, result: Counterfactuals, origin: int, device: torch.device
) -> pd.DataFrame:
    """Image-measure changes from each original to its counterfactual, one row per sample.

    Each image's object region is the one its own class marks: the origin's in the original,
    the predicted class's in the counterfactual.
    """
    pairs = np.stack([result.original, result.counterfactual], axis=1)  # [N, 2, H, W, 3]
    n, _, height, width, _ = pairs.shape
    images = torch.from_numpy(pairs.reshape(n * 2, height, width, 3)).to(device).permute(0, 3, 1, 2).float() / 255
    classes = torch.from_numpy(np.stack([np.full(n, origin), result.predicted], axis=1).reshape(-1)).to(device)
    masks = object_masks(classifier, images, classes).cpu().numpy().reshape(n, 2, height, width)
    measured = measure_sweeps(pairs, masks)
    measured.insert(0, "sample", np.repeat(np.arange(n), 2))
    measured.insert(1, "step", np.tile([0, 1], n))
    changes = measure_changes(measured, tested_measures(measured.columns), by=("sample",))
    return changes.drop(columns="sample")


def pair_table(
    result: Counterfactuals,
    rows: np.ndarray,
    r: np.ndarray,
    unit_std: np.ndarray,
    unit_summary: pd.DataFrame,
    image_changes: pd.DataFrame,
    top_units: int,
) -> pd.DataFrame:
    """The per-sample counterfactual table.

    Columns: sample (row in latents.zarr), success, steps, start/final probabilities of origin
    and target, predicted, shift_l2; ``top_units`` (the units whose activation changed most,
    in standard deviations over accepted samples, see :func:`change_scale`), ``top_changes``
    (those standardised changes, signed) and ``top_concepts`` (each unit's top measure, ""
    when it has none); then one column per tested image measure with its change from the
    original to the counterfactual.
    """
    change = (result.r_counterfactual - r) / change_scale(unit_std)
    order = np.argsort(-np.abs(change), axis=1, kind="stable")[:, :top_units]
    top_change = np.take_along_axis(change, order, axis=1)
    concept_of = _top_concepts(unit_summary, r.shape[1])
    table = pd.DataFrame(
        {
            "sample": rows.astype(np.int64),
            "success": result.success,
            "steps": result.steps,
            "start_prob_origin": result.start_prob_origin,
            "start_prob_target": result.start_prob_target,
            "prob_origin": result.prob_origin,
            "prob_target": result.prob_target,
            "predicted": result.predicted,
            "shift_l2": result.shift_l2,
            "top_units": list(order.astype(np.int64)),
            "top_changes": list(top_change.astype(np.float32)),
            "top_concepts": [concept_of[units].tolist() for units in order],
        }
    )
    return pd.concat([table, image_changes.reset_index(drop=True)], axis=1)


def change_scale(unit_std: np.ndarray) -> np.ndarray:
    """Per-unit divisor for activation changes: the unit's std, floored at a fraction of the median std.

    Units that barely vary over the data (dead or nearly constant) would otherwise rank first
    for any tiny change.
    """
    active = unit_std[unit_std > 0]
    floor = STD_FLOOR_FRACTION * float(np.median(active)) if active.size else 1.0
    return np.maximum(unit_std, floor)


def _top_concepts(unit_summary: pd.DataFrame, num_units: int) -> np.ndarray:
    """Each unit's top measure ("" when it has none) as an object array indexed by unit."""
    missing = [c for c in ("unit", "unique_measure") if c not in unit_summary.columns]
    if missing:
        raise KeyError(f"unit summary: column {missing[0]!r} is missing")
    concepts = np.full(num_units, "", dtype=object)
    known = unit_summary.dropna(subset=["unique_measure"])
    known = known[(known["unit"] >= 0) & (known["unit"] < num_units)]
    concepts[known["unit"].to_numpy(dtype=np.int64)] = known["unique_measure"].astype(str).to_numpy()
    return concepts


def write_panel(path: str | Path, original: np.ndarray, counterfactual: np.ndarray, rows: int = PANEL_ROWS) -> None:
    """A PNG with one row per sample: original, counterfactual, difference."""
    shown = slice(0, min(rows, len(original)))
    triples = np.stack(
        [original[shown], counterfactual[shown], difference_image(original[shown], counterfactual[shown])], axis=1
    )
    with atomic_path(path) as tmp:
        Image.fromarray(tile(triples)).save(tmp, format="PNG")


def summarise_pairs(
    table_paths: Sequence[str | Path],
    unit_summary_path: str | Path,
    summary_table_path: str | Path,
    summary_json_path: str | Path,
    *,
    n_boot: int,
    seed: int,
) -> None:
    """Aggregate every pair's table over its successful samples.

    ``summary.json`` holds, per pair, the success rate, the rate of flips whose latent is in
    the generator's domain, the median steps, shift size and latent distance, and the mean
    final target probability; and both rates over all pairs. ``summary.parquet``
    has one row per (pair, measure): the measured image change (mean, bootstrap 95% CI,
    standardised effect, and the fraction of samples that change in the mean's direction),
    and how the shift acts on units labelled with that measure (their share of the top
    changed units, and the mean direction in which they push the measure: +1 all up, -1
    all down). Rows within a pair are ordered by decreasing |effect|.
    """
    effects = read_parquet(unit_summary_path)
    pairs, rows = [], []
    for path in table_paths:
        metadata = pq.read_schema(path).metadata or {}
        origin, target = (int(json.loads(metadata[key])) for key in (b"origin", b"target"))
        table = read_parquet(path)
        flipped = table[table["success"]]
        pairs.append(
            {
                "origin": origin,
                "target": target,
                "n": len(table),
                "n_success": len(flipped),
                "n_success_in_domain": int(flipped["in_domain"].sum()),
                "success_rate": float(table["success"].mean()),
                "success_in_domain_rate": float((table["success"] & table["in_domain"]).mean()),
                "median_steps": float(table["steps"].median()),
                "median_shift_l2": float(table["shift_l2"].median()),
                "median_latent_distance": float(table["latent_distance"].median()),
                "latent_domain_radius": float(json.loads(metadata[b"latent_domain_radius"])),
                "mean_prob_target": float(table["prob_target"].mean()),
            }
        )
        rows.append(concept_movement(flipped, effects, n_boot=n_boot, seed=seed).assign(origin=origin, target=target))
    total = sum(p["n"] for p in pairs)

    def overall(count: str) -> float | None:
        return sum(p[count] for p in pairs) / total if total else None

    write_json(
        summary_json_path,
        {
            "pairs": pairs,
            "success_rate": overall("n_success"),
            "success_in_domain_rate": overall("n_success_in_domain"),
        },
    )
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["origin", "target", "measure"])
    leading = ["origin", "target", "measure"]
    write_parquet(summary_table_path, frame[leading + [c for c in frame.columns if c not in leading]])


def concept_movement(flipped: pd.DataFrame, unit_summary: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Per measure, how the successful counterfactuals of one pair move it (see summarise_pairs)."""
    measures = tested_measures(flipped.columns)
    frame = pd.DataFrame({"measure": measures, "n_success": len(flipped)})
    if flipped.empty:
        columns = ("image_change", "image_ci_low", "image_ci_high", "image_effect", "consistency", "unit_direction")
        return frame.assign(**dict.fromkeys(columns, np.nan), unit_share=0.0)

    changes = flipped[measures].to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN measures and single samples give NaN
        mean = np.nanmean(changes, axis=0)
        frame["image_change"] = mean
        frame["image_ci_low"], frame["image_ci_high"] = bootstrap_mean_ci(changes, n_boot=n_boot, seed=seed)
        frame["image_effect"] = mean / np.nanstd(changes, axis=0, ddof=1)
        frame["consistency"] = np.mean(np.sign(changes) == np.sign(mean), axis=0)

    slots = pd.DataFrame(
        {
            "unit": np.concatenate(flipped["top_units"].to_numpy()),
            "change": np.concatenate(flipped["top_changes"].to_numpy()),
            "measure": np.concatenate(flipped["top_concepts"].to_numpy()),
        }
    )
    unique_effect = unit_summary.set_index("unit")["unique_effect"].reindex(slots["unit"]).to_numpy()
    slots["direction"] = np.sign(slots["change"].to_numpy()) * np.sign(unique_effect)
    labelled = slots.groupby("measure")["direction"].agg(["size", "mean"]).reindex(measures)
    frame["unit_share"] = labelled["size"].fillna(0).to_numpy() / len(slots)
    frame["unit_direction"] = labelled["mean"].to_numpy()
    return frame.sort_values("image_effect", key=np.abs, ascending=False, na_position="last", kind="stable")


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int, seed: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the column means of ``values [N, M]``, NaNs ignored."""
    n, m = values.shape
    if n < 2:
        return np.full(m, np.nan), np.full(m, np.nan)
    resamples = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values[resamples], axis=1)  # [n_boot, M]
        low, high = np.nanquantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high
