"""The shapes world: seeded, vectorised, and faithful to the factors it reports."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import world
from pipeline.world import ClassManifest, class_manifest


def test_sample_shapes_types_and_ranges():
    images, labels, factors = world.sample(64, seed=3)
    assert images.shape == (64, 3, world.IMAGE_SIZE, world.IMAGE_SIZE)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert list(factors.columns) == list(world.FACTORS)
    for name, (low, high) in world.FACTOR_RANGES.items():
        assert factors[name].between(low, high).all(), name
    assert len(world.SHAPES) >= 8
    assert set(labels.tolist()) <= set(range(len(world.SHAPES)))


def test_same_seed_same_output_and_different_seed_differs():
    a = world.sample(32, seed=11)
    b = world.sample(32, seed=11)
    c = world.sample(32, seed=12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[2], b[2])
    assert not torch.equal(a[0], c[0])


def test_factor_overrides_and_class_subset():
    _, labels, factors = world.sample(50, seed=0, classes=[2, 5], size=0.2, x=(0.4, 0.5))
    assert set(labels.tolist()) <= {2, 5}
    assert np.allclose(factors["size"], 0.2)
    assert factors["x"].between(0.4, 0.5).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"colour": 0.5}, "unknown world factor 'colour'"), ({"classes": [8]}, "classes must be ids"),
     ({"size": (0.3, 0.1)}, "high < low")],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        world.sample(4, seed=0, **kwargs)


def _one(shape: str, **factors):
    base = {name: (low + high) / 2 for name, (low, high) in world.FACTOR_RANGES.items()}
    base["texture"] = 0.0
    base.update(factors)
    return world.render([world.SHAPES.index(shape)], pd.DataFrame([base]))[0]


def _object_mask(image: torch.Tensor) -> torch.Tensor:
    background = image[:, 0, 0].view(3, 1, 1)
    return (image - background).abs().sum(0) > 0.1


def test_rendered_object_follows_its_factors():
    small, large = _object_mask(_one("square", size=0.16)), _object_mask(_one("square", size=0.3))
    assert large.sum() > 3 * small.sum()

    left, right = _object_mask(_one("circle", x=0.35)), _object_mask(_one("circle", x=0.65))
    columns = torch.arange(world.IMAGE_SIZE, dtype=torch.float32)
    centre = lambda mask: (mask.float().sum(0) * columns).sum() / mask.sum()  # noqa: E731
    assert centre(right) - centre(left) == pytest.approx(0.3 * world.IMAGE_SIZE, abs=1.0)

    red = _one("circle", hue=0.0, saturation=1.0, value=1.0)
    centre_pixel = red[:, 32, 32]
    assert centre_pixel[0] > 0.95 and centre_pixel[1] < 0.05 and centre_pixel[2] < 0.05

    dark, bright = _one("circle", bg_luminance=0.1), _one("circle", bg_luminance=0.4)
    assert bright[:, 0, 0].max() == pytest.approx(0.4, abs=1e-3)
    assert dark[:, 0, 0].max() == pytest.approx(0.1, abs=1e-3)


def test_texture_adds_stripes_inside_the_object():
    plain, striped = _one("square", texture=0.0), _one("square", texture=1.0)
    inside = _object_mask(plain)
    assert plain[:, inside].std(dim=1).max() < 1e-3
    assert striped[:, inside].std(dim=1).max() > 0.05


def test_shapes_are_distinct():
    masks = torch.stack([_object_mask(_one(shape)) for shape in world.SHAPES]).float()
    overlap = torch.einsum("ahw,bhw->ab", masks, masks)
    iou = overlap / (masks.sum((1, 2))[:, None] + masks.sum((1, 2))[None, :] - overlap)
    off_diagonal = iou[~torch.eye(len(world.SHAPES), dtype=torch.bool)]
    assert off_diagonal.max() < 0.9


def test_class_manifest_gives_each_pair_its_separating_factors_and_measure_signs():
    manifest = ClassManifest(
        classes=("a", "b", "c"),
        factor_means={"ear_length": (1.0, 2.0, 1.0), "coat_hue": (0.1, 0.1, 0.5)},
        defining={(0, 1): ("ear_length",), (0, 2): ("coat_hue",), (1, 2): ("ear_length", "coat_hue")},
        factor_measures={"ear_length": {"part:ear.area": 1}, "coat_hue": {"part:body.redness": -1, "part:ear.area": 1}},
    )
    assert manifest.differing_factors(1, 0) == {"ear_length": -1}
    assert manifest.expected_measure_moves(0, 2) == {"part:body.redness": -1, "part:ear.area": 1}
    # ear area reads both separating factors of (1, 2), pulled in opposite directions: no expected sign.
    assert manifest.expected_measure_moves(1, 2) == {"part:body.redness": -1}
    assert class_manifest("shapes") is None
    with pytest.raises(ValueError, match="pair"):
        ClassManifest(classes=("a",), factor_means={}, defining={(0, 1): ()}, factor_measures={})
