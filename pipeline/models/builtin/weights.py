"""Checkpoints of the builtin models: where they live, how they are saved and loaded.

A checkpoint is a plain dict ``{"architecture": kwargs, "state_dict": tensors}`` so that
``torch.load(..., weights_only=True)`` can read it and a retrained model with other
hyperparameters loads without code changes. Beside each ``<name>.pt`` lies ``<name>.json``,
the manifest: architecture, training config, seed, wall time, metrics and the sha256 of
the weights file.
"""

from __future__ import annotations

import datetime
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.models.builtin.breeds_generator import BreedsGenerator
from pipeline.models.builtin.classifier import ShapesClassifier
from pipeline.models.builtin.generator import ShapesGenerator
from pipeline.models.builtin.probe import AttributeProbe
from pipeline.models.registry import ModelSpecError, file_sha256
from pipeline.store import atomic_path, write_json

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

BUILTIN_MODELS: dict[str, type[nn.Module]] = {
    "shapes-classifier": ShapesClassifier,
    "shapes-generator": ShapesGenerator,
    "shapes-probe": AttributeProbe,
    "breeds-classifier": ShapesClassifier,
    "breeds-generator": BreedsGenerator,
    "breeds-probe": AttributeProbe,
}

# The procedural world each builtin model was trained on (pipeline.world's ``world=``).
BUILTIN_WORLDS: dict[str, str] = {
    "shapes-classifier": "shapes",
    "shapes-generator": "shapes",
    "shapes-probe": "shapes",
    "breeds-classifier": "breeds",
    "breeds-generator": "breeds",
    "breeds-probe": "breeds",
}


def builtin_world(spec: Mapping[str, Any]) -> str | None:
    """The world a model spec's builtin model was trained on; None for any other model."""
    if spec.get("kind") != "builtin":
        return None
    name = str(spec.get("name", ""))
    if name not in BUILTIN_WORLDS:
        raise ModelSpecError(f"name: unknown builtin model {name!r}; known: {', '.join(BUILTIN_WORLDS)}")
    return BUILTIN_WORLDS[name]


def weights_path(name: str, weights: str | Path | None = None) -> Path:
    """The weights file of builtin model ``name``: ``weights`` if given, else the shipped one."""
    if name not in BUILTIN_MODELS:
        raise ModelSpecError(f"name: unknown builtin model {name!r}; known: {', '.join(BUILTIN_MODELS)}")
    return Path(weights) if weights is not None else WEIGHTS_DIR / f"{name}.pt"


def load_builtin(name: str, weights: str | Path | None = None) -> nn.Module:
    """Build builtin model ``name`` from its checkpoint, in eval mode on the CPU."""
    path = weights_path(name, weights)
    if not path.is_file():
        raise ModelSpecError(f"{path}: weights file of {name!r} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        architecture = {k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["architecture"].items()}
        model = BUILTIN_MODELS[name](**architecture)
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelSpecError(f"{path}: not a valid checkpoint of {name!r}: {reason}") from error
    return model.eval()


def save_builtin(
    model: nn.Module,
    architecture: Mapping[str, Any],
    out_dir: str | Path,
    name: str,
    manifest: Mapping[str, Any],
) -> Path:
    """Write ``<name>.pt`` (float32 weights) and its manifest ``<name>.json`` into ``out_dir``."""
    path = Path(out_dir) / f"{name}.pt"
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"architecture": dict(architecture), "state_dict": state}, tmp)
    write_json(
        path.with_suffix(".json"),
        {
            "name": name,
            "weights_file": path.name,
            "weights_sha256": file_sha256(path),
            "architecture": dict(architecture),
            **manifest,
            "torch_version": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return path
