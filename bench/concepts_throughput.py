"""Throughput of the concepts statistics on a synthetic input of the default run's size.

Builds sweeps of ``--units`` units x ``--measures`` measures (the default run's regions and
quantities: the image, object, background and seven parts) over ``--samples`` samples of
``--steps`` steps, with ``--directions`` random directions and one re-render chain as nulls,
and a fifth of each part's samples missing the part (NaN), as in the breeds world. It times
:func:`pipeline.stats.unit_concepts` (the sweeps' tests with ``--n-boot`` bootstrap
replicates of each effect's interval) for each worker count of ``--workers``, and
:func:`pipeline.stats.unit_tuning` (``--permutations`` within-class shuffles) over
``--natural`` natural samples, printing seconds and tests per second. The load average
before and after is printed with the figures: on a shared machine they are lower bounds.

Usage: python bench/concepts_throughput.py [--workers 1 2] [--units 512] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.stats import RANDOM_DIRECTION, RERENDER, unit_concepts, unit_tuning  # noqa: E402

IMAGE = ["image.motion", "image.motion_x", "image.motion_y"]
OBJECT = ["area", "x", "y", "eccentricity", "orientation", "hue", "saturation", "luminance", "redness", "entropy"]
BACKGROUND = ["hue", "saturation", "luminance", "redness", "entropy"]
PART = [*OBJECT[:5], "major", "minor", "dx", "dy", *OBJECT[5:]]
PARTS = ["body", "leg", "tail", "head", "snout", "ear", "eye"]
MEASURES = (
    IMAGE
    + [f"object.{quantity}" for quantity in OBJECT]
    + [f"background.{quantity}" for quantity in BACKGROUND]
    + [f"part:{part}.{quantity}" for part in PARTS for quantity in PART]
)
CLASSES = 6
PART_MISSING = 0.2


def sweep_table(
    rng: np.random.Generator, ids: np.ndarray, samples: int, steps: int, measures: list[str]
) -> pd.DataFrame:
    """Long table of sweeps of ``ids``: each unit moves each measure by its own slope per step, plus noise."""
    units = len(ids)
    slopes = rng.normal(0.0, 0.2, size=(units, 1, 1, len(measures)))
    noise = rng.normal(0.0, 0.05, size=(units, samples, steps, len(measures)))
    values = slopes * np.arange(steps)[None, None, :, None] + np.cumsum(noise, axis=2)
    parts = np.array([measure.startswith("part:") for measure in measures])
    absent = rng.random((units, samples, 1, len(measures))) < PART_MISSING
    values = np.where(absent & parts, np.nan, values)
    frame = pd.DataFrame(values.reshape(-1, len(measures)), columns=measures)
    unit, sample, step = np.meshgrid(ids, np.arange(samples), np.arange(steps), indexing="ij")
    keys = pd.DataFrame(
        {
            "unit": unit.ravel(),
            "class": sample.ravel() % CLASSES,
            "sample": sample.ravel(),
            "step": step.ravel(),
            "w_distance": step.ravel() * rng.uniform(0.5, 2.0, size=units).repeat(samples * steps),
        }
    )
    return pd.concat([keys, frame], axis=1)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="bootstrap threads to time in turn")
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--directions", type=int, default=48)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--natural", type=int, default=1200, help="natural samples for the tuning")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    changes = sweep_table(rng, np.arange(args.units), args.samples, args.steps, MEASURES)
    directions = sweep_table(rng, -1 - np.arange(args.directions), args.samples, args.steps, MEASURES)
    chain = sweep_table(rng, np.array([-1 - args.directions]), args.samples, args.steps, MEASURES)
    nulls = pd.concat([directions.assign(control=RANDOM_DIRECTION), chain.assign(control=RERENDER)], ignore_index=True)
    column_p = pd.Series(rng.uniform(0, 1e-3, size=args.units), index=np.arange(args.units))
    tests = args.units * len(MEASURES)
    machine = platform.processor() or platform.machine()
    print(
        f"concepts statistics: {args.units} units x {len(MEASURES)} measures x {args.samples} samples x "
        f"{args.steps} steps, {args.directions} random directions, {args.n_boot} bootstrap replicates"
    )
    print(f"numpy {np.__version__}, {os.cpu_count()} CPU(s), {machine}")
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    print(f"{'stage':>14}  {'workers':>7}  {'seconds':>8}  {'tests/s':>8}")
    for workers in args.workers:
        start = time.perf_counter()
        unit_concepts(changes, nulls, MEASURES, n_boot=args.n_boot, seed=args.seed, column_p=column_p, workers=workers)
        elapsed = time.perf_counter() - start
        print(f"{'unit_concepts':>14}  {workers:>7}  {elapsed:>8.1f}  {tests / elapsed:>8,.0f}")

    classes = np.arange(args.natural) % CLASSES
    activations = rng.normal(size=(args.natural, args.units))
    observed = pd.DataFrame(rng.normal(size=(args.natural, len(MEASURES))), columns=MEASURES)
    start = time.perf_counter()
    tuning = unit_tuning(
        activations,
        np.arange(args.units),
        classes,
        observed,
        MEASURES,
        permutations=args.permutations,
        seed=args.seed,
        q=0.05,
        min_association=0.1,
    )
    elapsed = time.perf_counter() - start
    print(f"{'unit_tuning':>14}  {1:>7}  {elapsed:>8.1f}  {len(tuning) / elapsed:>8,.0f}")
    print(f"load average (1, 5, 15 min) after: {load_average()}")


if __name__ == "__main__":
    main()
