"""``kind: python``: any classifier or generator built by a factory the user names.

Spec: ``{kind: python, entrypoint: "package.module:factory", kwargs: {...}}``. The factory
returns an object that speaks the classifier or generator protocol. The factory's source
file counts as this spec's weights, since the model is what that code builds; so does a
kwarg that is itself a model spec of the same role (a mapping with a ``kind``, such as the
glass-box classifier's ``base_spec``), which the factory is taken to load. Editing either
re-runs the stages that use this model.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.models.protocols import Classifier, Generator
from pipeline.models.registry import ModelSpecError, register_classifier, register_generator, spec_weight_files

_CLASSIFIER_ATTRS = ("features", "num_units")
_GENERATOR_ATTRS = ("mapping", "synthesis", "z_dim", "c_dim", "w_dim", "num_ws")


def _build(spec: Mapping[str, Any], role: str, required: tuple[str, ...]) -> Any:
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        raise ModelSpecError(f"{role}.entrypoint: expected 'package.module:factory', got {entrypoint!r}")
    module_name, _, attr = entrypoint.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ModelSpecError(f"{role}.entrypoint: cannot import {entrypoint!r}: {error}") from error
    model = factory(**dict(spec.get("kwargs") or {}))
    missing = [name for name in required if not hasattr(model, name)]
    if missing:
        raise ModelSpecError(f"{role}.entrypoint: {entrypoint!r} returned an object without {', '.join(missing)}")
    if not hasattr(model, "head"):
        model.head = None
    if hasattr(model, "eval"):
        model.eval()
    return model


def _entrypoint_source(spec: Mapping[str, Any]) -> list[Path]:
    """The factory module's source file, found without importing the module itself."""
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        return []
    try:
        found = importlib.util.find_spec(entrypoint.partition(":")[0])
    except (ImportError, ValueError):
        return []
    return [Path(found.origin)] if found is not None and found.has_location else []


def _weight_files(role: str):
    def files(spec: Mapping[str, Any]) -> list[Path]:
        nested = [value for value in dict(spec.get("kwargs") or {}).values() if isinstance(value, Mapping)]
        nested_files = [file for value in nested if "kind" in value for file in spec_weight_files(value, role)]
        return _entrypoint_source(spec) + nested_files

    return files


@register_classifier("python", _weight_files("classifier"))
def load_python_classifier(spec: Mapping[str, Any]) -> Classifier:
    model = _build(spec, "classifier", _CLASSIFIER_ATTRS)
    if not hasattr(model, "num_classes"):
        model.num_classes = None
    return model


@register_generator("python", _weight_files("generator"))
def load_python_generator(spec: Mapping[str, Any]) -> Generator:
    return _build(spec, "generator", _GENERATOR_ATTRS)
