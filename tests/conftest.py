"""Shared fixtures: a tiny workflow config on the tiny test models, and one finished run of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

TINY_CLASSIFIER = {"kind": "python", "entrypoint": "tests.tiny_models:tiny_classifier"}
TINY_GENERATOR = {"kind": "python", "entrypoint": "tests.tiny_models:tiny_generator"}


def tiny_config() -> dict:
    """A whole run in seconds: 2 classes, 4 units in 2 chunks, 3 probe samples per class."""
    return {
        "run": "tiny",
        "device": "cpu",
        "classifier": dict(TINY_CLASSIFIER),
        "generator": dict(TINY_GENERATOR),
        "classes": [0, 1],
        "units": [0, 1, 2, 5],
        "samples": {"train": 30, "test": 6, "probe": 3, "batch_size": 128},
        "link": {"folds": 3, "mlp": True, "mlp_hidden": 16, "mlp_epochs": 10, "batch_size": 128},
        "tuning": {"steps": 3, "chunk_size": 3, "batch_size": 64, "null_directions": 4},
        "concepts": {"n_boot": 50},
        "report": {"samples": 2, "steps": 3},
    }


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` on its ``config.yaml``; return the finished process.

    ``PYTHONPATH`` names the repository so that jobs can import ``tests.tiny_models``.
    """
    process = subprocess.run(
        snakemake_command(workdir, *args),
        env=workflow_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and process.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{process.stdout[-4000:]}\n{process.stderr[-6000:]}")
    return process


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


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
    snakemake(workdir, "--cores", "2")
    return workdir
