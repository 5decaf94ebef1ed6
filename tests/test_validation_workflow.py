"""Ground truth through the whole workflow: planted units get their measure, null units get nothing.

The end-to-end test runs the real workflow on the builtin models with a small planted
config and reads ``concepts/validation.json``. The null-control geometry it rests on (random
directions in the link's standardised space) is checked on its own first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.models.builtin import weights_path
from pipeline.stages.config import load_schema, validate_config
from pipeline.stages.encoding import COLUMNS as ENCODING_COLUMNS
from pipeline.stages.nulls import (
    link_standardisation,
    random_directions,
    standardised_direction_sweeps,
    standardised_ranges,
    typical_span,
)
from pipeline.stages.samples import Samples
from pipeline.store import write_zarr
from pipeline.validation import planted_run_config
from tests.conftest import REPO_ROOT, snakemake, tiny_config, write_config

SCHEMA = REPO_ROOT / "workflow/schemas/config.schema.yaml"
BASE_UNITS = 512
PLANTED = 6
N_NULL = 8
PLANTED_CONFIG = {
    "run": "planted",
    "device": "cpu",
    "classifier": {
        "kind": "python",
        "entrypoint": "pipeline.validation:planted_classifier",
        "kwargs": {"base_spec": {"kind": "builtin", "name": "shapes-classifier"}, "n_null": N_NULL, "seed": 0},
    },
    "generator": {"kind": "builtin", "name": "shapes-generator"},
    # circle, triangle, square
    "classes": [0, 1, 2],
    "units": {"start": BASE_UNITS, "stop": BASE_UNITS + PLANTED + N_NULL},
    "samples": {"train": 150, "test": 10, "probe": 16, "batch_size": 256},
    "link": {"folds": 3, "mlp": False, "batch_size": 256},
    "tuning": {"steps": 3, "chunk_size": 64, "batch_size": 256, "null_directions": 16},
    "concepts": {"n_boot": 200},
    "report": {"max_units": 2, "samples": 1, "steps": 3, "batch_size": 256},
}
MISSING_WEIGHTS = [
    str(path) for path in (weights_path("shapes-classifier"), weights_path("shapes-generator")) if not path.is_file()
]


def test_direction_sweeps_run_in_the_standardised_space_and_return_raw_activations() -> None:
    rng = np.random.default_rng(0)
    std = np.array([0.01, 1.0, 100.0, 5.0])
    mean = np.array([0.5, -1.0, 20.0, 0.0])
    r = (mean + std * rng.standard_normal((6, 4))).astype(np.float32)
    directions = random_directions(3, 4, seed=2)
    swept, requested = standardised_direction_sweeps(r, directions, span=2.5, steps=3, mean=mean, std=std)
    assert swept.shape == (3, 6, 3, 4) and swept.dtype == np.float32
    np.testing.assert_allclose(requested[:, -1] - requested[:, 0], 2.5)
    standardised = (swept - mean) / std
    projections = np.einsum("dpsu,du->dps", standardised, directions)
    np.testing.assert_allclose(projections, np.broadcast_to(requested[:, None, :], (3, 6, 3)), atol=1e-3)
    # Each unit moves in proportion to its own spread: a raw-space sweep would move unit 0
    # by as much as unit 2, i.e. by thousands of its standard deviations.
    raw_step = swept[:, :, -1] - swept[:, :, 0]  # [D, P, U]
    np.testing.assert_allclose(raw_step / std, np.broadcast_to(2.5 * directions[:, None, :], raw_step.shape), rtol=1e-3)


def test_link_standardisation_uses_the_accepted_train_samples(tmp_path: Path) -> None:
    r = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32) * [1.0, 10.0, 0.0]
    split = np.array(["train", "train", "probe", "train", "test", "train", "train", "probe"])
    accepted = np.array([True, True, True, False, True, True, True, True])
    write_zarr(tmp_path / "latents.zarr", {"split": split})
    write_zarr(tmp_path / "activations.zarr", {"r": r, "accepted": accepted})
    mean, std = link_standardisation(Samples(tmp_path / "latents.zarr", tmp_path / "activations.zarr"))
    train = r[accepted & (split == "train")]
    np.testing.assert_allclose(mean, train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, [*train.std(axis=0)[:2], 1.0], rtol=1e-6)  # a constant unit keeps std 1

    ranges = pd.DataFrame({"unit": [0, 1, 2], "low": [-1.0, -10.0, 0.0], "high": [1.0, 30.0, 0.0]})
    span = typical_span(standardised_ranges(ranges, mean, std))
    assert span == pytest.approx(np.median([2.0 / std[0], 40.0 / std[1]]))
    write_zarr(tmp_path / "activations.zarr", {"r": r, "accepted": np.zeros(8, dtype=bool)})
    with pytest.raises(ValueError, match="no accepted train sample"):
        link_standardisation(Samples(tmp_path / "latents.zarr", tmp_path / "activations.zarr"))


def test_validation_is_a_target_only_with_the_planted_classifier(tmp_path: Path) -> None:
    write_config(tmp_path / "tiny", tiny_config())
    plain = snakemake(tmp_path / "tiny", "--dry-run").stdout
    assert "rule concepts:" in plain and "rule validation:" not in plain

    planted = tiny_config()
    planted["classifier"] = {
        "kind": "python",
        "entrypoint": "pipeline.validation:planted_classifier",
        "kwargs": {"base_spec": dict(tiny_config()["classifier"]), "n_null": 2},
    }
    write_config(tmp_path / "planted", planted)
    scheduled = snakemake(tmp_path / "planted", "--dry-run").stdout
    assert "rule validation:" in scheduled and "results/tiny/concepts/validation.json" in scheduled


def test_validation_enabled_runs_the_workflow_again_beside_the_run_on_planted_units(tmp_path: Path) -> None:
    config = tiny_config() | {"validation": {"enabled": True, "n_null": 2}}
    write_config(tmp_path, config)
    scheduled = snakemake(tmp_path, "--dry-run").stdout
    # Every stage of the nested run is scheduled once more, under results/tiny/validation.
    for stage in ("sample", "extract", "link", "perturb", "measure", "null_controls", "concepts", "validation"):
        assert f"rule validation_{stage}:" in scheduled, stage
    assert "results/tiny/validation/concepts/validation.json" in scheduled
    # The report's validation.json: the nested scores with the world's truth beside them.
    assert "rule ground_truth:" in scheduled and "results/tiny/validation/validation.json" in scheduled
    # A generator that is not builtin knows no world factors and gets saliency regions.
    assert "rule factor_encoding:" not in scheduled and "rule segmentation:" not in scheduled
    assert "rule validation_counterfactuals:" not in scheduled and "rule validation_report:" not in scheduled
    # The planted units and null units follow the tiny classifier's six units.
    nested = planted_run_config(validate_config(config, load_schema(SCHEMA)), base_units=6)
    assert nested["run"] == "tiny/validation" and nested["units"] == {"start": 6, "stop": 6 + 12 + 2}
    assert nested["classifier"]["kwargs"]["base_spec"] == config["classifier"]
    # The planted statistics are standardised on the world the run's generator renders.
    assert nested["classifier"]["kwargs"]["world"] == "shapes"
    assert nested["validation"]["enabled"] is False and nested["counterfactuals"]["pairs"] == []


@pytest.mark.skipif(bool(MISSING_WEIGHTS), reason=f"builtin weights missing: {', '.join(MISSING_WEIGHTS)}")
def test_planted_units_get_their_measure_and_null_units_stay_unselected(tmp_path: Path) -> None:
    write_config(tmp_path, PLANTED_CONFIG)
    snakemake(tmp_path)
    results = tmp_path / "results/planted"
    validation = json.loads((results / "concepts/validation.json").read_text())

    assert validation["n_planted"] == PLANTED and validation["n_null_units"] == N_NULL
    assert validation["function_set"] == "planted" and validation["development_set"]
    for label in ("unique", "tuning"):
        misses = [row for row in validation["units"] if not row[f"{label}_correct"]]
        assert validation[f"{label}_precision"] >= 0.9, misses
        assert validation[f"{label}_recall"] >= 0.9, misses
        null_labels = [row for row in validation["null_units"] if row["selective_measures"]]
        assert validation[f"{label}_null_false_positive_rate"] <= 0.05, null_labels
    assert validation["units_not_swept"] == 0

    # The random directions were swept over the median unit range in the link's standardised space.
    nulls = pd.read_parquet(results / "tables/null_controls.parquet")
    directions = nulls[nulls["control"] == "random_direction"]
    assert directions["unit"].nunique() == PLANTED_CONFIG["tuning"]["null_directions"]
    mean, std = link_standardisation(Samples(results / "latents.zarr", results / "activations.zarr"))
    span = typical_span(standardised_ranges(pd.read_parquet(results / "units/ranges.parquet"), mean, std))
    lengths = directions.groupby("unit")["requested"].agg(lambda requested: requested.max() - requested.min())
    np.testing.assert_allclose(lengths, span, rtol=1e-5)

    # By default (segmentation.labels: auto) the builtin generator's world labels a segmenter,
    # and the validation.json the report reads keeps the scores and adds the world's truth.
    assert (results / "segmentation/metrics.json").is_file()
    run_validation = json.loads((results / "validation/validation.json").read_text())
    assert {key: value for key, value in run_validation.items() if key != "world"} == validation
    world = run_validation["world"]
    assert world["name"] == "shapes" and world["regions"] == "segmentation" and world["defining_measures"] == []
    # Only planted and null units were swept, so none of the classifier's own is labelled.
    assert world["unique"] == {"breed_defining_share": None, "breed_defining_labelled": None, "labelled_units": 0}

    # The planted units are known functions of the rendered object: its x and y factors.
    encoding = pd.read_parquet(results / "concepts/factor_encoding.parquet")
    assert list(encoding.columns) == list(ENCODING_COLUMNS) and set(encoding["kind"]) == {"nuisance"}
    encoding = encoding.set_index("factor")
    planted_unit = {row["name"]: row["unit"] for row in validation["units"]}
    for factor in ("x", "y"):
        assert encoding.loc[factor, "best_unit"] == planted_unit[f"planted:object_{factor}:0"]
        assert encoding.loc[factor, "best_unit_r2"] > 0.9 and encoding.loc[factor, "layer_r2"] > 0.9
