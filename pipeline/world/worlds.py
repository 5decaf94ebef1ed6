"""One API over the procedural worlds, chosen by name: ``"shapes"`` (the default) or ``"breeds"``.

Every function takes ``world=`` and defaults to the shapes world, so callers written for
the shapes world keep working unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.world import breeds

# The package binds the name ``render`` to the function below, so the module is fetched by its full name.
shapes = importlib.import_module("pipeline.world.render")

WORLDS: tuple[str, ...] = ("shapes", "breeds")
IMAGE_SIZE = 64


def _check(world: str) -> str:
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; known: {', '.join(WORLDS)}")
    return world


def class_names(world: str = "shapes") -> tuple[str, ...]:
    """The class names of ``world``, in label order."""
    return shapes.SHAPES if _check(world) == "shapes" else breeds.BREEDS


def factor_ranges(world: str = "shapes") -> dict[str, tuple[float, float]]:
    """Factor -> (low, high): every value the world draws lies in that range."""
    return dict(shapes.FACTOR_RANGES if _check(world) == "shapes" else breeds.FACTOR_RANGES)


def part_names(world: str = "shapes") -> tuple[str, ...]:
    """The parts of ``world``'s figure: label ``k`` of :func:`part_map` is ``part_names(world)[k - 1]``.

    The shapes world's one part is its whole object; the breeds world's figure has several.
    """
    return shapes.PART_NAMES if _check(world) == "shapes" else breeds.PART_NAMES


def sample_factors(
    n: int,
    seed: int,
    classes: Sequence[int] | None = None,
    world: str = "shapes",
    **factor_ranges: float | tuple[float, float],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Draw ``n`` labels and factor rows of ``world`` (see each world's ``sample_factors``)."""
    module = shapes if _check(world) == "shapes" else breeds
    return module.sample_factors(n, seed, classes, **factor_ranges)


def sample(
    n: int,
    seed: int,
    classes: Sequence[int] | None = None,
    image_size: int = IMAGE_SIZE,
    world: str = "shapes",
    **factor_ranges: float | tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Render ``n`` random images of ``world``.

    Returns ``(images float32 [n, 3, H, W] in [0, 1], labels int64 [n], factors)``, where
    ``factors`` has one column per factor of the world. The same seed and arguments give
    identical output. ``factor_ranges`` overrides factors by name: a ``(low, high)`` pair
    draws that factor uniformly in the range for every class, one number fixes it.
    """
    module = shapes if _check(world) == "shapes" else breeds
    return module.sample(n, seed, classes, image_size, **factor_ranges)


def render(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    factors: pd.DataFrame | Mapping[str, Sequence[float]],
    image_size: int = IMAGE_SIZE,
    world: str = "shapes",
) -> torch.Tensor:
    """Render the images of given labels and factor rows (one row per image).

    A shape's outline comes from its label; a breed is drawn from its factors alone, so for
    the breeds world ``labels`` only has to match the rows in number.
    """
    if _check(world) == "shapes":
        return shapes.render(labels, factors, image_size)
    _check_rows(labels, factors)
    return breeds.render(factors, image_size)


def _check_rows(labels: Sequence[int] | np.ndarray | torch.Tensor, factors: pd.DataFrame | Mapping) -> None:
    count, rows = len(np.asarray(labels)), len(np.asarray(factors[breeds.FACTORS[0]]))
    if count != rows:
        raise ValueError(f"{count} labels for {rows} factor rows")


def part_map(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    factors: pd.DataFrame | Mapping[str, Sequence[float]],
    image_size: int = IMAGE_SIZE,
    world: str = "shapes",
) -> torch.Tensor:
    """Per-pixel part labels int64 ``[n, H, W]`` of the images :func:`render` draws (same arguments).

    0 is the background (the figure covers at most half of the pixel); ``k`` is the part
    ``part_names(world)[k - 1]``: in the breeds world the one that contributes most to the
    pixel's colour.
    """
    if _check(world) == "shapes":
        return shapes.part_map(labels, factors, image_size)
    _check_rows(labels, factors)
    return breeds.part_map(factors, image_size)
