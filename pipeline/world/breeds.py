"""The breeds world: a four-legged animal with named parts, in breeds that differ like dog breeds.

The figure stands side-on, facing right, and is built from seven parts, each the union of
a few signed distance functions (SDFs) in the figure's own frame: ``body`` (trunk and
neck), ``leg`` (four legs), ``tail``, ``head``, ``snout``, ``ear`` and ``eye``. Parts are
composited back to front (tail, legs, body, snout, head, ear, eye), each with an
anti-aliased coverage one pixel wide at every scale, so the whole batch renders with a
fixed number of tensor operations and the same seed gives the same images. Each
primitive is evaluated only in a window around it (see :class:`_Figure`).

Breeds are distributions, not templates. Each breed factor (part geometry and coat) is
drawn around the breed's mean as ``mean + spread * t`` with ``t`` standard normal
truncated to ``[-TRUNCATION, TRUNCATION]``; every breed mean is one of three levels
(low, mid, high) per factor, and every factor has a level that at least two breeds share,
so no factor alone separates every pair of breeds, while each pair differs in several.
Nuisance factors (position, scale, tilt, gait, background) are uniform and shared by every
breed. :data:`FACTOR_RANGES` documents each factor's unit and the range that holds every
value the world draws. The manifest of which factors separate which breeds is registered
under ``"breeds"`` (see :mod:`pipeline.world.manifest`).

:func:`part_map` labels each pixel with the part that shows there (0 = background,
``k`` = ``PART_NAMES[k - 1]``) wherever the figure covers more than half of the pixel, so
the map agrees pixel for pixel with the coverage that :func:`render` blends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr, ndtri

from pipeline.world.draws import as_range, draw_labels
from pipeline.world.manifest import ClassManifest, register_manifest

IMAGE_SIZE = 64

BREEDS: tuple[str, ...] = ("hound", "terrier", "dachshund", "greyhound", "husky", "dalmatian")

# Label k of the part map is PART_NAMES[k - 1]; 0 is the background.
PART_NAMES: tuple[str, ...] = ("body", "leg", "tail", "head", "snout", "ear", "eye")

# Lengths are in figure units: one unit is ``scale`` times the image side.
BREED_FACTOR_RANGES: dict[str, tuple[float, float]] = {
    "body_length": (0.34, 0.70),  # half-length of the trunk
    "body_height": (0.16, 0.36),  # half-height of the trunk
    "leg_length": (0.15, 0.70),  # leg below the trunk
    "tail_length": (0.12, 0.68),
    "tail_angle": (-0.45, 1.45),  # radians above the horizontal, pointing back
    "head_size": (0.20, 0.36),  # head radius
    "snout_length": (0.02, 0.38),  # snout beyond the head's centre, minus the head radius
    "ear_length": (0.10, 0.52),
    "ear_droop": (-0.05, 2.95),  # radians the ear turns back from upright: 0 pricked, pi/2 back, ~2.6 hanging
    "eye_size": (0.115, 0.185),  # eye radius
    "coat_hue": (0.0, 0.15),  # HSV hue of the coat in turns, red (0) to yellow (0.15); not circular here
    "coat_saturation": (0.0, 0.92),
    "coat_value": (0.40, 1.0),  # HSV value (brightness) of the coat
    "spots": (0.0, 0.95),  # contrast of dark spots on trunk, head, legs and tail: 0 none
    "points": (0.0, 0.85),  # darkening of ears and snout: 0 none, 1 black
}
NUISANCE_FACTOR_RANGES: dict[str, tuple[float, float]] = {
    "x": (0.46, 0.54),  # figure centre, fraction of the width
    "y": (0.46, 0.54),  # figure centre, fraction of the height (down)
    "scale": (0.31, 0.35),  # one figure unit as a fraction of the image side
    "tilt": (-0.2, 0.2),  # radians, counter-clockwise as displayed
    "gait": (-0.4, 0.4),  # radians the near legs swing forward (far legs swing back)
    "bg_hue": (0.0, 1.0),  # background hue, circular
    "bg_luminance": (0.05, 0.35),  # background brightness (HSV value)
}
FACTOR_RANGES: dict[str, tuple[float, float]] = {**BREED_FACTOR_RANGES, **NUISANCE_FACTOR_RANGES}
FACTORS: tuple[str, ...] = tuple(FACTOR_RANGES)
BREED_FACTORS: tuple[str, ...] = tuple(BREED_FACTOR_RANGES)
NUISANCE_FACTORS: tuple[str, ...] = tuple(NUISANCE_FACTOR_RANGES)

# Each breed factor: its low, mid and high breed means and the spread around them.
LEVELS: dict[str, tuple[tuple[float, float, float], float]] = {
    "body_length": ((0.42, 0.52, 0.62), 0.035),
    "body_height": ((0.20, 0.26, 0.32), 0.018),
    "leg_length": ((0.25, 0.42, 0.60), 0.045),
    "tail_length": ((0.22, 0.40, 0.58), 0.045),
    "tail_angle": ((-0.05, 0.5, 1.05), 0.18),
    "head_size": ((0.24, 0.28, 0.32), 0.016),
    "snout_length": ((0.1, 0.2, 0.3), 0.035),
    "ear_length": ((0.20, 0.31, 0.42), 0.04),
    "ear_droop": ((0.35, 1.45, 2.55), 0.18),
    "eye_size": ((0.13, 0.15, 0.17), 0.007),
    "coat_hue": ((0.025, 0.075, 0.125), 0.012),
    "coat_saturation": ((0.18, 0.48, 0.78), 0.06),
    "coat_value": ((0.52, 0.7, 0.88), 0.045),
    "spots": ((0.13, 0.46, 0.79), 0.06),
    "points": ((0.13, 0.41, 0.69), 0.06),
}
TRUNCATION = 2.0

# Level (0 low, 1 mid, 2 high) of each breed factor's mean, in BREEDS order.
BREED_LEVELS: dict[str, tuple[int, ...]] = {
    #                hound terrier dachshund greyhound husky dalmatian
    "body_length": (1, 0, 2, 2, 1, 1),
    "body_height": (1, 1, 1, 0, 2, 1),
    "leg_length": (1, 1, 0, 2, 1, 2),
    "tail_length": (1, 0, 1, 1, 2, 1),
    "tail_angle": (2, 2, 1, 0, 2, 0),
    "head_size": (1, 1, 1, 0, 2, 1),
    "snout_length": (1, 0, 2, 2, 1, 1),
    "ear_length": (2, 0, 2, 1, 1, 1),
    "ear_droop": (2, 0, 2, 1, 0, 2),
    "eye_size": (1, 2, 1, 0, 1, 0),
    "coat_hue": (1, 2, 0, 1, 1, 2),
    "coat_saturation": (2, 0, 2, 0, 0, 0),
    "coat_value": (1, 2, 1, 1, 2, 2),
    "spots": (1, 0, 0, 0, 0, 2),
    "points": (0, 0, 0, 0, 2, 0),
}

BACKGROUND_SATURATION = 0.35
EYE_RGB = (0.06, 0.05, 0.05)
SPOT_DARKENING = 0.8
SPOT_FREQUENCY = 2 * math.pi / 0.42  # radians per figure unit: spots about 0.2 units across
FAR_LEG_SHADE = 0.72  # the far legs are in shadow, which tells them from the near ones
LEG_SHADE = 0.9
EAR_SHADE = 0.85  # ears a little darker than the head, so that they read even without points
# Back to front: tail, legs, body, snout, head, ear, eye (labels as in PART_NAMES).
DRAW_ORDER: tuple[int, ...] = (3, 2, 1, 5, 4, 6, 7)
TAIL_RADII = (0.1, 0.055)  # base, tip
LEG_RADII = (0.085, 0.06)
FAR_LEG_OFFSET = 0.1
EAR_BASE_RADIUS = 0.11
SNOUT_ANGLE = -0.3  # radians: the snout points forward and a little down
# Pixels per chunk of rows: the chunk's eight float32 canvases (16 MiB) stay below glibc's
# largest mmap threshold (32 MiB), so every chunk reuses the memory its predecessor freed.
CHUNK_PIXELS = 128 * 64 * 64
# The point of the figure frame that the (x, y) factors place; it centres the figure.
FIGURE_CENTRE = (0.18, 0.05)


def breed_means() -> dict[str, tuple[float, ...]]:
    """Factor -> its mean in each breed (BREEDS order); nuisance factors share their midpoint."""
    means = {
        name: tuple(LEVELS[name][0][level] for level in BREED_LEVELS[name]) for name in BREED_FACTORS
    }
    for name, (low, high) in NUISANCE_FACTOR_RANGES.items():
        means[name] = ((low + high) / 2,) * len(BREEDS)
    return means


def sample_factors(
    n: int,
    seed: int,
    classes: Sequence[int] | None = None,
    **factor_ranges: float | tuple[float, float],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Draw ``n`` breed labels and factor rows.

    Breed factors follow their breed's truncated normal; nuisance factors are uniform. An
    override, a ``(low, high)`` pair or one number, makes that factor uniform (or fixed)
    for every breed. Each factor takes its own uniform draws, so overriding one factor
    leaves the others' values unchanged.
    """
    rng, labels = draw_labels(
        n,
        seed,
        classes,
        class_count=len(BREEDS),
        factors=FACTORS,
        overrides=factor_ranges,
        world="breeds-world",
        class_ids="breed ids",
    )
    lower, upper = ndtr(-TRUNCATION), ndtr(TRUNCATION)
    columns = {}
    for name in FACTORS:
        uniform = rng.uniform(0.0, 1.0, size=n)
        if name in factor_ranges:
            low, high = as_range("breeds-world", name, factor_ranges[name])
            columns[name] = low + uniform * (high - low)
        elif name in LEVELS:
            levels, spread = LEVELS[name]
            means = np.asarray(levels)[np.asarray(BREED_LEVELS[name])[labels]]
            columns[name] = means + spread * ndtri(lower + uniform * (upper - lower))
        else:
            low, high = NUISANCE_FACTOR_RANGES[name]
            columns[name] = low + uniform * (high - low)
    return labels, pd.DataFrame(columns)


def sample(
    n: int,
    seed: int,
    classes: Sequence[int] | None = None,
    image_size: int = IMAGE_SIZE,
    **factor_ranges: float | tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Render ``n`` random breeds-world images: ``(images [n, 3, H, W] in [0, 1], labels, factors)``."""
    labels, factors = sample_factors(n, seed, classes, **factor_ranges)
    return render(factors, image_size), torch.from_numpy(labels), factors


def render(factors: pd.DataFrame | Mapping[str, Sequence[float]], image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images float32 ``[n, 3, H, W]`` in [0, 1] for factor rows; the breed shows only through its factors."""
    columns = _columns(factors)
    n = columns[FACTORS[0]].shape[0]
    images = torch.empty(n, 3, image_size * image_size)
    for rows in _chunks(n, image_size):
        _Figure({name: values[rows] for name, values in columns.items()}, image_size).image(out=images[rows])
    return images.view(n, 3, image_size, image_size)


def part_map(factors: pd.DataFrame | Mapping[str, Sequence[float]], image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """int64 ``[n, H, W]``: 0 where the figure covers at most half a pixel, else ``k`` for the
    part ``PART_NAMES[k - 1]`` that contributes most to the pixel's colour."""
    columns = _columns(factors)
    n = columns[FACTORS[0]].shape[0]
    labels = torch.empty(n, image_size, image_size, dtype=torch.int64)
    for rows in _chunks(n, image_size):
        labels[rows] = _Figure({name: values[rows] for name, values in columns.items()}, image_size).labels()
    return labels


def _columns(factors: pd.DataFrame | Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    missing = [name for name in FACTORS if name not in factors]
    if missing:
        raise ValueError(f"breeds-world factors lack column {missing[0]!r}")
    return {name: np.ascontiguousarray(factors[name], dtype=np.float32) for name in FACTORS}


def _chunks(n: int, image_size: int) -> list[slice]:
    """Rows in chunks of a few MB of canvas each: they reuse freed memory, where one large
    batch spends its time faulting in fresh pages."""
    rows = max(1, CHUNK_PIXELS // (image_size * image_size))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


class _Figure:
    """Coverage of every part, back to front, for a batch of factor rows.

    Each primitive is evaluated only in a window of pixels around it, as wide and as tall
    as the widest and the tallest primitive of its kind in the batch, and its coverage is scattered into its
    part's canvas: a part is small next to the image, so this does a fraction of the work
    of evaluating every primitive everywhere, and gives the same coverage because the
    window holds every pixel the primitive touches.
    """

    def __init__(self, factors: Mapping[str, np.ndarray], image_size: int):
        n = factors[FACTORS[0]].shape[0]
        self.f = {name: torch.from_numpy(factors[name]).view(n, 1, 1) for name in FACTORS}
        self.n, self.size = n, image_size
        self.cos, self.sin = torch.cos(self.f["tilt"]), torch.sin(self.f["tilt"])
        self.pixels_per_unit = self.f["scale"] * image_size
        # Row 0 holds the near legs alone (they are lit, the far legs are in shade); row k part k.
        self.canvases = torch.zeros(len(PART_NAMES) + 1, n, image_size * image_size)
        self.near_legs = self.canvases[0]
        drawn = set()
        for label, near_leg, primitive in _primitives(self.f):
            flat_index, coverage = self._draw(*primitive)
            for row in (label, 0) if near_leg else (label,):
                # A union's coverage is the largest of its members'; the first member can
                # simply be written, as the canvas holds zeros.
                if row in drawn:
                    self.canvases[row].scatter_reduce_(1, flat_index, coverage, reduce="amax")
                else:
                    self.canvases[row].scatter_(1, flat_index, coverage)
                    drawn.add(row)

    def _to_pixels(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Figure coordinates -> (column, row) in pixels, where pixel i has its centre at i."""
        du, dv = (u - FIGURE_CENTRE[0]) * self.f["scale"], (v - FIGURE_CENTRE[1]) * self.f["scale"]
        column = (self.f["x"] + self.cos * du - self.sin * dv) * self.size - 0.5
        row = (self.f["y"] - self.sin * du - self.cos * dv) * self.size - 0.5
        return column, row

    def _draw(self, base_u, base_v, dir_u, dir_v, length, base_radius, tip_radius):
        """Coverage of one tapered primitive in its window: (flat pixel index, coverage), each [n, H*W]."""
        n, size = self.n, self.size
        ends_column, ends_row = self._to_pixels(
            torch.cat([torch.as_tensor(base_u).expand(n, 1, 1), (base_u + dir_u * length).expand(n, 1, 1)], 2),
            torch.cat([torch.as_tensor(base_v).expand(n, 1, 1), (base_v + dir_v * length).expand(n, 1, 1)], 2),
        )
        margin = torch.maximum(torch.as_tensor(base_radius), torch.as_tensor(tip_radius)) * self.pixels_per_unit + 1.0
        low_column, low_row = ends_column.amin(2, keepdim=True) - margin, ends_row.amin(2, keepdim=True) - margin
        width = _window_side(ends_column.amax(2, keepdim=True) + margin - low_column, size)
        height = _window_side(ends_row.amax(2, keepdim=True) + margin - low_row, size)
        columns = low_column.floor().long().clamp(0, size - width) + torch.arange(width).view(1, 1, -1)
        rows = low_row.floor().long().clamp(0, size - height) + torch.arange(height).view(1, -1, 1)
        # The primitive's own frame (along its axis, across it) in pixels is affine in the
        # pixel's column and row, so it is a sum of a per-column and a per-row term.
        f, ppu, cos, sin = self.f, self.pixels_per_unit, self.cos, self.sin
        column_offset = columns + (0.5 - f["x"] * size)
        row_offset = rows + (0.5 - f["y"] * size)
        to_base_u = (FIGURE_CENTRE[0] - torch.as_tensor(base_u)) * ppu
        to_base_v = (FIGURE_CENTRE[1] - torch.as_tensor(base_v)) * ppu
        along_by_column = column_offset * (cos * dir_u - sin * dir_v) + (to_base_u * dir_u + to_base_v * dir_v)
        across_by_column = column_offset * (cos * dir_v + sin * dir_u) + (to_base_u * dir_v - to_base_v * dir_u)
        along = along_by_column + row_offset * (-sin * dir_u - cos * dir_v)
        across = across_by_column + row_offset * (cos * dir_u - sin * dir_v)
        coverage = _tapered_coverage(along, across.abs_(), length * ppu, base_radius * ppu, tip_radius * ppu)
        return (rows * size + columns).reshape(n, height * width), coverage.reshape(n, height * width)

    def image(self, out: torch.Tensor) -> None:
        """Draw the images into ``out``, float32 ``[n, 3, H*W]``."""
        f, n = self.f, self.n
        coat = _hsv_to_rgb(f["coat_hue"], f["coat_saturation"], f["coat_value"]).view(n, 3, 1)
        spotted = self._spot_mask().mul_(-SPOT_DARKENING * f["spots"].view(n, 1)).add_(1.0).unsqueeze(1) * coat
        pointed = coat * (1.0 - f["points"].view(n, 1, 1))
        leg_shade = self.near_legs.mul(LEG_SHADE - FAR_LEG_SHADE).add_(FAR_LEG_SHADE).unsqueeze(1)
        colours = {
            1: spotted,
            2: spotted * leg_shade,
            3: spotted,
            4: spotted,
            5: pointed,
            6: pointed * EAR_SHADE,
            7: torch.tensor(EYE_RGB).view(1, 3, 1),
        }
        background = _hsv_to_rgb(f["bg_hue"], torch.full_like(f["bg_hue"], BACKGROUND_SATURATION), f["bg_luminance"])
        out.copy_(background.view(n, 3, 1).expand_as(out))
        for label in DRAW_ORDER:
            out.lerp_(colours[label].expand_as(out), self.canvases[label].unsqueeze(1))
        out.clamp_(0.0, 1.0)

    def _spot_mask(self) -> torch.Tensor:
        """[n, H*W]: 1 inside a spot of the figure's coat, 0 outside, blurred over about a pixel."""
        grid = (torch.arange(self.size, dtype=torch.float32) + 0.5) / self.size
        dx = (grid.view(1, 1, -1) - self.f["x"]) * (SPOT_FREQUENCY / self.f["scale"])
        dy = (grid.view(1, -1, 1) - self.f["y"]) * (SPOT_FREQUENCY / self.f["scale"])
        # Each wave's phase is a column term plus a row term, so sin(a + b) = sin a cos b +
        # cos a sin b takes its sines on the edges of the grid instead of at every pixel.
        wave = _sine_of_sum(self.cos * dx + 0.7, -self.sin * dy)
        wave.mul_(_sine_of_sum(-self.sin * dx + 1.3, -self.cos * dy))
        return wave.sub_(0.35).mul_(5.0).clamp_(0.0, 1.0).reshape(self.n, self.size * self.size)

    def labels(self) -> torch.Tensor:
        transparency = torch.ones(self.n, self.size * self.size)
        weights = []
        for label in reversed(DRAW_ORDER):
            coverage = self.canvases[label]
            weights.append(coverage * transparency)
            transparency = transparency * (1.0 - coverage)
        winner = torch.tensor(DRAW_ORDER[::-1])[torch.stack(weights).argmax(dim=0)]
        return torch.where(transparency < 0.5, winner, 0).view(self.n, self.size, self.size)


def _primitives(f: Mapping[str, torch.Tensor]):
    """(part label, is a near leg, tapered-primitive arguments) for every primitive of the figure."""
    half_length, half_height, head = f["body_length"], f["body_height"], f["head_size"]
    head_u = half_length + 0.1 + 0.3 * head
    head_v = half_height + 0.08 + 0.5 * head
    right = (torch.ones_like(head), torch.zeros_like(head))

    tail_angle = f["tail_angle"]
    yield 3, False, (-half_length + 0.05, 0.55 * half_height, -torch.cos(tail_angle), torch.sin(tail_angle),
                     f["tail_length"] + 0.05, TAIL_RADII[0], TAIL_RADII[1])

    leg_top = -0.3 * half_height
    leg_reach = f["leg_length"] + 0.7 * half_height - LEG_RADII[1]
    for base_u, forward in ((half_length - 0.7 * half_height, 1.0), (-half_length + 0.7 * half_height, -1.0)):
        for offset, near in ((0.0, True), (-FAR_LEG_OFFSET, False)):
            angle = f["gait"] * forward * (1.0 if near else -1.0)
            yield 2, near, (base_u + offset, leg_top, torch.sin(angle), -torch.cos(angle), leg_reach, *LEG_RADII)

    trunk_length = (2 * (half_length - half_height)).clamp(min=0.0)
    yield 1, False, (-half_length + half_height, torch.zeros_like(head), *right, trunk_length, half_height, half_height)
    neck_u, neck_v = half_length - 0.6 * half_height, 0.2 * half_height
    neck_length = torch.hypot(head_u - neck_u, head_v - neck_v)
    yield 1, False, (neck_u, neck_v, (head_u - neck_u) / neck_length, (head_v - neck_v) / neck_length,
                     neck_length, 0.75 * half_height, 0.7 * head)

    yield 5, False, (head_u, head_v, math.cos(SNOUT_ANGLE), math.sin(SNOUT_ANGLE), head + f["snout_length"],
                     0.62 * head, 0.42 * head)
    yield 4, False, (head_u, head_v, *right, torch.zeros_like(head), head, head)

    droop = f["ear_droop"]
    # Pricked ears come to a point; hanging ears are rounded and broad at the tip.
    droop_share = (droop / 2.6).clamp(0.0, 1.0)
    yield 6, False, (head_u - 0.45 * head, head_v + 0.75 * head, -torch.sin(droop), torch.cos(droop),
                     f["ear_length"], torch.full_like(droop, EAR_BASE_RADIUS), 0.035 + 0.055 * droop_share)
    yield 7, False, (head_u + 0.38 * head, head_v + 0.22 * head, *right, torch.zeros_like(head),
                     f["eye_size"], f["eye_size"])


def _window_side(extent: torch.Tensor, size: int) -> int:
    """Pixels a window needs along one axis to hold every primitive's ``extent`` in the batch."""
    return min(size, int(math.ceil(float(extent.max()))) + 2) if extent.numel() else 1


def _sine_of_sum(column_phase: torch.Tensor, row_phase: torch.Tensor) -> torch.Tensor:
    """sin(column_phase + row_phase) on the grid: [n, 1, W] and [n, H, 1] -> [n, H, W]."""
    return torch.sin(column_phase) * torch.cos(row_phase) + torch.cos(column_phase) * torch.sin(row_phase)


def _tapered_coverage(along, across, length, base_radius, tip_radius):
    """Anti-aliased coverage of a cone with rounded ends, from a base circle to a tip circle,
    for pixels at (``along``, ``across`` >= 0) of its axis, which starts at the base and runs
    ``length``; all in pixels. Equal radii give a capsule, and length 0 a circle.
    """
    # The cone's sides touch both circles; slope is the sine of their half-angle.
    slope = torch.as_tensor((base_radius - tip_radius) / torch.as_tensor(length).clamp(min=1e-4))
    cosine = torch.sqrt(1.0 - slope * slope)
    # Where the pixel projects onto a side, measured along it, picks the nearest feature;
    # every distance is taken plus the base radius, which is subtracted once at the end.
    k = along * cosine - across * slope
    to_side = across * cosine + along * slope
    to_base = torch.hypot(along, across)
    to_tip = torch.hypot(along - length, across).add_(base_radius - tip_radius)
    distance = torch.where(k < 0.0, to_base, torch.where(k > cosine * length, to_tip, to_side))
    return torch.sub(base_radius + 0.5, distance).clamp_(0.0, 1.0)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] of shape [n, 1, 1] to RGB of shape [n, 3, 1, 1]."""
    k = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    kk = (k + h.unsqueeze(1) * 6.0) % 6.0
    ramp = torch.minimum(kk, 4.0 - kk).clamp(0.0, 1.0)
    return v.unsqueeze(1) * (1.0 - s.unsqueeze(1) * ramp)


# Measures that read each breed factor, and whether they grow (+1) or shrink (-1) with it,
# all else equal: the part's own geometry (its ellipse's axes, its centre relative to the
# figure's, as the part segmentation measures them) and its colour. The four legs' union is
# wider than tall, so longer legs lengthen its minor axis. tests/test_world_breeds.py checks
# every sign on rendered images.
FACTOR_MEASURES: dict[str, dict[str, int]] = {
    "body_length": {"part:body.area": 1, "part:body.eccentricity": 1, "part:body.major": 1},
    "body_height": {"part:body.area": 1, "part:body.eccentricity": -1, "part:body.minor": 1},
    "leg_length": {"part:leg.area": 1, "part:leg.y": 1, "part:leg.minor": 1},
    "tail_length": {"part:tail.area": 1, "part:tail.eccentricity": 1, "part:tail.major": 1},
    "tail_angle": {"part:tail.y": -1, "part:tail.dy": -1},
    "head_size": {"part:head.area": 1, "part:head.major": 1, "part:head.minor": 1, "part:snout.area": 1},
    "snout_length": {"part:snout.area": 1, "part:snout.eccentricity": 1, "part:snout.major": 1},
    "ear_length": {"part:ear.area": 1, "part:ear.eccentricity": 1, "part:ear.major": 1},
    "ear_droop": {"part:ear.y": 1, "part:ear.dy": 1},
    "eye_size": {"part:eye.area": 1, "part:eye.major": 1, "part:eye.minor": 1},
    "coat_hue": {"part:body.hue": 1, "part:head.hue": 1, "part:body.redness": -1},
    "coat_saturation": {"part:body.saturation": 1, "part:head.saturation": 1, "part:body.redness": 1},
    "coat_value": {"part:body.luminance": 1, "part:head.luminance": 1, "part:ear.luminance": 1},
    "spots": {"part:body.entropy": 1, "part:body.luminance": -1},
    "points": {"part:ear.luminance": -1, "part:snout.luminance": -1},
}


def _manifest() -> ClassManifest:
    defining = {
        (a, b): tuple(name for name in BREED_FACTORS if BREED_LEVELS[name][a] != BREED_LEVELS[name][b])
        for a, b in combinations(range(len(BREEDS)), 2)
    }
    return ClassManifest(
        classes=BREEDS, factor_means=breed_means(), defining=defining, factor_measures=FACTOR_MEASURES
    )


MANIFEST = _manifest()
register_manifest("breeds", MANIFEST)


# Okabe-Ito colours, which colour-blind readers tell apart: background black, then the parts.
PART_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)


def contact_sheet(per_breed: int = 4, seed: int = 0, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 ``[H, W, 3]``: one row per breed, ``per_breed`` samples and then their part maps
    (colours :data:`PART_PALETTE`), with a 2-pixel white gap around each tile."""
    palette = torch.tensor(PART_PALETTE, dtype=torch.uint8)
    rows = []
    for breed in range(len(BREEDS)):
        images, _, factors = sample(per_breed, seed + breed, classes=[breed], image_size=image_size)
        tiles = [(image.permute(1, 2, 0) * 255).round().to(torch.uint8) for image in images]
        tiles += [palette[labels] for labels in part_map(factors, image_size)]
        padded = [torch.nn.functional.pad(tile.permute(2, 0, 1), (1, 1, 1, 1), value=255) for tile in tiles]
        rows.append(torch.cat(padded, 2))
    return torch.cat(rows, 1).permute(1, 2, 0).numpy()

