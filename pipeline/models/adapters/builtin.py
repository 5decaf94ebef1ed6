"""``kind: builtin``: the models trained on the procedural worlds that ship with the package.

Spec: ``{kind: builtin, name: <world>-classifier | <world>-generator, weights: <path>}`` with
``<world>`` ``shapes`` or ``breeds``;
``weights`` is optional and replaces the shipped file, e.g. with a retrained one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.models.builtin.weights import BUILTIN_MODELS, load_builtin, weights_path
from pipeline.models.protocols import Classifier, Generator
from pipeline.models.registry import ModelSpecError, register_classifier, register_generator

_SPEC_KEYS = {"kind", "name", "weights"}
_NAMES = {
    role: tuple(name for name in BUILTIN_MODELS if name.endswith(f"-{role}")) for role in ("classifier", "generator")
}


def _checked_name(spec: Mapping[str, Any], role: str) -> str:
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ModelSpecError(
            f"{role}.{unknown[0]}: unknown key for kind builtin; allowed: {', '.join(sorted(_SPEC_KEYS))}"
        )
    name = spec.get("name")
    if name not in _NAMES[role]:
        raise ModelSpecError(f"{role}.name: expected one of {', '.join(_NAMES[role])}, got {name!r}")
    return name


def _files(role: str):
    def weight_files(spec: Mapping[str, Any]) -> list[Path]:
        return [weights_path(_checked_name(spec, role), spec.get("weights"))]

    return weight_files


@register_classifier("builtin", weight_files=_files("classifier"))
def load_builtin_classifier(spec: Mapping[str, Any]) -> Classifier:
    return load_builtin(_checked_name(spec, "classifier"), spec.get("weights")).prepare_for_inference()


@register_generator("builtin", weight_files=_files("generator"))
def load_builtin_generator(spec: Mapping[str, Any]) -> Generator:
    return load_builtin(_checked_name(spec, "generator"), spec.get("weights"))
