"""Adaptive sampling: stop rendering base samples for a unit once its statistics are decided.

The generator is almost all of the cost of the perturbation stage, and most units are
decided long before their last base sample: they move no measure anywhere near what
selectivity needs. Samples therefore arrive in *looks*: each look adds ``look_size`` base
samples of every class, in an order seeded per unit (so a run's savings and labels average
over many orders instead of hanging on one draw of first samples); the active units are
rendered on them, and :meth:`SequentialTest.decide` tests every unit x measure on the
samples so far with :func:`pipeline.stats.unit_concepts`. A unit whose every measure is
decided stops; a unit never decided gets every sample, exactly as in the fixed design. The
final labels are :func:`pipeline.stats.unit_concepts` on whatever was rendered.

A test (unit x measure) is decided after ``n_k`` of ``n`` samples when it is

- *futile*: its p-value is above ``phi = q * discovery_fraction``, and it could not become
  selective by the last sample even if its remaining samples came out ``futility_z``
  predictive standard deviations more extreme than its estimate so far. Given ``n_k``
  samples, the final trimmed change has predictive variance ``se_k^2 (1 - n_k / n)`` (the
  squared standard error now minus the final one, ``se_k^2 n_k / n``). From these come the
  optimistic final |effect| and the test statistics of :mod:`pipeline.stats`, and "could
  become selective" means |effect| reaching ``min_effect`` in either comparison with random
  directions (as is or per unit of w), the test of the change
  (:func:`pipeline.stats.change_test`) reaching the ``phi`` quantile of the normal (its
  degrees of freedom are unknown in advance, and the normal asks least), and the
  link-column p-value, which no sample changes, being at most ``phi``. That prediction
  serves only the agreement with the fixed design; the FDR rests on ``p > phi``;
- *efficacious*: at a look with at least ``MIN_EFFICACY_SAMPLES`` samples (never the last),
  ``p <= c = efficacy_alpha / (N L)`` and ``|effect| >= min_effect``, with ``N`` the tests of
  the whole run (units x measures) and ``L`` the looks where efficacy may stop.

A unit with several efficacious measures does not stop early: which of them
:func:`pipeline.stats.unit_summary` names (by how reliably and how far the sweep moves each,
the latter on the natural scale of the final analysis) is settled only by every sample.

Why the FDR holds. Call a test a discovery when its BH ``q <= q_level`` (selective adds
``|effect| >= min_effect`` in both designs alike). Compare the final analysis with a
reference: BH on p-values ``p'`` equal to the final ones except that futility-stopped tests
get ``p' = 1``. For a null test, ``p'`` is the fixed design's p-value unless the unit
stopped: futility makes it 1, and efficacy happens with probability at most
``L c = efficacy_alpha / N`` (each look's p-value being valid at its own sample size). So
``P(p' <= t) <= t + efficacy_alpha / N`` for every t, and BH's proof, under the same
independence or positive dependence the fixed design relies on, bounds the reference's
FDR by ``(q + efficacy_alpha) N0 / N`` (``efficacy_alpha = 0``: the fixed design's
``q N0 / N``). The final analysis rejects exactly what the reference rejects unless a
futility-stopped test ends a discovery, which needs the BH threshold ``q R / N`` above
``phi``, i.e. more than ``discovery_fraction * N`` discoveries. Hence FDR <=
``(q + efficacy_alpha) N0 / N`` + P(a futility-stopped test ends a discovery), the last term
being 0 while discoveries stay within ``discovery_fraction``; :func:`futile_discoveries`
checks a finished run, and ``discovery_fraction = 1`` (``phi = q``) removes the term at a
cost in renders. An efficacy-stopped test has ``q <= p N / rank <= efficacy_alpha < q_level``
whatever the other tests do, and its |effect| comes from the same samples, so its stop
fixes its final label.

Decisions wait for ``MIN_DECISION_SAMPLES`` and efficacy for ``MIN_EFFICACY_SAMPLES``: the
random-direction test estimates the unit's own noise from its samples, and from a handful
that estimate is too unstable for a p-value as extreme as ``c`` (the first looks are also
the least balanced over whatever varies between base samples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from pipeline.measures import RELATIVE_QUANTITIES, measure_changes, quantity_of
from pipeline.stats import (
    AS_IS,
    DEFAULT_MIN_EFFECT,
    PER_W,
    RANDOM_DIRECTION,
    RERENDER,
    direction_null,
    sweep_distances,
    trimmed_mean,
    trimmed_mean_variance,
    unit_concepts,
    upper_tailed,
)

# A 20% trimmed mean of fewer keeps too few samples for a standard error to predict from.
MIN_DECISION_SAMPLES = 5
MIN_EFFICACY_SAMPLES = 16

FUTILE, EFFICACIOUS, OPEN = "futile", "efficacious", "open"


@dataclass(frozen=True)
class Design:
    """The constants of the decision rule for one run.

    ``looks`` are the cumulative sample counts after each look (the last is every sample);
    ``n_tests`` is N, the units x measures of the whole run that BH will count.
    """

    n_tests: int
    looks: tuple[int, ...]
    q: float = 0.05
    min_effect: float = DEFAULT_MIN_EFFECT
    futility_z: float = 1.0
    discovery_fraction: float = 0.02
    efficacy_alpha: float = 0.001

    @classmethod
    def from_config(cls, n_tests: int, looks: Sequence[np.ndarray], adaptive: Mapping, concepts: Mapping) -> Design:
        """The design for ``n_tests`` tests sampled in ``looks`` (one unit's, as :func:`look_schedule`
        gives them), from the config's ``tuning.adaptive`` and ``concepts`` sections."""
        return cls(
            n_tests=n_tests,
            looks=tuple(int(n) for n in np.cumsum([len(look) for look in looks])),
            q=concepts["q"],
            min_effect=concepts["min_effect"],
            futility_z=adaptive["futility_z"],
            discovery_fraction=adaptive["discovery_fraction"],
            efficacy_alpha=adaptive["efficacy_alpha"],
        )

    def __post_init__(self) -> None:
        if self.n_tests < 1 or not self.looks or np.any(np.diff(self.looks) <= 0) or self.looks[0] < 1:
            raise ValueError(f"adaptive design: need tests and increasing look sizes, got {self.n_tests}, {self.looks}")

    @property
    def futility_p(self) -> float:
        return self.q * self.discovery_fraction

    @property
    def efficacy_looks(self) -> tuple[int, ...]:
        """Indices of the looks at which a test may stop for efficacy (never the last: it ends anyway)."""
        if self.efficacy_alpha <= 0:
            return ()
        return tuple(k for k, n in enumerate(self.looks[:-1]) if n >= MIN_EFFICACY_SAMPLES)

    @property
    def efficacy_p(self) -> float:
        looks = len(self.efficacy_looks)
        return self.efficacy_alpha / (self.n_tests * looks) if looks else 0.0


def look_schedule(
    samples: np.ndarray, classes: np.ndarray, look_size: int, seed: int | Sequence[int]
) -> list[np.ndarray]:
    """Sample ids per look: ``look_size`` of every class per look, in a seeded order within each class.

    A class with fewer samples than the others runs out early; the later looks hold the rest.
    """
    if look_size < 1:
        raise ValueError(f"adaptive: look_size must be at least 1, got {look_size}")
    rng = np.random.default_rng(seed)
    samples, classes = np.asarray(samples), np.asarray(classes)
    orders = [rng.permutation(samples[classes == c]) for c in np.unique(classes)]
    count = max(-(-len(order) // look_size) for order in orders)
    return [
        np.sort(np.concatenate([order[k * look_size : (k + 1) * look_size] for order in orders])) for k in range(count)
    ]


class SequentialTest:
    """The decision rule of the module docstring over fixed null controls."""

    def __init__(self, nulls: pd.DataFrame, measures: Sequence[str], design: Design, column_p: pd.Series | None = None):
        self.nulls = nulls
        self.column_p = column_p
        self.measures = list(measures)
        self.design = design
        null_changes = measure_changes(nulls, self.measures, by=("control", "unit", "sample"))
        directions = null_changes[null_changes["control"] == RANDOM_DIRECTION]
        distances = sweep_distances(nulls[nulls["control"] == RANDOM_DIRECTION])
        self.direction_nulls = {
            AS_IS: direction_null(directions, self.measures),
            PER_W: direction_null(directions, self.measures, distances),
        }
        self.n_directions = self.direction_nulls[AS_IS][3]
        chain = null_changes.loc[null_changes["control"] == RERENDER, self.measures].to_numpy(np.float64).T
        self.upper_only = upper_tailed(self.measures)
        # pipeline.stats.change_test: signed measures against no change, magnitudes against the chain.
        self.reference_change = np.where(self.upper_only, trimmed_mean(chain), 0.0)
        self.reference_variance = np.where(self.upper_only, np.nan_to_num(trimmed_mean_variance(chain)[0]), 0.0)
        self.is_motion = np.array([quantity_of(m) in RELATIVE_QUANTITIES for m in self.measures])
        tail = np.where(self.upper_only, design.futility_p, design.futility_p / 2)
        self.z_needed = scipy_stats.norm.isf(tail)

    def decide(self, changes: pd.DataFrame, look: int) -> pd.DataFrame:
        """One row per unit x measure of ``changes`` (the samples of looks ``0..look``).

        Columns: ``unit``, ``measure``, ``effect``, ``p`` and ``decision`` (futile,
        efficacious, open).
        """
        design = self.design
        concepts = unit_concepts(
            changes,
            self.nulls,
            self.measures,
            n_boot=0,
            q=design.q,
            min_effect=design.min_effect,
            column_p=self.column_p,
        )
        shape = (concepts["unit"].nunique(), len(self.measures))

        def column(name: str) -> np.ndarray:
            return concepts[name].to_numpy(np.float64).reshape(shape)

        effect, p, change, distance, link_p = (
            column(c) for c in ("effect", "p", "trimmed_change", "w_distance", "p_link")
        )
        per_sample = measure_changes(changes, self.measures, by=("unit", "sample"))
        variance = np.stack(
            [trimmed_mean_variance(g[self.measures].to_numpy(np.float64).T)[0] for _, g in per_sample.groupby("unit")]
        )
        seen = design.looks[look] / design.looks[-1]
        future_sd = np.sqrt(variance * (1 - seen))
        final_variance = variance * seen

        def optimistic(shift: np.ndarray, sd: np.ndarray) -> np.ndarray:
            return np.where(self.upper_only, shift, np.abs(shift)) + design.futility_z * sd

        def beats_directions(footing: str, divisor: np.ndarray | float) -> np.ndarray:
            """Whether the effect against random directions on ``footing`` could still reach ``min_effect``."""
            null_mean, null_sd = self.direction_nulls[footing][:2]
            shift = optimistic(change / divisor - null_mean, future_sd / divisor)
            return shift / null_sd >= design.min_effect

        # Random directions are compared as is and per unit of w (pipeline.stats).
        with np.errstate(invalid="ignore", divide="ignore"):
            change_shift = optimistic(change - self.reference_change, future_sd)
            reachable = (
                (beats_directions(AS_IS, 1.0) | beats_directions(PER_W, distance))
                & (change_shift / np.sqrt(final_variance + self.reference_variance) >= self.z_needed)
                # The link's column is fixed: more samples cannot make it more than fitting noise.
                & ~(link_p > design.futility_p)
            )
        # NaN comparisons are false: a test without a p-value yet stays open.
        futile = ~reachable & (p > design.futility_p)
        efficacious = (look in design.efficacy_looks) & (p <= design.efficacy_p) & (np.abs(effect) >= design.min_effect)
        decision = np.where(efficacious, EFFICACIOUS, np.where(futile, FUTILE, OPEN))
        return pd.DataFrame(
            {
                "unit": concepts["unit"].to_numpy(),
                "measure": concepts["measure"].to_numpy(),
                "effect": effect.ravel(),
                "p": p.ravel(),
                "decision": decision.ravel(),
            }
        )

    def stopping(self, decisions: pd.DataFrame) -> np.ndarray:
        """Units whose every measure is decided and whose top concept is settled."""
        stops = []
        for unit, rows in decisions.groupby("unit", sort=True):
            if (rows["decision"] == OPEN).any():
                continue
            chosen = rows["decision"].to_numpy() == EFFICACIOUS
            # unit_summary ranks motion last: it says how much moved, not what changed.
            motion = self.is_motion[chosen]
            if motion.size and (motion == motion.min()).sum() > 1:
                continue
            stops.append(unit)
        return np.asarray(stops, dtype=np.int64)

    def run(
        self, render: Callable[[np.ndarray, np.ndarray], pd.DataFrame], schedule: Mapping[int, Sequence[np.ndarray]]
    ) -> tuple[pd.DataFrame, list[dict]]:
        """Render look by look and stop decided units.

        ``schedule`` maps each unit to its looks (sample ids, as :func:`look_schedule` gives
        them); ``render(units, samples)`` returns the long table (one row per unit, sample,
        step) of the sweeps of ``units[i]`` on ``samples[i]``. Returns every rendered row,
        sorted by unit, sample and step, and per unit: ``unit``, ``samples`` rendered,
        ``look`` it stopped after (None: it got every sample) and its ``efficacious`` measures.
        """
        sizes = list(np.diff(self.design.looks, prepend=0))
        if any([len(look) for look in looks] != sizes for looks in schedule.values()):
            raise ValueError("adaptive: the looks do not match the design's sample counts")
        active = np.asarray(sorted(schedule), dtype=np.int64)
        every = int(self.design.looks[-1])
        outcome = {int(u): {"unit": int(u), "samples": every, "look": None, "efficacious": []} for u in active}
        tables: list[pd.DataFrame] = []
        for look in range(len(sizes)):
            samples = [np.asarray(schedule[unit][look]) for unit in active]
            tables.append(render(np.repeat(active, sizes[look]), np.concatenate(samples)))
            if look == len(sizes) - 1:
                break
            if self.design.looks[look] < MIN_DECISION_SAMPLES:
                continue
            rendered = pd.concat(tables, ignore_index=True)
            decisions = self.decide(rendered[rendered["unit"].isin(active)], look)
            stopped = self.stopping(decisions)
            for unit in stopped:
                chosen = decisions[(decisions["unit"] == unit) & (decisions["decision"] == EFFICACIOUS)]
                outcome[int(unit)] |= {
                    "samples": int(self.design.looks[look]),
                    "look": look,
                    "efficacious": chosen["measure"].tolist(),
                }
            active = active[~np.isin(active, stopped)]
            if not active.size:
                break
        table = pd.concat(tables, ignore_index=True)
        table = table.sort_values(["unit", "sample", "step"], kind="stable").reset_index(drop=True)
        return table, list(outcome.values())


def futile_discoveries(concepts: pd.DataFrame, unit_outcomes: Sequence[Mapping], q_level: float) -> pd.DataFrame:
    """The rows of ``concepts`` that stopped as futile yet are BH discoveries (``q <= q_level``).

    ``unit_outcomes`` are :meth:`SequentialTest.run`'s per-unit records. Empty means the
    final analysis rejects what the reference of the module docstring rejects, so its FDR
    bound holds.
    """
    stopped = {o["unit"]: set(o["efficacious"]) for o in unit_outcomes if o["look"] is not None}
    futile = [
        unit in stopped and measure not in stopped[unit]
        for unit, measure in zip(concepts["unit"], concepts["measure"], strict=True)
    ]
    return concepts[np.asarray(futile, dtype=bool) & (concepts["q"] <= q_level).to_numpy()]
