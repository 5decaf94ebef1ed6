"""``kind: timm``: any timm classifier, split at a named layer (timm is an optional extra).

Spec::

    {kind: timm, name: convnext_tiny, weights: path/to/weights.safetensors | null,
     layer: null | <module name>, num_classes: null | <int>,
     preprocess: {resize, crop, mean, std, interpolation}}

Weights come from a local file only (a state dict in .pth/.pt/.bin or .safetensors);
timm's own hub download is never used. Preprocessing defaults to what the model's
``pretrained_cfg`` declares (input size, crop fraction, mean, std, interpolation); keys in
the spec override it. Layer reading, pooling and the head rule are those of the torchvision
adapter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.models.adapters.torchvision_adapter import (
    HookedClassifier,
    check_spec_keys,
    load_weights_into,
    read_state_dict,
)
from pipeline.models.preprocess import IMAGENET_PREPROCESS, preprocess_from_spec
from pipeline.models.registry import ModelSpecError, register_classifier

_SPEC_KEYS = {"kind", "name", "weights", "layer", "num_classes", "preprocess"}
_TIMM_INTERPOLATIONS = {"bilinear", "bicubic", "nearest"}


def _import_timm():
    try:
        import timm
    except ImportError as error:
        raise ModelSpecError(
            "classifier.kind: timm is not installed; install it with pip install 'linking-units[timm]'"
        ) from error
    return timm


def timm_preprocess_defaults(pretrained_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Preprocessing from a timm ``pretrained_cfg``: resize = crop / crop_pct, as timm's eval transform."""
    defaults = dict(IMAGENET_PREPROCESS)
    input_size = pretrained_cfg.get("input_size")
    if input_size:
        crop = int(input_size[-1])
        defaults["crop"] = crop
        defaults["resize"] = int(math.floor(crop / float(pretrained_cfg.get("crop_pct") or 1.0)))
    for key in ("mean", "std"):
        if pretrained_cfg.get(key) is not None:
            defaults[key] = tuple(float(v) for v in pretrained_cfg[key])
    if pretrained_cfg.get("interpolation") in _TIMM_INTERPOLATIONS:
        defaults["interpolation"] = pretrained_cfg["interpolation"]
    return defaults


def timm_weight_files(spec: Mapping[str, Any]) -> list[Path]:
    return [Path(spec["weights"])] if spec.get("weights") is not None else []


@register_classifier("timm", weight_files=timm_weight_files)
def load_timm_classifier(spec: Mapping[str, Any]) -> HookedClassifier:
    timm = _import_timm()
    check_spec_keys(spec, _SPEC_KEYS)
    name = spec.get("name")
    if not isinstance(name, str) or not timm.is_model(name):
        raise ModelSpecError(f"classifier.name: timm has no model {name!r}")
    num_classes = spec.get("num_classes")
    build_kwargs = {"num_classes": int(num_classes)} if num_classes is not None else {}
    network = timm.create_model(name, pretrained=False, **build_kwargs)
    weights = spec.get("weights")
    if weights is not None:
        load_weights_into(network, read_state_dict(weights), str(weights))
    defaults = timm_preprocess_defaults(getattr(network, "pretrained_cfg", None) or {})
    preprocess = preprocess_from_spec(spec.get("preprocess"), defaults)
    classifier = network.get_classifier()
    if not isinstance(classifier, torch.nn.Linear):
        raise ModelSpecError(
            f"classifier.name: timm {name} has no linear classifier layer ({type(classifier).__name__}); "
            "build it with num_classes > 0"
        )
    return HookedClassifier(
        network, preprocess, layer=spec.get("layer"), classifier=classifier, description=f"timm {name}"
    )
