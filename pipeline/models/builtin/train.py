"""Training and quality gates of the builtin models, from scratch on a procedural world.

The config's top-level ``world`` (``"shapes"`` by default, or ``"breeds"``) picks the world
and its defaults (:data:`DEFAULT_CONFIG`, :data:`BREEDS_CONFIG`); the models are saved as
``<world>-classifier``, ``<world>-generator`` and ``<world>-probe``.

One entry point, :func:`train_default_models`, trains the classifier, the generator and
the attribute probe, measures the gates and writes weights plus manifests. Every batch is freshly rendered
from a seed derived from ``(seed, stream, step)``, so training never repeats an image,
evaluation draws from a stream training never touches, and a run is deterministic on the
CPU for a given seed and thread count.

The generator is trained by regression, not adversarially: for latents z it must render
exactly the world image of :func:`latent_factors` (z). That trains reliably on a CPU, and
the linear mapping makes truncated latents regression targets too (see generator.py).
The breeds generator also learns the world's part maps (cross-entropy on its part logits)
and its heads learn the figure's pose, geometry and coat from the factors; for a share of
each batch the renderer takes the true parameters instead of the heads' ("teacher
forcing"), so the coordinate network learns the figure while the heads still learn.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

import pipeline.world as world
from pipeline.device import set_threads
from pipeline.models.builtin.breeds_generator import (
    GEOMETRY_FACTORS,
    BreedsGenerator,
    breeds_latent_code,
    breeds_latent_factors,
    geometry_scale,
)
from pipeline.models.builtin.classifier import ShapesClassifier
from pipeline.models.builtin.generator import (
    ShapesGenerator,
    class_onehot,
    latent_code,
    latent_factors,
)
from pipeline.models.builtin.probe import AttributeProbe, circular_factors, factor_targets, linear_factors
from pipeline.models.builtin.weights import save_builtin
from pipeline.world import breeds
from pipeline.world.render import BACKGROUND_SATURATION, STRIPES_PER_RADIUS, hsv_to_rgb

log = logging.getLogger(__name__)

ACCURACY_GATES = {"shapes": 0.97, "breeds": 0.95}
CONSISTENCY_GATE = 0.9
SPREAD_GATE = 0.5

# The shapes world's training config; BREEDS_CONFIG is the breeds world's.
DEFAULT_CONFIG: dict[str, Any] = {
    "world": "shapes",
    "classifier": {
        "architecture": {"stem_width": 16, "widths": [16, 32, 64, 128], "strides": [1, 2, 2, 1], "num_units": 512},
        "steps": 1200,
        "batch_size": 128,
        "lr": 3e-3,
        "weight_decay": 5e-4,
        # Robustness to generator renders: a blur of random width and pixel noise.
        "blur_probability": 0.5,
        "max_blur_sigma": 1.2,
        "max_noise_std": 0.04,
    },
    "generator": {
        "architecture": {
            "w_dim": 128,
            "head_hidden": 128,
            "fourier": 24,
            "hidden": [32, 32],
            "canvas": 40,
            "extent": 1.25,
        },
        "batch_size": 32,
        # Share of each batch drawn at a truncation psi ~ U(min_truncation, 1), so that
        # truncated latents render as well as untruncated ones.
        "truncation_fraction": 0.5,
        "min_truncation": 0.3,
        # Pixel L1 at full resolution plus this weight times L1 after 4x average pooling.
        "coarse_weight": 0.5,
        # Weight of supervising the pose and appearance heads by the targets' known factors.
        "head_weight": 1.0,
        # Phases run one after another, each with its own one-cycle schedule over
        # schedule_steps (a phase may stop early at `steps`). A phase can over-sample the
        # hard classes (ring, crescent) and start with soft edges for soft_edge_steps, which
        # lets the shape field open the ring's hole.
        "phases": [
            {"steps": 950, "schedule_steps": 2000, "lr": 3e-3, "hard_fraction": 0.0, "soft_edge_steps": 0},
            {"steps": 500, "schedule_steps": 500, "lr": 1e-3, "hard_fraction": 0.35, "soft_edge_steps": 0},
            {"steps": 450, "schedule_steps": 450, "lr": 1e-3, "hard_fraction": 0.3, "soft_edge_steps": 300},
        ],
        "hard_classes": [5, 6],
        "hard_class_weights": [0.7, 0.3],
    },
    "probe": {
        "architecture": {"widths": [24, 48, 96, 96], "hidden": 256},
        "steps": 300,
        "batch_size": 128,
        "lr": 3e-3,
        "weight_decay": 1e-4,
    },
    "evaluation": {"samples": 2000, "truncation_psi": 0.7, "batch_size": 500},
    "log_every": 100,
}

BREEDS_CONFIG: dict[str, Any] = {
    **copy.deepcopy(DEFAULT_CONFIG),
    "world": "breeds",
    "classifier": {**copy.deepcopy(DEFAULT_CONFIG["classifier"]), "steps": 300},
    # More factors than the shapes world, some with narrow ranges (eye size, position, scale).
    "probe": {**copy.deepcopy(DEFAULT_CONFIG["probe"]), "steps": 600},
    "generator": {
        "architecture": {
            "w_dim": 128,
            "head_hidden": 128,
            "fourier": 48,
            "hidden": 64,
            "layers": 3,
            "canvas": 48,
            "extent": 1.7,
        },
        "batch_size": 32,
        "steps": 2500,
        "lr": 3e-3,
        "truncation_fraction": 0.5,
        "min_truncation": 0.3,
        "coarse_weight": 0.5,
        # Cross-entropy of the part logits against the world's part map.
        "part_weight": 0.25,
        "head_weight": 1.0,
        # Share of each batch rendered from the true parameters instead of the heads'.
        "teacher_fraction": 0.5,
    },
}

CONFIGS: dict[str, dict[str, Any]] = {"shapes": DEFAULT_CONFIG, "breeds": BREEDS_CONFIG}


def train_default_models(
    out_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int = 2,
) -> dict[str, dict[str, Any]]:
    """Train classifier, generator and attribute probe; write ``<name>.pt`` + ``<name>.json``.

    ``config`` picks the world by its top-level ``world`` key (``"shapes"`` when absent) and
    overrides that world's defaults (:data:`CONFIGS`) key by key. Returns each model's
    manifest metrics. The gates (classifier accuracy, generator class consistency and factor
    spread) are measured on fresh samples and recorded, not enforced: a short test run fails them.
    """
    set_threads(threads)
    world_name = (config or {}).get("world", "shapes")
    if world_name not in CONFIGS:
        raise ValueError(f"train config: world must be one of {', '.join(CONFIGS)}, got {world_name!r}")
    cfg = merge_config(CONFIGS[world_name], config or {})
    evaluation = cfg["evaluation"]
    n, psi, batch_size = evaluation["samples"], evaluation["truncation_psi"], evaluation["batch_size"]
    names = {role: f"{world_name}-{role}" for role in ("classifier", "generator", "probe")}

    classifier, run = _timed(train_classifier, cfg["classifier"], seed, cfg["log_every"], world_name)
    accuracy_seed = _derived_seed(seed, "evaluation/classifier")
    classifier_metrics = {
        "accuracy": classifier_accuracy(classifier, n, accuracy_seed, batch_size, world_name),
        "accuracy_gate": ACCURACY_GATES[world_name],
        "samples": n,
    }
    accuracy = classifier_metrics["accuracy"]
    log.info("classifier: accuracy %.4f on %d fresh %s-world images", accuracy, n, world_name)
    # The class count follows the world, so the checkpoint names it for loading.
    architecture = {**cfg["classifier"]["architecture"], "num_classes": classifier.num_classes}
    saved = {**cfg["classifier"], "world": world_name, "architecture": architecture}
    _save(classifier, names["classifier"], out_dir, saved, seed, threads, run, classifier_metrics)

    train = train_generator if world_name == "shapes" else train_breeds_generator
    generator, run = _timed(train, cfg["generator"], seed, cfg["log_every"], classifier)
    probe, probe_run = _timed(train_probe, cfg["probe"], seed, cfg["log_every"], world_name)
    probe_metrics = probe_quality(probe, n, _derived_seed(seed, "evaluation/probe"), batch_size)
    log.info("probe: %s", _format(probe_metrics))
    # The probe's checkpoint names its world, so that it loads with the right outputs.
    probe_saved = {**cfg["probe"], "architecture": {**cfg["probe"]["architecture"], "world": world_name}}
    _save(probe, names["probe"], out_dir, probe_saved, seed, threads, probe_run, probe_metrics)

    consistency = class_consistency(
        generator, classifier, n, psi, _derived_seed(seed, "evaluation/consistency"), batch_size
    )
    spread = spread_ratios(generator, probe, n, psi, _derived_seed(seed, "evaluation/spread"), batch_size)
    log.info("generator: class consistency %.4f at psi %.2f; spread ratios %s", consistency, psi, _format(spread))
    generator_metrics = {
        "truncation_psi": psi,
        "class_consistency": consistency,
        "class_consistency_gate": CONSISTENCY_GATE,
        "spread_ratios": spread,
        "spread_ratio_gate": SPREAD_GATE,
        "gates_passed": consistency >= CONSISTENCY_GATE and min(spread.values()) >= SPREAD_GATE,
        "samples": n,
    }
    _save(generator, names["generator"], out_dir, cfg["generator"], seed, threads, run, generator_metrics)
    return {
        names["classifier"]: classifier_metrics,
        names["generator"]: generator_metrics,
        names["probe"]: probe_metrics,
    }


def _timed(train, cfg: Mapping[str, Any], *args) -> tuple[nn.Module, dict[str, Any]]:
    start = time.perf_counter()
    model, losses = train(cfg, *args)
    tail = losses[-min(len(losses), 50) :]
    run = {
        "wall_time_s": round(time.perf_counter() - start, 1),
        "steps": len(losses),
        "images_seen": len(losses) * cfg["batch_size"],
        "final_loss": sum(tail) / max(len(tail), 1),
    }
    return model, run


def _save(
    model: nn.Module,
    name: str,
    out_dir: str | Path,
    cfg: Mapping[str, Any],
    seed: int,
    threads: int,
    run: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> None:
    manifest = {"training": dict(cfg), "seed": seed, "threads": threads, **run, "metrics": dict(metrics)}
    save_builtin(model, cfg["architecture"], out_dir, name, manifest)


def merge_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``defaults`` updated by ``overrides``, recursively; an unknown key is an error."""
    merged = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        if key not in defaults:
            raise KeyError(f"train config: unknown key {where + key!r}")
        if isinstance(defaults[key], Mapping) and key != "architecture":
            merged[key] = merge_config(defaults[key], value, f"{where}{key}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def train_classifier(
    cfg: Mapping[str, Any], seed: int, log_every: int = 100, world_name: str = "shapes"
) -> tuple[ShapesClassifier, list[float]]:
    """Train the classifier of ``world_name`` (cross-entropy on augmented world images);
    returns it and its loss per step."""
    torch.manual_seed(_derived_seed(seed, "classifier/init"))
    model = ShapesClassifier(num_classes=len(world.class_names(world_name)), **_architecture(cfg))
    _set_input_statistics(model, seed, "classifier", world_name)
    optimizer, scheduler = _optimizer(model, cfg)
    noise = torch.Generator().manual_seed(_derived_seed(seed, "classifier/augment"))
    losses = []
    model.train()
    for step in range(cfg["steps"]):
        images, labels, _ = world.sample(
            cfg["batch_size"], _derived_seed(seed, "classifier/batch", step), world=world_name
        )
        images = augment(images, cfg, noise)
        loss = F.cross_entropy(model(images), labels)
        losses.append(_step(optimizer, scheduler, loss))
        _log_progress("classifier", step, cfg["steps"], log_every, loss=losses[-1])
    return model.eval(), losses


def train_generator(
    cfg: Mapping[str, Any], seed: int, log_every: int = 100, classifier: ShapesClassifier | None = None
) -> tuple[ShapesGenerator, list[float]]:
    """Train the generator to render the world image of each latent; returns it and its loss per step.

    The loss is pixel L1 (plus a coarse scale) and a supervision of the pose and appearance
    heads by the factors that produced each target. ``classifier`` is unused; it keeps the
    signature of the other trainers.
    """
    torch.manual_seed(_derived_seed(seed, "generator/init"))
    model = ShapesGenerator(c_dim=len(world.SHAPES), **_architecture(cfg))
    latents = torch.Generator().manual_seed(_derived_seed(seed, "generator/latents"))
    hard_classes = torch.tensor(cfg["hard_classes"])
    hard_weights = torch.tensor(cfg["hard_class_weights"], dtype=torch.float32)
    losses: list[float] = []
    model.train()
    total = sum(phase["steps"] for phase in cfg["phases"])
    for phase in cfg["phases"]:
        optimizer = torch.optim.Adam(model.parameters(), lr=phase["lr"])
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=phase["lr"], total_steps=max(phase["schedule_steps"], phase["steps"], 1), pct_start=0.05
        )
        for step in range(phase["steps"]):
            n = cfg["batch_size"]
            z = torch.randn(n, model.z_dim, generator=latents)
            labels = torch.randint(0, model.c_dim, (n,), generator=latents)
            hard = torch.rand(n, generator=latents) < phase["hard_fraction"]
            hard_labels = hard_classes[torch.multinomial(hard_weights, n, replacement=True, generator=latents)]
            labels = torch.where(hard, hard_labels, labels)
            truncated = torch.rand(n, generator=latents) < cfg["truncation_fraction"]
            psi = torch.where(
                truncated, cfg["min_truncation"] + (1 - cfg["min_truncation"]) * torch.rand(n, generator=latents), 1.0
            )
            factors = latent_factors(z, psi)
            target = world.render(labels, factors) * 2 - 1
            # The mapping is linear, so scaling the code by psi is truncating w toward the class average.
            w = model.embed_code(psi[:, None] * latent_code(z)) + model.embed_class(class_onehot(labels, model.c_dim))
            soft = phase["soft_edge_steps"]
            model.edge_softening = min(1.0, 0.08 + 0.92 * step / soft) if soft else 1.0
            output, pose, appearance = model.synthesis_unclamped(
                w.unsqueeze(1).expand(-1, model.num_ws, -1), return_parameters=True
            )
            pixel = F.l1_loss(output, target) + cfg["coarse_weight"] * F.l1_loss(
                F.avg_pool2d(output, 4), F.avg_pool2d(target, 4)
            )
            loss = pixel + cfg["head_weight"] * head_supervision(pose, appearance, factors)
            losses.append(_step(optimizer, scheduler, loss))
            _log_progress("generator", len(losses) - 1, total, log_every, loss=losses[-1], pixel_l1=pixel.item())
    model.edge_softening = 1.0
    model.update_w_avg()
    return model.eval(), losses


def head_supervision(pose: torch.Tensor, appearance: torch.Tensor, factors: pd.DataFrame) -> torch.Tensor:
    """How far the pose and appearance heads are from the factors that drew the targets.

    Position errors weigh most because a misplaced object costs the pixel loss least
    gradient; the weights put each term on a comparable scale.
    """
    n = len(factors)
    value = {name: torch.tensor(factors[name].to_numpy(), dtype=torch.float32) for name in world.FACTORS}
    column = {name: v.view(n, 1, 1) for name, v in value.items()}
    object_rgb = hsv_to_rgb(column["hue"], column["saturation"], column["value"]).view(n, 3)
    background_rgb = hsv_to_rgb(
        column["bg_hue"], torch.full((n, 1, 1), BACKGROUND_SATURATION), column["bg_luminance"]
    ).view(n, 3)
    return (
        100 * F.mse_loss(pose[:, :2], torch.stack([value["x"], value["y"]], 1))
        + 10 * F.mse_loss(pose[:, 2], torch.log(value["size"]))
        + 10 * F.mse_loss(pose[:, 3], value["rotation"])
        + 10 * F.mse_loss(torch.sigmoid(appearance[:, 0:3]), object_rgb)
        + 10 * F.mse_loss(torch.sigmoid(appearance[:, 3:6]), background_rgb)
        + F.mse_loss(appearance[:, 6], value["texture"] * STRIPES_PER_RADIUS)
    )


def train_breeds_generator(
    cfg: Mapping[str, Any], seed: int, log_every: int = 100, classifier: nn.Module | None = None
) -> tuple[BreedsGenerator, list[float]]:
    """Train the breeds generator to render the world image and part map of each latent;
    returns it and its loss per step.

    The loss is pixel L1 (plus a coarse scale), cross-entropy of the part logits against
    the world's part map, and a supervision of the heads by the factors that drew each
    target. ``classifier`` is unused; it keeps the signature of the other trainers.
    """
    torch.manual_seed(_derived_seed(seed, "generator/init"))
    model = BreedsGenerator(c_dim=len(world.BREEDS), **_architecture(cfg))
    latents = torch.Generator().manual_seed(_derived_seed(seed, "generator/latents"))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    total = max(cfg["steps"], 2)
    # A warm-up of 5% of the steps, but longer than one step: OneCycleLR divides by its length less one.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=total, pct_start=max(0.05, 1.5 / total)
    )
    losses: list[float] = []
    model.train()
    for step in range(cfg["steps"]):
        n = cfg["batch_size"]
        z = torch.randn(n, model.z_dim, generator=latents)
        labels = torch.randint(0, model.c_dim, (n,), generator=latents)
        truncated = torch.rand(n, generator=latents) < cfg["truncation_fraction"]
        psi = torch.where(
            truncated, cfg["min_truncation"] + (1 - cfg["min_truncation"]) * torch.rand(n, generator=latents), 1.0
        )
        forced = (torch.rand(n, generator=latents) < cfg["teacher_fraction"]).view(n, 1)
        factors = breeds_latent_factors(z, labels, psi)
        target = breeds.render(factors) * 2 - 1
        target_parts = breeds.part_map(factors)
        # The mapping is linear, so scaling the code by psi is truncating w toward the class average.
        w = model.embed_code(psi[:, None] * breeds_latent_code(z)) + model.embed_class(
            class_onehot(labels, model.c_dim)
        )
        predicted = model.predict_parameters(w.unsqueeze(1).expand(-1, model.num_ws, -1))
        true = breeds_parameters(factors)
        output, logits = model.render(*(torch.where(forced, t, p) for t, p in zip(true, predicted, strict=True)))
        pixel = F.l1_loss(output, target) + cfg["coarse_weight"] * F.l1_loss(
            F.avg_pool2d(output, 4), F.avg_pool2d(target, 4)
        )
        parts = F.cross_entropy(logits, target_parts)
        heads = breeds_head_supervision(predicted, true)
        loss = pixel + cfg["part_weight"] * parts + cfg["head_weight"] * heads
        losses.append(_step(optimizer, scheduler, loss))
        _log_progress(
            "generator", step, cfg["steps"], log_every, loss=losses[-1], pixel_l1=pixel.item(), parts=parts.item()
        )
    model.update_w_avg()
    return model.eval(), losses


def breeds_parameters(factors: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The breeds generator's (pose, geometry, appearance) parameters that the factors name."""
    n = len(factors)
    value = {name: torch.tensor(factors[name].to_numpy(), dtype=torch.float32) for name in breeds.FACTORS}
    column = {name: v.view(n, 1, 1) for name, v in value.items()}
    pose = torch.stack([value["x"], value["y"], torch.log(value["scale"]), value["tilt"]], dim=1)
    geometry = torch.stack(
        [(value[name] - geometry_scale(name)[0]) / geometry_scale(name)[1] for name in GEOMETRY_FACTORS], dim=1
    )
    coat = breeds._hsv_to_rgb(column["coat_hue"], column["coat_saturation"], column["coat_value"]).view(n, 3)
    background = breeds._hsv_to_rgb(
        column["bg_hue"], torch.full((n, 1, 1), breeds.BACKGROUND_SATURATION), column["bg_luminance"]
    ).view(n, 3)
    appearance = torch.cat([coat, background, value["spots"][:, None], value["points"][:, None]], dim=1)
    return pose, geometry, appearance


def breeds_head_supervision(
    predicted: tuple[torch.Tensor, torch.Tensor, torch.Tensor], true: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """How far the breeds generator's heads are from the parameters that drew the targets.

    The weights put each term on a comparable scale: the position's range is a few
    hundredths, the scaled geometry's about one.
    """
    (pose, geometry, appearance), (true_pose, true_geometry, true_appearance) = predicted, true
    return (
        1000 * F.mse_loss(pose[:, :2], true_pose[:, :2])
        + 100 * F.mse_loss(pose[:, 2:], true_pose[:, 2:])
        + F.mse_loss(geometry, true_geometry)
        + 10 * F.mse_loss(appearance, true_appearance)
    )


def train_probe(
    cfg: Mapping[str, Any], seed: int, log_every: int = 100, world_name: str = "shapes"
) -> tuple[AttributeProbe, list[float]]:
    """Train the attribute probe of ``world_name`` (MSE on factor targets of world images);
    returns it and its loss per step."""
    torch.manual_seed(_derived_seed(seed, "probe/init"))
    model = AttributeProbe(**_architecture(cfg), world=world_name)
    _set_input_statistics(model, seed, "probe", world_name)
    optimizer, scheduler = _optimizer(model, cfg)
    losses = []
    model.train()
    for step in range(cfg["steps"]):
        images, _, factors = world.sample(cfg["batch_size"], _derived_seed(seed, "probe/batch", step), world=world_name)
        loss = F.mse_loss(model(images), factor_targets(factors, world_name))
        losses.append(_step(optimizer, scheduler, loss))
        _log_progress("probe", step, cfg["steps"], log_every, loss=losses[-1])
    return model.eval(), losses


def augment(images: torch.Tensor, cfg: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Blur a random share of the batch by a random Gaussian width, then add pixel noise."""
    n = len(images)
    blurred = torch.rand(n, generator=generator) < cfg["blur_probability"]
    sigma = torch.where(blurred, cfg["max_blur_sigma"] * torch.rand(n, generator=generator), 0.0)
    noise_std = cfg["max_noise_std"] * torch.rand(n, 1, 1, 1, generator=generator)
    noisy = gaussian_blur(images, sigma) + noise_std * torch.randn(images.shape, generator=generator)
    return noisy.clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Blur each image [B, C, H, W] by its own Gaussian width ``sigma`` [B] (0: unchanged)."""
    n, channels, height, width = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = images.reshape(1, n * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * channels
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * channels
    )
    return flat.reshape(n, channels, height, width)


@torch.no_grad()
def classifier_accuracy(
    classifier: nn.Module, n: int, seed: int, batch_size: int = 500, world_name: str = "shapes"
) -> float:
    """Share of ``n`` fresh images of ``world_name`` (seed ``seed``) whose class the classifier names."""
    images, labels, _ = world.sample(n, seed, world=world_name)
    predictions = torch.cat([classifier(images[s : s + batch_size]).argmax(1) for s in range(0, n, batch_size)])
    return float((predictions == labels).float().mean())


@torch.no_grad()
def generator_samples(
    generator: ShapesGenerator, n: int, truncation_psi: float, seed: int, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples in [0, 1], classes balanced, and their labels."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % generator.c_dim
    z = torch.randn(n, generator.z_dim, generator=rng)
    images = torch.cat([
        generator(z[s : s + batch_size], class_onehot(labels[s : s + batch_size], generator.c_dim), truncation_psi)
        for s in range(0, n, batch_size)
    ])  # fmt: skip
    return images * 0.5 + 0.5, labels


@torch.no_grad()
def class_consistency(
    generator: ShapesGenerator, classifier: nn.Module, n: int, truncation_psi: float, seed: int, batch_size: int = 500
) -> float:
    """Share of generator samples that the classifier assigns to the conditioned class."""
    images, labels = generator_samples(generator, n, truncation_psi, seed, batch_size)
    predictions = torch.cat([classifier(images[s : s + batch_size]).argmax(1) for s in range(0, n, batch_size)])
    return float((predictions == labels).float().mean())


def factor_spread(factors: pd.DataFrame, world_name: str = "shapes") -> dict[str, float]:
    """Per factor: the standard deviation, or for hues the circular variance 1 - |mean e^(i 2 pi h)|."""
    spread = {name: float(factors[name].std()) for name in linear_factors(world_name)}
    for name in circular_factors(world_name):
        angles = 2 * np.pi * factors[name].to_numpy()
        spread[name] = float(1 - np.hypot(np.cos(angles).mean(), np.sin(angles).mean()))
    return {name: spread[name] for name in world.factor_ranges(world_name)}


@torch.no_grad()
def spread_ratios(
    generator: nn.Module, probe: AttributeProbe, n: int, truncation_psi: float, seed: int, batch_size: int = 500
) -> dict[str, float]:
    """Per factor: its spread over generator samples / its spread over world images of the
    same classes, both as read by the probe (so that the probe's own shrinkage cancels)."""
    images, labels = generator_samples(generator, n, truncation_psi, seed, batch_size)
    world_images = reference_images(labels, seed, probe.world)
    generated = factor_spread(probe.predict(images, batch_size), probe.world)
    real = factor_spread(probe.predict(world_images, batch_size), probe.world)
    return {name: generated[name] / real[name] for name in world.factor_ranges(probe.world)}


def reference_images(labels: torch.Tensor, seed: int, world_name: str = "shapes") -> torch.Tensor:
    """World images of classes ``labels`` with freshly drawn factors (seed ``seed``).

    In the breeds world the factors depend on the class, so each class's rows draw from it.
    """
    if world_name == "shapes":
        return world.render(labels, world.sample_factors(len(labels), seed)[1])
    labels = np.asarray(labels)
    factors = []
    for breed in np.unique(labels):
        where = np.flatnonzero(labels == breed)
        _, drawn = world.sample_factors(len(where), seed + int(breed), classes=[int(breed)], world=world_name)
        factors.append(drawn.set_index(pd.Index(where)))
    return world.render(labels, pd.concat(factors).sort_index(), world=world_name)


@torch.no_grad()
def probe_quality(probe: AttributeProbe, n: int, seed: int, batch_size: int = 500) -> dict[str, float]:
    """Per factor on fresh world images: R^2 for linear factors, mean circular error (turns) for hues."""
    images, _, factors = world.sample(n, seed, world=probe.world)
    predicted = probe.predict(images, batch_size)
    quality = {}
    for name in linear_factors(probe.world):
        residual = ((predicted[name] - factors[name]) ** 2).sum()
        quality[f"{name}_r2"] = float(1 - residual / ((factors[name] - factors[name].mean()) ** 2).sum())
    for name in circular_factors(probe.world):
        error = np.abs(predicted[name] - factors[name]) % 1.0
        quality[f"{name}_error_turns"] = float(np.minimum(error, 1 - error).mean())
    return quality


def _architecture(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["architecture"].items()}


def _derived_seed(seed: int, stream: str, index: int = 0) -> int:
    """A seed of its own for each (stream, index), e.g. ("classifier/batch", step): streams
    never share world images, so evaluation images are always fresh."""
    return int(np.random.SeedSequence([seed, zlib.crc32(stream.encode()), index]).generate_state(1)[0])


def _set_input_statistics(model: nn.Module, seed: int, stream: str, world_name: str = "shapes") -> None:
    images, _, _ = world.sample(2048, _derived_seed(seed, f"{stream}/input-statistics"), world=world_name)
    model.input_mean.copy_(images.mean(dim=(0, 2, 3)).view(1, 3, 1, 1))
    model.input_std.copy_(images.std(dim=(0, 2, 3)).view(1, 3, 1, 1))


def _optimizer(model: nn.Module, cfg: Mapping[str, Any]):
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=max(cfg["steps"], 1), pct_start=0.1
    )
    return optimizer, scheduler


def _step(optimizer: torch.optim.Optimizer, scheduler, loss: torch.Tensor) -> float:
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"training diverged: loss is {value}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return value


def _log_progress(model: str, step: int, steps: int, every: int, **losses: float) -> None:
    if (step + 1) % every == 0 or step + 1 == steps:
        log.info("%s: step %d/%d %s", model, step + 1, steps, _format(losses))


def _format(values: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train the builtin classifier, generator and attribute probe of a world."
    )
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for <name>.pt and <name>.json")
    parser.add_argument("--world", choices=tuple(CONFIGS), default="shapes", help="the procedural world to train on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config-json", default="{}", help="overrides of the world's training config as a JSON object")
    args = parser.parse_args(argv)
    overrides = json.loads(args.config_json)
    if overrides.get("world", args.world) != args.world:
        parser.error(f"--config-json: world {overrides['world']!r} contradicts --world {args.world}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    metrics = train_default_models(args.out_dir, {**overrides, "world": args.world}, args.seed, args.threads)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
