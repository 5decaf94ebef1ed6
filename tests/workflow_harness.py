"""Run the real workflow on a tiny config in a throwaway copy of the project.

The copy holds the Snakefile, ``environment.yml`` (the rules' conda environment),
``workflow/``, the ``pipeline`` package and the tiny test models, and it is first on
``PYTHONPATH`` for Snakemake and its jobs. So a test may edit the copy's code or weights
without touching the checkout, and results land in the copy.

The config is the checked-in ``.test/config_weights_file/config.yaml``: its classifier is a
TorchScript archive in the copy (``classifier.pt``), so tests can replace a real weights
file; the generator is the tiny ``kind: python`` one. Every test's Snakemake command line
comes from :func:`snakemake_command`, here or in a throwaway working directory.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIGS = REPO / ".test"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CONFIG_NAME = "tiny.yaml"
JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")


def load_test_config(name: str) -> dict[str, Any]:
    """A fresh copy of the checked-in test config ``.test/{name}/config.yaml`` (the
    snakemake-workflows convention: ``config`` is the one ``snakemake --directory .test`` runs)."""
    return yaml.safe_load((TEST_CONFIGS / name / "config.yaml").read_text())


TINY_CONFIG: dict[str, Any] = load_test_config("config_weights_file")
RUN = TINY_CONFIG["run"]
CLASSIFIER_FILE = TINY_CONFIG["classifier"]["path"]
IMAGE_SIZE = TINY_CONFIG["classifier"]["input_size"]

# Every rule gets one thread, so that two jobs share CI's two cores instead of queueing.
ONE_THREAD_RULES = (
    "sample", "extract", "observe", "link", "perturb", "null_controls", "report_strips", "report", "concepts",
    "measure",
)  # fmt: skip


class TinyExport(nn.Module):
    """The tiny classifier's layers as a TorchScript-able module: maps from forward, a head."""

    def __init__(self, seed: int):
        super().__init__()
        from tests.tiny_models import tiny_classifier

        tiny = tiny_classifier(image_size=IMAGE_SIZE, seed=seed)
        self.conv1, self.conv2, self.head = tiny.conv1, tiny.conv2, tiny.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


def export_tiny_classifier(path: Path, seed: int = 0) -> None:
    # TorchScript is deprecated in favour of torch.export, but it is the archive format the
    # torchscript adapter reads, and users still bring such files.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(TinyExport(seed).eval()), str(path))


def copy_project(dest: Path, config: dict[str, Any] | None = None) -> Path:
    """A runnable copy of the project in ``dest`` with the tiny config and classifier."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "workflow", dest / "workflow", ignore=ignore)
    shutil.copytree(REPO / "pipeline", dest / "pipeline", ignore=ignore)
    (dest / "tests").mkdir()
    for name in ("__init__.py", "tiny_models.py"):
        shutil.copy2(REPO / "tests" / name, dest / "tests" / name)
    export_tiny_classifier(dest / CLASSIFIER_FILE)
    write_config(dest, config or TINY_CONFIG)
    return dest


def write_config(project: Path, config: dict[str, Any], name: str = CONFIG_NAME) -> Path:
    path = project / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def clone_project(source: Path, dest: Path) -> Path:
    """Copy a project with its results and Snakemake metadata, keeping modification times."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


def environment(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project), *filter(None, [env.get("PYTHONPATH")])])
    return env


def snakemake_command(
    *args: str,
    config: str | Path = CONFIG_NAME,
    directory: Path | None = None,
    cores: int = 2,
    one_thread_per_rule: bool = True,
) -> list[str]:
    """Snakemake on ``config``: in a project copy (the current directory's Snakefile), or with
    ``directory`` the checkout's Snakefile run in that working directory. Without
    ``one_thread_per_rule`` model jobs keep their threads, so they run one at a time."""
    where = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(directory)] if directory else []
    threads = ["--set-threads", *(f"{rule}=1" for rule in ONE_THREAD_RULES)] if one_thread_per_rule else []
    return [SNAKEMAKE, *where, "--cores", str(cores), "--configfile", str(config), *threads, "--nocolor", *args]


def run_snakemake(
    project: Path, *args: str, config_name: str = CONFIG_NAME, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        snakemake_command(*args, config=config_name),
        cwd=project,
        env=environment(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def planned_jobs(project: Path, *args: str, config_name: str = CONFIG_NAME) -> list[str]:
    """The jobs a dry run would execute, as sorted labels such as ``link`` or ``perturb chunk=2``."""
    result = run_snakemake(project, "--dry-run", *args, config_name=config_name)
    jobs: list[str] = []
    for line in result.stdout.splitlines():
        rule = JOB_HEADER.match(line)
        if rule:
            jobs.append(rule.group(1))
        elif jobs and line.strip().startswith("wildcards: "):
            jobs[-1] += " " + line.strip().removeprefix("wildcards: ")
    return sorted(job for job in jobs if job != "all")


def results_dir(project: Path) -> Path:
    return project / "results" / RUN


def table_bytes(project: Path) -> dict[str, bytes]:
    """Every Parquet table of the run, by path relative to its results directory."""
    root = results_dir(project)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet")) if p.is_file()}


_finished_runs: dict[Path, Path] = {}


def finished_project(base: Path) -> Path:
    """One uninterrupted tiny run per test session, shared by every test that needs one."""
    if base not in _finished_runs:
        project = copy_project(base / "finished-run")
        run_snakemake(project)
        _finished_runs[base] = project
    return _finished_runs[base]


@dataclass
class Kill:
    """One SIGKILL of a run: when it landed and which jobs it cut short."""

    attempt: int
    jobs_started: int
    delay_s: float
    running: list[str]


def job_progress(log_text: str) -> tuple[dict[str, str], set[str]]:
    """(jobid -> rule of every started job, ids of the finished ones) from Snakemake's log."""
    started: dict[str, str] = {}
    finished: set[str] = set()
    rule = None
    for line in log_text.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            rule = header.group(1)
        elif rule and line.strip().startswith("jobid: "):
            started[line.strip().removeprefix("jobid: ")] = rule
            rule = None
        elif line.startswith("Finished jobid: "):
            finished.add(line.removeprefix("Finished jobid: ").split()[0])
    return started, finished


def reset_run(project: Path) -> None:
    """Forget every output and all Snakemake state, as before a first run."""
    for name in ("results", "logs", ".snakemake"):
        shutil.rmtree(project / name, ignore_errors=True)


def interrupted_run(
    project: Path,
    kills: int,
    rng: random.Random,
    log_dir: Path,
    max_jobs_before_kill: int = 3,
    max_delay_s: float = 2.0,
    unlock: bool = False,
) -> list[Kill]:
    """Drive the run on, SIGKILL-ing Snakemake and all its jobs up to ``kills`` times.

    Each attempt resumes with ``--rerun-incomplete``, waits until a random number of its jobs
    (1 to ``max_jobs_before_kill``) has started, then kills the whole process group after a
    further random delay: what a node failure or a scheduler's kill does. The kill points
    therefore spread over every stage and land inside jobs as well as between them. Returns
    early, with fewer kills, when an attempt completes the workflow first. With ``unlock``
    each resume first runs ``snakemake --unlock``, as a user would; otherwise it ignores the
    dead run's lock with ``--nolock``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    landed: list[Kill] = []
    attempt = 0
    while len(landed) < kills:
        log_path = log_dir / f"attempt-{attempt}.log"
        if unlock:
            run_snakemake(project, "--unlock")
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                snakemake_command("--rerun-incomplete", *(() if unlock else ("--nolock",))),
                cwd=project,
                env=environment(project),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        jobs_to_start = rng.randint(1, max_jobs_before_kill)
        while process.poll() is None and len(job_progress(log_path.read_text())[0]) < jobs_to_start:
            time.sleep(0.05)
        delay = rng.uniform(0.0, max_delay_s)
        try:
            returncode = process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            started, finished = job_progress(log_path.read_text())
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            running = sorted(rule for jobid, rule in started.items() if jobid not in finished and rule != "all")
            landed.append(Kill(attempt, len(started), round(delay, 2), running))
            attempt += 1
            continue
        if returncode != 0:
            tail = log_path.read_text()[-4000:]
            raise AssertionError(f"attempt {attempt} failed ({returncode}); see {log_path}:\n{tail}")
        break
    return landed
