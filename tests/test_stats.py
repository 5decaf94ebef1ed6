"""Statistics on synthetic tables: planted effects are found, pure noise is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pipeline.stats import (
    CONCEPT_COLUMNS,
    DEFAULT_MIN_EFFECT,
    RESIDUAL_COLUMNS,
    TRIM,
    TUNING_COLUMNS,
    _bootstrap_effect_ci,
    _Comparison,
    benjamini_hochberg,
    classifier_measures,
    draw_counts,
    duplicate_representatives,
    held_out_residuals,
    resampled_trimmed_means,
    selective_counts,
    trimmed_mean,
    unit_concepts,
    unit_redundancy,
    unit_summary,
    unit_tuning,
    yuen_test,
)

MEASURES = ["object.x", "object.area", "object.hue", "background.luminance", "image.motion"]
# Hue is circular with period 1; its changes are kept well inside half a turn.
MEASURE_SCALE = np.array([1.0, 1.0, 0.05, 1.0, 1.0])
STEPS = 3


def sweeps(
    rng: np.random.Generator,
    slopes: np.ndarray,
    spans: np.ndarray,
    samples: int,
    noise: float,
    unit_ids: np.ndarray,
    w_per_request: np.ndarray | float = 1.0,
) -> pd.DataFrame:
    """Long table of sweeps whose measures change linearly with the requested value.

    ``slopes [U, M]`` is each unit's change of each measure per unit of requested value,
    in units of ``MEASURE_SCALE``; ``w_per_request`` how far w moves per unit of requested
    value (per unit or for all).
    """
    units, n_measures = slopes.shape
    position = np.linspace(0.0, 1.0, STEPS)
    requested = spans[:, None, None] * position[None, None, :]  # [U, 1, S]
    clean = slopes[:, None, :, None] * requested[:, :, None, :]  # [U, 1, M, S]
    values = clean + noise * rng.standard_normal((units, samples, n_measures, STEPS))
    values *= MEASURE_SCALE[None, None, :, None]
    values += rng.uniform(0.0, 1.0, size=(units, samples, n_measures, 1))  # per-sample baselines
    achieved = requested + 0.1 * rng.standard_normal((units, samples, STEPS))
    frame = pd.DataFrame(
        {
            "unit": np.repeat(unit_ids, samples * STEPS),
            "class": np.tile(np.repeat(np.arange(samples) % 2, STEPS), units),
            "sample": np.tile(np.repeat(np.arange(samples), STEPS), units),
            "step": np.tile(np.arange(STEPS), units * samples),
            "requested": np.broadcast_to(requested, (units, samples, STEPS)).ravel(),
            "achieved": achieved.ravel(),
            "achieved_change": (achieved - achieved[..., :1]).ravel(),
            "others_mean_abs_change": np.abs(0.05 * rng.standard_normal((units, samples, STEPS))).ravel(),
            "pred": np.tile(np.repeat(np.arange(samples) % 2, STEPS), units),
            "pred_prob": 0.9,
            "target_prob": np.tile(np.linspace(0.9, 0.8, STEPS), units * samples),
            "w_distance": np.broadcast_to(
                np.broadcast_to(w_per_request, (units,))[:, None, None] * requested, (units, samples, STEPS)
            ).ravel(),
        }
    )
    for k, name in enumerate(MEASURES):
        frame[name] = values[:, :, k, :].ravel()
    return frame


def null_table(
    rng: np.random.Generator,
    directions: int,
    samples: int,
    spread: float,
    noise: float,
    rerender_noise: float | None = None,
) -> pd.DataFrame:
    slopes = spread * rng.standard_normal((directions, len(MEASURES)))
    random_direction = sweeps(rng, slopes, np.full(directions, 1.0), samples, noise, -2 - np.arange(directions))
    random_direction.insert(0, "control", "random_direction")
    rerender_noise = noise if rerender_noise is None else rerender_noise
    rerender = sweeps(rng, np.zeros((1, len(MEASURES))), np.zeros(1), samples, rerender_noise, np.array([-1]))
    rerender["requested"] = np.nan
    # One render -> re-encode cycle wanders a tenth of a direction's sweep in w.
    rerender["w_distance"] = np.tile(np.linspace(0.0, 0.1, STEPS), samples)
    rerender.insert(0, "control", "rerender")
    return pd.concat([rerender, random_direction], ignore_index=True)


def test_planted_effects_are_found_with_their_measure_and_sign():
    rng = np.random.default_rng(0)
    units, samples = 40, 24
    slopes = 0.2 * rng.standard_normal((units, len(MEASURES)))  # units like random directions
    planted = {3: (0, 3.0), 7: (1, -2.5), 11: (2, 2.0), 19: (3, 3.0)}
    for unit, (measure, slope) in planted.items():
        slopes[unit, measure] = slope
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    nulls = null_table(rng, 32, samples, 0.2, 0.05)

    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=200, seed=1)
    summary = unit_summary(concepts, changes).set_index("unit")

    for unit, (measure, slope) in planted.items():
        assert summary.loc[unit, "unique_measure"] == MEASURES[measure]
        assert np.sign(summary.loc[unit, "unique_effect"]) == np.sign(slope)
        row = concepts[(concepts["unit"] == unit) & (concepts["measure"] == MEASURES[measure])].iloc[0]
        assert row["ci_low"] <= row["effect"] <= row["ci_high"]
        assert row["selective"] and row["q"] <= 0.05
    # The effect is in units of the random directions' spread.
    assert summary.loc[3, "unique_effect"] == pytest.approx(3.0 / 0.2, rel=0.35)
    others = concepts[~concepts["unit"].isin(planted)]
    assert others["selective"].mean() <= 0.05
    assert set(concepts.columns) >= {"unit", "measure", "effect", "ci_low", "ci_high", "p", "q", "selective"}


def test_units_that_move_nothing_are_not_selective():
    rng = np.random.default_rng(3)
    units, samples = 60, 16
    changes = sweeps(rng, np.zeros((units, len(MEASURES))), np.ones(units), samples, 0.1, np.arange(units))
    # Random directions that barely move anything: render noise alone is many of their
    # spreads, so the size does not stop these units and the test of their own changes must.
    nulls = null_table(rng, 40, samples, 0.01, 0.01, rerender_noise=0.1)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    assert (concepts["effect"].abs() >= DEFAULT_MIN_EFFECT).mean() > 0.2
    assert concepts["selective"].mean() <= 0.01


def test_units_exchangeable_with_random_directions_are_selective_only_as_often_as_a_direction_is_that_large():
    rng = np.random.default_rng(2)
    units, samples = 60, 16
    changes = sweeps(
        rng, 0.3 * rng.standard_normal((units, len(MEASURES))), np.ones(units), samples, 0.1, np.arange(units)
    )
    nulls = null_table(rng, 40, samples, 0.3, 0.1)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    # Their changes are real, so only the size decides: a random direction itself is two
    # spreads from the directions' mean about 5% of the time (normal tail 4.6%, and the
    # spread is estimated from 40 directions), and these units are no more often.
    selective = concepts["selective"]
    assert (concepts.loc[selective, "effect"].abs() >= DEFAULT_MIN_EFFECT).all()
    assert selective.mean() <= 0.09
    p = concepts["p_random"].to_numpy()
    # Under the null the p-values are not piled at 0: twice the smaller of two p-values is
    # conservative, not anti-conservative.
    assert np.mean(p <= 0.1) <= 0.12 and np.mean(p > 0.5) > 0.3


def test_changes_count_per_unit_of_distance_in_w():
    # Random directions move w three times as far as the units, as the link's long, partly
    # cancelling columns make them do; a unit moving one measure 1.5 directions' spreads at a
    # third of their distance points at that measure 4.5 spreads, distance for distance.
    rng = np.random.default_rng(5)
    units, samples = 40, 16
    slopes = 0.1 * rng.standard_normal((units, len(MEASURES)))  # like random directions, per unit of w
    planted = [2, 9, 17, 30]
    slopes[planted, 0] = 0.45
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    directions = null_table(rng, 32, samples, 0.3, 0.05)
    random = directions["control"] == "random_direction"
    directions.loc[random, "w_distance"] *= 3.0

    concepts = unit_concepts(changes, directions, MEASURES, n_boot=0)
    found = concepts[(concepts["measure"] == MEASURES[0]) & concepts["unit"].isin(planted)]
    assert found["selective"].all()
    assert found["effect"].to_numpy() == pytest.approx(0.45 / 0.1, rel=0.35)
    assert (found["trimmed_change"] / found["w_distance"]).to_numpy() == pytest.approx(0.45, rel=0.2)
    assert (found["compared"] == "per_w").all() and (found["effect_as_is"].abs() < 2).all()
    assert concepts[~concepts["unit"].isin(planted)]["selective"].mean() <= 0.05

    # The other way round, as a heavily shrunk link makes it: the units move w ten times as
    # far as random directions, and a unit moving one measure ten directions' spreads is
    # found as is, though per unit of w it points no more at it than they do.
    slopes[planted, 0] = 3.0
    far = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units), w_per_request=10.0)
    directions.loc[random, "w_distance"] /= 3.0
    concepts = unit_concepts(far, directions, MEASURES, n_boot=0)
    found = concepts[(concepts["measure"] == MEASURES[0]) & concepts["unit"].isin(planted)]
    assert found["selective"].all() and (found["compared"] == "as_is").all()
    assert found["effect"].to_numpy() == pytest.approx(3.0 / 0.3, rel=0.35)
    assert (found["effect_per_w"].abs() < 2).all()


def test_a_unit_whose_link_column_is_fitting_noise_is_never_selective():
    # A unit whose sweep barely moves w, all of it towards one measure, as a pure-noise
    # unit's ridge-fitted column does: per unit of w it is as aligned as a concept gets, and
    # its change is consistent, so only the link-column test can tell it apart.
    rng = np.random.default_rng(6)
    units, samples = 4, 16
    slopes = np.zeros((units, len(MEASURES)))
    slopes[:, 3] = 0.02
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.002, np.arange(units), w_per_request=0.01)
    nulls = null_table(rng, 24, samples, 0.2, 0.002)

    learnt = unit_concepts(changes, nulls, MEASURES, n_boot=0, column_p=pd.Series(1e-12, index=np.arange(units)))
    assert learnt.loc[learnt["measure"] == MEASURES[3], "selective"].all()
    noise = pd.Series([0.3, 0.04, 0.6, 0.9], index=np.arange(units))
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0, column_p=noise)
    assert not concepts["selective"].any()
    assert concepts.groupby("unit")["p_link"].first().to_numpy() == pytest.approx(noise.to_numpy())
    assert (concepts["p"] >= concepts["p_link"]).all()
    with pytest.raises(KeyError, match="unit 3"):
        unit_concepts(changes, nulls, MEASURES, n_boot=0, column_p=noise.iloc[:3])


def test_units_that_change_nothing_are_never_selective():
    rng = np.random.default_rng(3)
    units, samples = 30, 16
    changes = sweeps(rng, np.zeros((units, len(MEASURES))), np.ones(units), samples, 0.1, np.arange(units))
    nulls = null_table(rng, 20, samples, 0.3, 0.1)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    assert not concepts["selective"].any()


def test_a_drifting_render_chain_neither_hides_nor_fakes_a_change():
    rng = np.random.default_rng(4)
    samples = 12
    slopes = np.zeros((2, len(MEASURES)))
    slopes[0, 0] = 0.5
    changes = sweeps(rng, slopes, np.ones(2), samples, 0.05, np.arange(2))
    # Rendering and re-encoding the same activation drifts object.x by as much as unit 0
    # moves it; a sweep renders each step from its own activation and does not drift.
    nulls = null_table(rng, 20, samples, 0.01, 0.01, rerender_noise=0.05)
    chain = (nulls["control"] == "rerender") & (nulls["step"] == STEPS - 1)
    nulls.loc[chain, "object.x"] += 0.5
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0).set_index(["unit", "measure"])
    moved, still = concepts.loc[(0, "object.x")], concepts.loc[(1, "object.x")]
    assert moved["p_change"] < 1e-6 and moved["selective"]
    # Unit 1 changes nothing; against the chain it would have looked like a fall of x.
    assert still["p_change"] > 0.01 and not still["selective"]


def test_one_failed_sample_does_not_decide_a_concept():
    rng = np.random.default_rng(6)
    units, samples = 20, 20
    slopes = 0.2 * rng.standard_normal((units, len(MEASURES)))
    slopes[0, 1] = 3.0  # unit 0 grows the area
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    nulls = null_table(rng, 24, samples, 0.2, 0.05)
    # A broken mask in one render of unit 0 and of unit 1: a huge jump in area and x.
    for unit in (0, 1):
        broken = (changes["unit"] == unit) & (changes["sample"] == 3) & (changes["step"] == STEPS - 1)
        changes.loc[broken, ["object.area", "object.x"]] += [-40.0, 25.0]
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=100).set_index(["unit", "measure"])
    assert concepts.loc[(0, "object.area"), "selective"] and concepts.loc[(0, "object.area"), "effect"] > 5
    assert not concepts.loc[(0, "object.x"), "selective"] and not concepts.loc[(1, "object.x"), "selective"]
    assert abs(concepts.loc[(1, "object.x"), "mean_change"]) > 1.0  # the plain mean would be fooled


def test_circular_measures_use_the_short_way_round():
    rng = np.random.default_rng(5)
    samples = 20
    changes = sweeps(rng, np.zeros((1, len(MEASURES))), np.ones(1), samples, 0.001, np.arange(1))
    # Hue goes from 0.95 to 0.05 (a step of +0.1 across the wrap) in every sample.
    changes["object.hue"] = np.tile(np.array([0.95, 0.0, 0.05]), samples)
    nulls = null_table(rng, 20, samples, 0.01, 0.001)
    nulls["object.hue"] = nulls["object.hue"] % 1.0
    row = unit_concepts(changes, nulls, MEASURES, n_boot=0).set_index("measure").loc["object.hue"]
    assert row["mean_change"] == pytest.approx(0.1, abs=1e-9)
    assert row["effect"] > 0


def test_motion_counts_only_when_a_unit_moves_the_image_more_than_random_directions():
    rng = np.random.default_rng(7)
    samples, directions = 16, 24

    def with_motion(frame: pd.DataFrame, per_sweep: np.ndarray) -> pd.DataFrame:
        """Motion as the pipeline stores it: the path length so far, growing over the steps."""
        sweeps_in_order = frame[["unit", "sample"]].drop_duplicates()
        growth = np.tile(np.linspace(0.0, 1.0, STEPS), len(sweeps_in_order))
        frame["image.motion"] = np.repeat(per_sweep, STEPS) * growth
        return frame

    # Unit 0 barely acts on the image (a unit the link ignores), unit 1 moves it three times
    # as far as a typical random direction.
    changes = sweeps(rng, np.zeros((2, len(MEASURES))), np.ones(2), samples, 0.01, np.arange(2))
    per_unit = np.array([0.01, 3.0])
    changes = with_motion(changes, np.repeat(per_unit, samples) * (1 + 0.05 * rng.standard_normal(2 * samples)))
    nulls = null_table(rng, directions, samples, 0.01, 0.01)
    per_direction = np.abs(1.0 + 0.2 * rng.standard_normal(directions))
    rerender = nulls["control"] == "rerender"
    nulls.loc[rerender] = with_motion(nulls.loc[rerender].copy(), np.full(samples, 0.01))
    jitter = 1 + 0.05 * rng.standard_normal(directions * samples)
    nulls.loc[~rerender] = with_motion(nulls.loc[~rerender].copy(), np.repeat(per_direction, samples) * jitter)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0).set_index(["unit", "measure"])
    still, moving = concepts.loc[(0, "image.motion")], concepts.loc[(1, "image.motion")]
    # Far below every random direction: a large negative effect, yet no concept.
    assert still["effect"] < -3 and still["p_random"] > 0.5 and not still["selective"]
    assert moving["effect"] > 5 and moving["selective"]


def test_classifier_measures_follow_their_definitions():
    rows = []
    for sample, achieved in enumerate([[0.0, 1.0, 2.0], [0.0, 0.5, 1.0], [2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]):
        for step in range(3):
            rows.append(
                {
                    "unit": 5, "class": 1, "sample": sample, "step": step, "requested": float(step),
                    "achieved": achieved[step], "achieved_change": achieved[step] - achieved[0],
                    "others_mean_abs_change": 0.5 * step,
                    "pred": 1 if sample < 3 or step < 2 else 0, "target_prob": 0.9 - 0.1 * step,
                }
            )  # fmt: skip
    measures = classifier_measures(pd.DataFrame(rows)).loc[5]
    assert measures["controllability"] == pytest.approx(0.75)
    assert measures["slope"] == pytest.approx((1.0 + 0.5 - 1.0 + 1.0) / 4)
    assert measures["specificity"] == pytest.approx(np.mean([2.0, 1.0, 2.0, 2.0]) / 1.0)
    assert measures["prob_change"] == pytest.approx(-0.2)
    assert measures["class_kept"] == pytest.approx(0.75)


def test_benjamini_hochberg_matches_the_textbook_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    q = benjamini_hochberg(p)
    assert q[3] == pytest.approx(0.02)
    assert q[0] == pytest.approx(0.02)
    assert q[2] == pytest.approx(0.04)
    assert q[1] == pytest.approx(0.04)
    assert np.isnan(q[4])


def test_selective_counts_and_input_errors():
    concepts = pd.DataFrame(
        {
            "unit": [0, 0, 1, 1],
            "measure": ["object.x", "object.area"] * 2,
            "effect": [5.0, 0.1, -4.0, 0.2],
            "selective": [True, False, True, False],
        }
    )
    counts = selective_counts(concepts).set_index("measure")
    assert counts.loc["object.x", "selective"] == 2
    assert counts.loc["object.x", "increase"] == 1 and counts.loc["object.x", "decrease"] == 1
    assert counts.loc["object.area", "fraction"] == 0.0
    with pytest.raises(KeyError, match="object.y"):
        unit_concepts(
            pd.DataFrame({"unit": [], "sample": [], "step": [], "w_distance": []}), pd.DataFrame(), ["object.y"]
        )
    rng = np.random.default_rng(0)
    changes = sweeps(rng, np.zeros((1, len(MEASURES))), np.ones(1), 4, 0.1, np.arange(1))
    nulls = null_table(rng, 2, 4, 0.1, 0.1)
    with pytest.raises(ValueError, match="random_direction"):
        unit_concepts(changes, nulls, MEASURES)


def test_benjamini_hochberg_is_scipys_on_the_valid_tests():
    p = np.random.default_rng(4).uniform(size=50) ** 3
    p[[3, 17]] = np.nan
    q = benjamini_hochberg(p)
    valid = ~np.isnan(p)
    np.testing.assert_allclose(q[valid], scipy_stats.false_discovery_control(p[valid], method="bh"))
    assert np.isnan(q[~valid]).all()


@pytest.mark.parametrize("size", [5, 7, 10, 13, 24])
def test_trimmed_mean_and_yuen_agree_with_scipy(size):
    rng = np.random.default_rng(size)
    values = rng.standard_t(3, size=(4, size))
    noise = rng.standard_t(3, size=size + 3)
    np.testing.assert_allclose(trimmed_mean(values), scipy_stats.trim_mean(values, TRIM, axis=1))
    for upper_only in (False, True):
        statistic, p = yuen_test(values[None, :, :], noise[None, :].repeat(4, axis=0), np.full(4, upper_only))
        alternative = "greater" if upper_only else "two-sided"
        reference = [
            scipy_stats.ttest_ind(row, noise, equal_var=False, trim=TRIM, alternative=alternative) for row in values
        ]
        np.testing.assert_allclose(p[0], [r.pvalue for r in reference], rtol=1e-10)
        np.testing.assert_allclose(statistic[0], [r.statistic for r in reference], rtol=1e-10)
    # NaN padding (a unit with fewer samples) counts only the values present.
    padded = np.concatenate([values[:1], np.full((1, 3), np.nan)], axis=1)
    assert trimmed_mean(padded)[0] == pytest.approx(scipy_stats.trim_mean(values[0], TRIM))


@pytest.mark.parametrize("size", [2, 5, 7, 24, 48])
def test_resampled_trimmed_means_are_the_trimmed_means_of_the_resamples(size, monkeypatch):
    # Small chunks, so that rows run in several chunks as a large table does.
    monkeypatch.setattr("pipeline.stats.RUNNING_CHUNK_BYTES", 8 * 3 * size * 50)
    rng = np.random.default_rng(size)
    values = rng.standard_t(3, size=(12, size))
    values[1, 0] = np.nan  # a missing sample
    values[2, : size // 2] = np.nan  # half missing: the cut varies with the draws
    values[3] = np.nan  # nothing to average
    values[4, 1:] = np.nan  # one value: too few to trim around in most draws
    values[5] = np.round(values[5])  # ties
    values[6] = 1.5  # constant
    picks = rng.integers(0, size, size=(50, size))
    per_w = values / rng.uniform(0.5, 2.0, size=(12, 1))  # sorts as the values do: shares their counts
    per_w[7] = np.nan  # a sweep that did not move w
    reversed_order = -values  # sorts the other way: counts of its own
    means = resampled_trimmed_means(draw_counts(picks, size), [values, per_w, reversed_order])
    for footing, result in zip([values, per_w, reversed_order], means, strict=True):
        np.testing.assert_allclose(result, trimmed_mean(footing[:, picks]), rtol=1e-12, atol=1e-12)
    complete = values[8, picks]  # [B, n] resamples of a row without NaN
    np.testing.assert_allclose(means[0][8], scipy_stats.trim_mean(complete, TRIM, axis=1), rtol=1e-12)
    longer = rng.integers(0, size, size=(50, size + 3))  # resamples need not have n draws
    complete_rows = values[8:]
    np.testing.assert_allclose(
        resampled_trimmed_means(draw_counts(longer, size), [complete_rows])[0],
        trimmed_mean(complete_rows[:, longer]),
        rtol=1e-12,
        atol=1e-12,
    )


def test_draw_counts_count_each_sample_of_each_resample():
    picks = np.array([[0, 0, 2], [1, 2, 2]])
    np.testing.assert_array_equal(draw_counts(picks, 4), [[2, 0], [0, 1], [1, 2], [0, 0]])


def _resampled_effect_ci(footings, null_effects, comparisons, n_boot, seed, ci):
    """The bootstrap of the effect's interval by sorting every resample: what the draw counts must reproduce."""
    units, measures, _ = footings[0].shape
    low, high = np.full((units, measures), np.nan), np.full((units, measures), np.nan)
    rng = np.random.default_rng(seed)
    n_directions = len(null_effects[0])
    direction_picks = rng.integers(0, n_directions, size=(n_boot, n_directions))
    location = [np.nanmean(effects[direction_picks], axis=1) for effects in null_effects]
    scale = [np.nanstd(effects[direction_picks], axis=1, ddof=1) for effects in null_effects]
    samples = (~np.isnan(footings[0])).any(axis=1).sum(axis=1)
    for n in np.unique(samples):
        picks = rng.integers(0, n, size=(n_boot, n))
        members = np.flatnonzero(samples == n)
        effects, strengths = [], []
        for values, mean, spread, comparison in zip(footings, location, scale, comparisons, strict=True):
            difference = trimmed_mean(values[members, :, :n][:, :, picks]) - mean.T[None]
            effects.append(difference / spread.T[None])
            noise = spread.T[None] ** 2 * (1 + 1 / n_directions) + comparison.excess[members][..., None]
            strengths.append(np.nan_to_num(np.abs(difference) / np.sqrt(noise), nan=-1.0))
        chosen = np.where(strengths[1] > strengths[0], effects[1], effects[0])
        tails = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
        low[members], high[members] = np.nanpercentile(chosen, tails, axis=2)
    return low, high


@pytest.mark.parametrize("workers", [1, 2])
def test_the_effect_interval_is_the_bootstrap_of_sorted_resamples_with_the_same_draws(workers):
    rng = np.random.default_rng(11)
    units, measures, samples, directions = 11, 4, 9, 6
    values = rng.standard_t(4, size=(units, measures, samples)) + rng.normal(size=(units, measures, 1))
    values[2, :, 7:] = np.nan  # a unit with fewer samples draws from its own resampling indices
    values[5, 1, :3] = np.nan  # a measure missing in a few samples
    per_w = values / rng.uniform(0.5, 3.0, size=(units, 1, 1))
    null_effects = (rng.normal(size=(directions, measures)), rng.normal(size=(directions, measures)))
    comparisons = tuple(
        _Comparison(*(np.zeros((units, measures)) for _ in range(5)), excess=rng.uniform(0, 0.5, (units, measures)))
        for _ in range(2)
    )
    low, high = _bootstrap_effect_ci((values, per_w), null_effects, comparisons, 300, 4, 0.9, workers)
    expected_low, expected_high = _resampled_effect_ci((values, per_w), null_effects, comparisons, 300, 4, 0.9)
    np.testing.assert_allclose(low, expected_low, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(high, expected_high, rtol=1e-12, atol=1e-12)
    assert np.all(low < high)


def test_the_interval_widens_when_few_random_directions_leave_the_null_uncertain():
    rng = np.random.default_rng(5)
    slopes = np.zeros((1, len(MEASURES)))
    slopes[0, 0] = 2.0
    changes = sweeps(rng, slopes, np.ones(1), 24, 0.02, np.arange(1))
    widths = {}
    for directions in (5, 60):
        nulls = null_table(np.random.default_rng(directions), directions, 24, 0.2, 0.02)
        row = unit_concepts(changes, nulls, MEASURES, n_boot=400, seed=1).iloc[0]
        assert row["ci_low"] <= row["effect"] <= row["ci_high"]
        widths[directions] = (row["ci_high"] - row["ci_low"]) / abs(row["effect"])
    # With the null's mean and spread held fixed the width would not depend on the directions.
    assert widths[5] > 2 * widths[60]


def test_a_unit_that_moves_a_measure_one_way_in_one_class_and_the_other_way_in_another_is_not_pooled():
    rng = np.random.default_rng(6)
    units, samples = 3, 24
    slopes = np.zeros((units, len(MEASURES)))
    slopes[:, 0] = 3.0
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    # Unit 1 lowers object.x in class 1 as far as it raises it in class 0.
    flipped = (changes["unit"] == 1) & (changes["class"] == 1)
    changes.loc[flipped, "object.x"] = (
        2 * changes.loc[flipped].groupby("sample")["object.x"].transform("first") - changes.loc[flipped, "object.x"]
    )
    nulls = null_table(rng, 32, samples, 0.2, 0.05)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    assert tuple(concepts.columns) == CONCEPT_COLUMNS
    concepts = concepts.set_index(["unit", "measure"])
    kept, flipped_row = concepts.loc[(0, "object.x")], concepts.loc[(1, "object.x")]
    assert kept["classes_agree"] and kept["selective"]
    assert kept["class_effect_min"] > 5 and kept["class_effect_max"] > 5
    assert not flipped_row["classes_agree"] and not flipped_row["selective"]
    assert flipped_row["class_effect_min"] < -5 and flipped_row["class_effect_max"] > 5


def test_a_unit_whose_sweep_does_not_move_its_own_activation_gets_no_unique_label():
    rng = np.random.default_rng(7)
    units, samples = 4, 24
    slopes = np.zeros((units, len(MEASURES)))
    slopes[:, 0] = 3.0
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    # Unit 2's re-encoded activation stays where it was whatever is requested.
    stuck = changes["unit"] == 2
    changes.loc[stuck, "achieved"] = 0.1 * rng.standard_normal(int(stuck.sum()))
    nulls = null_table(rng, 32, samples, 0.2, 0.05)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    summary = unit_summary(concepts, changes, min_control_slope=0.5).set_index("unit")
    assert concepts.set_index(["unit", "measure"]).loc[(2, "object.x"), "selective"]
    assert not summary.loc[2, "controllable"] and pd.isna(summary.loc[2, "unique_measure"])
    assert summary.loc[2, "unique_gate"] == "controllability"
    assert summary.loc[0, "controllable"] and summary.loc[0, "unique_measure"] == "object.x"
    assert summary.loc[0, "unique_gate"] == "labelled" and summary.loc[0, "unique_sign"] == 1


def test_the_gate_names_what_stopped_the_strongest_candidate():
    concepts = pd.DataFrame(
        {
            "unit": [0, 1, 2, 3],
            "measure": ["object.x"] * 4,
            "effect": [1.0, 9.0, 9.0, 9.0],
            "t_mean": [20.0, 3.0, 3.0, 20.0],
            "natural_change": [1.0, 1.0, 1.0, 1.0],
            "q": [0.01, 0.5, 0.5, 0.01],
            "p": [0.001, 0.2, 0.2, 0.001],
            "p_link": [0.001, 0.2, 0.01, 0.001],
            "classes_agree": [True, True, True, False],
            "selective": [False] * 4,
        }
    )
    rng = np.random.default_rng(8)
    changes = sweeps(rng, np.zeros((4, len(MEASURES))), np.ones(4), 4, 0.05, np.arange(4))
    gates = unit_summary(concepts, changes, q=0.05, min_effect=2.0)["unique_gate"].tolist()
    assert gates == ["effect", "link column", "q", "classes"]


def test_tuning_finds_the_within_class_association_and_ignores_class_differences():
    rng = np.random.default_rng(9)
    n, classes = 600, np.repeat(np.arange(3), 200)
    statistic = rng.standard_normal(n)
    observed = pd.DataFrame(
        {
            "object.x": statistic,
            "object.area": rng.standard_normal(n) + 3 * classes,
            "object.y": rng.standard_normal(n),
            "image.motion": 0.0,
        }
    )
    r = rng.standard_normal((n, 40))
    r[:, 0] = np.tanh(1.5 * statistic) + 0.3 * rng.standard_normal(n)  # tuned to x, monotone
    r[:, 1] = classes + 0.01 * rng.standard_normal(n)  # differs between classes only, like area
    r[:, 2] = 0.0  # a dead unit
    tuning = unit_tuning(
        r, np.arange(40), classes, observed, list(observed.columns),
        permutations=200, seed=0, q=0.05, min_association=0.1,
    )  # fmt: skip
    assert tuple(tuning.columns) == TUNING_COLUMNS
    tuning = tuning.set_index(["unit", "measure"])
    assert "image.motion" not in tuning.index.get_level_values("measure")
    assert tuning.loc[(0, "object.x"), "selective"] and tuning.loc[(0, "object.x"), "association"] > 0.8
    assert not tuning.loc[(1, "object.area"), "selective"]
    assert tuning.loc[2, "p"].isna().all()
    noise = tuning.drop(index=[0, 1, 2], level="unit")
    # The permutation-calibrated p-values of independent units are close to uniform.
    assert noise["selective"].mean() <= 0.01
    assert 0.02 <= (noise["p"] <= 0.05).mean() <= 0.09


@pytest.mark.parametrize("batch_columns", [1, 7, 4096])
def test_tuning_shuffles_in_batches_give_the_null_of_one_shuffle_at_a_time(batch_columns, monkeypatch):
    monkeypatch.setattr("pipeline.stats.TUNING_BATCH_COLUMNS", batch_columns)
    rng = np.random.default_rng(12)
    n, classes = 90, np.repeat(np.arange(3), 30)
    measures = ["object.x", "object.area", "object.y"]
    observed = pd.DataFrame(rng.standard_normal((n, 3)), columns=measures)
    r = rng.standard_normal((n, 5))
    r[:, 0] += observed["object.x"]
    tuning = unit_tuning(
        r, np.arange(5), classes, observed, measures, permutations=23, seed=3, q=0.05, min_association=0
    )

    def ranks(values):  # within each class, centred
        ranked = np.zeros_like(values)
        for c in range(3):
            ranked[classes == c] = scipy_stats.rankdata(values[classes == c], axis=0)
            ranked[classes == c] -= ranked[classes == c].mean(axis=0)
        return ranked

    unit_ranks, measure_ranks = ranks(r), ranks(observed.to_numpy())
    groups = [np.flatnonzero(classes == c) for c in range(3)]
    shuffle_rng, shuffled_sq = np.random.default_rng(3), np.zeros((5, 3))
    for _ in range(23):
        permuted = np.empty_like(measure_ranks)
        permuted[np.concatenate(groups)] = measure_ranks[np.concatenate([shuffle_rng.permutation(g) for g in groups])]
        norms = np.sqrt((unit_ranks**2).sum(0))[:, None] * np.sqrt((permuted**2).sum(0))[None, :]
        shuffled_sq += (unit_ranks.T @ permuted / norms) ** 2
    scale = np.sqrt((unit_ranks**2).sum(0))[:, None] * np.sqrt((measure_ranks**2).sum(0))[None, :]
    association = unit_ranks.T @ measure_ranks / scale
    expected = 2 * scipy_stats.norm.sf(np.abs(association) / np.sqrt(shuffled_sq / 23))
    np.testing.assert_allclose(tuning["p"].to_numpy().reshape(5, 3), expected, rtol=1e-9)


def test_redundancy_is_high_for_a_unit_the_others_carry_and_near_zero_for_one_they_do_not():
    rng = np.random.default_rng(10)
    r = rng.standard_normal((400, 30))
    r[:, 1] = r[:, 0] + 0.05 * rng.standard_normal(400)
    r[:, 2] = 0.0
    residuals, r2 = held_out_residuals(r, folds=4, alphas=(0.01, 0.1, 1.0), seed=0)
    redundancy = unit_redundancy(r2, np.array([0, 1, 2, 3]))
    assert redundancy[0] > 0.95 and redundancy[1] > 0.95
    assert np.isnan(redundancy[2]) and abs(redundancy[3]) < 0.1
    # What the others do not predict of an independent unit is the unit; of a constant one, nothing.
    assert np.corrcoef(residuals[:, 3], r[:, 3])[0, 1] > 0.95
    assert np.all(residuals[:, 2] == 0.0)


def test_a_units_duplicates_are_not_part_of_the_rest_of_the_layer():
    rng = np.random.default_rng(12)
    r = rng.standard_normal((300, 12))
    r[:, 1] = 0.6 * r[:, 0] + 0.8 * rng.standard_normal(300)  # carries part of unit 0
    with_copies = np.column_stack([r, 2.0 * r[:, 0] + 1.0, -r[:, 0]])
    assert list(duplicate_representatives(with_copies)[[0, 12, 13]]) == [0, 0, 0]
    alone_residuals, alone_r2 = held_out_residuals(r, folds=3, alphas=(0.1, 1.0), seed=0)
    residuals, r2 = held_out_residuals(with_copies, folds=3, alphas=(0.1, 1.0), seed=0)
    # Each copy's rest is the rest of unit 0's, and its residual unit 0's times the exact factor.
    assert r2[12] == r2[13] == r2[0] == pytest.approx(alone_r2[0])
    np.testing.assert_allclose(residuals[:, 0], alone_residuals[:, 0], atol=1e-10)
    np.testing.assert_allclose(residuals[:, 12], 2.0 * alone_residuals[:, 0], atol=1e-10)
    np.testing.assert_allclose(residuals[:, 13], -alone_residuals[:, 0], atol=1e-10)


def test_held_out_residuals_match_a_ridge_fitted_fold_by_fold():
    rng = np.random.default_rng(13)
    r = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 5))
    folds, alpha = 3, 0.1
    residuals, _ = held_out_residuals(r, folds=folds, alphas=(alpha,), seed=4)
    fold_of = np.random.default_rng(4).permutation(len(r)) % folds
    expected = np.zeros_like(r)
    for fold in range(folds):
        train, test = r[fold_of != fold], r[fold_of == fold]
        mean, std = train.mean(axis=0), train.std(axis=0)
        for unit in range(r.shape[1]):
            others = [k for k in range(r.shape[1]) if k != unit]
            x_train, x_test = (
                (train[:, others] - mean[others]) / std[others],
                (test[:, others] - mean[others]) / std[others],
            )
            y_train = (train[:, unit] - mean[unit]) / std[unit]
            coefficients = np.linalg.solve(
                x_train.T @ x_train + alpha * len(train) * np.eye(len(others)), x_train.T @ y_train
            )
            predicted = x_test @ coefficients
            expected[fold_of == fold, unit] = ((test[:, unit] - mean[unit]) / std[unit] - predicted) * std[unit]
    np.testing.assert_allclose(residuals, expected, atol=1e-9)


def test_a_copy_that_passes_a_fraction_of_the_request_on_is_controllable_and_a_noise_unit_is_not():
    rng = np.random.default_rng(11)
    units, samples = 3, 24
    slopes = np.zeros((units, len(MEASURES)))
    slopes[:, 0] = 3.0
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    requested = changes["requested"].to_numpy()
    noise = 0.1 * rng.standard_normal(len(changes))
    # Unit 0 is fully controlled, unit 1 one of four copies (a quarter of the request
    # arrives), unit 2 a noise unit whose re-encoded activation ignores the request.
    share = changes["unit"].map({0: 1.0, 1: 0.25, 2: 0.0}).to_numpy()
    changes["achieved"] = share * requested + noise
    nulls = null_table(rng, 32, samples, 0.2, 0.05)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0)
    summary = unit_summary(concepts, changes, min_control_slope=0.1).set_index("unit")
    assert summary.loc[1, "slope"] == pytest.approx(0.25, abs=0.05)
    assert summary.loc[0, "controllable"] and summary.loc[1, "controllable"]
    assert summary.loc[0, "control_q"] < 1e-6 and summary.loc[1, "control_q"] < 1e-3
    assert not summary.loc[2, "controllable"] and summary.loc[2, "control_q"] > 0.05
    assert summary.loc[1, "unique_measure"] == "object.x" and summary.loc[2, "unique_gate"] == "controllability"
    # A floor above the copy's share still stops it.
    assert not unit_summary(concepts, changes, min_control_slope=0.5).set_index("unit").loc[1, "controllable"]


def test_the_unique_label_names_the_measure_moved_both_reliably_and_far():
    # Unit 0 raises redness; holding a redness-and-x mixture fixed, its sweep lowers x as
    # reliably but less far in natural standard deviations. Unit 1 brightens the
    # background, which also tints it: the tint is far in natural terms (a near-grey
    # background's saturation hardly varies) but varies from image to image.
    concepts = pd.DataFrame(
        {
            "unit": [0, 0, 1, 1],
            "measure": ["object.redness", "object.x", "background.luminance", "background.saturation"],
            "effect": [6.0, -6.4, 3.6, 6.2],
            "t_mean": [14.1, -14.8, 70.2, 15.6],
            "natural_change": [0.94, -0.64, 3.75, 6.98],
            "q": [1e-20] * 4,
            "p": [1e-22] * 4,
            "p_link": [0.0] * 4,
            "classes_agree": [True] * 4,
            "selective": [True] * 4,
        }
    )
    changes = sweeps(np.random.default_rng(12), np.zeros((2, len(MEASURES))), np.ones(2), 4, 0.05, np.arange(2))
    summary = unit_summary(concepts, changes).set_index("unit")
    assert summary.loc[0, "unique_measure"] == "object.redness" and summary.loc[0, "unique_effect"] == 6.0
    assert summary.loc[1, "unique_measure"] == "background.luminance"


def test_the_unique_label_names_a_change_the_units_residual_reads():
    # Unit 0's sweep moves leg length furthest and coat luminance less: its link column
    # carries the breeds' legs, but what the unit adds beyond the layer reads luminance.
    # Unit 1's residual reads x, against the direction its sweep moved x. Unit 2's residual
    # reads a part's hue only as the whole object's hue (not beyond the whole).
    concepts = pd.DataFrame(
        {
            "unit": [0, 0, 1, 2, 2],
            "measure": ["part:leg.major", "object.luminance", "object.x", "part:ear.hue", "object.hue"],
            "effect": [-2.5, 3.3, 4.0, 3.0, 2.5],
            "t_mean": [-63.0, 40.0, 30.0, 50.0, 20.0],
            "natural_change": [-4.6, 1.8, 2.0, 4.0, 1.0],
            "q": [1e-20] * 5,
            "p": [1e-22] * 5,
            "p_link": [0.0] * 5,
            "classes_agree": [True] * 5,
            "selective": [True] * 5,
            "beyond_object": [True] * 5,
            "residual_association": [-0.02, 0.42, -0.35, 0.30, 0.28],
            "residual_q": [0.6, 1e-30, 1e-20, 1e-15, 1e-14],
            "residual_beyond_object": [True, True, True, False, True],
        }
    )
    changes = sweeps(np.random.default_rng(14), np.zeros((3, len(MEASURES))), np.ones(3), 4, 0.05, np.arange(3))
    summary = unit_summary(concepts, changes).set_index("unit")
    assert summary.loc[0, "unique_measure"] == "object.luminance"
    assert summary.loc[0, "unique_residual_association"] == pytest.approx(0.42)
    assert pd.isna(summary.loc[1, "unique_measure"]) and summary.loc[1, "unique_gate"] == "residual"
    assert summary.loc[2, "unique_measure"] == "object.hue"
    # Without the residual's columns the sweep alone names the label.
    alone = unit_summary(concepts.drop(columns=list(RESIDUAL_COLUMNS)), changes).set_index("unit")
    assert alone.loc[0, "unique_measure"] == "part:leg.major" and alone.loc[1, "unique_measure"] == "object.x"


def test_a_unit_three_direction_spreads_out_is_labelled_when_its_own_samples_are_clear():
    # In a small layer of clean functions every random direction moves some measure, so a
    # planted unit is only about three of their spreads out, which no p-value against a few
    # dozen directions resolves through BH; its own samples leave no doubt.
    rng = np.random.default_rng(13)
    units, samples = 20, 16
    slopes = np.zeros((units, len(MEASURES)))
    slopes[0, 1] = 0.5
    changes = sweeps(rng, slopes, np.ones(units), samples, 0.05, np.arange(units))
    nulls = null_table(rng, 24, samples, 0.2, 0.05)
    concepts = unit_concepts(changes, nulls, MEASURES, n_boot=0).set_index(["unit", "measure"])
    row = concepts.loc[(0, "object.area")]
    assert 2.0 <= row["effect"] <= 4.5 and row["p_random"] > 1e-3
    assert row["q"] < 1e-6 and row["selective"]
    assert concepts.drop(index=0, level="unit")["selective"].sum() == 0
