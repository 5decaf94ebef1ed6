"""Adaptive sampling: the sequential rule on synthetic tables, and a tiny workflow run with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline.adaptive import (
    MIN_DECISION_SAMPLES,
    MIN_EFFICACY_SAMPLES,
    Design,
    SequentialTest,
    futile_discoveries,
    look_schedule,
)
from pipeline.stats import unit_concepts, unit_summary
from pipeline.store import read_json
from tests.conftest import snakemake, tiny_config, write_config
from tests.test_stats import MEASURES, null_table, sweeps

LOOK_SIZE = 2


def run_adaptive(
    changes: pd.DataFrame, nulls: pd.DataFrame, seed: int = 0, **design: float
) -> tuple[pd.DataFrame, list[dict], Design]:
    """The sequential rule with ``changes`` as the renderer: a look takes its rows from the full table."""
    samples = changes[["sample", "class"]].drop_duplicates()
    units = np.unique(changes["unit"])
    schedule = {
        int(u): look_schedule(samples["sample"].to_numpy(), samples["class"].to_numpy(), LOOK_SIZE, (seed, int(u)))
        for u in units
    }
    looks = tuple(int(n) for n in np.cumsum([len(look) for look in schedule[int(units[0])]]))
    plan = Design(n_tests=len(units) * len(MEASURES), looks=looks, **design)
    by_sweep = changes.set_index(["unit", "sample"]).sort_index()

    def render(sweep_units: np.ndarray, sweep_samples: np.ndarray) -> pd.DataFrame:
        return by_sweep.loc[pd.MultiIndex.from_arrays([sweep_units, sweep_samples])].reset_index()

    table, outcomes = SequentialTest(nulls, MEASURES, plan).run(render, schedule)
    return table, outcomes, plan


def test_looks_take_the_same_number_of_each_class_in_a_seeded_order():
    samples = np.arange(100, 124)
    classes = np.repeat([0, 1, 2], 8)
    looks = look_schedule(samples, classes, 3, (0, 7))
    assert [len(look) for look in looks] == [9, 9, 6]
    for look in looks[:2]:
        assert np.bincount(classes[np.searchsorted(samples, look)]).tolist() == [3, 3, 3]
    assert np.array_equal(np.sort(np.concatenate(looks)), samples)
    again = look_schedule(samples, classes, 3, (0, 7))
    assert all(np.array_equal(a, b) for a, b in zip(looks, again, strict=True))
    other = look_schedule(samples, classes, 3, (0, 8))
    assert not all(np.array_equal(a, b) for a, b in zip(looks, other, strict=True))


def test_the_design_spends_efficacy_only_where_samples_suffice():
    plan = Design(n_tests=100, looks=(4, 8, 12, 16, 20, 24), efficacy_alpha=0.002, q=0.05, discovery_fraction=0.02)
    assert plan.efficacy_looks == (3, 4)  # 16 and 20 samples; never the last look
    assert plan.efficacy_p == pytest.approx(0.002 / (100 * 2))
    assert plan.futility_p == pytest.approx(0.001)
    assert Design(n_tests=100, looks=(4, 8, MIN_EFFICACY_SAMPLES)).efficacy_p == 0.0
    with pytest.raises(ValueError, match="increasing"):
        Design(n_tests=10, looks=(8, 8))


def test_clear_units_stop_early_and_ambiguous_ones_get_every_sample():
    rng = np.random.default_rng(0)
    samples, units = 32, 12
    slopes = np.zeros((units, len(MEASURES)))
    slopes[4:8, 0] = [3.0, 3.0, -3.0, 3.0]  # far beyond every random direction
    slopes[8:12, 1] = [0.9, 0.95, -0.9, 0.85]
    # Units 8-11 move area far, but through so much noise that only every sample shows it.
    noise = np.where(np.arange(units) >= 8, 0.9, 0.05)
    changes = pd.concat(
        [sweeps(rng, slopes[u : u + 1], np.ones(1), samples, noise[u], np.array([u])) for u in range(units)],
        ignore_index=True,
    )
    nulls = null_table(rng, 24, samples, 0.2, 0.05)

    table, outcomes, plan = run_adaptive(changes, nulls)
    by_unit = {o["unit"]: o for o in outcomes}
    first_decision = min(n for n in plan.looks if n >= MIN_DECISION_SAMPLES)
    for unit in range(4):  # unit 0-3 change nothing
        assert by_unit[unit]["samples"] == first_decision and by_unit[unit]["efficacious"] == []
    for unit in range(4, 8):
        assert by_unit[unit]["samples"] == MIN_EFFICACY_SAMPLES and by_unit[unit]["efficacious"] == ["object.x"]
    for unit in range(8, 12):
        assert by_unit[unit]["samples"] == samples and by_unit[unit]["look"] is None
    rendered = table.groupby("unit")["sample"].nunique()
    assert rendered.to_dict() == {o["unit"]: o["samples"] for o in outcomes}
    assert len(table) < len(changes) / 1.5

    # The labels come from the statistics on what was rendered, and match the fixed design's.
    adaptive = unit_concepts(table, nulls, MEASURES, n_boot=0)
    fixed = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    assert adaptive["selective"].tolist() == fixed["selective"].tolist()
    tops = unit_summary(adaptive, table)["unique_measure"].fillna("none").tolist()
    assert tops == unit_summary(fixed, changes)["unique_measure"].fillna("none").tolist()
    assert tops == ["none"] * 4 + ["object.x"] * 4 + ["object.area"] * 4
    assert futile_discoveries(adaptive, outcomes, 0.05).empty


def test_pure_null_units_get_no_more_false_discoveries_than_with_every_sample():
    runs, units, samples = 30, 40, 24
    adaptive_errors, fixed_errors, savings = [], [], []
    for seed in range(runs):
        rng = np.random.default_rng(100 + seed)
        # Units whose sweeps change nothing, beside random directions that barely move
        # anything, so that the noise is many of their spreads: the size does not stop
        # these units, and every selective test is false.
        changes = sweeps(rng, np.zeros((units, len(MEASURES))), np.ones(units), samples, 0.1, np.arange(units))
        nulls = null_table(rng, 24, samples, 0.01, 0.01, rerender_noise=0.1)
        table, outcomes, _ = run_adaptive(changes, nulls, seed=seed)
        concepts = unit_concepts(table, nulls, MEASURES, n_boot=0)
        adaptive_errors.append(float(concepts["selective"].any()))
        fixed_errors.append(float(unit_concepts(changes, nulls, MEASURES, n_boot=0)["selective"].any()))
        savings.append(len(changes) / len(table))
        assert futile_discoveries(concepts, outcomes, 0.05).empty
    # The fixed design's rate is pipeline.stats' (tests/test_stats.py); stopping early may
    # add efficacy_alpha to it, a thousandth, so not one run more here.
    assert np.mean(adaptive_errors) <= np.mean(fixed_errors) + 1 / runs
    assert np.mean(savings) > 1.5


def test_a_futility_stop_that_ends_a_discovery_is_reported():
    concepts = pd.DataFrame({"unit": [0, 0, 1, 1], "measure": ["a", "b", "a", "b"], "q": [0.01, 0.5, 0.01, 0.02]})
    outcomes = [
        {"unit": 0, "samples": 8, "look": 1, "efficacious": ["a"]},
        {"unit": 1, "samples": 24, "look": None, "efficacious": []},
    ]
    assert futile_discoveries(concepts, outcomes, 0.05).empty
    outcomes[1] |= {"samples": 8, "look": 1}
    assert futile_discoveries(concepts, outcomes, 0.05)[["unit", "measure"]].values.tolist() == [[1, "a"], [1, "b"]]


def test_workflow_with_adaptive_sampling_renders_fewer_rows(tmp_path: Path):
    config = tiny_config()
    config["samples"]["probe"] = 6
    config["tuning"] |= {"keep_renders": True, "adaptive": {"enabled": True}}
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/tiny/tables/activation_changes.parquet")

    tables = tmp_path / "results/tiny/tables"
    nulls = pd.read_parquet(tables / "null_controls.parquet")
    changes = pd.read_parquet(tables / "activation_changes.parquet")
    samples, steps = nulls["sample"].nunique(), config["tuning"]["steps"]
    assert changes.columns.tolist() == nulls.columns.drop("control").tolist()
    assert len(changes) < len(config["units"]) * samples * steps
    assert not (tmp_path / "logs/tiny/measure").exists(), "the perturb jobs measure their own renders"
    for chunk in (0, 1):
        table = pd.read_parquet(tables / f"chunk-{chunk}.parquet")
        record = read_json(tables / f"chunk-{chunk}.adaptive.json")
        assert record["renders"] == len(table) and record["renders_fixed"] == record["units"] * samples * steps
        assert record["renders_saved"] == record["renders_fixed"] - record["renders"]
        per_unit = table.groupby("unit")["sample"].nunique().to_dict()
        assert per_unit == {o["unit"]: o["samples"] for o in record["unit_outcomes"]}
        renders = zarr.open_group(str(tmp_path / f"results/tiny/renders/chunk-{chunk}.zarr"), mode="r")
        assert int(np.asarray(renders["rendered"]).sum()) * steps == len(table)
