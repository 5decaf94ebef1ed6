"""How long does a job of a model-free stage (``units``) take to start?

A Snakemake script job is a fresh Python process: it unpickles Snakemake's job object
(importing ``snakemake.script``), imports the stage and its wrapper, then works. The units
job's work is 0.1 s; the rest is start-up. This runs that start-up both ways in one run,
alternating so that both see the same machine load:

- ``with torch``: the wrapper from ``pipeline.stages.common``, which imports torch and every
  model adapter (how every job started before ``pipeline.job``);
- ``without``: the wrapper from ``pipeline.job``, as ``workflow/scripts/units.py`` does.

It prints the median seconds of each and their ratio.

Usage: python bench/job_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

PREAMBLE = "import snakemake.script; "
VARIANTS = {
    "with torch": PREAMBLE + "from pipeline.stages.common import run_stage; import pipeline.stages.units",
    "without": PREAMBLE + "from pipeline.job import run_stage; import pipeline.stages.units",
}


def start_up_seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for code in VARIANTS.values():  # warm the file cache for both
        start_up_seconds(code)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, code in VARIANTS.items():
            times[name].append(start_up_seconds(code))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    for name, values in times.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:>10}: median {medians[name]:.2f} s over {len(values)} starts ({each})")
    print(f"start-up ratio with torch / without: {medians['with torch'] / medians['without']:.2f}")


if __name__ == "__main__":
    main()
