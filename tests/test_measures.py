"""Image measures on shapes-world renders with known factors, and object masks without labels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.measures import (
    CIRCULAR_QUANTITIES,
    measure_changes,
    measure_names,
    measure_sweeps,
    object_masks,
    selected_measures,
)
from pipeline.measures import tested_measures as measures_worth_testing
from pipeline.world import render, sample, sample_factors
from tests.tiny_models import tiny_classifier

SIZE = 64


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def coverage(labels: np.ndarray, factors: pd.DataFrame) -> np.ndarray:
    """The true object mask: the same scene with a white plain object on black."""
    plain = factors.assign(value=1.0, saturation=0.0, texture=0.0, bg_luminance=0.0)
    return render(labels, plain, SIZE)[:, 0].numpy() > 0.5


def sweep(
    n: int, seed: int, moving: dict[str, tuple[float, float]], **fixed: float
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``n`` world sweeps of 3 steps in which only the ``moving`` factors change, linearly."""
    labels, factors = sample_factors(n, seed, **fixed)
    images, masks = [], []
    for t in (0.0, 0.5, 1.0):
        stepped = factors.copy()
        for name, (start, stop) in moving.items():
            stepped[name] = (start + t * (stop - start)) % 1.0 if name == "hue" else start + t * (stop - start)
        images.append(to_uint8(render(labels, stepped, SIZE)))
        masks.append(coverage(labels, stepped))
    return np.stack(images, axis=1), np.stack(masks, axis=1), factors


def changes_of(images: np.ndarray, masks: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    n, steps = images.shape[:2]
    table = measure_sweeps(images, masks)
    table.insert(0, "sample", np.repeat(np.arange(n), steps))
    table.insert(1, "step", np.tile(np.arange(steps), n))
    table.insert(0, "unit", 0)
    return table, measure_changes(table, measure_names())


def test_moving_the_object_right_changes_its_x_and_the_motion_and_nothing_else():
    images, masks, _ = sweep(24, 0, {"x": (0.35, 0.6)}, y=0.5, size=0.2)
    table, changes = changes_of(images, masks)
    assert list(table.columns[3:]) == measure_names()
    assert changes["object.x"].to_numpy() == pytest.approx(0.25, abs=0.02)
    assert changes["object.y"].abs().max() < 0.01
    assert changes["object.area"].abs().max() < 0.005
    assert changes["object.hue"].abs().max() < 0.01
    assert changes["background.luminance"].abs().max() < 0.01
    assert (table.loc[table["step"] == 0, ["image.motion", "image.motion_x"]] == 0).all().all()
    assert table.loc[table["step"] == 0, "image.motion_direction"].isna().all()
    assert (changes["image.motion"] > 0.005).all()
    # Flow is accumulated over steps of an eighth of the image, which dense flow follows for
    # almost every shape; rightwards is direction 0.
    assert (changes["image.motion_x"] > 0.005).mean() >= 0.9
    assert changes["image.motion_y"].abs().median() < 0.2 * changes["image.motion_x"].median()
    assert (np.abs(changes["image.motion_direction"]) < 0.5).mean() >= 0.9
    middle, last = (table.loc[table["step"] == s, "image.motion"].to_numpy() for s in (1, 2))
    assert (last > middle).all()


def test_a_hue_shift_across_red_is_a_small_positive_circular_change():
    images, masks, _ = sweep(16, 1, {"hue": (0.95, 1.05)}, texture=0.0)
    table, changes = changes_of(images, masks)
    assert CIRCULAR_QUANTITIES["hue"] == 1.0
    first = table.loc[table["step"] == 0, "object.hue"].to_numpy()
    assert np.all((first > 0.9) & (first < 1.0))
    assert changes["object.hue"].to_numpy() == pytest.approx(0.1, abs=0.02)
    assert changes["object.redness"].abs().max() < 0.1
    assert changes["object.x"].abs().max() < 0.005


def test_size_background_and_texture_move_their_own_measures():
    images, masks, _ = sweep(16, 2, {"size": (0.18, 0.28)}, texture=0.0)
    _, changes = changes_of(images, masks)
    assert (changes["object.area"] > 0.03).all()
    assert changes["background.luminance"].abs().max() < 0.01

    images, masks, _ = sweep(16, 3, {"bg_luminance": (0.1, 0.4)})
    _, changes = changes_of(images, masks)
    assert changes["background.luminance"].to_numpy() == pytest.approx(0.3 * _background_luma_per_value(), rel=0.2)
    assert changes["object.luminance"].abs().max() < 0.02
    assert changes["object.area"].abs().max() < 0.005

    images, masks, _ = sweep(16, 4, {"texture": (0.0, 1.0)}, size=0.28)
    table, changes = changes_of(images, masks)
    assert (changes["object.entropy"] > 0.3).all()
    # A plain object's only texture is its anti-aliased rim.
    assert table.loc[table["step"] == 0, "object.entropy"].median() < 0.3
    assert changes["background.entropy"].abs().max() < 0.05


def _background_luma_per_value() -> float:
    """Luma change per unit of background value, for the world's background saturation (mean over hue)."""
    hues = np.linspace(0, 1, 64, endpoint=False)
    factors = pd.DataFrame(
        {name: 0.5 for name in ("saturation", "value", "size", "x", "y", "rotation", "texture")}
        | {"hue": 0.0, "bg_hue": hues, "bg_luminance": 1.0},
        index=range(64),
    )
    corner = render(np.zeros(64, dtype=np.int64), factors, 8)[:, :, 0, 0].numpy()
    return float((corner @ np.array([0.2126, 0.7152, 0.0722])).mean())


def test_ellipse_moments_of_bars():
    images = np.zeros((1, 3, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((1, 3, 32, 32), dtype=bool)
    masks[0, 0, 14:18, 4:28] = True  # horizontal bar
    masks[0, 1, 4:28, 14:18] = True  # vertical bar
    masks[0, 2, 10:16, 10:16] = True  # square
    images[masks] = 200
    table = measure_sweeps(images, masks)
    eccentricity = table["object.eccentricity"].to_numpy()
    orientation = table["object.orientation"].to_numpy()
    assert eccentricity[0] == pytest.approx(math.sqrt(1 - (4**2 - 1) / (24**2 - 1)), abs=1e-3)
    assert eccentricity[2] == pytest.approx(0.0, abs=1e-3)
    assert orientation[0] == pytest.approx(0.0, abs=1e-6)
    assert abs(orientation[1]) == pytest.approx(math.pi / 2, abs=1e-6)
    assert table["object.x"].iloc[0] == pytest.approx(0.5) and table["object.y"].iloc[0] == pytest.approx(0.5)
    changes = measure_changes(table.assign(unit=0, sample=0, step=[0, 1, 2]).iloc[:2], ["object.orientation"])
    assert abs(changes["object.orientation"].iloc[0]) == pytest.approx(math.pi / 2, abs=1e-6)


def test_tiny_regions_give_nan_except_area_and_bad_shapes_fail_loudly():
    images = np.full((2, 1, 16, 16, 3), 100, dtype=np.uint8)
    masks = np.zeros((2, 1, 16, 16), dtype=bool)
    masks[0, 0, :4, :4] = True  # 16 pixels: too small
    masks[1, 0, :5, :5] = True
    table = measure_sweeps(images, masks)
    assert table["object.area"].tolist() == pytest.approx([16 / 256, 25 / 256])
    assert table.loc[0, ["object.x", "object.hue", "object.luminance", "object.entropy"]].isna().all()
    assert table.loc[1, ["object.x", "object.luminance", "object.entropy"]].notna().all()
    assert np.isnan(table.loc[1, "object.hue"])  # grey has no hue
    with pytest.raises(ValueError, match="object_masks"):
        measure_sweeps(images, masks[:, :, :8])
    with pytest.raises(ValueError, match="images"):
        measure_sweeps(images.astype(np.float32), masks)


def test_tested_measures_leave_out_duplicates_and_directions():
    names = measure_names(["ear"])
    tested = measures_worth_testing(names)
    assert "object.x" in tested and "part:ear.x" in tested and "image.motion" in tested
    assert "image.luminance" not in tested and "image.motion_direction" not in tested
    assert not any(name.startswith("background.") and name.endswith((".x", ".area")) for name in names)

    # concepts.measures picks among them: "all" is the tested ones, a list is taken as it is.
    assert selected_measures(["unit", *names], "all") == tested
    assert selected_measures(names, ["image.luminance", "object.x"]) == ["image.luminance", "object.x"]
    with pytest.raises(ValueError, match="config key 'concepts.measures': unknown measure 'object.size'"):
        selected_measures(names, ["object.x", "object.size"])


class SaturationNet(nn.Module):
    """A glass-box classifier whose spatial map is the pixel saturation at 1/4 resolution."""

    num_units = 1
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.head.bias.zero_()

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        saturation = (x.amax(dim=1) - x.amin(dim=1)) / x.amax(dim=1).clamp_min(1e-6)
        return nn.functional.avg_pool2d(saturation[:, None], 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(x).mean(dim=(2, 3))


class GradientOnly:
    """Evidence from saturation above the world's background level, without spatial maps,
    so masks come from input gradients."""

    num_units = 1
    num_classes = 2

    def __init__(self):
        self.head = SaturationNet().head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        saturation = (x.amax(dim=1) - x.amin(dim=1)) / x.amax(dim=1).clamp_min(1e-6)
        return torch.relu(saturation - 0.45).square().mean(dim=(1, 2))[:, None]


def iou(masks: torch.Tensor, truth: np.ndarray) -> np.ndarray:
    masks = masks.numpy()
    return (masks & truth).sum(axis=(1, 2)) / (masks | truth).sum(axis=(1, 2))


@pytest.mark.parametrize(
    ("classifier", "method"),
    [
        (SaturationNet(), "cam"),
        (SaturationNet(), "auto"),
        (GradientOnly(), "auto"),
        (tiny_classifier(16, SIZE), "auto"),
    ],
    ids=["cam", "contrast", "gradient", "random-cnn-contrast"],
)
def test_object_masks_find_the_object_without_labels(classifier, method):
    images, labels, factors = sample(48, seed=5, image_size=SIZE)
    masks = object_masks(classifier, images, torch.zeros_like(labels), method=method)
    assert masks.dtype == torch.bool and masks.shape == (48, SIZE, SIZE)
    overlap = iou(masks, coverage(labels.numpy(), factors))
    assert np.median(overlap) > 0.85
    assert np.mean(overlap > 0.5) > 0.85


def test_object_masks_refuse_a_cam_without_a_linear_head():
    with pytest.raises(ValueError, match="cam"):
        object_masks(GradientOnly(), torch.rand(2, 3, 16, 16), torch.zeros(2, dtype=torch.long), method="cam")
