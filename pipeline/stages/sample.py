"""Stage 1: draw class-conditional latents, keep those the classifier gets right, split them.

Each candidate's z comes from its own seed, ``SeedSequence([seed, class, draw])``, so a
sample is reproducible on its own, and which candidates are drawn does not depend on the
batch size (which shrinks on CUDA out-of-memory). With ``require_correct`` and a classifier head, candidates
are rendered and classified, and only those predicted as their own class are kept, as in
the paper. Accepted candidates fill the splits per class in the order probe, test, train,
so the tuning samples do not change when the training set grows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.device import run_with_backoff
from pipeline.models.protocols import Classifier, Generator
from pipeline.stages.common import ModelSetup
from pipeline.store import write_zarr

log = logging.getLogger(__name__)

SPLIT_ORDER = ("probe", "test", "train")


def sample_seeds(seed: int, class_id: int, draws: np.ndarray) -> np.ndarray:
    """The per-candidate seeds (int64) for candidates ``draws`` of one class."""
    return np.array(
        [np.random.SeedSequence([seed, class_id, int(d)]).generate_state(1, np.uint32)[0] for d in draws],
        dtype=np.int64,
    )


def latents_from_seeds(generator: Generator, seeds: np.ndarray) -> torch.Tensor:
    """z [N, z_dim] with each row drawn from its own seed, as StyleGAN's seed convention."""
    rows = [np.random.default_rng(int(s)).standard_normal(generator.z_dim) for s in seeds]
    return torch.from_numpy(np.stack(rows).astype(np.float32)) if rows else torch.empty(0, generator.z_dim)


def map_latents(
    generator: Generator,
    z: torch.Tensor,
    classes: np.ndarray,
    truncation: float,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Class-conditional mapping in batches; returns w [N, w_dim] (the first of the ws rows)."""
    w = torch.empty(len(z), generator.w_dim)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(classes, dtype=torch.int64), generator.c_dim).float()

    def step(rows: slice) -> None:
        with torch.no_grad():
            ws = generator.mapping(z[rows].to(device), onehot[rows].to(device), truncation_psi=truncation)
        w[rows] = ws[:, 0].float().cpu()

    run_with_backoff(step, len(z), batch_size)
    return w


def check_classes(classes: list[int], generator: Generator, classifier: Classifier | None) -> None:
    limits = [("generator", generator.c_dim)]
    if classifier is not None and classifier.num_classes is not None:
        limits.append(("classifier", classifier.num_classes))
    for model, limit in limits:
        beyond = [c for c in classes if c >= limit]
        if beyond:
            message = f"class {beyond[0]} is out of range for the {model} ({limit} classes)"
            raise ValueError(f"config key 'classes': {message}")


def sample_latents(
    out_path: str | Path,
    *,
    models: ModelSetup,
    classes: list[int],
    train: int,
    test: int,
    probe: int,
    truncation: float,
    seed: int,
    require_correct: bool,
    max_draws: int,
    batch_size: int,
) -> None:
    """Write ``latents.zarr``: w [N, w_dim], class, seed, draw and split per sample.

    ``max_draws`` bounds the candidates per needed sample; a class that yields no accepted
    candidate within it is an error.
    """
    loaded = models.load()
    clf, gen = loaded.classifier, loaded.generator
    check_classes(classes, gen, clf)
    filtering = require_correct and clf.head is not None
    if require_correct and not filtering:
        log.info("the classifier has no head: samples are not filtered by predicted class")
    quota = {"probe": probe, "test": test, "train": train}
    needed = sum(quota.values())
    kept: dict[int, list[tuple[np.ndarray, np.ndarray, torch.Tensor]]] = {c: [] for c in classes}
    count = dict.fromkeys(classes, 0)
    drawn = dict.fromkeys(classes, 0)
    budget = needed * max_draws if filtering else needed
    round_size = dict.fromkeys(classes, needed)
    while True:
        pending = [c for c in classes if count[c] < needed and drawn[c] < budget]
        if not pending:
            break
        draws = []
        for c in pending:
            draws.append(np.arange(drawn[c], min(drawn[c] + round_size[c], budget)))
            drawn[c] += len(draws[-1])
            # Draw more next round for classes the classifier rarely gets right.
            round_size[c] *= 2
        draw = np.concatenate(draws)
        label = np.repeat(pending, [len(d) for d in draws]).astype(np.int64)
        seeds = np.concatenate([sample_seeds(seed, c, d) for c, d in zip(pending, draws, strict=True)])
        w = map_latents(gen, latents_from_seeds(gen, seeds), label, truncation, batch_size, loaded.device)
        if filtering:
            encoded = loaded.encode(w, batch_size=batch_size, label="sample")
            accepted = encoded.logits.argmax(axis=1) == label
        else:
            accepted = np.ones(len(w), dtype=bool)
        for c in pending:
            take = np.flatnonzero(accepted & (label == c))[: needed - count[c]]
            kept[c].append((draw[take], seeds[take], w[take]))
            count[c] += len(take)
        log.info("sample: accepted %s of %s draws per class", count, drawn)

    empty = [c for c in classes if count[c] == 0]
    if empty:
        raise ValueError(
            f"samples: no candidate of class {empty[0]} was classified as class {empty[0]} in {drawn[empty[0]]} draws; "
            "check the class ids or set samples.require_correct: false"
        )
    for c in classes:
        if count[c] < needed:
            log.warning("class %d: only %d of %d samples accepted in %d draws", c, count[c], needed, drawn[c])
    splits = [np.repeat(SPLIT_ORDER, [quota[s] for s in SPLIT_ORDER])[: count[c]] for c in classes]
    parts = [part for c in classes for part in kept[c]]
    write_zarr(
        out_path,
        {
            "w": torch.cat([w for _, _, w in parts]).numpy().astype(np.float32),
            "class": np.repeat(classes, [count[c] for c in classes]).astype(np.int64),
            "seed": np.concatenate([s for _, s, _ in parts]).astype(np.int64),
            "draw": np.concatenate([d for d, _, _ in parts]).astype(np.int64),
            "split": np.concatenate(splits).astype(str),
        },
        attrs={
            "classifier": dict(models.classifier),
            "generator": dict(models.generator),
            "classes": list(classes),
            "truncation": truncation,
            "seed": seed,
            "require_correct": bool(filtering),
            "w_dim": gen.w_dim,
            "num_ws": gen.num_ws,
            "draws": {str(c): drawn[c] for c in classes},
            "accepted": {str(c): count[c] for c in classes},
        },
    )
