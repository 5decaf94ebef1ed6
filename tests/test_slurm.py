"""The SLURM profile on a real SLURM: a single-node cluster on this machine.

Runs only under ``make test-slurm`` (which sets PIPELINE_SLURM_TEST=1), because it needs
root to install and start slurm-wlm and munge. The tiny config goes through
``snakemake --profile profiles/slurm-local``; its tables must equal a local run's, byte
for byte. The cluster is stopped whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests import workflow_harness as harness

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("PIPELINE_SLURM_TEST") != "1", reason="needs `make test-slurm` (root, apt)"),
]

CLUSTER_SCRIPT = harness.REPO / "scripts" / "slurm_cluster.sh"
# The plugin can wait forever on a job it lost track of, ignoring SIGTERM; hence SIGKILL.
RUN_LIMIT_S = 900
WORKFLOW_RULES = {
    "sample", "extract", "observe", "link", "units", "perturb", "measure", "gather_tables", "null_controls",
    "concepts", "report_strips", "report",
}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state_dir)}
    try:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], env=env, check=True, timeout=600)
        yield state_dir
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], env=env, timeout=120)


def test_the_slurm_profile_runs_the_workflow_and_matches_a_local_run(cluster, tmp_path, tmp_path_factory):
    local = harness.finished_project(tmp_path_factory.getbasetemp())
    project = harness.copy_project(tmp_path / "on-slurm")
    shutil.copytree(harness.REPO / "profiles", project / "profiles")

    command = [
        "timeout", "-s", "KILL", str(RUN_LIMIT_S),
        harness.SNAKEMAKE, "--profile", "profiles/slurm-local", "--configfile", harness.CONFIG_NAME, "--nocolor",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=project, env=harness.environment(project), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    started, _ = harness.job_progress(output)
    rules = {rule for rule in started.values() if rule != "all"}
    submitted = [line for line in output.splitlines() if "has been submitted with SLURM jobid" in line]
    assert rules == WORKFLOW_RULES
    assert len(submitted) == len(started) - 1, "every job but the local `all` must go through SLURM"
    assert harness.table_bytes(project) == harness.table_bytes(local)
