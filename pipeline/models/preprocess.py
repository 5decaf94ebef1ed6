"""Classifier input preprocessing as a batched torch module: resize, center crop, normalise.

Classifiers receive images in [0, 1] at the generator's resolution; the adapter owns the
preprocessing its network was trained with. The ImageNet defaults follow the paper
(shorter side to 256, center crop 224, ImageNet mean and std), applied to whole batches on
the model's device instead of one PIL image at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models.registry import ModelSpecError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREPROCESS = {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
IDENTITY_PREPROCESS = {"resize": None, "crop": None, "mean": None, "std": None}

_KEYS = ("resize", "crop", "mean", "std", "interpolation")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class Preprocess(torch.nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> the classifier's input.

    ``resize`` scales the shorter side to that many pixels (keeping the aspect ratio),
    ``crop`` takes the central ``crop`` x ``crop`` window, and ``mean``/``std`` normalise
    per channel. Any of them may be ``None`` to skip that step.
    """

    def __init__(
        self,
        resize: int | None = 256,
        crop: int | None = 224,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if interpolation not in _INTERPOLATIONS:
            raise ModelSpecError(f"preprocess.interpolation: expected one of {_INTERPOLATIONS}, got {interpolation!r}")
        if (mean is None) != (std is None):
            raise ModelSpecError("preprocess: give both mean and std, or neither")
        self.resize = _positive_int_or_none(resize, "resize")
        self.crop = _positive_int_or_none(crop, "crop")
        self.interpolation = interpolation
        self.normalise = mean is not None
        # Buffers follow the module across devices, so normalisation never crosses a device boundary.
        self.register_buffer("mean", _channel_vector(mean, "mean"), persistent=False)
        self.register_buffer("std", _channel_vector(std, "std"), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"preprocess: expected images [B, 3, H, W], got shape {tuple(images.shape)}")
        x = images.float()
        if self.resize is not None:
            x = self._resize_shorter_side(x)
        if self.crop is not None:
            x = self._center_crop(x)
        if self.normalise:
            x = (x - self.mean) / self.std
        return x

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The spatial size that ``forward`` produces from ``height`` x ``width`` input."""
        if self.resize is not None:
            height, width = _shorter_side_size(height, width, self.resize)
        if self.crop is not None:
            height, width = self.crop, self.crop
        return height, width

    def _resize_shorter_side(self, x: torch.Tensor) -> torch.Tensor:
        size = _shorter_side_size(x.shape[-2], x.shape[-1], self.resize)
        if size == tuple(x.shape[-2:]):
            return x
        # Antialiasing matches PIL's resize, which is what the published models were evaluated with.
        antialias = self.interpolation != "nearest"
        return F.interpolate(x, size=size, mode=self.interpolation, antialias=antialias, align_corners=None)

    def _center_crop(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.crop > height or self.crop > width:
            raise ValueError(f"preprocess.crop: {self.crop} exceeds the resized image {height}x{width}")
        top = int(round((height - self.crop) / 2.0))
        left = int(round((width - self.crop) / 2.0))
        return x[..., top : top + self.crop, left : left + self.crop]

    def extra_repr(self) -> str:
        return f"resize={self.resize}, crop={self.crop}, normalise={self.normalise}, interpolation={self.interpolation}"


def preprocess_from_spec(
    spec: Mapping[str, Any] | None, defaults: Mapping[str, Any] = IMAGENET_PREPROCESS
) -> Preprocess:
    """Build the preprocessing a classifier spec asks for; keys it omits come from ``defaults``."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise ModelSpecError(f"classifier.preprocess: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}")
    merged = {**dict(defaults), **spec}
    return Preprocess(**merged)


def _shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def _positive_int_or_none(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelSpecError(f"preprocess.{key}: expected a positive integer or null, got {value!r}")
    return value


def _channel_vector(values: Sequence[float] | None, key: str) -> torch.Tensor:
    if values is None:
        return torch.zeros(1, 3, 1, 1)
    if len(values) != 3:
        raise ModelSpecError(f"preprocess.{key}: expected 3 values (R, G, B), got {values!r}")
    tensor = torch.tensor([float(v) for v in values]).view(1, 3, 1, 1)
    if key == "std" and bool((tensor <= 0).any()):
        raise ModelSpecError(f"preprocess.std: values must be positive, got {values!r}")
    return tensor
