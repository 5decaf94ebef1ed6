"""Fault injection at scale: many SIGKILLs at random points of the tiny workflow.

The CI test (tests/test_faults.py) lands 10 kills; this script lands as many as asked, and
takes the path users take after a crash: ``snakemake --unlock``, then
``snakemake --rerun-incomplete``. Every round starts from scratch, is killed until its share
of kills has landed or it completes, is then resumed to the end, and its Parquet tables are
compared byte for byte with an uninterrupted run's.

Prints ``key=value`` lines (kills, rounds, identical rounds, kills inside jobs, kills per
rule, seconds) and, with ``--json``, writes every kill.

Usage: python bench/fault_injection.py [--kills 50] [--kills-per-round 12] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import workflow_harness as harness  # noqa: E402 (the checkout's tests package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kills to land in all")
    parser.add_argument("--kills-per-round", type=int, default=12, help="kills per run from scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every kill and round here")
    parser.add_argument("--workdir", type=Path, help="keep the runs here instead of a temporary directory")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.kills_per_round < 1:
        parser.error("--kills and --kills-per-round must be at least 1")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault-injection-") as scratch:
        root = args.workdir or Path(scratch)
        reference = harness.copy_project(root / "reference")
        harness.run_snakemake(reference)
        expected = harness.table_bytes(reference)
        reference_s = time.perf_counter() - started

        project = harness.copy_project(root / "killed")
        rng = random.Random(args.seed)
        kills: list[harness.Kill] = []
        rounds: list[dict] = []
        while len(kills) < args.kills:
            harness.reset_run(project)
            share = min(args.kills_per_round, args.kills - len(kills))
            landed = harness.interrupted_run(project, share, rng, root / f"logs-{len(rounds)}", unlock=True)
            harness.run_snakemake(project, "--unlock")
            harness.run_snakemake(project, "--rerun-incomplete")
            identical = harness.table_bytes(project) == expected
            rounds.append({"kills": len(landed), "identical": identical})
            kills += landed
            print(f"round {len(rounds)}: {len(landed)} kills, tables identical: {identical}", flush=True)

    per_rule = Counter(rule for kill in kills for rule in kill.running)
    summary = {
        "kills": len(kills),
        "rounds": len(rounds),
        "identical_rounds": sum(r["identical"] for r in rounds),
        "kills_inside_jobs": sum(bool(kill.running) for kill in kills),
        "kills_per_rule": dict(sorted(per_rule.items())),
        "reference_run_s": round(reference_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    for key, value in summary.items():
        print(f"{key}={value}")
    if args.json:
        detail = {"rounds_detail": rounds, "kills_detail": [asdict(kill) for kill in kills]}
        args.json.write_text(json.dumps({**summary, **detail}, indent=2))
    return 0 if summary["identical_rounds"] == summary["rounds"] else 1


if __name__ == "__main__":
    sys.exit(main())
