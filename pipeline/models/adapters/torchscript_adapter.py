"""``kind: torchscript``: a classifier exported with ``torch.jit.script`` or ``torch.jit.trace``.

Spec::

    {kind: torchscript, path: model.pt, num_units: null | <int>, head: head | null,
     input_size: 224, preprocess: {resize, crop, mean, std} | null}

The archive provides a ``features`` method (``@torch.jit.export``) that maps images to
activations, or else its ``forward`` does. ``head`` names the method or submodule mapping
activations to logits (default: ``head`` where the archive has one; ``null`` for none).
Spatial activations [B, U, H, W] are globally average-pooled. Preprocessing defaults to
none, because an exported model usually carries its own; ``input_size`` is the side of the
square images used to probe the unit count. ``num_units``, where given, is checked
against that probe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models.adapters.torchvision_adapter import check_spec_keys
from pipeline.models.preprocess import IDENTITY_PREPROCESS, Preprocess, preprocess_from_spec
from pipeline.models.registry import ModelSpecError, register_classifier

_SPEC_KEYS = {"kind", "path", "num_units", "head", "input_size", "preprocess"}
_UNSET = object()


class TorchScriptClassifier(torch.nn.Module):
    """A TorchScript archive seen through the Classifier protocol."""

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        preprocess: Preprocess,
        head_name: str | None,
        input_size: int,
        description: str,
    ) -> None:
        super().__init__()
        self.module = module.eval()
        self.preprocess = preprocess
        self.description = description
        self._features_name = "features" if _method(module, "features") is not None else "forward"
        self._head_name = head_name
        probe = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            maps = self._maps(probe)
            if not isinstance(maps, torch.Tensor) or maps.ndim not in (2, 4):
                shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
                raise ModelSpecError(
                    f"classifier.path: {description} returns {shape}; expected [B, units] (or [B, units, H, W])"
                )
            self._is_spatial = maps.ndim == 4
            activations = _global_pool(maps)
            self.num_units = int(activations.shape[1])
            self.num_classes = None
            if head_name is not None:
                logits = self.head(activations)
                if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                    raise ModelSpecError(
                        f"classifier.head: {head_name!r} of {description} does not return [B, classes]"
                    )
                self.num_classes = int(logits.shape[1])

    @property
    def head(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if self._head_name is None:
            return None
        return _method(self.module, self._head_name) or getattr(self.module, self._head_name)

    @property
    def spatial_features(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Images -> activation maps [B, num_units, h, w]; absent when the archive returns flat features."""
        if not self._is_spatial:
            # AttributeError keeps `hasattr(classifier, "spatial_features")` an honest test.
            raise AttributeError(f"{self.description} returns flat features, not maps")
        return self._spatial_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> activations [B, num_units]."""
        return _global_pool(self._maps(x))

    def _spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._maps(x)

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self._features_name)(self.preprocess(x))


def _method(module: torch.jit.ScriptModule, name: str) -> Callable | None:
    """An exported method of the archive (not a submodule that happens to share the name)."""
    attribute = getattr(module, name, None)
    if attribute is None or isinstance(attribute, torch.nn.Module):
        return None
    return attribute if callable(attribute) else None


def _global_pool(activations: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(activations, 1).flatten(1) if activations.ndim == 4 else activations


def torchscript_weight_files(spec: Mapping[str, Any]) -> list[Path]:
    return [Path(spec["path"])] if spec.get("path") else []


@register_classifier("torchscript", weight_files=torchscript_weight_files)
def load_torchscript_classifier(spec: Mapping[str, Any]) -> TorchScriptClassifier:
    check_spec_keys(spec, _SPEC_KEYS)
    path = spec.get("path")
    if not path or not Path(path).is_file():
        raise ModelSpecError(f"classifier.path: TorchScript file {path!r} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelSpecError(f"classifier.path: {path} is not a TorchScript archive: {first_line}") from error
    head = spec.get("head", _UNSET)
    if head is _UNSET:
        head = "head" if hasattr(module, "head") else None
    elif head is not None and not hasattr(module, str(head)):
        raise ModelSpecError(f"classifier.head: the TorchScript archive {path} has no method or submodule {head!r}")
    input_size = spec.get("input_size", 224)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise ModelSpecError(f"classifier.input_size: expected a positive integer, got {input_size!r}")
    preprocess = preprocess_from_spec(spec.get("preprocess"), IDENTITY_PREPROCESS)
    classifier = TorchScriptClassifier(module, preprocess, head, input_size, description=f"TorchScript {path}")
    expected = spec.get("num_units")
    if expected is not None and int(expected) != classifier.num_units:
        raise ModelSpecError(
            f"classifier.num_units: spec says {expected} but {path} produces {classifier.num_units} units"
        )
    return classifier
