"""The few-shot pixel classifier on generator features, and the segmenter that uses it while rendering.

:class:`PixelClassifier` is a small CNN in the spirit of the few-shot classifier of
"Repurposing GANs for One-shot Semantic Part Segmentation": every hooked layer is
standardised per channel and projected by a 1x1 convolution, the projections are
upsampled to the segmentation size and summed (the same as one 1x1 convolution over the
concatenated, upsampled layers, without ever holding that concatenation), then ReLU,
batch norm, a 3x3 convolution, ReLU, batch norm and a 1x1 convolution give one score per
label. Label 0 is the background, label ``k`` the ``k``-th part name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.segmentation.features import GeneratorFeatures, upsampled

FORMAT_VERSION = 1
# Renders per pass of the segmenter on a CPU: a pass's [32, width, 64, 64] activations stay in
# the cache, where a batch of 512 streams every layer through memory (with channels-last
# layout, about 10x the label maps per second of one batch of 512 on two cores; bench/render_path.py).
CPU_CHUNK = 32


class PixelClassifier(nn.Module):
    def __init__(self, layer_channels: Sequence[int], num_labels: int, size: int, width: int):
        super().__init__()
        self.layer_channels = [int(c) for c in layer_channels]
        self.num_labels = int(num_labels)
        self.size = int(size)
        self.width = int(width)
        total = sum(self.layer_channels)
        self.register_buffer("feature_mean", torch.zeros(total))
        self.register_buffer("feature_std", torch.ones(total))
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1, bias=False) for c in self.layer_channels)
        self.project_bias = nn.Parameter(torch.zeros(1, width, 1, 1))
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, self.num_labels, 1),
        )

    @torch.no_grad()
    def label_maps(self, features: Sequence[torch.Tensor], image_size: Sequence[int]) -> torch.Tensor:
        """uint8 ``[B, H, W]`` labels (argmax of the scores at ``image_size``) of hooked layers ``[B, C_l, h_l, w_l]``.

        On a CPU the batch goes through in passes of CPU_CHUNK renders in channels-last
        layout; each render's labels are the same as one pass over the whole batch gives.
        """
        image_size = tuple(int(side) for side in image_size)
        batch = len(features[0])
        on_cpu = features[0].device.type == "cpu"
        chunk = CPU_CHUNK if on_cpu else max(1, batch)
        layout = torch.channels_last if on_cpu else torch.contiguous_format
        maps = []
        for start in range(0, batch, chunk):
            scores = self([f[start : start + chunk].contiguous(memory_format=layout) for f in features])
            if scores.shape[-2:] != image_size:
                scores = F.interpolate(scores, size=image_size, mode="bilinear", align_corners=False)
            maps.append(scores.argmax(dim=1).to(torch.uint8))
        return torch.cat(maps) if maps else torch.empty((0, *image_size), dtype=torch.uint8)

    def set_standardisation(self, moments: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.feature_mean.copy_(torch.cat([mean for mean, _ in moments]))
        self.feature_std.copy_(torch.cat([std for _, std in moments]))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Hooked layers ``[B, C_l, h_l, w_l]`` -> label scores ``[B, num_labels, size, size]``."""
        if [f.shape[1] for f in features] != self.layer_channels:
            raise ValueError(
                f"segmenter: expected layers with {self.layer_channels} channels, got {[f.shape[1] for f in features]}"
            )
        total = self.project_bias
        start = 0
        for feature, project in zip(features, self.project, strict=True):
            stop = start + feature.shape[1]
            mean = self.feature_mean[start:stop].view(1, -1, 1, 1)
            std = self.feature_std[start:stop].view(1, -1, 1, 1)
            total = total + upsampled(project((feature.float() - mean) / std), self.size)
            start = stop
        return self.body(total)


def save_segmenter(path: str | Path, model: PixelClassifier, part_names: Sequence[str], record: dict) -> None:
    """``segmentation/model.pt``: the weights plus what is needed to rebuild and name them."""
    from pipeline.store import atomic_path

    payload = {
        "format": FORMAT_VERSION,
        "state_dict": model.state_dict(),
        "layer_channels": model.layer_channels,
        "num_labels": model.num_labels,
        "size": model.size,
        "width": model.width,
        "part_names": list(part_names),
        "record": record,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_pixel_classifier(path: str | Path) -> tuple[PixelClassifier, list[str], dict]:
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a segmentation model of format {FORMAT_VERSION}")
    model = PixelClassifier(payload["layer_channels"], payload["num_labels"], payload["size"], payload["width"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), list(payload["part_names"]), dict(payload["record"])


class GeneratorSegmenter:
    """Label maps of a generator's renders from the features of the synthesis that made them.

    While it is open, every ``generator.synthesis`` call leaves its hooked features behind;
    :meth:`label_maps` turns the latest into uint8 label maps at the image's size. Close it
    (or use it as a context manager) to take the hooks off the generator.
    """

    def __init__(self, generator: Any, model_path: str | Path, device: torch.device):
        model, self.part_names, self.record = load_pixel_classifier(model_path)
        # Channels-last weights for the channels-last passes of PixelClassifier.label_maps on a CPU.
        layout = torch.channels_last if device.type == "cpu" else torch.preserve_format
        self.model = model.to(device, memory_format=layout)
        self.features = GeneratorFeatures(generator)

    @torch.no_grad()
    def label_maps(self, image_size: Sequence[int]) -> torch.Tensor:
        """uint8 ``[B, H, W]`` label maps of the latest synthesis (0 = background, k = part k)."""
        with torch.autocast(self.model.feature_mean.device.type, enabled=False):
            return self.model.label_maps(self.features.take(), image_size)

    def close(self) -> None:
        self.features.close()

    def __enter__(self) -> GeneratorSegmenter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
