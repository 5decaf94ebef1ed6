"""The real workflow on the tiny config: artifacts, no-op re-runs, incremental re-runs, resume after SIGKILL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from pipeline.models.cache import CACHE_DIR_VARIABLE, TRACE_VARIABLE
from tests.conftest import snakemake, tiny_config, workflow_env, write_config
from tests.workflow_harness import snakemake_command

RESULTS = "results/tiny"
ARTIFACTS = (
    "latents.zarr",
    "activations.zarr",
    "link/model.pt",
    "link/metrics.json",
    "units/ranges.parquet",
    "tables/chunk-0.parquet",
    "tables/chunk-1.parquet",
    "tables/activation_changes.parquet",
    "tables/null_controls.parquet",
    "concepts/unit_concepts.parquet",
    "concepts/unit_summary.parquet",
    "report_strips.zarr",
    "report",
)
UNITS = [0, 1, 2, 5]
STEPS = 3


def scheduled_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, job description) for every job a dry run lists."""
    return re.findall(r"^rule (\w+):\n((?:    .*\n)+)", output, flags=re.MULTILINE)


def scheduled_rules(output: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule, _ in scheduled_jobs(output):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def scheduled_chunks(output: str, rule: str) -> set[int]:
    return {int(k) for name, job in scheduled_jobs(output) if name == rule for k in re.findall(r"chunk-(\d+)\.", job)}


def test_run_writes_every_artifact(finished_run: Path) -> None:
    results = finished_run / RESULTS
    for name in ARTIFACTS:
        assert (results / name).exists(), name
    assert not list((results / "renders").glob("chunk-*.zarr")), "renders are temporary unless keep_renders"

    latents = zarr.open_group(results / "latents.zarr", mode="r")
    activations = zarr.open_group(results / "activations.zarr", mode="r")
    split, classes = latents["split"][...], latents["class"][...]
    assert set(np.unique(classes)) == {0, 1}
    for class_id in (0, 1):
        counts = {s: int(np.sum((split == s) & (classes == class_id))) for s in ("train", "test", "probe")}
        assert counts == {"train": 30, "test": 6, "probe": 3}
    assert activations["r"].shape == (len(split), 16)
    accepted = activations["accepted"][...]
    assert accepted.all(), "sampling already kept only correctly classified samples"
    np.testing.assert_array_equal(activations["pred"][...], classes)

    table = pd.read_parquet(results / "tables/activation_changes.parquet")
    probe = np.flatnonzero(split == "probe")
    assert len(table) == len(UNITS) * len(probe) * STEPS
    assert sorted(table["unit"].unique()) == UNITS
    assert set(table["sample"]) == set(probe)
    assert not table.duplicated(["unit", "sample", "step"]).any()
    assert (table.loc[table["step"] == 0, "achieved_change"] == 0).all()
    # One requested value per (unit, step), shared by every sample.
    assert (table.groupby(["unit", "step"])["requested"].nunique() == 1).all()
    assert {"object.area", "background.luminance", "image.motion"} <= set(table.columns)

    nulls = pd.read_parquet(results / "tables/null_controls.parquet")
    assert set(nulls["control"]) == {"rerender", "random_direction"}
    assert (nulls["unit"] < 0).all()
    assert nulls.loc[nulls["control"] == "random_direction", "unit"].nunique() == 4
    assert list(nulls.columns[1:]) == list(table.columns)

    summary = pd.read_parquet(results / "concepts/unit_summary.parquet")
    assert sorted(summary["unit"]) == UNITS
    assert (summary["sweep_end_distance"] > 0).all() and summary["sweep_in_domain"].between(0, 1).all()
    concepts = pd.read_parquet(results / "concepts/unit_concepts.parquet")
    assert {"residual_association", "residual_q", "residual_beyond_object"} <= set(concepts.columns)
    assert "unique_residual_association" in summary.columns and summary["redundancy_r2"].notna().all()
    assert (results / "report/index.html").is_file()
    index = (results / "report/index.html").read_text()
    assert "median sweep end (latent domain radii" in index and "median redundancy R²" in index
    assert (
        "units with a unique label" in index
        and "units whose sweep moved only what their residual does not read" in index
    )
    assert all((results / f"report/units/{unit}.html").is_file() for unit in UNITS)


def test_second_run_has_nothing_to_do(finished_run: Path) -> None:
    process = snakemake(finished_run)
    assert "Nothing to be done" in process.stdout + process.stderr


def test_a_plan_hashes_each_weight_file_once_and_loads_a_model_only_the_first_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the planted validation run beside it, the plan describes two classifiers.
    write_config(tmp_path, tiny_config() | {"validation": {"enabled": True, "n_null": 2}})
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    trace = tmp_path / "trace"
    monkeypatch.setenv(TRACE_VARIABLE, str(trace))

    snakemake(tmp_path, "--dry-run")
    events = trace.read_text().splitlines()
    hashed = [event for event in events if event.startswith("sha256 ")]
    assert hashed and len(hashed) == len(set(hashed)), events
    # Describing the run's classifier, the planted one that wraps it (loading it again), and
    # the generator, whose classes the config's classes are checked against.
    loads = sorted(event for event in events if event.startswith("load "))
    assert loads == ["load classifier python"] * 3 + ["load generator python"]

    trace.unlink()
    snakemake(tmp_path, "--dry-run")
    assert not trace.exists(), trace.read_text()


def test_changed_link_config_reruns_link_and_what_follows(finished_run: Path) -> None:
    process = snakemake(finished_run, "--dry-run", "--config", "link={alpha: 10.0}")
    assert scheduled_rules(process.stdout) == {
        "link": 1,
        "perturb": 2,
        "measure": 2,
        "gather_tables": 1,
        "null_controls": 1,
        "concepts": 1,
        "report_strips": 1,
        "report": 1,
        "all": 1,
    }


@pytest.mark.parametrize(("units", "chunk"), [([0, 1, 2, 5, 9], 3), ([0, 1, 2, 4, 5], 1)])
def test_added_units_rerun_only_their_chunk(finished_run: Path, units: list[int], chunk: int) -> None:
    process = snakemake(finished_run, "--dry-run", "--config", f"units={units}")
    assert scheduled_chunks(process.stdout, "perturb") == {chunk}
    assert scheduled_chunks(process.stdout, "measure") == {chunk}
    assert not {"sample", "extract", "link", "units", "null_controls"} & set(scheduled_rules(process.stdout))


def test_bad_config_fails_with_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tiny_config()
    config["tuning"]["chunk_sise"] = 2
    write_config(tmp_path, config)
    process = snakemake(tmp_path, "--dry-run", check=False)
    assert process.returncode != 0
    assert "config key 'tuning.chunk_sise' is unknown" in process.stdout + process.stderr


def completed_chunks(results: Path) -> set[int]:
    """Chunks that Snakemake has recorded as done: their table exists and their temporary
    renders are deleted, which happens only after the job's completion is recorded."""
    tables = {int(p.stem.split("-")[1]) for p in results.glob("tables/chunk-*.parquet")}
    return {k for k in tables if not (results / f"renders/chunk-{k}.zarr").exists()}


def test_sigkill_during_perturb_resumes_with_only_unfinished_chunks(finished_run: Path, tmp_path: Path) -> None:
    # Start from the finished run's upstream artifacts (and Snakemake's records of them), so
    # the run below begins with the chunks; copies keep their modification times.
    downstream = shutil.ignore_patterns("tables", "concepts", "report", "logs")
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True, ignore=downstream)
    results = tmp_path / RESULTS
    # The rules' own threads: chunk jobs take one each, so a chunk can be done while another
    # is in flight. Same cores as the finished run: BLAS results, and so the bytes, can
    # depend on the thread count.
    process = subprocess.Popen(
        snakemake_command(config=tmp_path / "config.yaml", directory=tmp_path, one_thread_per_rule=False),
        env=workflow_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            started = {int(p.stem.split("-")[1]) for p in (tmp_path / "logs/tiny/perturb").glob("chunk-*.log")}
            done = completed_chunks(results)
            if done and started - done:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed during perturb"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()

    unfinished = {0, 1} - completed_chunks(results)
    assert unfinished and unfinished != {0, 1}
    plan = snakemake(tmp_path, "--dry-run", "--rerun-incomplete")
    assert scheduled_chunks(plan.stdout, "perturb") <= unfinished
    assert scheduled_chunks(plan.stdout, "measure") == unfinished
    assert not {"sample", "extract", "link", "units"} & set(scheduled_rules(plan.stdout))

    # A killed Snakemake leaves its lock behind; --unlock is the documented recovery step.
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--rerun-incomplete")
    for table in ("activation_changes", "null_controls"):
        resumed = (results / f"tables/{table}.parquet").read_bytes()
        assert resumed == (finished_run / RESULTS / f"tables/{table}.parquet").read_bytes(), table
