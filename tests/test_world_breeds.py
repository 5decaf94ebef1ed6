"""The breeds world: seeded, faithful to its factors and part map, and with breeds that
overlap factor by factor yet are learnable, as its manifest says."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import world
from pipeline.measures.image import measure_sweeps
from pipeline.world import breeds, class_manifest


@pytest.fixture(scope="module")
def drawn():
    """Many factor rows per breed: enough for means and histograms, no rendering."""
    return breeds.sample_factors(30_000, seed=5)


def test_sample_types_ranges_and_seeding():
    images, labels, factors = world.sample(48, seed=3, world="breeds")
    assert images.shape == (48, 3, 64, 64) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(len(world.BREEDS)))
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert list(factors.columns) == list(breeds.FACTORS)
    again = world.sample(48, seed=3, world="breeds")
    other = world.sample(48, seed=4, world="breeds")
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1])
    pd.testing.assert_frame_equal(factors, again[2])
    assert not torch.equal(images, other[0])
    # The chunked renderer draws a row the same whatever batch it comes in.
    assert torch.allclose(world.render(labels[5:7], factors.iloc[5:7], world="breeds"), images[5:7], atol=1e-6)


def test_every_drawn_factor_lies_in_its_documented_range(drawn):
    _, factors = drawn
    for name, (low, high) in world.factor_ranges("breeds").items():
        assert factors[name].between(low, high).all(), name


def test_shapes_world_stays_the_default():
    images, labels, factors = world.sample(8, seed=1)
    shapes_images, shapes_labels, shapes_factors = world.sample(8, seed=1, world="shapes")
    assert list(factors.columns) == list(world.FACTORS)
    assert torch.equal(images, shapes_images) and torch.equal(labels, shapes_labels)
    assert torch.equal(world.render(labels, factors), images)
    assert world.class_names() == world.SHAPES and world.class_names("breeds") == world.BREEDS


def test_overrides_and_bad_arguments():
    _, labels, factors = world.sample(40, seed=0, classes=[1, 4], world="breeds", ear_length=0.3, x=(0.5, 0.52))
    assert set(labels.tolist()) <= {1, 4}
    assert np.allclose(factors["ear_length"], 0.3) and factors["x"].between(0.5, 0.52).all()
    with pytest.raises(ValueError, match="unknown breeds-world factor 'hue'"):
        world.sample(2, seed=0, world="breeds", hue=0.5)
    with pytest.raises(ValueError, match="breed ids"):
        world.sample(2, seed=0, world="breeds", classes=[6])
    with pytest.raises(ValueError, match="unknown world 'dogs'"):
        world.sample(2, seed=0, world="dogs")
    with pytest.raises(ValueError, match="2 labels for 3 factor rows"):
        world.render([0, 1], factors.iloc[:3], world="breeds")
    with pytest.raises(ValueError, match="lack column 'scale'"):
        world.part_map(np.zeros(len(factors)), factors.drop(columns="scale"), world="breeds")
    assert world.part_names("shapes") == ("object",)


def test_part_map_is_the_figure_where_it_covers_more_than_half_a_pixel():
    _, factors = breeds.sample_factors(64, seed=8)
    dark, light = factors.assign(bg_luminance=0.05), factors.assign(bg_luminance=0.35)
    # Only the background differs, so the change of a pixel is (1 - coverage) times the background's change.
    background_change = 0.30
    coverage = 1.0 - (world.render(np.zeros(64), light, world="breeds")
                      - world.render(np.zeros(64), dark, world="breeds")).amax(1) / background_change
    labels = world.part_map(np.zeros(len(factors)), factors, world="breeds")
    assert labels.shape == (64, 64, 64) and labels.dtype == torch.int64
    decided = (coverage - 0.5).abs() > 1e-3
    assert torch.equal((labels > 0)[decided], (coverage > 0.5)[decided])
    assert set(labels.unique().tolist()) == set(range(len(world.part_names("breeds")) + 1))


def test_part_map_labels_each_part_where_its_colour_shows():
    _, factors = breeds.sample_factors(32, seed=9)
    factors = factors.assign(coat_saturation=0.0, coat_value=0.8, spots=0.0, points=0.5)
    images = world.render(np.zeros(32), factors, world="breeds")
    labels = world.part_map(np.zeros(32), factors, world="breeds")
    grey = images.mean(1)
    eye, snout, head = (labels == k + 1 for k in (6, 4, 3))
    assert grey[eye].median() < 0.1
    assert grey[snout].median() == pytest.approx(0.4, abs=0.02)
    assert grey[head].median() == pytest.approx(0.8, abs=0.02)


def test_every_part_is_large_enough_to_measure():
    _, _, factors = world.sample(600, seed=2, world="breeds")
    labels = world.part_map(np.zeros(len(factors)), factors, world="breeds")
    for k, name in enumerate(world.part_names("breeds"), start=1):
        areas = (labels == k).sum((1, 2)).float()
        assert areas.median() >= 25, name
        assert (areas >= 10).all(), name
    touching = torch.cat([labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]], 1).gt(0).any(1)
    assert touching.float().mean() < 0.02


def _overlap(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """Overlap coefficient of two samples' histograms: 1 for equal distributions, 0 for disjoint."""
    pa, pb = np.histogram(a, bins)[0] / a.size, np.histogram(b, bins)[0] / b.size
    return float(np.minimum(pa, pb).sum())


def test_no_factor_separates_every_pair_of_breeds(drawn):
    labels, factors = drawn
    for name in breeds.FACTORS:
        bins = np.linspace(*world.factor_ranges("breeds")[name], 41)
        best = max(
            _overlap(factors[name][labels == a].to_numpy(), factors[name][labels == b].to_numpy(), bins)
            for a, b in combinations(range(len(world.BREEDS)), 2)
        )
        assert best > 0.85, name


def test_breeds_are_learnable_from_their_factors(drawn):
    labels, factors = drawn
    x = torch.tensor(factors.to_numpy(), dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.from_numpy(labels)
    train, test = slice(0, 20_000), slice(20_000, None)
    weights = torch.zeros(x.shape[1] + 1, len(world.BREEDS), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)

    def loss():
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(design[train] @ weights, y[train]) + 1e-4 * weights.square().sum()
        value.backward()
        return value

    optimiser.step(loss)
    accuracy = ((design[test] @ weights).argmax(1) == y[test]).double().mean().item()
    assert accuracy > 0.97


def test_manifest_matches_the_sampled_factors(drawn):
    labels, factors = drawn
    manifest = class_manifest("breeds")
    assert manifest.classes == world.BREEDS
    assert set(manifest.factor_means) == set(breeds.FACTORS)
    assert len(world.BREEDS) >= 5 and len(world.part_names("breeds")) >= 5
    means = factors.groupby(labels).mean()
    spread = factors.groupby(labels).std().mean()
    for a, b in combinations(range(len(world.BREEDS)), 2):
        defining = manifest.defining[(a, b)]
        assert len(defining) >= 5
        for name in breeds.FACTORS:
            difference = means.loc[b, name] - means.loc[a, name]
            if name in defining:
                expected = np.sign(manifest.factor_means[name][b] - manifest.factor_means[name][a])
                assert np.sign(difference) == expected and abs(difference) > spread[name], (a, b, name)
            else:
                assert abs(difference) < 0.1 * spread[name], (a, b, name)


def test_manifest_measures_move_with_their_factors():
    """Each factor set from its low to its high breed level, all else equal, moves every
    measure the manifest lists for it by the listed sign."""
    manifest = class_manifest("breeds")
    _, base = breeds.sample_factors(48, seed=13)
    for name, measures in manifest.factor_measures.items():
        levels = breeds.LEVELS[name][0]
        images, parts = [], []
        for value in (levels[0], levels[-1]):
            factors = base.assign(**{name: value})
            images.append((world.render(np.zeros(48), factors, world="breeds") * 255).round().byte())
            parts.append(world.part_map(np.zeros(len(factors)), factors, world="breeds"))
        images = torch.stack(images, 1).permute(0, 1, 3, 4, 2).numpy()  # [N, 2, H, W, 3]
        parts = torch.stack(parts, 1).numpy()
        part_masks = {part: parts == k for k, part in enumerate(world.part_names("breeds"), start=1)}
        table = measure_sweeps(images, parts > 0, part_masks, threads=1)
        for measure, sign in measures.items():
            values = table[measure].to_numpy().reshape(48, 2)
            change = np.nanmean(values[:, 1] - values[:, 0])
            assert np.sign(change) == sign, (name, measure, change)
