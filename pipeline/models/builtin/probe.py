"""The attribute probe: a small CNN that reads the world factors back from an image.

It checks generators against the world: run it on generated images and compare the
factors it reads with those of world images. Linear factors are regressed scaled to
[0, 1] over their world range; circular ones (the hues) as (cos, sin) of their angle,
so that hue 0.99 and hue 0.01 are neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.models.builtin.classifier import ConvNorm
from pipeline.models.builtin.generator import CIRCULAR_FACTORS
from pipeline.world import FACTOR_RANGES, FACTORS

LINEAR_FACTORS: tuple[str, ...] = tuple(name for name in FACTORS if name not in CIRCULAR_FACTORS)
_LOW = torch.tensor([FACTOR_RANGES[name][0] for name in LINEAR_FACTORS])
_SPAN = torch.tensor([FACTOR_RANGES[name][1] - FACTOR_RANGES[name][0] for name in LINEAR_FACTORS])


def factor_targets(factors: pd.DataFrame) -> torch.Tensor:
    """Factor table -> regression targets [B, linear + 2 * circular] (see module doc)."""
    missing = [name for name in FACTORS if name not in factors]
    if missing:
        raise KeyError(f"factors: missing column {missing[0]!r}")
    linear = (torch.tensor(factors[list(LINEAR_FACTORS)].to_numpy(), dtype=torch.float32) - _LOW) / _SPAN
    angles = 2 * math.pi * torch.tensor(factors[list(CIRCULAR_FACTORS)].to_numpy(), dtype=torch.float32)
    return torch.cat([linear, torch.cos(angles), torch.sin(angles)], dim=1)


def targets_to_factors(targets: torch.Tensor) -> pd.DataFrame:
    """Inverse of :func:`factor_targets`; hues come back in [0, 1)."""
    targets = targets.detach().to("cpu", torch.float64)
    n_linear, n_circular = len(LINEAR_FACTORS), len(CIRCULAR_FACTORS)
    linear = targets[:, :n_linear] * _SPAN.double() + _LOW.double()
    cos = targets[:, n_linear : n_linear + n_circular]
    sin = targets[:, n_linear + n_circular :]
    hues = torch.remainder(torch.atan2(sin, cos) / (2 * math.pi), 1.0)
    columns = dict(zip(LINEAR_FACTORS, linear.T.numpy(), strict=True))
    columns.update(zip(CIRCULAR_FACTORS, hues.T.numpy(), strict=True))
    return pd.DataFrame({name: np.asarray(columns[name]) for name in FACTORS})


class AttributeProbe(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> factor regression targets.

    Strided convolutions down to 4x4 and a flattening head, not global pooling, because
    the object's position is one of the factors to read.
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (24, 48, 96, 96), hidden: int = 256):
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1))
        layers: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            layers += [ConvNorm(in_channels, width, 3, stride=2), nn.ReLU(inplace=True)]
            layers += [ConvNorm(width, width, 3), nn.ReLU(inplace=True)]
            in_channels = width
        self.trunk = nn.Sequential(*layers)
        outputs = len(LINEAR_FACTORS) + 2 * len(CIRCULAR_FACTORS)
        flat = in_channels * (image_size // 2 ** len(widths)) ** 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk((x - self.input_mean) / self.input_std))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> pd.DataFrame:
        """Images [B, 3, H, W] in [0, 1] -> one row of factors per image (``FACTORS`` columns)."""
        device = self.input_mean.device
        outputs = [self(images[start : start + batch_size].to(device)) for start in range(0, len(images), batch_size)]
        return targets_to_factors(torch.cat(outputs) if outputs else torch.empty(0, self.head[-1].out_features))
