"""Calibration of the sweep's p-values under the null units, by number of random directions.

Reads a finished planted-unit run (``results/{run}``: its activation and null tables, the
link's column tests and, through ``concepts/validation.json``, the planted classifier) and recomputes the concepts with
random subsets of its random directions, ``--repeats`` subsets per size. For each size J
it prints, over every null unit x measure test: the share of ``p_random`` (against the
random directions), of ``p_change`` (the sweep's change against no change, which with the
link column decides ``p``) and of ``p`` at or below 0.05, 0.01 and 0.001 (a calibrated test
gives about those shares, a conservative one less), the Kolmogorov-Smirnov distance of
``p_random`` and of ``p_change`` from uniform, and the per-test
false-positive rate (selective null tests); over the planted units: the median
-log10 ``p`` of their strongest measure, and how many units got a unique label. A run
with more directions than the default (``tuning.null_directions``) lets the sizes go
beyond it.

Usage: python bench/null_calibration.py results/validation-calibration [--sizes 6 12 24 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from pipeline.measures import selected_measures  # noqa: E402
from pipeline.models import load_classifier  # noqa: E402
from pipeline.stats import RANDOM_DIRECTION, unit_concepts  # noqa: E402
from pipeline.store import read_json, read_parquet  # noqa: E402

LEVELS = (0.05, 0.01, 0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24, 48])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    changes = read_parquet(args.run / "tables/activation_changes.parquet")
    nulls = read_parquet(args.run / "tables/null_controls.parquet")
    column_p = read_parquet(args.run / "link/units.parquet").set_index("unit")["p"]
    classifier = read_json(args.run / "concepts/validation.json")["classifier"]
    swept = set(changes["unit"].unique())
    truth = {unit: measure for unit, measure in load_classifier(classifier).unit_truth.items() if unit in swept}
    null_units = [unit for unit, measure in truth.items() if measure is None]
    planted = [unit for unit, measure in truth.items() if measure is not None]
    measures = selected_measures(changes.columns, "all")
    directions = np.sort(nulls.loc[nulls["control"] == RANDOM_DIRECTION, "unit"].unique())
    print(f"run={args.run} directions_available={len(directions)} null_units={len(null_units)} planted={len(planted)}")
    rng = np.random.default_rng(args.seed)
    for size in args.sizes:
        if size > len(directions):
            print(f"J={size} skipped: the run has {len(directions)} directions")
            continue
        rows = []
        for _ in range(args.repeats if size < len(directions) else 1):
            kept = rng.choice(directions, size=size, replace=False)
            subset = nulls[(nulls["control"] != RANDOM_DIRECTION) | nulls["unit"].isin(kept)]
            concepts = unit_concepts(changes, subset, measures, n_boot=0, column_p=column_p)
            null_tests = concepts[concepts["unit"].isin(null_units)]
            planted_tests = concepts[concepts["unit"].isin(planted)]
            p_random = null_tests["p_random"].dropna().to_numpy()
            p_change = null_tests["p_change"].dropna().to_numpy()
            strongest = planted_tests.loc[planted_tests.groupby("unit")["p"].idxmin()]
            rows.append(
                [
                    *(np.mean(p_random <= level) for level in LEVELS),
                    *(np.mean(p_change <= level) for level in LEVELS),
                    *(np.mean(null_tests["p"].dropna() <= level) for level in LEVELS),
                    scipy_stats.kstest(p_random, "uniform").statistic,
                    scipy_stats.kstest(p_change, "uniform").statistic,
                    null_tests["selective"].mean(),
                    np.median(-np.log10(strongest["p"].clip(lower=1e-300))),
                    planted_tests.groupby("unit")["selective"].any().sum(),
                ]
            )
        mean = np.mean(rows, axis=0)
        names = [f"{p}_le_{level}" for p in ("p_random", "p_change", "p") for level in LEVELS]
        names += ["ks_p_random", "ks_p_change", "null_false_positive_rate"]
        names += ["planted_median_neglog10_p", "planted_selective_units"]
        print(f"J={size} " + " ".join(f"{name}={value:.4g}" for name, value in zip(names, mean, strict=True)))


if __name__ == "__main__":
    main()
