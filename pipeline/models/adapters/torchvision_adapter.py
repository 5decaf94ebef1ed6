"""``kind: torchvision``: any torchvision classifier, split at a named layer.

Spec::

    {kind: torchvision, name: resnet50,
     weights: path/to/state_dict.pth | ResNet50_Weights.IMAGENET1K_V2 | null,
     layer: null | <module name, e.g. layer4>,
     num_classes: null | <int, when the state dict was trained on other classes>,
     preprocess: {resize: 256, crop: 224, mean: [...], std: [...]}}

``weights`` as a weights-enum name is resolved from the local torch hub cache only
(``$TORCH_HOME/hub/checkpoints``): nothing is ever downloaded, so a run never depends on
the network. ``null`` builds random weights (tests, smoke runs).

``HookedClassifier``, shared with the timm adapter, reads the activations of the studied
layer with a forward hook and stops the network there. The default layer is the input of
the network's classifier layer (the penultimate, pooled features, 2,048 units for
ResNet50). A spatial layer is globally average-pooled; ``spatial_features`` returns the
maps before pooling (for class activation maps) and is absent where there are none.
``head`` is the classifier layer only when a probe forward shows that the pooled layer is
exactly the classifier's input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models.preprocess import IMAGENET_PREPROCESS, Preprocess, preprocess_from_spec
from pipeline.models.registry import ModelSpecError, register_classifier

_SPEC_KEYS = {"kind", "name", "weights", "layer", "num_classes", "preprocess"}
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


class _StopForward(Exception):
    """Raised by the capture hook so the network does not compute layers nobody reads."""


class HookedClassifier(torch.nn.Module):
    """A classifier network read at one layer; speaks the Classifier protocol.

    ``layer`` names a module of ``network`` (``None``: the input of ``classifier``, i.e.
    the penultimate features). ``classifier`` is the layer producing logits; ``None``
    picks the network's last ``nn.Linear``. For the default layer, ``spatial_features``
    reads the maps that the network global-average-pools into it (ResNet's layer4 output),
    where a probe finds them.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocess: Preprocess,
        layer: str | None = None,
        classifier: torch.nn.Module | None = None,
        description: str = "classifier",
    ) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.description = description
        # Submodules are kept by name: holding them as attributes would register them twice.
        self._classifier_name = _module_name(network, classifier) if classifier is not None else _last_linear(network)
        if self._classifier_name is None:
            raise ModelSpecError(f"classifier: {description} has no nn.Linear classifier layer to read logits from")
        if layer is not None:
            _check_layer_name(network, layer, description)
        self.layer = layer
        self._features_at = _Tap(self._classifier_name, "input") if layer is None else _Tap(layer, "output")
        self._probe()

    @property
    def head(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.network.get_submodule(self._classifier_name) if self._feeds_classifier else None

    @property
    def spatial_features(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Images -> maps [B, num_units, h, w] that pool to ``features``; absent when there are none."""
        if self._spatial_at is None:
            # AttributeError keeps `hasattr(classifier, "spatial_features")` an honest test.
            raise AttributeError(f"{self.description} at layer {self.layer!r} has no spatial features")
        return self._spatial_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> pooled activations [B, num_units]."""
        return _global_pool(self._capture(x, self._features_at, stop=True)[0])

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations and the full network's logits from one forward pass."""
        captured, logits = self._capture(x, self._features_at, stop=False)
        return _global_pool(captured), logits

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The full network's logits, whether or not the studied layer feeds them directly."""
        return self.network(self.preprocess(x))

    def _spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._capture(x, self._spatial_at, stop=True)[0]

    def _capture(self, x: torch.Tensor, tap: _Tap, stop: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        captured: list[torch.Tensor] = []

        def keep(value: torch.Tensor) -> None:
            if stop:
                captured.append(value)
                raise _StopForward
            # Later in-place ops (DenseNet's relu) would otherwise rewrite what was captured.
            captured.append(value.clone())

        module = self.network.get_submodule(tap.module)
        if tap.where == "input":
            handle = module.register_forward_pre_hook(lambda m, args: keep(args[0]))
        else:
            handle = module.register_forward_hook(lambda m, args, output: keep(output))
        logits = None
        try:
            logits = self.network(self.preprocess(x))
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"{self.description}: {tap.module!r} did not run in the forward pass")
        return captured[0], logits

    def _probe(self) -> None:
        # One forward on random input fixes the unit count, decides whether the studied layer
        # feeds the classifier unchanged (only then is `head` a faithful r -> logits map), and
        # finds where spatial maps can be read.
        side = self.preprocess.resize or self.preprocess.crop or 224
        probe = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
        classifier = self.network.get_submodule(self._classifier_name)
        channels = getattr(classifier, "in_features", None)
        layer_outputs: list[torch.Tensor] = []
        classifier_inputs: list[torch.Tensor] = []
        # Pooled at hook time: the value then is what a tap there would capture, whatever in-place ops do later.
        pooled_inputs: dict[str, list[torch.Tensor]] = {}

        def record_pooled_input(name: str, args: tuple) -> None:
            value = args[0] if args else None
            runs = pooled_inputs.setdefault(name, [])
            is_map = isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[-2] * value.shape[-1] > 1
            runs.append(_global_pool(value) if is_map and value.shape[1] == channels else None)

        hooks = [classifier.register_forward_pre_hook(lambda m, args: classifier_inputs.append(args[0].clone()))]
        if self.layer is not None:
            layer = self.network.get_submodule(self.layer)
            hooks.append(layer.register_forward_hook(lambda m, a, out: layer_outputs.append(_clone(out))))
        else:
            for name, module in self.network.named_modules():
                if name:
                    hooks.append(
                        module.register_forward_pre_hook(lambda m, args, name=name: record_pooled_input(name, args))
                    )
        try:
            with torch.no_grad():
                logits = self.network(self.preprocess(probe))
        finally:
            for hook in hooks:
                hook.remove()
        if self.layer is None:
            layer_outputs = classifier_inputs
        if len(layer_outputs) != 1:
            raise ModelSpecError(
                f"classifier.layer: {self.layer!r} runs {len(layer_outputs)} times per forward pass in "
                f"{self.description}; name a module that runs exactly once"
            )
        output = layer_outputs[0]
        if not isinstance(output, torch.Tensor) or output.ndim not in (2, 4):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelSpecError(
                f"classifier.layer: {self.layer!r} outputs {shape}; expected [B, units] or [B, units, H, W]"
            )
        pooled = _global_pool(output)
        self.num_units = int(pooled.shape[1])
        self.num_classes = int(logits.shape[1]) if logits.ndim == 2 else None
        self._feeds_classifier = len(classifier_inputs) == 1 and _same(classifier_inputs[0], pooled)
        if self.layer is not None:
            self._spatial_at = _Tap(self.layer, "output") if output.ndim == 4 else None
        else:
            # The last match is the map right before pooling; earlier ones only equal it by chance
            # (a residual block whose branch is zero-initialised passes its input through).
            matches = [
                name
                for name, runs in pooled_inputs.items()
                if len(runs) == 1 and runs[0] is not None and _same(runs[0], pooled)
            ]
            self._spatial_at = _Tap(matches[-1], "input") if matches else None


@dataclass(frozen=True)
class _Tap:
    """Where activations are read: a module's input or its output."""

    module: str
    where: str


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _clone(output: Any) -> Any:
    return output.clone() if isinstance(output, torch.Tensor) else output


def _global_pool(activations: torch.Tensor) -> torch.Tensor:
    if activations.ndim == 4:
        return F.adaptive_avg_pool2d(activations, 1).flatten(1)
    return activations


def _last_linear(network: torch.nn.Module) -> str | None:
    linears = [name for name, module in network.named_modules() if isinstance(module, torch.nn.Linear)]
    return linears[-1] if linears else None


def _module_name(network: torch.nn.Module, target: torch.nn.Module) -> str | None:
    return next((name for name, module in network.named_modules() if module is target), None)


def _check_layer_name(network: torch.nn.Module, layer: str, description: str) -> None:
    names = {name for name, _ in network.named_modules() if name}
    if layer not in names:
        top_level = ", ".join(name for name, _ in network.named_children())
        raise ModelSpecError(f"classifier.layer: no module {layer!r} in {description}; top-level modules: {top_level}")


def check_spec_keys(spec: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ModelSpecError(f"classifier: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, nested under 'state_dict'/'model', or DataParallel-prefixed.

    Only tensors are unpickled (``weights_only``), so a weights file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"classifier.weights: file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelSpecError(f"classifier.weights: cannot read {path}: {error}") from error
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ModelSpecError(f"classifier.weights: {path} holds a {type(state).__name__}, not a state dict")
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def load_weights_into(network: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[1:2] or [str(error)]
        raise ModelSpecError(
            f"classifier.weights: {source} does not fit the network ({first_line[0].strip()}); "
            "check classifier.name and classifier.num_classes"
        ) from error


def _looks_like_path(weights: str) -> bool:
    return weights.endswith(_WEIGHT_SUFFIXES) or "/" in weights or Path(weights).is_file()


def _weights_enum(name: str, weights: str):
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError) as error:
        raise ModelSpecError(f"classifier.weights: torchvision has no weights for model {name!r}") from error
    member = weights.rpartition(".")[2]
    try:
        return enum[member]
    except KeyError as error:
        known = ", ".join(f"{enum.__name__}.{m}" for m in enum.__members__)
        raise ModelSpecError(
            f"classifier.weights: {weights!r} is not a weights name of {name}; known: {known}"
        ) from error


def cached_weights_file(name: str, weights: str) -> Path:
    """Where the torch hub cache keeps the file of a torchvision weights enum."""
    url = _weights_enum(name, weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def torchvision_weight_files(spec: Mapping[str, Any]) -> list[Path]:
    weights = spec.get("weights")
    if weights is None:
        return []
    if _looks_like_path(str(weights)):
        return [Path(weights)]
    return [cached_weights_file(spec.get("name"), str(weights))]


@register_classifier("torchvision", weight_files=torchvision_weight_files)
def load_torchvision_classifier(spec: Mapping[str, Any]) -> HookedClassifier:
    from torchvision.models import get_model, list_models

    check_spec_keys(spec, _SPEC_KEYS)
    name = spec.get("name")
    if name not in list_models():
        raise ModelSpecError(f"classifier.name: torchvision has no model {name!r}")
    weights = spec.get("weights")
    num_classes = spec.get("num_classes")
    build_kwargs = {"num_classes": int(num_classes)} if num_classes is not None else {}
    network = get_model(name, weights=None, **build_kwargs)
    if weights is not None:
        weights = str(weights)
        if _looks_like_path(weights):
            load_weights_into(network, read_state_dict(weights), weights)
        else:
            cached = cached_weights_file(name, weights)
            if not cached.is_file():
                raise ModelSpecError(
                    f"classifier.weights: {weights} is not in the local torch cache ({cached}); "
                    "place the file there or give a path to a state dict (nothing is downloaded)"
                )
            load_weights_into(network, read_state_dict(cached), str(cached))
    preprocess = preprocess_from_spec(spec.get("preprocess"), IMAGENET_PREPROCESS)
    return HookedClassifier(network, preprocess, layer=spec.get("layer"), description=f"torchvision {name}")
