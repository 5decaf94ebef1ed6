"""A model's shape numbers without loading it: what planning a run needs to know of a model.

The workflow needs the classifier's unit count to plan its chunks, and Snakemake plans on
every invocation (and in every cluster job). Loading an ImageNet classifier or a StyleGAN
pickle each time would cost more than the plan itself, so a description is measured once
per spec and weights and then read from the cache (:mod:`pipeline.models.cache`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.models.cache import read_entry, write_entry
from pipeline.models.registry import load_classifier, load_generator, spec_weights_sha256

ROLES = ("classifier", "generator")
# Bump when the fields or how they are measured change, so old entries are not read.
DESCRIPTION_VERSION = 1

_MEMORY: dict[str, ModelDescription] = {}


@dataclass(frozen=True)
class ModelDescription:
    """Shape numbers of a classifier (num_units, num_classes, has_head) or a generator
    (z_dim, c_dim, w_dim, num_ws, resolution); the other role's fields are None."""

    role: str
    num_units: int | None = None
    num_classes: int | None = None
    has_head: bool | None = None
    z_dim: int | None = None
    c_dim: int | None = None
    w_dim: int | None = None
    num_ws: int | None = None
    resolution: int | None = None


def describe_model(spec: Mapping[str, Any], role: str) -> ModelDescription:
    """The description of the model ``spec`` names in ``role``, loading it only the first time.

    Cached by the spec, the role and the sha256 of the files it loads
    (:func:`pipeline.models.spec_weights_sha256`), so new weights get a new description.
    """
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    key = {
        "version": DESCRIPTION_VERSION,
        "role": role,
        "spec": spec,
        "sha256": spec_weights_sha256(spec, role),
    }
    memory_key = json.dumps(key, sort_keys=True)
    if memory_key not in _MEMORY:
        stored = read_entry("descriptions", key)
        if stored is None:
            description = _measure(spec, role)
            write_entry("descriptions", key, dataclasses.asdict(description))
        else:
            description = ModelDescription(**stored)
        _MEMORY[memory_key] = description
    return _MEMORY[memory_key]


def _measure(spec: Mapping[str, Any], role: str) -> ModelDescription:
    if role == "classifier":
        classifier = load_classifier(spec)
        num_classes = classifier.num_classes
        return ModelDescription(
            role=role,
            num_units=int(classifier.num_units),
            num_classes=None if num_classes is None else int(num_classes),
            has_head=classifier.head is not None,
        )
    generator = load_generator(spec)
    return ModelDescription(
        role=role,
        z_dim=int(generator.z_dim),
        c_dim=int(generator.c_dim),
        w_dim=int(generator.w_dim),
        num_ws=int(generator.num_ws),
        resolution=_resolution(generator),
    )


def _resolution(generator: Any) -> int:
    """The generator's image size: its ``img_resolution`` where it says, else one render's."""
    declared = getattr(generator, "img_resolution", None)
    if declared:
        return int(declared)
    with torch.no_grad():
        image = generator.synthesis(torch.zeros(1, generator.num_ws, generator.w_dim))
    return int(image.shape[-1])
