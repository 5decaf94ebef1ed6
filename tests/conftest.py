"""Shared fixtures: the tiny workflow config on the tiny test models, and one finished run of it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.models.cache import CACHE_DIR_VARIABLE
from tests.workflow_harness import REPO, load_test_config, snakemake_command

REPO_ROOT = REPO

TINY_CLASSIFIER = load_test_config("config")["classifier"]
TINY_GENERATOR = load_test_config("config")["generator"]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Weight hashes and model descriptions of this test session go to a throwaway directory,
    shared by its Snakemake runs (entries are keyed by file and content, so sharing is safe)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_DIR_VARIABLE, str(tmp_path_factory.mktemp("model_cache")))
        yield


def tiny_config() -> dict:
    """``.test/config/config.yaml``: a whole run in seconds (2 classes, 4 units in 2 chunks)."""
    return load_test_config("config")


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` on its ``config.yaml``; return the finished process.

    ``PYTHONPATH`` names the repository so that jobs can import ``tests.tiny_models``.
    """
    process = subprocess.run(
        snakemake_command(*args, config=workdir / "config.yaml", directory=workdir, one_thread_per_rule=False),
        env=workflow_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and process.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{process.stdout[-4000:]}\n{process.stderr[-6000:]}")
    return process


def workflow_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of one complete run of the tiny config (shared; treat as read-only)."""
    workdir = tmp_path_factory.mktemp("finished_run")
    write_config(workdir, tiny_config())
    snakemake(workdir)
    return workdir
