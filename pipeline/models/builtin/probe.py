"""The attribute probe: a small CNN that reads a world's factors back from an image.

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

from pipeline import world as worlds
from pipeline.models.builtin.breeds_generator import CIRCULAR_FACTORS as BREEDS_CIRCULAR_FACTORS
from pipeline.models.builtin.classifier import ConvNorm
from pipeline.models.builtin.generator import CIRCULAR_FACTORS

# Per world, the factors that are angles (hues) and are read as (cos, sin).
WORLD_CIRCULAR_FACTORS: dict[str, tuple[str, ...]] = {"shapes": CIRCULAR_FACTORS, "breeds": BREEDS_CIRCULAR_FACTORS}


def circular_factors(world: str = "shapes") -> tuple[str, ...]:
    """The factors of ``world`` that are angles (hues)."""
    return WORLD_CIRCULAR_FACTORS[world]


def linear_factors(world: str = "shapes") -> tuple[str, ...]:
    """The factors of ``world`` that are read on their range, in the world's order."""
    return tuple(name for name in worlds.factor_ranges(world) if name not in WORLD_CIRCULAR_FACTORS[world])


LINEAR_FACTORS: tuple[str, ...] = linear_factors("shapes")


def _linear_scale(world: str) -> tuple[torch.Tensor, torch.Tensor]:
    ranges = worlds.factor_ranges(world)
    names = linear_factors(world)
    return torch.tensor([ranges[n][0] for n in names]), torch.tensor([ranges[n][1] - ranges[n][0] for n in names])


def factor_targets(factors: pd.DataFrame, world: str = "shapes") -> torch.Tensor:
    """Factor table -> regression targets [B, linear + 2 * circular] (see module doc)."""
    missing = [name for name in worlds.factor_ranges(world) if name not in factors]
    if missing:
        raise KeyError(f"factors: missing column {missing[0]!r}")
    low, span = _linear_scale(world)
    linear = (torch.tensor(factors[list(linear_factors(world))].to_numpy(), dtype=torch.float32) - low) / span
    angles = 2 * math.pi * torch.tensor(factors[list(circular_factors(world))].to_numpy(), dtype=torch.float32)
    return torch.cat([linear, torch.cos(angles), torch.sin(angles)], dim=1)


def targets_to_factors(targets: torch.Tensor, world: str = "shapes") -> pd.DataFrame:
    """Inverse of :func:`factor_targets`; hues come back in [0, 1)."""
    targets = targets.detach().to("cpu", torch.float64)
    linear_names, circular_names = linear_factors(world), circular_factors(world)
    n_linear, n_circular = len(linear_names), len(circular_names)
    low, span = _linear_scale(world)
    linear = targets[:, :n_linear] * span.double() + low.double()
    cos = targets[:, n_linear : n_linear + n_circular]
    sin = targets[:, n_linear + n_circular :]
    hues = torch.remainder(torch.atan2(sin, cos) / (2 * math.pi), 1.0)
    columns = dict(zip(linear_names, linear.T.numpy(), strict=True))
    columns.update(zip(circular_names, hues.T.numpy(), strict=True))
    return pd.DataFrame({name: np.asarray(columns[name]) for name in worlds.factor_ranges(world)})


class AttributeProbe(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> factor regression targets.

    Strided convolutions down to 4x4 and a flattening head, not global pooling, because
    the object's position is one of the factors to read.
    """

    def __init__(
        self, image_size: int = 64, widths: tuple[int, ...] = (24, 48, 96, 96), hidden: int = 256, world: str = "shapes"
    ):
        super().__init__()
        if world not in WORLD_CIRCULAR_FACTORS:
            raise ValueError(f"attribute probe: unknown world {world!r}; known: {', '.join(WORLD_CIRCULAR_FACTORS)}")
        self.world = world
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1))
        layers: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            layers += [ConvNorm(in_channels, width, 3, stride=2), nn.ReLU(inplace=True)]
            layers += [ConvNorm(width, width, 3), nn.ReLU(inplace=True)]
            in_channels = width
        self.trunk = nn.Sequential(*layers)
        outputs = len(linear_factors(world)) + 2 * len(circular_factors(world))
        flat = in_channels * (image_size // 2 ** len(widths)) ** 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk((x - self.input_mean) / self.input_std))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> pd.DataFrame:
        """Images [B, 3, H, W] in [0, 1] -> one row of factors per image (the world's factor columns)."""
        device = self.input_mean.device
        outputs = [self(images[start : start + batch_size].to(device)) for start in range(0, len(images), batch_size)]
        stacked = torch.cat(outputs) if outputs else torch.empty(0, self.head[-1].out_features)
        return targets_to_factors(stacked, self.world)
