"""Adaptive sampling against the fixed design on the default world, both rendered for real.

Runs the default workflow up to the null controls (sample, extract, link, units,
null_controls) in a work directory, or takes those artifacts from a finished run with
``--run``. Then it sweeps the same units on the same base samples twice, against the same
null table: with the fixed design (``perturb_chunk`` and ``measure_chunk`` per chunk) and
adaptively (``perturb_chunk_adaptive`` per chunk, ``tuning.adaptive`` of the config with
``enabled`` implied), and computes both runs' concepts with the config's ``concepts``
settings (without bootstrap intervals, which no label depends on).

With ``--replay RUN`` nothing is rendered: the finished run's own fixed-design tables are
replayed through the decision rule (each look returns the rows it would have rendered),
which is how runs with known concepts, such as the planted-unit validation runs
(``--replay results/validation``), are checked.

Prints ``key=value`` lines: units, samples per unit, the renders of each design and their
ratio, the agreement of the top concept per unit ("none" included) and of the selective
flag per unit x measure, the selective counts, the futility-stopped tests that ended as BH
discoveries (0: the FDR argument of pipeline/adaptive.py applies), and the seconds of each
design's perturb (and measure) jobs.

Usage: python bench/adaptive_sampling.py [--units 128] [--run results/default] [--workdir DIR]
       python bench/adaptive_sampling.py --replay results/validation
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.adaptive import Design, SequentialTest, futile_discoveries, look_schedule  # noqa: E402 (the checkout's package)
from pipeline.measures import selected_measures  # noqa: E402
from pipeline.stages.common import ModelSetup, run_stage  # noqa: E402
from pipeline.stages.config import chunk_units, load_schema, validate_config  # noqa: E402
from pipeline.stages.measure import measure_chunk  # noqa: E402
from pipeline.stages.perturb import perturb_chunk  # noqa: E402
from pipeline.stages.perturb_adaptive import perturb_chunk_adaptive  # noqa: E402
from pipeline.stages.samples import Samples  # noqa: E402
from pipeline.stats import unit_concepts, unit_summary  # noqa: E402
from pipeline.store import read_parquet  # noqa: E402

UPSTREAM = (
    "latents.zarr",
    "activations.zarr",
    "link/model.pt",
    "link/units.parquet",
    "units/ranges.parquet",
    "tables/null_controls.parquet",
)
THREADS = 2


def default_config() -> dict:
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate_config(config, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
    return config


def upstream_artifacts(root: Path) -> dict[str, Path]:
    """The default run's artifacts up to the null controls, made in ``root`` by Snakemake."""
    results = root / "results/default"
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(root)]
        + ["--configfile", str(ROOT / "config/config.yaml"), "--cores", str(THREADS)]
        + [f"results/default/{name}" for name in UPSTREAM],
        check=True,
        cwd=ROOT,
    )
    return {name: results / name for name in UPSTREAM}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=None, help="sweep units 0..N-1 (default: every unit)")
    parser.add_argument("--run", type=Path, help="a finished run's results directory to take the artifacts from")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary directory")
    parser.add_argument("--replay", type=Path, help="replay a finished run's fixed tables instead of rendering")
    args = parser.parse_args(argv)

    config = default_config()
    tuning, concepts = config["tuning"], config["concepts"]
    if args.replay:
        column_p = read_parquet(args.replay / "link/units.parquet").set_index("unit")["p"]
        changes, nulls, outcomes, units = replay(args.replay, tuning["adaptive"], concepts, column_p)
        report(changes, nulls, outcomes, units, concepts, column_p, {})
        return 0
    with tempfile.TemporaryDirectory(prefix="adaptive-sampling-") as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        paths = {name: args.run / name for name in UPSTREAM} if args.run else upstream_artifacts(root)
        ranges = read_parquet(paths["units/ranges.parquet"])
        units = sorted(ranges["unit"].tolist())[: args.units]
        chunks = chunk_units(units, tuning["chunk_size"])
        common = {
            "samples": Samples(paths["latents.zarr"], paths["activations.zarr"]),
            "link_path": paths["link/model.pt"],
            "ranges_path": paths["units/ranges.parquet"],
            "models": ModelSetup(config["classifier"], config["generator"], config["device"], config["precision"]),
            "steps": tuning["steps"],
            "batch_size": tuning["batch_size"],
        }

        started = time.perf_counter()
        fixed_tables = []
        for chunk, chunk_units_ in chunks.items():
            renders = root / f"fixed/renders/chunk-{chunk}.zarr"
            table = root / f"fixed/tables/chunk-{chunk}.parquet"
            run_stage(perturb_chunk, log_path=root / f"fixed/logs/perturb-{chunk}.log", threads=THREADS,
                      out_path=renders, units=chunk_units_, **common)  # fmt: skip
            run_stage(measure_chunk, log_path=root / f"fixed/logs/measure-{chunk}.log", threads=THREADS,
                      renders_path=renders, out_path=table)  # fmt: skip
            fixed_tables.append(table)
        fixed_s = time.perf_counter() - started

        started = time.perf_counter()
        adaptive_tables, outcomes = [], []
        for chunk, chunk_units_ in chunks.items():
            table = root / f"adaptive/tables/chunk-{chunk}.parquet"
            record = run_stage(
                perturb_chunk_adaptive,
                log_path=root / f"adaptive/logs/perturb-{chunk}.log",
                threads=THREADS,
                table_path=table,
                record_path=root / f"adaptive/tables/chunk-{chunk}.adaptive.json",
                nulls_path=paths["tables/null_controls.parquet"],
                link_units_path=paths["link/units.parquet"],
                units=chunk_units_,
                total_units=len(units),
                adaptive=tuning["adaptive"],
                concepts=concepts,
                **common,
            )
            adaptive_tables.append(table)
            outcomes += record["unit_outcomes"]
        adaptive_s = time.perf_counter() - started
        changes = {"fixed": read_parquet(fixed_tables), "adaptive": read_parquet(adaptive_tables)}
        nulls = read_parquet(paths["tables/null_controls.parquet"])
        seconds = {"fixed_perturb_measure_s": round(fixed_s, 1), "adaptive_perturb_s": round(adaptive_s, 1)}
        column_p = read_parquet(paths["link/units.parquet"]).set_index("unit")["p"]
        report(changes, nulls, outcomes, units, concepts, column_p, seconds)
    return 0


def replay(
    run: Path, adaptive: dict, concepts: dict, column_p: pd.Series
) -> tuple[dict, pd.DataFrame, list[dict], list[int]]:
    """Adaptive sampling replayed on ``run``'s fixed tables: each look takes its rows from them."""
    fixed = read_parquet(run / "tables/activation_changes.parquet")
    nulls = read_parquet(run / "tables/null_controls.parquet")
    measures = selected_measures(nulls.columns, concepts["measures"])
    units = sorted(fixed["unit"].unique().tolist())
    base = fixed[fixed["unit"] == units[0]].drop_duplicates("sample")
    samples, classes = base["sample"].to_numpy(), base["class"].to_numpy()
    schedule = {u: look_schedule(samples, classes, adaptive["look_size"], (adaptive["seed"], u)) for u in units}
    design = Design.from_config(len(units) * len(measures), schedule[units[0]], adaptive, concepts)
    rows = fixed.set_index(["unit", "sample"]).sort_index()

    def render(sweep_units: np.ndarray, sweep_samples: np.ndarray) -> pd.DataFrame:
        return rows.loc[pd.MultiIndex.from_arrays([sweep_units, sweep_samples])].reset_index()

    test = SequentialTest(nulls, measures, design, column_p)
    adaptive_table, outcomes = test.run(render, schedule)
    return {"fixed": fixed, "adaptive": adaptive_table}, nulls, outcomes, units


def report(
    changes: dict,
    nulls: pd.DataFrame,
    outcomes: list[dict],
    units: list[int],
    concepts: dict,
    column_p: pd.Series,
    seconds: dict,
) -> None:
    """Both designs' concepts and the ``key=value`` lines of the module docstring."""
    measures = selected_measures(nulls.columns, concepts["measures"])
    settings = {"n_boot": 0, "q": concepts["q"], "min_effect": concepts["min_effect"], "column_p": column_p}
    results = {}
    for design, table in changes.items():
        found = unit_concepts(table, nulls, measures, **settings)
        results[design] = (table, found, unit_summary(found, table).set_index("unit"))
    (fixed, fixed_concepts, fixed_summary), (adaptive, adaptive_concepts, adaptive_summary) = results.values()
    top_fixed = fixed_summary["unique_measure"].fillna("none")
    top_adaptive = adaptive_summary["unique_measure"].fillna("none").reindex(top_fixed.index)
    merged = fixed_concepts.merge(adaptive_concepts, on=["unit", "measure"], suffixes=("_fixed", "_adaptive"))
    summary = {
        "units": len(units),
        "samples_per_unit": int(nulls["sample"].nunique()),
        "measures": len(measures),
        "renders_fixed": len(fixed),
        "renders_adaptive": len(adaptive),
        "ratio": round(len(fixed) / len(adaptive), 3),
        "units_stopped_early": sum(outcome["look"] is not None for outcome in outcomes),
        "top_concept_agreement": round(float((top_fixed == top_adaptive).mean()), 4),
        "selective_agreement": round(float((merged["selective_fixed"] == merged["selective_adaptive"]).mean()), 5),
        "units_with_concept_fixed": int((top_fixed != "none").sum()),
        "units_with_concept_adaptive": int((top_adaptive != "none").sum()),
        "selective_fixed": int(fixed_concepts["selective"].sum()),
        "selective_adaptive": int(adaptive_concepts["selective"].sum()),
        "futile_discoveries": len(futile_discoveries(adaptive_concepts, outcomes, concepts["q"])),
        **seconds,
    }
    for key, value in summary.items():
        print(f"{key}={value}")


if __name__ == "__main__":
    sys.exit(main())
