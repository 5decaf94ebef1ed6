"""Train the few-shot segmenter on K labelled renders and score it on the held-out rest.

As in the paper's code: cross-entropy, Adam (lr 1e-3, weight decay 1e-3), the learning
rate divided by 10 every half of the epochs, all K renders in every step. The renders'
features come from the generator itself (:mod:`pipeline.segmentation.features`): render
``i`` of the labels folder is re-synthesised from its latent, so the segmenter learns on
exactly the features it will see while the pipeline renders.

Scores: intersection over union of each part over all held-out renders (pixels summed over
the set, at the image's resolution), the mean over the parts, and the background's IoU.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.segmentation.features import GeneratorFeatures, channel_moments, feature_size
from pipeline.segmentation.labels import LabelsError, LabelSet, read_labels, write_labels_folder
from pipeline.segmentation.model import PixelClassifier, save_segmenter
from pipeline.store import write_json

log = logging.getLogger(__name__)


def as_ws(latents: np.ndarray, num_ws: int, w_dim: int, source: str) -> torch.Tensor:
    """Labels-folder latents [N, w_dim] or [N, num_ws, w_dim] -> ws [N, num_ws, w_dim]."""
    latents = torch.from_numpy(np.asarray(latents, dtype=np.float32))
    if latents.ndim == 2 and latents.shape[1] == w_dim:
        return latents.unsqueeze(1).expand(-1, num_ws, -1).contiguous()
    if latents.ndim == 3 and latents.shape[1:] == (num_ws, w_dim):
        return latents
    raise LabelsError(
        f"{source}: latents of shape {list(latents.shape)} do not fit the generator "
        f"([N, {w_dim}] or [N, {num_ws}, {w_dim}])"
    )


def check_labels_fit(labels: LabelSet, generator: Any, train: int, source: str) -> torch.Tensor:
    """Fail with one line unless the folder fits the generator and holds ``train`` renders; return ws."""
    ws = as_ws(labels.latents, generator.num_ws, generator.w_dim, f"{source}/latents.npy")
    with torch.no_grad():
        resolution = tuple(generator.synthesis(ws[:1]).shape[-2:])
    if labels.maps.shape[1:] != resolution:
        raise LabelsError(
            f"{source}/maps: maps are {list(labels.maps.shape[1:])}, the generator renders {list(resolution)}"
        )
    if not 1 <= train <= len(labels.maps):
        raise LabelsError(f"config key 'segmentation.train': {train} renders asked, {source} holds {len(labels.maps)}")
    return ws


def _features(extractor: GeneratorFeatures, generator: Any, ws: torch.Tensor, device: torch.device):
    with torch.no_grad():
        generator.synthesis(ws.to(device))
    return extractor.take()


def train_segmenter(
    model_path: str | Path,
    metrics_path: str | Path,
    *,
    labels_dir: str | Path,
    generator: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    device: str,
) -> dict[str, Any]:
    """Write ``segmentation/model.pt`` and ``segmentation/metrics.json`` from a labels folder.

    ``segmentation`` is the config's section (``parts``, ``train``, ``held_out``, ``size``,
    ``width``, ``epochs``, ``lr``, ``weight_decay``, ``seed``, ``batch_size``). Renders
    ``[0, train)`` of the folder train the segmenter; the next ``held_out`` are scored.
    """
    from pipeline.stages.common import load_models, prepare_device

    parts = segmentation.get("parts")
    labels = read_labels(labels_dir, parts if parts else None)
    torch_device = prepare_device(device)
    _, gen = load_models(None, generator, torch_device)
    train = int(segmentation["train"])
    ws = check_labels_fit(labels, gen, train, str(labels_dir))
    torch.manual_seed(int(segmentation["seed"]))
    started = time.perf_counter()
    held = slice(train, min(len(ws), train + int(segmentation["held_out"])))
    with GeneratorFeatures(gen) as extractor:
        train_features = [
            [f.cpu() for f in _features(extractor, gen, ws[start : min(start + 16, train)], torch_device)]
            for start in range(0, train, 16)
        ]
        size = feature_size(labels.maps.shape[-1], segmentation["size"])
        model = PixelClassifier(
            [f.shape[1] for f in train_features[0]], len(labels.part_names) + 1, size, segmentation["width"]
        )
        model.set_standardisation(channel_moments(train_features))
        model = model.to(torch_device)
        features = [torch.cat(layer).to(torch_device) for layer in zip(*train_features, strict=True)]
        targets = _resized_labels(torch.from_numpy(labels.maps[:train]).long(), size).to(torch_device)
        loss = _fit(model, features, targets, segmentation)
        train_seconds = time.perf_counter() - started
        scores = _held_out_scores(
            model, extractor, gen, ws[held], labels.maps[held], labels.part_names, segmentation, torch_device
        )
    record = {
        "train": train,
        "held_out": held.stop - held.start,
        "parts": labels.part_names,
        "size": size,
        "layers": len(model.layer_channels),
        "channels": sum(model.layer_channels),
        "epochs": int(segmentation["epochs"]),
        "final_loss": loss,
        "train_seconds": round(train_seconds, 3),
        **scores,
    }
    log.info(
        "segmentation: K=%d renders, %d held out, mean IoU %s, %.1f s to train",
        train,
        record["held_out"],
        "n/a" if scores["mean_iou"] is None else f"{scores['mean_iou']:.3f}",
        train_seconds,
    )
    save_segmenter(model_path, model.cpu(), labels.part_names, record)
    write_json(metrics_path, record)
    return record


def _resized_labels(maps: torch.Tensor, size: int) -> torch.Tensor:
    if maps.shape[-1] == size:
        return maps
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def _fit(model: PixelClassifier, features: list[torch.Tensor], targets: torch.Tensor, config: Mapping) -> float:
    epochs = int(config["epochs"])
    optimiser = torch.optim.Adam(model.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, epochs // 2), gamma=0.1)
    model.train()
    loss = torch.zeros(())
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(features), targets)
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    return float(loss.detach())


def _held_out_scores(
    model: PixelClassifier,
    extractor: GeneratorFeatures,
    generator: Any,
    ws: torch.Tensor,
    maps: np.ndarray,
    part_names: Sequence[str],
    config: Mapping,
    device: torch.device,
) -> dict[str, Any]:
    """Per-label intersections and unions summed over the held-out renders, batch by batch."""
    labels = model.num_labels
    intersection = np.zeros(labels, dtype=np.int64)
    union = np.zeros(labels, dtype=np.int64)
    batch = int(config["batch_size"])
    with torch.no_grad():
        for start in range(0, len(ws), batch):
            features = _features(extractor, generator, ws[start : start + batch], device)
            predicted = model.label_maps(features, maps.shape[-2:]).cpu().numpy()
            truth = maps[start : start + batch]
            for label in range(labels):
                p, t = predicted == label, truth == label
                intersection[label] += int((p & t).sum())
                union[label] += int((p | t).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    parts = {name: _number(iou[k + 1]) for k, name in enumerate(part_names)}
    part_values = iou[1:][np.isfinite(iou[1:])]
    return {
        "part_iou": parts,
        "mean_iou": float(part_values.mean()) if part_values.size else None,
        "background_iou": _number(iou[0]),
    }


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def world_labels(
    folder: str | Path,
    *,
    generator: Mapping[str, Any],
    classes: Sequence[int],
    truncation: float,
    count: int,
    seed: int,
) -> None:
    """Write a labels folder for the builtin generator, with the world's true part maps.

    The builtin generator was trained to render exactly the world image of
    ``world_factors(z, labels)``, so the world's renderer draws the true part map of each of its
    latents: the renderer stands in for the person who would paint the maps.
    """
    from pipeline.models import load_generator
    from pipeline.models.builtin import class_onehot
    from pipeline.world import part_map, part_names

    gen = load_generator(generator)
    if not hasattr(gen, "world_factors"):
        raise LabelsError("config key 'segmentation.labels': 'world' needs the builtin generator")
    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(count, gen.z_dim, generator=rng)
    class_ids = torch.as_tensor(list(classes), dtype=torch.int64)[torch.randint(len(classes), (count,), generator=rng)]
    with torch.no_grad():
        ws = gen.mapping(z, class_onehot(class_ids, gen.c_dim), truncation_psi=truncation)
        images = gen.synthesis(ws)
    factors = gen.world_factors(z, class_ids, truncation)
    maps = part_map(class_ids, factors, gen.img_resolution, world=gen.world).numpy()
    pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_labels_folder(partial, ws[:, 0].numpy(), part_names(gen.world), images=pixels, maps=maps)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def render_for_labelling(
    folder: str | Path,
    *,
    generator: Mapping[str, Any],
    classes: Sequence[int],
    truncation: float,
    count: int,
    part_names: Sequence[str],
    seed: int,
) -> list[Path]:
    """Render ``count`` samples of the generator into a labels folder for a person to paint.

    Writes parts.yaml, latents.npy and images/; the maps/ folder is left to the person.
    Returns the image files.
    """
    from pipeline.models import load_generator
    from pipeline.segmentation.labels import IMAGES_DIR, MAX_LABELS, map_name

    if count < 1:
        raise LabelsError(f"--count: need at least one render, got {count}")
    if not part_names or len(set(part_names)) != len(part_names) or len(part_names) >= MAX_LABELS:
        raise LabelsError(f"--parts: name distinct parts (fewer than {MAX_LABELS}), got {list(part_names)}")
    folder = Path(folder)
    if (folder / "latents.npy").exists():
        raise LabelsError(f"{folder / 'latents.npy'}: exists; render into a new folder so no labels lose their latents")
    gen = load_generator(generator)
    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(count, gen.z_dim, generator=rng)
    class_ids = torch.as_tensor(list(classes), dtype=torch.int64)[torch.randint(len(classes), (count,), generator=rng)]
    c = F.one_hot(class_ids, gen.c_dim).float() if gen.c_dim else None
    with torch.no_grad():
        ws = gen.mapping(z, c, truncation_psi=truncation)
        images = ((gen.synthesis(ws).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    write_labels_folder(folder, ws.numpy(), part_names, images=images.permute(0, 2, 3, 1).numpy())
    return [folder / IMAGES_DIR / f"{map_name(i)}.png" for i in range(count)]
