"""Staying power: SIGKILL at random points, then resume; and the same config twice.

A killed run, resumed with ``--rerun-incomplete``, must end with Parquet tables that are
byte-identical to an uninterrupted run's: a duplicated or lost row would change the bytes.
Resumes pass ``--nolock`` instead of a separate ``snakemake --unlock`` call, to save one
workflow parse per kill; bench/fault_injection.py uses the ``--unlock`` path users take.
"""

from __future__ import annotations

import random

import pytest

from tests import workflow_harness as harness


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return harness.finished_project(tmp_path_factory.getbasetemp())


def test_the_same_config_and_seed_give_identical_parquet_bytes(finished, tmp_path):
    again = harness.copy_project(tmp_path / "again")
    harness.run_snakemake(again)
    reference = harness.table_bytes(finished)
    assert "tables/activation_changes.parquet" in reference
    assert harness.table_bytes(again) == reference


# CI runs the slow variant too; the quick one keeps `pytest -m "not slow"` covering kills.
@pytest.mark.parametrize("planned_kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_runs_killed_at_random_points_resume_to_identical_tables(finished, tmp_path, planned_kills):
    project = harness.copy_project(tmp_path / "killed")
    reference = harness.table_bytes(finished)
    rng = random.Random(20240925 + planned_kills)
    kills: list[harness.Kill] = []
    rounds = 0
    while len(kills) < planned_kills:
        # A round that finishes before every kill has landed starts again from scratch.
        harness.reset_run(project)
        kills += harness.interrupted_run(project, planned_kills - len(kills), rng, tmp_path / f"logs-{rounds}")
        harness.run_snakemake(project, "--rerun-incomplete", "--nolock")
        assert harness.table_bytes(project) == reference, f"tables differ after kills {kills}"
        rounds += 1

    assert len(kills) == planned_kills
    cut_short = [kill for kill in kills if kill.running]
    assert len(cut_short) >= (planned_kills + 1) // 2, f"too few kills landed inside a job: {kills}"
    still_incomplete = [p for p in (project / ".snakemake" / "incomplete").rglob("*") if p.is_file()]
    assert not still_incomplete, "a job is still marked incomplete after the resume"
