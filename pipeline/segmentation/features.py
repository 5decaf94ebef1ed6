"""The generator's own features of every render, caught by forward hooks during synthesis.

Which layers are hooked:

- StyleGAN2-ADA, StyleGAN3 and StyleGAN-XL pickles (and anything else whose synthesis
  network is built of modules named ``SynthesisLayer``): every second synthesis layer,
  starting with the first, in the order the network registers them. Their outputs are
  ``[B, C, h, w]`` maps of growing resolution over the image.
- The builtin shapes generator: its per-pixel coordinate network runs on a canvas in the
  object's own frame, so the outputs of its hidden layers and of its distance layer are
  resampled into the image by the pose the generator predicted for the render, exactly as
  the generator places its own shape.
- Any other generator may name its layers itself with a ``segmentation_layers()`` method
  returning modules whose outputs are ``[B, C, h, w]`` maps over the image.

The features of a batch are kept only until :meth:`GeneratorFeatures.take` hands them
over, at each layer's own resolution; the segmenter projects each layer to a few channels
before it upsamples (a 1x1 convolution commutes with bilinear resampling), so the memory
a batch needs does not grow with the number of hooked channels times the segmentation size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SYNTHESIS_LAYER_NAME = "SynthesisLayer"


class GeneratorFeatures:
    """Forward hooks on a generator's synthesis layers that keep the latest synthesis's outputs.

    Use as a context manager (or call :meth:`close`) so the hooks come off again.
    """

    def __init__(self, generator: Any):
        self.generator = generator
        modules, self._to_image = _hooked_layers(generator)
        self._captured: list[torch.Tensor | None] = [None] * len(modules)
        self._handles = [module.register_forward_hook(self._keeper(k)) for k, module in enumerate(modules)]
        self._pose: torch.Tensor | None = None
        if self._to_image is not None:
            self._handles.append(generator.pose.register_forward_hook(self._keep_pose))

    def _keeper(self, index: int) -> Callable[..., None]:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            self._captured[index] = (output[0] if isinstance(output, tuple) else output).detach()

        return keep

    def _keep_pose(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._pose = output.detach()

    def take(self) -> list[torch.Tensor]:
        """The hooked outputs of the last synthesis as float ``[B, C, h, w]`` maps over the image; clears them."""
        if any(feature is None for feature in self._captured):
            raise RuntimeError("generator features: no synthesis ran since the last take()")
        features = [feature.float() for feature in self._captured]
        self._captured = [None] * len(self._captured)
        if self._to_image is not None:
            features = self._to_image(features, self._pose.float())
            self._pose = None
        for index, feature in enumerate(features):
            if feature.ndim != 4:
                raise ValueError(f"generator features: layer {index} gave {list(feature.shape)}, not [B, C, h, w]")
        return features

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> GeneratorFeatures:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _hooked_layers(generator: Any) -> tuple[list[nn.Module], Callable | None]:
    """The modules to hook and, for the builtin generator, how their outputs reach the image."""
    from pipeline.models.builtin.generator import ShapesGenerator

    if isinstance(generator, ShapesGenerator):
        return [*generator.layers, generator.to_distance], _builtin_to_image(generator)
    if hasattr(generator, "segmentation_layers"):
        modules = list(generator.segmentation_layers())
        if not modules:
            raise ValueError("generator features: segmentation_layers() returned no modules")
        return modules, None
    network = getattr(generator, "network", generator)
    synthesis = getattr(network, "synthesis", None)
    layers = [m for m in synthesis.modules() if type(m).__name__ == SYNTHESIS_LAYER_NAME] if synthesis else []
    if not layers:
        raise ValueError(
            f"generator features: {type(network).__name__} has no synthesis modules named {SYNTHESIS_LAYER_NAME!r} "
            "and no segmentation_layers() method, so there are no layers to hook"
        )
    return layers[::2], None


def _builtin_to_image(generator: Any) -> Callable[[list[torch.Tensor], torch.Tensor], list[torch.Tensor]]:
    """Resample the builtin generator's canvas features into the image by its predicted pose."""

    def to_image(features: list[torch.Tensor], pose: torch.Tensor) -> list[torch.Tensor]:
        n, res, canvas = pose.shape[0], generator.img_resolution, generator.canvas
        pixels = generator.pixels.float()
        size = torch.exp(pose[:, 2:3])
        cos, sin = torch.cos(pose[:, 3:4]), torch.sin(pose[:, 3:4])
        dx, dy = pixels[:, 0] - pose[:, 0:1], pixels[:, 1] - pose[:, 1:2]
        u, v = (cos * dx + sin * dy) / size, (sin * dx - cos * dy) / size
        grid = torch.stack([u, -v], dim=-1).view(n, res, res, 2) / generator.extent
        maps = []
        for feature in features:  # [B, canvas * canvas, C], rows of the canvas top to bottom
            on_canvas = feature.transpose(1, 2).reshape(n, -1, canvas, canvas)
            maps.append(F.grid_sample(on_canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        # Where the object frame lies outside the canvas every feature is zero; a channel
        # saying so lets the classifier tell "far outside" from "zero inside".
        inside = (grid.abs().amax(dim=-1) <= 1.0).float().unsqueeze(1)
        return [*maps, inside]

    return to_image


def feature_size(resolution: int, requested: int) -> int:
    """The side of the segmentation maps: ``requested``, but never above the image's side."""
    return max(1, min(int(resolution), int(requested)))


def upsampled(feature: torch.Tensor, size: int) -> torch.Tensor:
    """A ``[B, C, h, w]`` map resampled to ``size x size`` (bilinear; area-averaged when shrinking)."""
    if feature.shape[-2:] == (size, size):
        return feature
    shrinking = feature.shape[-1] > size
    return F.interpolate(feature, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def channel_moments(features: list[list[torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer channel mean and standard deviation over batches of hooked features."""
    moments = []
    for layer in zip(*features, strict=True):
        flat = torch.cat([f.transpose(0, 1).reshape(f.shape[1], -1) for f in layer], dim=1).double()
        std = flat.std(dim=1).clamp_min(1e-6) if flat.shape[1] > 1 else torch.ones(flat.shape[0], dtype=flat.dtype)
        moments.append((flat.mean(dim=1).float(), std.float()))
    return moments
