"""Vectorised rendering of the shapes world.

Each shape is a signed distance function in the object's own frame, where the
object has a radius of about one unit. Distances are scaled to pixels and turned
into an anti-aliased coverage, so the edge is one pixel wide at every size and the
whole batch renders with a handful of tensor operations per shape class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.world.draws import as_range, draw_labels

IMAGE_SIZE = 64

SHAPES: tuple[str, ...] = (
    "circle",
    "triangle",
    "square",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
)

# Rotation is limited to less than half the smallest symmetry angle (72° for the
# star), so every rotation is visible in the image and can be recovered from it.
FACTOR_RANGES: dict[str, tuple[float, float]] = {
    "hue": (0.0, 1.0),  # object hue, circular
    "saturation": (0.55, 1.0),  # object saturation
    "value": (0.6, 1.0),  # object brightness (HSV value)
    "size": (0.16, 0.30),  # object radius as a fraction of the image side
    "x": (0.3, 0.7),  # object centre, fraction of the width
    "y": (0.3, 0.7),  # object centre, fraction of the height (down)
    "rotation": (-0.5, 0.5),  # radians
    "bg_hue": (0.0, 1.0),  # background hue, circular
    "bg_luminance": (0.05, 0.45),  # background brightness (HSV value)
    "texture": (0.0, 1.0),  # stripe frequency: 0 plain, 1 three stripes per radius
}
FACTORS: tuple[str, ...] = tuple(FACTOR_RANGES)

BACKGROUND_SATURATION = 0.35
STRIPE_AMPLITUDE = 0.5
STRIPES_PER_RADIUS = 3.0

# Parts the renderer can tell apart: label k of :func:`part_map` is PART_NAMES[k - 1], 0 the background.
PART_NAMES: tuple[str, ...] = ("object",)


def sample_factors(
    n: int,
    seed: int,
    classes: Sequence[int] | None = None,
    **factor_ranges: float | tuple[float, float],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Draw ``n`` labels and factor rows, uniformly within the (overridden) ranges.

    A factor override is either a ``(low, high)`` pair or one number that fixes it.
    """
    rng, labels = draw_labels(
        n,
        seed,
        classes,
        class_count=len(SHAPES),
        factors=FACTORS,
        overrides=factor_ranges,
        world="world",
        class_ids="ids",
    )
    columns = {}
    for name in FACTORS:
        low, high = as_range("world", name, factor_ranges.get(name, FACTOR_RANGES[name]))
        columns[name] = rng.uniform(low, high, size=n)
    return labels, pd.DataFrame(columns)


def sample(
    n: int,
    seed: int,
    classes: Sequence[int] | None = None,
    image_size: int = IMAGE_SIZE,
    **factor_ranges: float | tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Render ``n`` random world images.

    Returns ``(images float32 [n, 3, H, W] in [0, 1], labels int64 [n], factors)``,
    where ``factors`` has one column per entry of :data:`FACTORS`. The same seed and
    arguments give identical output.
    """
    labels, factors = sample_factors(n, seed, classes, **factor_ranges)
    return render(labels, factors, image_size), torch.from_numpy(labels), factors


def render(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    factors: pd.DataFrame | Mapping[str, Sequence[float]],
    image_size: int = IMAGE_SIZE,
) -> torch.Tensor:
    """Render images for given shape labels and factor values (one row per image)."""
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = labels_t.numel()
    f = {name: torch.as_tensor(np.asarray(factors[name], dtype=np.float32)).view(n, 1, 1) for name in FACTORS}
    u, _ = _object_frame(f, image_size)
    coverage = _coverage(labels_t, f, image_size).unsqueeze(1)

    frequency = f["texture"] * STRIPES_PER_RADIUS
    shade = 1.0 - STRIPE_AMPLITUDE * 0.5 * (1.0 - torch.cos(2.0 * math.pi * frequency * u))
    object_rgb = hsv_to_rgb(f["hue"], f["saturation"], f["value"]) * shade.unsqueeze(1)
    background_rgb = hsv_to_rgb(
        f["bg_hue"], torch.full_like(f["bg_hue"], BACKGROUND_SATURATION), f["bg_luminance"]
    )
    return torch.lerp(background_rgb, object_rgb, coverage).clamp_(0.0, 1.0)


def part_map(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    factors: pd.DataFrame | Mapping[str, Sequence[float]],
    image_size: int = IMAGE_SIZE,
) -> torch.Tensor:
    """The true part of every pixel of :func:`render`'s images: int64 ``[n, H, W]``.

    0 is the background and ``k`` is ``PART_NAMES[k - 1]``; a pixel belongs to the object
    where the object covers at least half of it.
    """
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = labels_t.numel()
    f = {name: torch.as_tensor(np.asarray(factors[name], dtype=np.float32)).view(n, 1, 1) for name in FACTORS}
    coverage = _coverage(labels_t, f, image_size)
    return (coverage >= 0.5).long()


def _coverage(labels_t: torch.Tensor, f: Mapping[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """The object's anti-aliased coverage of each pixel, float ``[n, H, W]`` in [0, 1]."""
    u, v = _object_frame(f, image_size)
    distance = torch.empty(labels_t.numel(), image_size, image_size)
    for shape_id, sdf in enumerate(_SDFS):
        idx = (labels_t == shape_id).nonzero().flatten()
        if idx.numel():
            distance[idx] = sdf(u[idx], v[idx])
    return (0.5 - distance * f["size"] * image_size).clamp_(0.0, 1.0)


def _object_frame(f: Mapping[str, torch.Tensor], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel's (u, v) in the object's frame: u to the right, v upwards, one unit = the radius."""
    # Pixel centres in [0, 1]; y grows downwards as in every image array.
    grid = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    dx = grid.view(1, 1, -1) - f["x"]
    dy = grid.view(1, -1, 1) - f["y"]
    cos, sin = torch.cos(f["rotation"]), torch.sin(f["rotation"])
    return (cos * dx + sin * dy) / f["size"], (sin * dx - cos * dy) / f["size"]


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] of shape [n, 1, 1] to RGB of shape [n, 3, 1, 1]."""
    k = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    kk = (k + h.unsqueeze(1) * 6.0) % 6.0
    ramp = torch.minimum(kk, 4.0 - kk).clamp(0.0, 1.0)
    return v.unsqueeze(1) * (1.0 - s.unsqueeze(1) * ramp)


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.hypot(u, v) - 0.9


def _regular_polygon(sides: int, apothem: float):
    # Edge normals; the first points down so that the polygon stands on an edge.
    angles = torch.tensor([-math.pi / 2 + k * 2 * math.pi / sides for k in range(sides)])

    def sdf(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        proj = u.unsqueeze(-1) * torch.cos(angles) + v.unsqueeze(-1) * torch.sin(angles)
        return proj.amax(dim=-1) - apothem

    return sdf


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.75


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    sector = 2 * math.pi / 5
    phase = torch.remainder(torch.atan2(v, u) - math.pi / 2, sector)
    tip = (phase - sector / 2).abs() / (sector / 2)  # 1 at a tip, 0 between tips
    return torch.hypot(u, v) - (0.42 + 0.58 * tip)


def _box(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    return torch.maximum(u.abs() - half_u, v.abs() - half_v)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.minimum(_box(u, v, 0.9, 0.3), _box(u, v, 0.3, 0.9))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (torch.hypot(u, v) - 0.72).abs() - 0.22


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.hypot(u, v) - 0.95, 0.75 - torch.hypot(u - 0.4, v))


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # A diamond with a circle on each upper edge.
    diamond = (u.abs() + (v + 0.1).abs() - 0.75) / math.sqrt(2.0)
    lobes = torch.hypot(u.abs() - 0.375, v - 0.275) - 0.53
    return torch.minimum(diamond, lobes)


_SDFS = (
    _circle,
    _regular_polygon(3, 0.5),
    _square,
    _star,
    _cross,
    _ring,
    _crescent,
    _heart,
)
assert len(_SDFS) == len(SHAPES)
