"""SLURM runtime and mem_mb per rule, from the benchmark TSVs of a finished run.

    python bench/slurm_resources.py benchmarks/default

Every heavy rule writes Snakemake's benchmark TSV (``benchmark:`` in workflow/rules/), one
per job, under ``benchmarks/{run}/``. This reads them all and prints, per rule, the slowest
job's seconds and the largest peak RSS, and the ``set-resources`` entries they suggest:

- runtime (minutes) = ceil(time factor x seconds / 60) + ``--start-minutes``, the time a
  cluster job spends before the measured script starts (Snakemake parses the workflow on
  the node);
- mem_mb = memory factor x peak RSS + ``--start-mb`` (the job's own Snakemake process),
  rounded up to 100 MB.

Time gets the larger factor: it moves with the node's load and its GPU, while a job's peak
memory is set by its config.

Jobs of the planted validation run (``benchmarks/{run}/validation/``) belong to its rules,
``validation_<rule>``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd


def rule_name(tsv: Path, root: Path) -> str:
    """``perturb/chunk-0.tsv`` -> perturb, ``sample.tsv`` -> sample, ``validation/link.tsv`` -> validation_link."""
    parts = list(tsv.relative_to(root).with_suffix("").parts)
    prefix = ""
    while parts[0] == "validation" and len(parts) > 1:
        prefix += "validation_"
        parts = parts[1:]
    return prefix + parts[0]


def measured(root: Path) -> pd.DataFrame:
    """Per rule: jobs, the largest seconds and peak RSS (MB) of any of its jobs."""
    rows = []
    for tsv in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule_name(tsv, root), "s": table["s"].max(), "max_rss": table["max_rss"].max()})
    if not rows:
        raise SystemExit(f"{root}: no benchmark TSV; run the workflow first")
    frame = pd.DataFrame(rows)
    return frame.groupby("rule").agg(jobs=("s", "size"), s=("s", "max"), max_rss=("max_rss", "max"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="benchmarks/{run} of a finished run")
    parser.add_argument("--time-factor", type=float, default=3.0, help="safety factor on time")
    parser.add_argument("--memory-factor", type=float, default=1.5, help="safety factor on peak memory")
    parser.add_argument("--start-minutes", type=int, default=5, help="minutes added for the job's own start")
    parser.add_argument("--start-mb", type=int, default=1200, help="MB added for the job's own Snakemake")
    args = parser.parse_args(argv)
    table = measured(args.root)
    table["runtime"] = [math.ceil(args.time_factor * s / 60) + args.start_minutes for s in table["s"]]
    table["mem_mb"] = [
        100 * math.ceil((args.memory_factor * rss + args.start_mb) / 100) for rss in table["max_rss"]
    ]
    print(table.round(1).to_string(), file=sys.stderr)
    print("set-resources:")
    for rule, row in table.iterrows():
        print(f"  {rule}:\n    runtime: {int(row['runtime'])}\n    mem_mb: {int(row['mem_mb'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
