"""The glass-box classifier: planted units follow their functions, null units follow nothing."""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.models import load_classifier
from pipeline.stages.config import ConfigError
from pipeline.stats import within_class_association
from pipeline.validation import (
    FUNCTION_SETS,
    PLANTED_FUNCTIONS,
    PLANTED_TRUTH,
    STATISTIC_MEASURES,
    PlantedClassifier,
    check_planted_world,
    function_set_components,
    glass_box_readings,
    image_statistics,
    planted_agreement,
    planted_classifier,
    reference_statistics,
    reference_world,
    score_validation,
    standardised_statistics,
    tuning_truths,
    unique_truths,
)
from pipeline.world import render, sample, sample_factors

SIZE = 48
BASE_UNITS = 8
BASE_SPEC = {
    "kind": "python",
    "entrypoint": "tests.tiny_models:tiny_classifier",
    "kwargs": {"num_units": BASE_UNITS, "image_size": SIZE},
}
N_NULL = 6


GAINS = (1.0, 2.0, -1.5)


@pytest.fixture(scope="module")
def classifier():
    return planted_classifier(BASE_SPEC, n_null=N_NULL, seed=3, gains=GAINS, offsets=(0.5, -1.0, 2.0))


def circles(n: int, seed: int, **factors) -> torch.Tensor:
    """Circles whose given factors are set (one value, or one per image), the others random."""
    _, frame = sample_factors(n, seed)
    for name, value in factors.items():
        frame[name] = value
    return render(np.zeros(n, dtype=np.int64), frame, SIZE)


def unit_columns(classifier, function: str) -> list[int]:
    return [unit for unit, name in enumerate(classifier.unit_names) if name.startswith(f"planted:{function}:")]


def test_the_classifier_adds_planted_and_null_units_and_keeps_the_base_head(classifier):
    base = load_classifier(BASE_SPEC)
    assert classifier.num_units == BASE_UNITS + len(GAINS) * len(PLANTED_TRUTH) + N_NULL
    assert classifier.num_classes == base.num_classes
    images = circles(12, 0)
    with torch.no_grad():
        r = classifier.features(images)
        assert r.shape == (12, classifier.num_units)
        assert torch.allclose(r[:, :BASE_UNITS], base.features(images), atol=1e-5)
        assert torch.allclose(classifier.head(r), base.head(base.features(images)), atol=1e-5)
        assert torch.equal(classifier.spatial_features(images), base.spatial_features(images))
    truth = classifier.unit_truth
    assert sorted(truth) == list(range(BASE_UNITS, classifier.num_units))
    assert sum(measure is None for measure in truth.values()) == N_NULL
    for function, measure in PLANTED_TRUTH.items():
        assert all(truth[unit] == measure for unit in unit_columns(classifier, function))


@pytest.mark.parametrize(
    ("function", "factor", "values"),
    [
        ("object_x", "x", np.linspace(0.3, 0.7, 40)),
        ("object_y", "y", np.linspace(0.3, 0.7, 40)),
        ("object_luminance", "value", np.linspace(0.6, 1.0, 40)),
        ("object_area", "size", np.linspace(0.16, 0.3, 40)),
        ("background_luminance", "bg_luminance", np.linspace(0.05, 0.45, 40)),
        # From cyan (hue 0.5) to red through blue and magenta: redness rises throughout.
        ("object_redness", "hue", np.linspace(0.5, 1.0, 40) % 1.0),
    ],
)
def test_planted_units_follow_their_function_with_their_gain(classifier, function, factor, values):
    fixed = {"hue": 0.3, "saturation": 0.9, "value": 0.9, "texture": 0.0, "size": 0.22, "x": 0.5, "y": 0.5}
    fixed[factor] = values
    images = circles(len(values), 1, **fixed)
    with torch.no_grad():
        activations = classifier.features(images)[:, unit_columns(classifier, function)].numpy()
    for column, gain in zip(activations.T, GAINS, strict=True):
        correlation = np.corrcoef(column, values if factor != "hue" else np.arange(len(values)))[0, 1]
        assert np.sign(correlation) == np.sign(gain)
        assert abs(correlation) > 0.97
    # Copies differ by gain and offset only.
    ratio = np.polyfit(activations[:, 0], activations[:, 1], 1)[0]
    assert ratio == pytest.approx(2.0, rel=1e-3)


def test_glass_box_statistics_match_the_rendered_truth():
    labels, frame = sample_factors(200, 4)
    images = render(labels, frame, SIZE)
    plain = render(labels, frame.assign(value=1.0, saturation=0.0, texture=0.0, bg_luminance=0.0), SIZE)[:, 0]
    statistics = image_statistics(images)
    xs = (torch.arange(SIZE) + 0.5) / SIZE
    true_x = (plain * xs).sum(dim=(1, 2)) / plain.sum(dim=(1, 2))
    assert np.corrcoef(statistics["object_area"], plain.mean(dim=(1, 2)))[0, 1] > 0.98
    assert np.corrcoef(statistics["object_x"], true_x)[0, 1] > 0.99
    assert np.corrcoef(statistics["background_luminance"], frame["bg_luminance"])[0, 1] > 0.95


def test_glass_box_hue_is_the_hsv_hue_of_primaries_and_secondaries_counted_from_red():
    colours = [(1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0), (0.0, 0.0, 1.0), (1.0, 0.0, 1.0)]
    images = torch.full((len(colours), 3, 16, 16), 0.5)
    for k, colour in enumerate(colours):
        images[k, :, 4:12, 4:12] = torch.tensor(colour)[:, None, None]
    hue = image_statistics(images)["object_hue"].numpy()
    hsv = np.array([colorsys.rgb_to_hsv(*colour)[0] for colour in colours])
    assert np.allclose(np.mod(hue, 1.0), hsv, atol=1e-6)
    assert np.all((hue > -0.5) & (hue <= 0.5))  # cut at cyan, so red-brown coats do not wrap


def test_null_units_are_reproducible_noise_unrelated_to_the_image(classifier):
    labels, frame = sample_factors(400, 5)
    images = render(labels, frame, SIZE)
    with torch.no_grad():
        noise = classifier.null_activations(images).numpy()
        again = torch.cat([classifier.null_activations(images[k : k + 30]) for k in range(0, 400, 30)]).numpy()
    assert np.array_equal(noise, again)  # the same render always gives the same value
    assert np.abs(noise.mean(axis=0)).max() < 0.2 and np.abs(noise.std(axis=0) - 1).max() < 0.15
    correlations = [abs(np.corrcoef(noise[:, k], frame[name])[0, 1]) for k in range(N_NULL) for name in frame]
    assert max(correlations) < 0.2
    other = PlantedClassifier(classifier.base, PLANTED_FUNCTIONS, N_NULL, 4, (1.0,), (0.0,))
    with torch.no_grad():
        assert not np.allclose(other.null_activations(images[:5]).numpy(), noise[:5])


def test_held_back_functions_are_separate_and_follow_their_truth():
    names = [set(functions) for functions in FUNCTION_SETS.values()]
    assert sum(len(n) for n in names) == len(set().union(*names))  # no function is in two sets
    held = planted_classifier(BASE_SPEC, n_null=0, seed=0, functions="held-back-1")
    assert set(held.unit_truth.values()) == {truth for truth, _ in FUNCTION_SETS["held-back-1"].values()}
    y = np.linspace(0.3, 0.7, 30)
    images = circles(30, 6, y=y, size=0.2, texture=0.0)
    column = held.unit_names.index("planted:object_y_tanh:0")
    with torch.no_grad():
        activation = held.features(images)[:, column].numpy()
    assert np.all(np.diff(activation) > 0)  # monotone in y
    assert abs(np.diff(activation)[:5].mean()) < abs(np.diff(activation)[12:17].mean())  # and saturating
    with pytest.raises(ValueError, match="object_y_tanh"):
        planted_classifier(BASE_SPEC, planted=["object_y_tanh"])
    with pytest.raises(ValueError, match="held-back-9"):
        planted_classifier(BASE_SPEC, functions="held-back-9")

    second = planted_classifier(BASE_SPEC, planted=["object_x_power"], n_null=0, functions="held-back-2")
    images = circles(30, 7, x=np.linspace(0.3, 0.7, 30), size=0.2, texture=0.0)
    with torch.no_grad():
        activation = second.features(images)[:, BASE_UNITS].numpy()
    steps = np.diff(activation)
    assert np.all(steps > 0)  # monotone in x
    assert steps[:5].mean() > steps[12:17].mean() < steps[-5:].mean()  # and steepest away from the middle
    spec = {"kind": "python", "entrypoint": "pipeline.validation:planted_classifier",
            "kwargs": {"base_spec": BASE_SPEC, "planted": ["object_x"], "n_null": 2}}  # fmt: skip
    loaded = load_classifier(spec)
    assert loaded.num_units == BASE_UNITS + 1 + 2


def test_score_validation_scores_each_label_and_the_null_units_per_test():
    truth = {10: "object.x", 11: "object.x", 12: "object.area", 13: "background.luminance", 20: None, 21: None}
    summary = pd.DataFrame(
        {
            "unit": [0, 10, 11, 12, 13, 20, 21],
            "unique_measure": ["object.hue", "object.x", "object.y", None, "background.luminance", None, "object.x"],
            "unique_gate": ["labelled", "labelled", "labelled", "controllability", "labelled", "q", "labelled"],
            "tuning_measure": [None, "object.x", "object.x", "object.area", "object.y", None, None],
            "tuning_gate": ["q", "labelled", "labelled", "labelled", "labelled", "q", "q"],
        }
    )
    null_tests = {
        "unit": np.repeat([20, 21], 5),
        "measure": ["object.x", "object.y", "object.area", "object.hue", "image.motion"] * 2,
    }
    concepts = pd.DataFrame({**null_tests, "selective": [False] * 9 + [True]})
    tuning = pd.DataFrame({**null_tests, "selective": [False] * 10})
    score = score_validation(summary, concepts, truth, tuning)
    assert score["unique_recall"] == pytest.approx(2 / 4)
    assert score["unique_precision"] == pytest.approx(2 / 3)
    assert score["unique_null_false_positive_rate"] == pytest.approx(1 / 10)
    assert score["unique_n_null_selective"] == 1 and score["unique_n_labelled"] == 3
    assert score["tuning_recall"] == pytest.approx(3 / 4) and score["tuning_precision"] == pytest.approx(3 / 4)
    assert score["tuning_null_false_positive_rate"] == 0.0
    unit_12 = next(row for row in score["units"] if row["unit"] == 12)
    assert unit_12["unique_gate"] == "controllability" and unit_12["tuning_correct"]
    with pytest.raises(KeyError, match="14"):
        score_validation(summary, concepts, {**truth, 14: "object.y"})
    # A unit whose unique truth the rest of the layer leaves undefined is scored by neither
    # figure, whatever it was labelled, and counted.
    undefined = score_validation(summary, concepts, truth, tuning, unique_truth={10: None, 13: "background.luminance"})
    assert undefined["unique_n_without_truth"] == 1 and undefined["tuning_n_without_truth"] == 0
    assert undefined["unique_recall"] == pytest.approx(1 / 3) and undefined["unique_precision"] == pytest.approx(1 / 2)
    assert next(row for row in undefined["units"] if row["unit"] == 10)["unique_correct"] is None


def test_a_drawn_set_is_the_same_for_its_seed_and_mixes_nonlinear_functions_and_mixtures():
    functions, components = function_set_components("drawn:7")
    again, _ = function_set_components("drawn:7")
    other, _ = function_set_components("drawn:8")
    assert list(functions) == list(again) and list(functions) != list(other)
    assert len(functions) == 6 and len({truth for truth, _ in functions.values()}) == 6
    weights = sorted(sorted(c.values()) for c in components.values())
    assert weights == [[0.3, 0.7]] * 3 + [[1.0]] * 3
    for name, (truth, _) in functions.items():
        assert max(components[name], key=components[name].get) == truth
    with pytest.raises(ValueError, match="drawn:<seed>"):
        function_set_components("drawn:x")


def test_a_small_layer_holds_the_planted_and_null_units_alone():
    small = planted_classifier(BASE_SPEC, n_null=2, functions="drawn:7", keep_base=False)
    images = circles(5, 1)
    with torch.no_grad():
        features = small.features(images)
    assert small.num_units == 6 + 2 and features.shape == (5, 8) and small.head is None
    assert small.unit_names[0].startswith("planted:") and set(small.components) == set(small.functions)


def test_the_unique_truth_is_the_component_that_what_the_unit_adds_reads():
    small = planted_classifier(
        BASE_SPEC, planted=["object_area_mix", "object_y_tanh"], n_null=0, functions="held-back-1"
    )
    rng = np.random.default_rng(0)
    n = 600
    area, redness, y = rng.standard_normal((3, n))
    statistics = pd.DataFrame({"object.area": area, "object.redness": redness, "object.y": y})
    classes = np.arange(n) % 3
    layer = rng.standard_normal((n, small.num_units))
    mixture, linear = BASE_UNITS, BASE_UNITS + 1
    layer[:, mixture] = 0.7 * area + 0.3 * redness
    layer[:, linear] = y
    layer[:, 0] = area + 0.05 * rng.standard_normal(n)  # a base unit already carries area

    def truths() -> dict:
        return unique_truths(small, layer, statistics, classes, folds=4, seed=0)

    found = truths()
    assert found[mixture]["measure"] == "object.redness"
    assert abs(found[mixture]["association"]["object.redness"]) > 3 * abs(found[mixture]["association"]["object.area"])
    assert found[linear]["measure"] == "object.y" and found[linear]["residual_share"] > 0.9
    # Nobody else carries area: the dominant component is the truth.
    layer[:, 0] = rng.standard_normal(n)
    assert truths()[mixture]["measure"] == "object.area"
    # A base unit carries y mixed with redness: what the y unit adds beyond it reads redness
    # (negatively) more than y, a statistic outside its function, so it has no unique truth.
    layer[:, 1] = y + 0.5 * redness
    found = truths()
    assert found[linear]["measure"] is None
    assert abs(found[linear]["association"]["object.redness"]) > abs(found[linear]["association"]["object.y"])
    # Nor has a unit whose residual reads none of the statistics.
    layer[:, 1] = rng.standard_normal(n)
    layer[:, linear] = rng.standard_normal(n)
    assert truths()[linear]["measure"] is None


def test_the_planted_statistics_are_standardised_on_the_world_they_are_given():
    # A user's base classifier names no world: the shapes world, unless one is named.
    shapes = planted_classifier(BASE_SPEC, n_null=0, functions="planted")
    breeds = planted_classifier(BASE_SPEC, n_null=0, functions="planted", world="breeds")
    assert shapes.world == "shapes" and breeds.world == "breeds"
    assert breeds.reference_std == reference_statistics("breeds")[1]
    # The worlds differ enough that the shapes world's spread would mis-scale the breeds world's.
    assert reference_statistics("breeds")[1]["object_x"] < 0.5 * reference_statistics("shapes")[1]["object_x"]
    images, _, _ = sample(256, seed=99, world="breeds")
    statistics = image_statistics(images)
    for name, values in statistics.items():
        z = (values - breeds.reference_mean[name]) / breeds.reference_std[name]
        assert abs(float(z.mean())) < 0.25 and 0.75 < float(z.std()) < 1.3, name
    # A builtin base or generator names its world; the generator's decides the run's.
    assert reference_world({"kind": "builtin", "name": "breeds-generator"}, BASE_SPEC) == "breeds"
    assert (
        reference_world({"kind": "python", "entrypoint": "x:y"}, {"kind": "builtin", "name": "shapes-classifier"})
        == "shapes"
    )
    assert reference_world({"kind": "python", "entrypoint": "x:y"}, BASE_SPEC) == "shapes"


def test_the_tuning_truth_of_a_mixture_is_the_component_it_is_most_associated_with_within_classes():
    held = planted_classifier(BASE_SPEC, n_null=0, seed=0, functions="held-back-1")
    rng = np.random.default_rng(5)
    n = 400
    classes = np.repeat(np.arange(4), n // 4)
    statistics = pd.DataFrame(
        {
            # Object luminance mostly tells the classes apart; background luminance varies within each.
            "object.luminance": 3.0 * classes + 0.3 * rng.standard_normal(n),
            "background.luminance": rng.standard_normal(n),
            "object.area": rng.standard_normal(n),
            "object.redness": rng.standard_normal(n),
            "object.y": rng.standard_normal(n),
            "object.saturation": rng.standard_normal(n),
        }
    )
    layer = np.zeros((n, held.num_units))
    for unit, name in enumerate(held.unit_names):
        if name.startswith("planted:"):
            components = held.components[name.split(":")[1]]
            layer[:, unit] = sum(weight * statistics[measure] for measure, weight in components.items())
    truths = tuning_truths(held, layer, statistics, classes)
    by_function = {held.unit_names[unit].split(":")[1]: found for unit, found in truths.items()}
    mixture = by_function["object_luminance_mix"]
    assert mixture["measure"] == "background.luminance"
    assert abs(mixture["association"]["object.luminance"]) < 0.6 < 0.8 < mixture["association"]["background.luminance"]
    # Where both components vary alike within classes, the weights decide; a single statistic is its own truth.
    assert by_function["object_area_mix"]["measure"] == "object.area"
    assert by_function["object_y_tanh"]["measure"] == "object.y"
    # The association is the tuning label's own statistic.
    unit = next(unit for unit, name in enumerate(held.unit_names) if name.startswith("planted:object_area_mix:"))
    expected = within_class_association(layer[:, [unit]], statistics[["object.area"]].to_numpy(), classes)[0, 0]
    assert by_function["object_area_mix"]["association"]["object.area"] == pytest.approx(expected)


def as_uint8_to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def test_the_truths_read_the_planted_units_own_images():
    model = planted_classifier(BASE_SPEC, n_null=2, functions="held-back-2")
    images = circles(64, 11)
    with torch.no_grad():
        layer = model.features(images).numpy()
    as_uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    statistics, recomputed = glass_box_readings(model, as_uint8, batch_size=24)
    assert planted_agreement(model, recomputed, layer) > 0.999
    # Other images than the layer's: the units no longer follow them.
    other = (circles(64, 12) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert planted_agreement(model, glass_box_readings(model, other)[1], layer) < 0.5
    assert set(statistics.columns) == set(STATISTIC_MEASURES.values()) and len(statistics) == 64
    whole = standardised_statistics(model, as_uint8_to_float(as_uint8))
    pd.testing.assert_frame_equal(statistics, whole)
    unit = unit_columns(model, "object_area_tanh")[0]
    # tanh(1.5 z) of the statistic: monotone, so its ranks are the statistic's.
    assert (
        np.corrcoef(np.argsort(np.argsort(statistics["object.area"])), np.argsort(np.argsort(layer[:, unit])))[0, 1]
        > 0.999
    )


def test_a_planted_classifier_standardised_on_another_world_than_the_generator_renders_is_refused():
    planted = {"kind": "python", "entrypoint": "pipeline.validation:planted_classifier"}
    breeds_base = {"base_spec": {"kind": "builtin", "name": "breeds-classifier"}}
    shapes_generator = {"kind": "builtin", "name": "shapes-generator"}
    with pytest.raises(ConfigError, match=r"classifier\.kwargs\.world.*breeds world.*shapes world"):
        check_planted_world(planted | {"kwargs": breeds_base}, shapes_generator)
    check_planted_world(planted | {"kwargs": breeds_base | {"world": "shapes"}}, shapes_generator)
    check_planted_world(planted | {"kwargs": breeds_base}, {"kind": "builtin", "name": "breeds-generator"})
    # A user's generator names no world; nor does a classifier other than the planted one.
    check_planted_world(planted | {"kwargs": breeds_base}, {"kind": "python", "entrypoint": "x:y"})
    check_planted_world({"kind": "builtin", "name": "breeds-classifier"}, shapes_generator)
