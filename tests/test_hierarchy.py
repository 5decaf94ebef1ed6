"""The label hierarchy of the whole object and its parts, on synthetic tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pipeline.measures import part_whole_pairs, relative_measures, whole_counterpart
from pipeline.stats import (
    beyond_whole,
    tuning_beyond_whole,
    unit_concepts,
    unit_summary,
    unit_tuning,
    whole_given_part,
    with_hierarchy,
)

MEASURES = ["object.y", "part:body.y", "part:tail.y", "object.x"]
STEPS = 3
SAMPLES = 24


def sweep_table(rng: np.random.Generator, slopes: np.ndarray, noise: np.ndarray, unit_ids: np.ndarray) -> pd.DataFrame:
    """Sweeps whose measures change by ``slopes [U, M]`` per unit of request, with per-measure
    noise ``noise [M]`` at every step."""
    units = len(unit_ids)
    requested = np.broadcast_to(np.linspace(0.0, 1.0, STEPS), (units, SAMPLES, STEPS))
    values = slopes[:, None, :, None] * requested[:, :, None, :]
    values = values + noise[None, None, :, None] * rng.standard_normal((units, SAMPLES, len(MEASURES), STEPS))
    values += rng.uniform(0.3, 0.7, size=(units, SAMPLES, 1, 1))  # the object's place in each sample
    frame = pd.DataFrame(
        {
            "unit": np.repeat(unit_ids, SAMPLES * STEPS),
            "class": np.tile(np.repeat(np.arange(SAMPLES) % 2, STEPS), units),
            "sample": np.tile(np.repeat(np.arange(SAMPLES), STEPS), units),
            "step": np.tile(np.arange(STEPS), units * SAMPLES),
            "requested": requested.ravel(),
            "achieved": (requested + 0.05 * rng.standard_normal(requested.shape)).ravel(),
            "achieved_change": requested.ravel(),
            "others_mean_abs_change": 0.05,
            "pred": np.tile(np.repeat(np.arange(SAMPLES) % 2, STEPS), units),
            "target_prob": 0.9,
            "w_distance": requested.ravel(),
        }
    )
    for k, name in enumerate(MEASURES):
        frame[name] = values[:, :, k, :].ravel()
    return frame


def random_directions(rng: np.random.Generator, directions: int, noise: np.ndarray) -> pd.DataFrame:
    """Random directions move the object and, independently, each part within it."""
    whole = 0.2 * rng.standard_normal((directions, 1))
    within = 0.2 * rng.standard_normal((directions, 2))
    slopes = np.hstack([whole, whole + within, 0.2 * rng.standard_normal((directions, 1))])
    table = sweep_table(rng, slopes, noise, -2 - np.arange(directions))
    table.insert(0, "control", "random_direction")
    rerender = sweep_table(rng, np.zeros((1, len(MEASURES))), noise, np.array([-1]))
    rerender.insert(0, "control", "rerender")
    return pd.concat([rerender, table], ignore_index=True)


def test_the_whole_object_takes_the_label_unless_a_part_moved_beyond_it():
    rng = np.random.default_rng(0)
    # The body's y is measured more precisely than the object's, so that without the
    # hierarchy it would win the label of a unit that moves the whole object.
    noise = np.array([0.05, 0.02, 0.05, 0.05])
    slopes = np.zeros((3, len(MEASURES)))
    slopes[0, :3] = 3.0  # unit 0 moves the whole object: every part goes with it
    slopes[1, 2], slopes[1, 0] = 3.0, 0.15  # unit 1 moves only the tail (a small share of the object)
    slopes[2, 3] = 3.0  # unit 2 moves x, which has no part measure here
    changes = sweep_table(rng, slopes, noise, np.arange(3))
    nulls = random_directions(rng, 32, noise)

    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    flat = unit_summary(concepts, changes).set_index("unit")
    assert flat.loc[0, "unique_measure"] == "part:body.y"  # what the hierarchy corrects

    hierarchy = beyond_whole(changes, nulls, MEASURES)
    assert set(hierarchy["measure"]) == {"part:body.y", "part:tail.y"}
    tests = with_hierarchy(concepts, hierarchy)
    summary = unit_summary(tests, changes).set_index("unit")
    assert summary.loc[0, "unique_measure"] == "object.y" and summary.loc[0, "unique_sign"] == 1
    assert summary.loc[1, "unique_measure"] == "part:tail.y"
    assert summary.loc[2, "unique_measure"] == "object.x"
    assert (summary["unique_gate"] == "labelled").all()
    by_test = tests.set_index(["unit", "measure"])
    assert not by_test.loc[(0, "part:body.y"), "beyond_object"] and by_test.loc[(0, "part:body.y"), "selective"]
    assert by_test.loc[(1, "part:tail.y"), "beyond_object"]
    assert by_test.loc[(1, "part:tail.y"), "relative_effect"] > 2.0
    # Measures without a whole counterpart are never held back.
    assert by_test.xs("object.x", level="measure")["beyond_object"].all()
    assert by_test.xs("object.x", level="measure")["relative_effect"].isna().all()


def test_a_unit_whose_only_selective_measures_are_parts_moving_with_the_whole_says_so():
    concepts = pd.DataFrame(
        {
            "unit": [0, 0],
            "measure": ["object.y", "part:body.y"],
            "effect": [1.5, 4.0],
            "t_mean": [30.0, 40.0],
            "natural_change": [1.0, 1.0],
            "q": [1e-10, 1e-10],
            "p": [1e-12, 1e-12],
            "p_link": [0.0, 0.0],
            "classes_agree": [True, True],
            "selective": [False, True],
            "beyond_object": [True, False],
        }
    )
    changes = sweep_table(np.random.default_rng(1), np.zeros((1, len(MEASURES))), np.full(4, 0.05), np.arange(1))
    summary = unit_summary(concepts, changes).set_index("unit")
    assert pd.isna(summary.loc[0, "unique_measure"]) and summary.loc[0, "unique_gate"] == "whole object"
    assert summary.loc[0, "n_selective"] == 1


def test_the_tuning_label_follows_the_same_hierarchy():
    rng = np.random.default_rng(2)
    n, classes = 600, np.repeat(np.arange(2), 300)
    where, offset = rng.standard_normal(n), rng.standard_normal(n)
    observed = pd.DataFrame(
        {
            "object.y": where + 0.3 * rng.standard_normal(n),  # a noisier measurement of the whole
            "part:body.y": where + 0.05 * rng.standard_normal(n),
            "part:tail.y": where + offset,
            "object.x": rng.standard_normal(n),
        }
    )
    r = rng.standard_normal((n, 6))
    r[:, 0] = where + 0.1 * rng.standard_normal(n)  # tuned to where the whole object is
    r[:, 1] = offset + 0.1 * rng.standard_normal(n)  # tuned to where the tail sits within it
    arguments = {"permutations": 100, "seed": 0, "q": 0.05, "min_association": 0.1}
    units = np.arange(6)
    tuning = unit_tuning(r, units, classes, observed, MEASURES, **arguments)
    changes = sweep_table(rng, np.zeros((6, len(MEASURES))), np.full(4, 0.05), units)
    concepts = unit_concepts(changes, random_directions(rng, 8, np.full(4, 0.05)), MEASURES, n_boot=0)
    flat = unit_summary(concepts, changes, tuning).set_index("unit")
    assert flat.loc[0, "tuning_measure"] == "part:body.y"  # what the hierarchy corrects

    hierarchy = tuning_beyond_whole(r, units, classes, observed, MEASURES, **arguments)
    summary = unit_summary(concepts, changes, with_hierarchy(tuning, hierarchy)).set_index("unit")
    assert summary.loc[0, "tuning_measure"] == "object.y"
    assert summary.loc[1, "tuning_measure"] == "part:tail.y"


def test_a_part_that_follows_a_mixtures_other_component_does_not_take_the_whole_s_label():
    rng = np.random.default_rng(3)
    n, classes = 600, np.repeat(np.arange(2), 300)
    where, shade, offset = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    observed = pd.DataFrame(
        {
            "object.y": where + 0.05 * rng.standard_normal(n),
            # A noisier read of where the object is, which also sags where the object is dark.
            "part:body.y": where + 0.3 * shade + 0.3 * rng.standard_normal(n),
            "part:tail.y": where + offset,
            "object.x": rng.standard_normal(n),
        }
    )
    r = rng.standard_normal((n, 3))
    r[:, 0] = 0.7 * where + 0.3 * shade  # a mixture: where the object is, and its shade
    r[:, 1] = offset + 0.1 * rng.standard_normal(n)  # tuned to where the tail sits within it
    arguments = {"permutations": 100, "seed": 0, "q": 0.05, "min_association": 0.1}
    units = np.arange(3)
    tuning = unit_tuning(r, units, classes, observed, MEASURES, **arguments)
    hierarchy = tuning_beyond_whole(r, units, classes, observed, MEASURES, **arguments).set_index(["unit", "measure"])
    body = hierarchy.loc[(0, "part:body.y")]
    strongest = tuning[tuning["unit"] == 0].set_index("measure")["association"].abs()
    assert strongest.idxmax() == "part:body.y"  # the body reads the mixture best ...
    assert body["relative_q"] <= 0.05 and abs(body["relative_association"]) >= 0.1  # ... and apart from the whole
    assert body["whole_beyond_part"] >= 0.1  # but the whole adds, the same way round, what the body lacks
    assert not body["beyond_object"]
    tail = hierarchy.loc[(1, "part:tail.y")]
    assert tail["whole_beyond_part"] < -0.1 and tail["beyond_object"]  # the tail, read against the whole

    changes = sweep_table(rng, np.zeros((3, len(MEASURES))), np.full(4, 0.05), units)
    concepts = unit_concepts(changes, random_directions(rng, 8, np.full(4, 0.05)), MEASURES, n_boot=0)
    summary = unit_summary(concepts, changes, with_hierarchy(tuning, hierarchy.reset_index())).set_index("unit")
    assert summary.loc[0, "tuning_measure"] == "object.y"
    assert summary.loc[1, "tuning_measure"] == "part:tail.y"


def test_whole_given_part_is_the_partial_correlation_of_within_class_ranks_signed_as_the_part():
    rng = np.random.default_rng(4)
    n, classes = 200, np.repeat(np.arange(2), 100)
    observed = pd.DataFrame({"object.y": rng.standard_normal(n), "part:tail.y": rng.standard_normal(n)})
    observed["part:tail.y"] += 0.6 * observed["object.y"] + 2.0 * classes  # classes differ, ranks do not see it
    r = -((0.5 * observed[["object.y"]].to_numpy() + rng.standard_normal((n, 1))) ** 3)
    found = whole_given_part(r, np.array([7]), classes, observed, {"part:tail.y": "object.y"})

    def ranks(values):
        out = np.empty(n)
        for c in (0, 1):
            rows = classes == c
            out[rows] = scipy_stats.rankdata(values[rows]) - (rows.sum() + 1) / 2
        return out

    unit, whole = ranks(r[:, 0]), ranks(observed["object.y"].to_numpy())
    part = ranks(observed["part:tail.y"].to_numpy())
    design = np.column_stack([np.ones(n), part])
    residual_unit = unit - design @ np.linalg.lstsq(design, unit, rcond=None)[0]
    residual_whole = whole - design @ np.linalg.lstsq(design, whole, rcond=None)[0]
    expected = np.corrcoef(residual_unit, residual_whole)[0, 1] * np.sign(np.corrcoef(unit, part)[0, 1])
    assert found[["unit", "measure"]].values.tolist() == [[7, "part:tail.y"]]
    assert found["whole_beyond_part"].iloc[0] == pytest.approx(expected, abs=1e-10)


def test_relative_measures_take_differences_turns_and_shares():
    table = pd.DataFrame(
        {
            "object.y": [0.5, 0.6],
            "part:tail.y": [0.4, 0.7],
            "object.hue": [0.95, 0.1],
            "part:tail.hue": [0.05, 0.9],
            "object.orientation": [1.5, 0.0],
            "part:tail.orientation": [-1.5, 0.2],
            "object.area": [0.2, 0.0],
            "part:tail.area": [0.05, 0.0],
            "part:tail.dx": [0.1, 0.1],
        }
    )
    relative, names = relative_measures(table, table.columns)
    assert set(names) == {"part:tail.y", "part:tail.hue", "part:tail.orientation", "part:tail.area"}
    assert relative[names["part:tail.y"]].tolist() == pytest.approx([-0.1, 0.1])
    assert relative[names["part:tail.hue"]].tolist() == pytest.approx([0.1, -0.2])  # the short way round
    assert relative[names["part:tail.orientation"]].tolist() == pytest.approx([math.pi - 3.0, 0.2])
    share = relative[names["part:tail.area"]]
    assert share[0] == pytest.approx(0.25) and np.isnan(share[1])  # no object, no share
    assert list(relative.columns[: len(table.columns)]) == list(table.columns)
    assert whole_counterpart("part:tail.dx") is None and whole_counterpart("object.y") is None
    assert whole_counterpart("part:ear.saturation") == "object.saturation"
    assert part_whole_pairs(["part:tail.y", "object.x"]) == {}
