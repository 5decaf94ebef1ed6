"""The world's ground truth beside a run: labels against the class manifest, and linear probes of the layer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.measures import measure_names
from pipeline.stages.encoding import COLUMNS, encoding_table, factor_kinds, ridge_predictions
from pipeline.stages.world_truth import defining_measures, label_agreement, summarise_validation
from pipeline.store import write_json, write_parquet
from pipeline.world import ClassManifest, breeds, class_manifest, part_names, register_manifest

TOY = ClassManifest(
    classes=("short", "long", "floppy"),
    factor_means={"ear_length": (0.2, 0.4, 0.4), "ear_droop": (0.0, 0.0, 2.0), "hue": (0.1, 0.1, 0.1)},
    defining={(0, 1): ("ear_length",), (0, 2): ("ear_length", "ear_droop"), (1, 2): ("ear_droop",)},
    factor_measures={
        "ear_length": {"part:ear.major": 1, "object.area": 1},
        "ear_droop": {"part:ear.y": 1},
        "hue": {"part:body.hue": 1},
    },
)
register_manifest("toy-truth", TOY)


def test_defining_measures_are_the_part_measures_of_factors_that_separate_a_pair():
    # object.area reads a defining factor but names no part; hue separates no pair.
    assert defining_measures(TOY) == {"part:ear.major", "part:ear.y"}


def test_every_defining_measure_of_the_breeds_world_is_a_column_its_parts_get():
    defining = defining_measures(class_manifest("breeds"))
    written = set(measure_names(part_names("breeds")))
    assert defining and defining <= written, sorted(defining - written)
    # Part geometry is read by the part's own axes too, as the paper measures parts.
    for measure in ("part:ear.major", "part:tail.major", "part:snout.major", "part:leg.minor", "part:ear.dy"):
        assert measure in defining, measure


def summary_of(unique: list, tuning: list) -> pd.DataFrame:
    return pd.DataFrame({"unit": np.arange(len(unique)), "unique_measure": unique, "tuning_measure": tuning})


def test_label_agreement_counts_the_own_labelled_units_that_read_a_defining_part():
    summary = summary_of(
        ["part:ear.major", "object.area", None, "part:ear.y", "part:body.hue", "part:ear.major"],
        [None, "part:ear.y", "part:ear.y", None, None, "object.x"],
    )
    # Unit 5 is planted: left out of both labels.
    agreement = label_agreement(summary, TOY, excluded_units=[5])
    assert agreement["unique"] == {
        "breed_defining_share": pytest.approx(2 / 4),
        "breed_defining_labelled": 2,
        "labelled_units": 4,
    }
    assert agreement["tuning"] == {"breed_defining_share": 1.0, "breed_defining_labelled": 2, "labelled_units": 2}
    # No manifest: nothing to count against; no labelled unit: no share.
    assert label_agreement(summary, None)["unique"] == {
        "breed_defining_share": None,
        "breed_defining_labelled": None,
        "labelled_units": 5,
    }
    unlabelled = label_agreement(summary_of([None, None], [None, None]), TOY)
    assert unlabelled["unique"] == {"breed_defining_share": None, "breed_defining_labelled": 0, "labelled_units": 0}
    assert set(label_agreement(summary.drop(columns="tuning_measure"), TOY)) == {"unique"}


def test_the_run_validation_keeps_the_planted_scores_and_adds_the_world(tmp_path):
    scores = {"unique_precision": 0.9, "units": [{"unit": 4, "truth": "object.area"}], "null_units": [{"unit": 5}]}
    write_json(tmp_path / "scores.json", scores)
    write_parquet(
        tmp_path / "summary.parquet",
        summary_of(["part:ear.y", "object.x", None, None, "part:ear.y", "part:ear.major"], [None] * 6),
    )
    summarise_validation(
        tmp_path / "scores.json",
        tmp_path / "summary.parquet",
        tmp_path / "out.json",
        world="toy-truth",
        regions="segmentation",
    )
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["unique_precision"] == 0.9 and written["units"] == scores["units"]
    assert written["world"]["name"] == "toy-truth" and written["world"]["regions"] == "segmentation"
    assert written["world"]["defining_measures"] == ["part:ear.major", "part:ear.y"]
    assert written["world"]["unique"] == {
        "breed_defining_share": 0.5,
        "breed_defining_labelled": 1,
        "labelled_units": 2,
    }
    assert written["world"]["tuning"]["labelled_units"] == 0


def test_factor_kinds_come_from_the_manifest():
    assert factor_kinds("toy-truth", ["ear_length", "hue", "x"]) == {
        "ear_length": "breed",
        "hue": "nuisance",
        "x": "nuisance",
    }
    assert set(factor_kinds("shapes", ["size", "hue"]).values()) == {"nuisance"}
    kinds = factor_kinds("breeds", list(breeds.FACTORS))
    assert [name for name, kind in kinds.items() if kind == "breed"] == list(breeds.BREED_FACTORS)


def test_ridge_with_one_strength_is_the_closed_form():
    rng = np.random.default_rng(0)
    x, y, x_test = rng.standard_normal((40, 6)), rng.standard_normal((40, 2)), rng.standard_normal((5, 6))
    alpha = 0.3
    coefficients = np.linalg.solve(x.T @ x + alpha * len(x) * np.eye(6), x.T @ y)
    np.testing.assert_allclose(ridge_predictions(x, y, x_test, [alpha]), x_test @ coefficients, atol=1e-10)


def test_encoding_table_tells_one_unit_from_a_spread_code_and_from_the_class():
    rng = np.random.default_rng(1)
    n, width = 1200, 40
    classes = rng.integers(0, 3, n)
    single = rng.standard_normal(n)  # carried by unit 7 alone
    spread = rng.standard_normal(n)  # carried weakly by every unit
    by_class = np.array([-1.0, 0.0, 1.0])[classes] + 0.3 * rng.standard_normal(n)  # only its class mean is encoded
    hidden = rng.standard_normal(n)  # carried by no unit
    r = rng.standard_normal((n, width)) + 0.15 * spread[:, None] * rng.choice([-1, 1], width)
    r[:, 7] = single + 0.3 * rng.standard_normal(n)
    r[:, 11] += 2.0 * np.array([-1.0, 0.0, 1.0])[classes]
    factors = pd.DataFrame({"single": single, "spread": spread, "by_class": by_class, "hidden": hidden})
    split = rng.permutation(n) % 4
    table = encoding_table(
        r,
        factors,
        classes,
        split > 0,
        split == 0,
        kinds={"single": "breed", "spread": "breed", "by_class": "breed", "hidden": "nuisance"},
        alphas=[1e-3, 1e-2, 1e-1, 1.0],
        min_unit_r2=0.1,
    ).set_index("factor")
    assert list(table.reset_index().columns) == list(COLUMNS)
    assert table.loc["single", "best_unit"] == 7 and table.loc["single", "best_unit_r2"] > 0.8
    assert table.loc["single", "units_encoding"] == 1 and table.loc["single", "layer_r2"] > 0.8
    # Spread thinly: the layer predicts it well, no unit alone reaches the threshold.
    assert table.loc["spread", "layer_r2"] > 0.3 and table.loc["spread", "units_encoding"] == 0
    # The class is encoded, the factor beyond its class mean is not.
    assert table.loc["by_class", "layer_r2"] > 0.6 and table.loc["by_class", "best_unit"] == 11
    assert table.loc["by_class", "layer_r2_within_class"] < 0.05
    assert table.loc["by_class", "units_encoding_within_class"] == 0
    assert table.loc["hidden", "layer_r2"] < 0.05 and table.loc["hidden", "units_encoding"] == 0
    assert table.loc["single", "units_encoding_within_class"] == 1
