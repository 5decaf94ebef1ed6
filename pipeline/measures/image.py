"""Image measures of every render, one column ``{region}.{quantity}`` each.

Regions are ``object`` and its complement ``background`` (masks from
:mod:`pipeline.measures.regions`), the whole ``image``, and ``part:<name>`` regions from a
part segmentation (:mod:`pipeline.segmentation`), whose union is then the object. Quantities:

- ``area``: pixel fraction of the image.
- ``x``, ``y``: centroid as a fraction of the width and height; ``y`` grows downwards, as
  in every image array.
- ``eccentricity``, ``orientation``: of the ellipse with the region's second moments;
  orientation in radians in [-pi/2, pi/2), from the +x axis towards +y (clockwise as
  displayed), axial, so it is circular with period pi.
- ``major``, ``minor`` (parts only): that ellipse's full axes (four standard deviations,
  the extent of a uniform ellipse) as fractions of the image's longer side; ``dx``, ``dy``
  (parts only): the part's centre minus the object's, as fractions of the width and height.
- ``hue``: circular mean hue in turns [0, 1), the angle of the region's mean colour in the
  opponent plane (R - (G+B)/2, sqrt(3)/2 (G - B)). This is the chroma-weighted circular mean
  of the per-pixel hue, so grey pixels, whose hue is noise, carry no weight. It equals the
  HSV hue at the primary and secondary colours.
- ``saturation``: mean HSV saturation. ``luminance``: mean Rec. 709 luma of the sRGB values.
- ``redness``: mean red-cyan opponent value R - (G+B)/2 in [-1, 1]; unlike hue it is linear,
  so an increase means the same thing for every starting colour.
- ``entropy``: texture, the mean local Shannon entropy (bits) of the luma quantised to
  ``ENTROPY_LEVELS`` levels in ``ENTROPY_WINDOW``-pixel windows. Windows count only pixels
  of the region, so a region's border with its neighbour is not mistaken for texture.
  Windows are centred on every other pixel in each direction, which keeps the cost low and
  changes a region's mean by sampling only.
- ``motion``, ``motion_x``, ``motion_y``, ``motion_direction`` (``image`` region only): dense
  optical flow accumulated along the sweep from its first step to this one, see
  :mod:`pipeline.measures.motion`. They are 0 (direction NaN) at the first step.

Not every pair is a column. The background's shape quantities and area are functions of
the object's, and the image's shape quantities are constant, so they are left out: each
concept is then counted once. Regions smaller than ``MIN_REGION_PIXELS`` pixels get NaN for
every quantity except ``area``, as in the paper, which ignored parts under ~20 pixels.

Changes along a sweep are last step minus first step; circular quantities use the signed
circular difference, and the motion quantities, which already describe the change from the
first step, use their value at the last step. :func:`measure_changes` computes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from pipeline.measures.motion import MOTION_QUANTITIES, sweep_motion

SHAPE_QUANTITIES: tuple[str, ...] = ("area", "x", "y", "eccentricity", "orientation")
# A part's ellipse axes and its centre relative to the object's, as the paper measures parts.
PART_GEOMETRY_QUANTITIES: tuple[str, ...] = ("major", "minor", "dx", "dy")
APPEARANCE_QUANTITIES: tuple[str, ...] = ("hue", "saturation", "luminance", "redness", "entropy")

# Period of each circular quantity, in that quantity's unit.
CIRCULAR_QUANTITIES: dict[str, float] = {"hue": 1.0, "orientation": math.pi, "motion_direction": 2 * math.pi}
# Quantities that already measure the change from the first step of a sweep.
RELATIVE_QUANTITIES: frozenset[str] = frozenset(MOTION_QUANTITIES)
# Quantities that cannot be negative (how far the image moved): a unit can only move them
# more than a random direction does; moving them less says only that the unit barely acts.
MAGNITUDE_QUANTITIES: frozenset[str] = frozenset({"motion"})
# Tested quantities exclude the direction, which is undefined wherever nothing moved.
UNTESTED_QUANTITIES: frozenset[str] = frozenset({"motion_direction"})

MIN_REGION_PIXELS = 20
ENTROPY_LEVELS = 8
ENTROPY_WINDOW = 5
BATCH_SIZE = 256

LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
CHROMA_EPSILON = 1e-3

# Region sums that give every quantity except entropy: the pixel count, the coordinate
# moments, then the per-pixel appearance values.
_APPEARANCE_SUMS = ("luminance", "saturation", "redness", "blue_green")
_SUMS = ("count", "x", "y", "xx", "yy", "xy", *_APPEARANCE_SUMS)


def region_quantities(region: str) -> tuple[str, ...]:
    """The quantities measured for a region (see the module docstring for why they differ)."""
    if region == "image":
        return APPEARANCE_QUANTITIES + MOTION_QUANTITIES
    if region == "background":
        return APPEARANCE_QUANTITIES
    if region.startswith("part:"):
        return SHAPE_QUANTITIES + PART_GEOMETRY_QUANTITIES + APPEARANCE_QUANTITIES
    return SHAPE_QUANTITIES + APPEARANCE_QUANTITIES


def measure_names(part_names: Iterable[str] = ()) -> list[str]:
    """Every column that :func:`measure_sweeps` returns, in its order."""
    regions = ["image", "object", "background", *(f"part:{name}" for name in part_names)]
    return [f"{region}.{quantity}" for region in regions for quantity in region_quantities(region)]


def quantity_of(measure: str) -> str:
    """``"part:ear.hue"`` -> ``"hue"``."""
    return measure.rsplit(".", 1)[-1]


def selected_measures(columns: Iterable[str], choice: str | Sequence[str]) -> list[str]:
    """The measures that config key ``concepts.measures`` asks to test among a table's ``columns``:
    ``"all"`` for :func:`tested_measures`, or a list of measure names, each of which must be a column."""
    columns = list(columns)
    if choice == "all":
        return tested_measures(columns)
    available = [name for name in columns if "." in name]
    unknown = [name for name in choice if name not in available]
    if unknown:
        raise ValueError(
            f"config key 'concepts.measures': unknown measure {unknown[0]!r}; known: {', '.join(available)}"
        )
    return list(choice)


def tested_measures(columns: Iterable[str]) -> list[str]:
    """The measure columns worth a statistical test, in their given order.

    The image's appearance is a mixture of the object's and the background's, so testing
    it as well would count one concept twice; the motion direction is undefined where
    nothing moved. Both stay in the tables as descriptions.
    """
    tested = []
    for column in columns:
        region, dot, quantity = column.rpartition(".")
        if not dot or quantity in UNTESTED_QUANTITIES:
            continue
        if region == "image" and quantity in APPEARANCE_QUANTITIES:
            continue
        if quantity in region_quantities(region):
            tested.append(column)
    return tested


def measure_sweeps(
    images: np.ndarray,
    object_masks: np.ndarray,
    part_masks: Mapping[str, np.ndarray] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    threads: int | None = None,
) -> pd.DataFrame:
    """Measure every render of ``N`` sweeps of ``S`` steps.

    ``images``: uint8 ``[N, S, H, W, 3]``; ``object_masks``: bool ``[N, S, H, W]``;
    ``part_masks``: optional ``{name: bool [N, S, H, W]}``. Returns ``N * S`` rows in
    (sweep, step) order with the float columns :func:`measure_names` lists. ``threads``
    is the number of worker threads (default: torch's thread count).
    """
    images = np.asarray(images)
    object_masks = np.asarray(object_masks)
    part_masks = dict(part_masks or {})
    if images.ndim != 5 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 [N, S, H, W, 3], got {images.dtype} {list(images.shape)}")
    n, steps, height, width, _ = images.shape
    named_masks = {"object_masks": object_masks, **{f"part_masks[{k!r}]": v for k, v in part_masks.items()}}
    for name, mask in named_masks.items():
        if np.shape(mask) != (n, steps, height, width):
            raise ValueError(f"{name}: expected shape {[n, steps, height, width]}, got {list(np.shape(mask))}")

    flat_images = images.reshape(n * steps, height, width, 3)
    region_masks = np.stack([object_masks, *part_masks.values()], axis=2).reshape(n * steps, -1, height, width)
    columns: dict[str, np.ndarray] = {name: np.empty(n * steps, dtype=np.float64) for name in measure_names(part_masks)}
    region_names = ["object", *(f"part:{name}" for name in part_masks)]
    batches = [slice(start, min(start + batch_size, n * steps)) for start in range(0, n * steps, batch_size)]
    workers = max(1, threads if threads is not None else torch.get_num_threads())
    # NumPy releases the GIL in its array loops, so batches run in parallel threads.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(
            lambda rows: _measure_batch(flat_images[rows], region_masks[rows].astype(bool), region_names), batches
        )
        for rows, batch in zip(batches, results, strict=True):
            for name, values in batch.items():
                columns[name][rows] = values

    for name, values in sweep_motion(images, threads=workers).items():
        columns[f"image.{name}"] = values.reshape(-1)
    return pd.DataFrame(columns)


def measure_changes(
    frame: pd.DataFrame,
    measures: Sequence[str],
    by: Sequence[str] = ("unit", "sample"),
    step: str = "step",
) -> pd.DataFrame:
    """One row per ``by`` group: the change of each measure from its first to its last step.

    Circular quantities give the signed circular difference in [-period/2, period/2);
    relative quantities (motion) give their last value. A group with one step has change 0.
    """
    missing = [c for c in (*by, step, *measures) if c not in frame.columns]
    if missing:
        raise KeyError(f"measure_changes: column {missing[0]!r} not in the table")
    ordered = frame.sort_values([*by, step], kind="stable")
    group = ordered.groupby(list(by), sort=False).ngroup().to_numpy()
    is_first = np.r_[True, group[1:] != group[:-1]]
    is_last = np.r_[group[1:] != group[:-1], True]
    keys = ordered.loc[is_first, list(by)].reset_index(drop=True)
    changes = {}
    for measure in measures:
        values = ordered[measure].to_numpy(dtype=np.float64)
        first, last = values[is_first], values[is_last]
        quantity = quantity_of(measure)
        change = last if quantity in RELATIVE_QUANTITIES else last - first
        if quantity in CIRCULAR_QUANTITIES:
            change = wrap(change, CIRCULAR_QUANTITIES[quantity])
        changes[measure] = change
    # One concat, not a column at a time: a hundred inserted columns fragment the frame.
    return pd.concat([keys, pd.DataFrame(changes, index=keys.index)], axis=1)


def wrap(values: np.ndarray, period: float) -> np.ndarray:
    """Map differences into [-period/2, period/2)."""
    return (np.asarray(values) + period / 2) % period - period / 2


def _measure_batch(images: np.ndarray, masks: np.ndarray, region_names: list[str]) -> dict[str, np.ndarray]:
    """Quantities of ``[B, H, W, 3]`` uint8 images for the image, each masked region and the background."""
    count, height, width, _ = images.shape
    pixels = height * width
    appearance = _pixel_appearance(images.reshape(count, pixels, 3))  # [B, A, P]
    coordinates = _pixel_coordinates(height, width)
    weights = masks.reshape(count, len(region_names), pixels).astype(np.float32)
    region_counts = weights.sum(axis=2, dtype=np.float64)
    region_moments = (weights.reshape(-1, pixels) @ coordinates).reshape(count, len(region_names), -1)
    region_appearance = np.matmul(weights, appearance.transpose(0, 2, 1))
    image_sums = [
        np.full(count, float(pixels))[:, None],
        np.broadcast_to(coordinates.sum(axis=0), (count, 5)),
        appearance.sum(axis=2, dtype=np.float64),
    ]
    sums = {"image": np.concatenate(image_sums, axis=1, dtype=np.float64)}
    for k, region in enumerate(region_names):
        region_sums = [region_counts[:, k, None], region_moments[:, k], region_appearance[:, k]]
        sums[region] = np.concatenate(region_sums, axis=1, dtype=np.float64)
    sums["background"] = sums["image"] - sums["object"]

    luma = appearance[:, _APPEARANCE_SUMS.index("luminance")].reshape(count, height, width)
    entropy = _masked_local_entropy(luma, masks, region_names)
    out: dict[str, np.ndarray] = {}
    whole = _quantities_from_sums(sums["object"], pixels, height, width)
    for region, totals in sums.items():
        quantities = _quantities_from_sums(totals, pixels, height, width)
        quantities["entropy"] = entropy[region]
        quantities["dx"] = quantities["x"] - whole["x"]
        quantities["dy"] = quantities["y"] - whole["y"]
        small = totals[:, 0] < MIN_REGION_PIXELS
        for quantity in region_quantities(region):
            if quantity in MOTION_QUANTITIES:
                continue
            values = quantities[quantity]
            if quantity != "area":
                values = np.where(small, np.nan, values)
            out[f"{region}.{quantity}"] = values
    return out


def _pixel_coordinates(height: int, width: int) -> np.ndarray:
    """x, y, xx, yy, xy per pixel, ``[H * W, 5]``.

    Pixels are divided by the longer side, so that moments are isotropic, and centred, so
    that their float32 sums stay accurate.
    """
    side = max(height, width)
    ys, xs = np.meshgrid(
        (np.arange(height) + 0.5 - height / 2) / side, (np.arange(width) + 0.5 - width / 2) / side, indexing="ij"
    )
    xs, ys = xs.ravel(), ys.ravel()
    return np.stack([xs, ys, xs * xs, ys * ys, xs * ys], axis=1).astype(np.float32)


def _pixel_appearance(pixels: np.ndarray) -> np.ndarray:
    """uint8 [B, P, 3] -> float32 planes [B, len(_APPEARANCE_SUMS), P]."""
    red, green, blue = (pixels[..., c].astype(np.float32) * np.float32(1 / 255) for c in range(3))
    planes = np.empty((pixels.shape[0], len(_APPEARANCE_SUMS), pixels.shape[1]), dtype=np.float32)
    largest = np.maximum(np.maximum(red, green), blue)
    smallest = np.minimum(np.minimum(red, green), blue)
    planes[:, 0] = LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue
    np.divide(largest - smallest, np.maximum(largest, np.float32(1e-12)), out=planes[:, 1])
    planes[:, 2] = red - 0.5 * (green + blue)
    planes[:, 3] = np.float32(math.sqrt(3) / 2) * (green - blue)
    return planes


def _quantities_from_sums(totals: np.ndarray, pixels: int, height: int, width: int) -> dict[str, np.ndarray]:
    area = totals[:, 0]
    side = max(height, width)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = totals / area[:, None]
    index = {name: k for k, name in enumerate(_SUMS)}
    cx, cy = mean[:, index["x"]], mean[:, index["y"]]
    mu20 = mean[:, index["xx"]] - cx * cx
    mu02 = mean[:, index["yy"]] - cy * cy
    mu11 = mean[:, index["xy"]] - cx * cy
    spread = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    major = (mu20 + mu02) / 2 + spread
    minor = np.maximum((mu20 + mu02) / 2 - spread, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        eccentricity = np.sqrt(np.clip(1.0 - minor / major, 0.0, 1.0))
    orientation = wrap(0.5 * np.arctan2(2 * mu11, mu20 - mu02), math.pi)
    redness, blue_green = mean[:, index["redness"]], mean[:, index["blue_green"]]
    hue = np.where(
        np.hypot(redness, blue_green) > CHROMA_EPSILON,
        (np.arctan2(blue_green, redness) / (2 * math.pi)) % 1.0,
        np.nan,
    )
    return {
        "area": area / pixels,
        # Full axes of the ellipse with the region's second moments (4 sigma, the extent of
        # a uniform ellipse), as fractions of the longer image side.
        "major": 4 * np.sqrt(major),
        "minor": 4 * np.sqrt(minor),
        "x": cx * side / width + 0.5,
        "y": cy * side / height + 0.5,
        "eccentricity": eccentricity,
        "orientation": orientation,
        "hue": hue,
        "saturation": mean[:, index["saturation"]],
        "luminance": mean[:, index["luminance"]],
        "redness": redness,
    }


_COUNT_TIMES_LOG2 = np.concatenate([[0.0], np.arange(1, 256) * np.log2(np.arange(1, 256))]).astype(np.float32)
_LOG2 = np.concatenate([[0.0], np.log2(np.arange(1, 256))]).astype(np.float32)


def _masked_local_entropy(luma: np.ndarray, masks: np.ndarray, region_names: list[str]) -> dict[str, np.ndarray]:
    """Mean local entropy per region; windows count only pixels of the region they sit in."""
    levels = np.minimum((luma * ENTROPY_LEVELS).astype(np.uint8), ENTROPY_LEVELS - 1)
    # Level-major one-hot planes [L, B, H, W]: sums over levels are then adds of whole planes.
    one_hot = (levels[None] == np.arange(ENTROPY_LEVELS, dtype=np.uint8)[:, None, None, None]).view(np.uint8)
    image_counts = _window_counts(one_hot)
    image_totals = _window_counts(np.ones((1, 1, *luma.shape[1:]), dtype=np.uint8))[0]
    centres = masks[:, :, ::2, ::2]
    out = {"image": _mean_entropy(image_counts, image_totals, np.ones_like(centres[:, 0]))}
    for k, region in enumerate(region_names):
        mask = masks[:, k].view(np.uint8)
        counts = _window_counts(one_hot * mask)
        totals = _window_counts(mask[None])[0]
        out[region] = _mean_entropy(counts, totals, centres[:, k])
        if region == "object":
            out["background"] = _mean_entropy(image_counts - counts, image_totals - totals, ~centres[:, k])
    return out


def _window_counts(planes: np.ndarray) -> np.ndarray:
    """Sums over the windows centred on every other pixel: uint8 [L, B, H, W] -> [L, B, ceil(H/2), ceil(W/2)]."""
    radius = ENTROPY_WINDOW // 2
    height, width = planes.shape[2:]
    padded = np.zeros((*planes.shape[:2], height + 2 * radius, width + 2 * radius), dtype=np.uint8)
    padded[:, :, radius : radius + height, radius : radius + width] = planes
    rows = padded[..., 0:width:2].copy()
    for offset in range(1, ENTROPY_WINDOW):
        rows += padded[..., offset : offset + width : 2]
    counts = rows[:, :, 0:height:2].copy()
    for offset in range(1, ENTROPY_WINDOW):
        counts += rows[:, :, offset : offset + height : 2]
    return counts


def _mean_entropy(counts: np.ndarray, totals: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Entropy log n - sum(c log c) / n of each window, averaged over the used centres, [B]."""
    entropy = _LOG2[totals] - _COUNT_TIMES_LOG2[counts].sum(axis=0) / np.maximum(totals, 1)
    used = centres & (totals > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Rounding can leave a window of one level a hair below zero.
        return np.maximum((entropy * used).sum(axis=(1, 2)) / used.sum(axis=(1, 2)), 0.0)
