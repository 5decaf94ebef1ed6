"""Attacks on a run: damaged artifacts, configs that cannot work, a results folder that takes no files.

Each attack runs the real workflow on the tiny config. It must stop with exit status != 0
and one line that names the file or config key, print no traceback, and leave nothing that
looks complete; after a damaged artifact, the next plain run must rebuild it and end with
tables identical to an undamaged run's.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from tests import workflow_harness as harness

STYLEGAN_CODE = harness.REPO / "tests" / "stylegan_fixture" / "code"

# A classifier read at a layer that feeds no head, importable in the copy as headless_models.
HEADLESS_MODELS = """
from tests.tiny_models import tiny_classifier


class Headless:
    def __init__(self):
        self.inner = tiny_classifier(image_size=32)
        self.num_units = self.inner.num_units
        self.num_classes = None
        self.head = None

    def features(self, x):
        return self.inner.features(x)

    def to(self, device):
        self.inner.to(device)
        return self


def headless_classifier():
    return Headless()
"""


def one_line_failure(result: subprocess.CompletedProcess[str], expected: str) -> str:
    """The single line of a failed run's output that holds ``expected``; asserts the rest."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the run did not fail:\n{output[-3000:]}"
    lines = [line for line in output.splitlines() if expected in line]
    assert lines, f"no line with {expected!r} in:\n{output[-4000:]}"
    assert "Traceback" not in output and not any(line.lstrip().startswith('File "') for line in output.splitlines()), (
        f"a traceback in:\n{output[-4000:]}"
    )
    return lines[0]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return harness.finished_project(tmp_path_factory.getbasetemp())


def _chunk_files(store: Path, array: str) -> list[Path]:
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


def delete_zarr_chunk(results: Path) -> Path:
    store = results / "activations.zarr"
    _chunk_files(store, "r")[0].unlink()
    return store


def truncate_zarr_chunk(results: Path) -> Path:
    store = results / "latents.zarr"
    chunk = _chunk_files(store, "w")[0]
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return store


def truncate_parquet(results: Path) -> Path:
    table = results / "tables" / "chunk-0.parquet"
    table.write_bytes(table.read_bytes()[:-64])
    return table


# (damage, whether to run again): a truncated chunk is found as a deleted one is, and rebuilding
# latents.zarr is a whole run, so that attack stops at the first run.
DAMAGE = {
    "deleted Zarr chunk": (delete_zarr_chunk, True),
    "truncated Zarr chunk": (truncate_zarr_chunk, False),
    "truncated Parquet": (truncate_parquet, True),
}


@pytest.mark.parametrize("attack", list(DAMAGE))
def test_a_damaged_artifact_stops_the_run_and_the_next_run_rebuilds_it(finished, tmp_path, attack):
    damage, run_again = DAMAGE[attack]
    project = harness.clone_project(finished, tmp_path / "damaged")
    damaged = damage(harness.results_dir(project))
    name = str(damaged.relative_to(project))

    stopped = harness.run_snakemake(project, check=False, timeout=300)
    line = one_line_failure(stopped, name)
    assert "so the next run rebuilds" in line
    assert not damaged.exists(), "the damaged artifact still looks complete"

    if run_again:
        harness.run_snakemake(project)
        assert harness.table_bytes(project) == harness.table_bytes(finished)


def tiny_config(**changes) -> dict:
    config = copy.deepcopy(harness.TINY_CONFIG)
    for key, value in changes.items():
        section, _, inner = key.partition("__")
        if inner:
            config[section] = {**config.get(section, {}), inner: value}
        else:
            config[key] = value
    return config


def write_dill_pickle(path: Path) -> Path:
    """A network pickle that refers to dill, as StyleGAN-XL's do, for an environment without dill."""
    dill = types.ModuleType("dill")
    dill_internal = types.ModuleType("dill._dill")

    def _load_type(name):
        return getattr(types, name)

    _load_type.__module__, _load_type.__qualname__ = "dill._dill", "_load_type"
    dill_internal._load_type = _load_type
    dill._dill = dill_internal

    class Call:
        def __init__(self, function, args):
            self.function, self.args = function, args

        def __call__(self, *args):
            return self.function(*args)

        def __reduce__(self):
            return self.function, self.args

    saved = {name: sys.modules.get(name) for name in ("dill", "dill._dill")}
    sys.modules.update({"dill": dill, "dill._dill": dill_internal})
    try:
        path.write_bytes(pickle.dumps({"G_ema": Call(Call(_load_type, ("ModuleType",)), ("G",))}))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


CONFIG_ATTACKS = {
    "class beyond the models": (tiny_config(classes=[0, 11]), "config key 'classes': class 11 is out of range"),
    "unit beyond the layer": (tiny_config(units=[0, 99]), "config key 'units': unit 99 is out of range"),
    "pair from a class the run lacks": (
        tiny_config(counterfactuals__pairs=[[0, 1], [2, 3]]),
        "config key 'counterfactuals.pairs': pair [2, 3] starts from class 2",
    ),
    "pairs without a head": (
        tiny_config(
            classifier={"kind": "python", "entrypoint": "headless_models:headless_classifier"},
            counterfactuals__pairs=[[0, 1]],
        ),
        "config key 'counterfactuals.pairs': counterfactuals need a classifier with a head",
    ),
    "missing dill": pytest.param(
        tiny_config(generator={"kind": "stylegan_pkl", "path": "dill.pkl", "code_dir": str(STYLEGAN_CODE)}),
        "No module named 'dill'",
        # torch imports dill at start-up wherever it is installed, so it cannot be hidden then.
        marks=pytest.mark.skipif(importlib.util.find_spec("dill") is not None, reason="dill is installed"),
    ),
}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory) -> Path:
    project = harness.copy_project(tmp_path_factory.mktemp("attacked") / "project")
    (project / "headless_models.py").write_text(HEADLESS_MODELS)
    write_dill_pickle(project / "dill.pkl")
    return project


def stopped_before_any_job(project: Path, config: dict, expected: str) -> str:
    harness.write_config(project, config, name="attack.yaml")
    result = harness.run_snakemake(project, config_name="attack.yaml", check=False, timeout=300)
    line = one_line_failure(result, expected)
    assert not files_under(project / "results"), "a job ran although the config could not work"
    return line


@pytest.mark.parametrize(("config", "expected"), list(CONFIG_ATTACKS.values()), ids=list(CONFIG_ATTACKS))
def test_a_config_that_cannot_work_stops_before_any_job(attacked, config, expected):
    line = stopped_before_any_job(attacked, config, expected)
    if "dill" in expected:
        assert "pip install -e '.[stylegan]'" in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_stops_before_any_job(attacked):
    stopped_before_any_job(attacked, tiny_config(device="cuda"), "config key 'device': 'cuda' requested")


def test_malformed_yaml_names_the_file_and_line(attacked):
    bad = attacked / "broken.yaml"
    bad.write_text("run: tiny\nclasses: [0, 1\nunits: all\n")
    # Snakemake reads a --configfile itself and names neither file nor line, so `make run`
    # checks the file first with this command.
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.config", str(bad)],
        cwd=attacked,
        env=harness.environment(attacked),
        capture_output=True,
        text=True,
    )
    one_line_failure(result, f"config file {bad}:3: not valid YAML")


def test_a_malformed_default_config_names_the_file_and_line(tmp_path):
    project = harness.copy_project(tmp_path / "project")
    (project / "config").mkdir()
    (project / "config" / "config.yaml").write_text("run: tiny\nclasses: [0, 1\nunits: all\n")
    result = subprocess.run(
        [harness.SNAKEMAKE, "--cores", "1", "--nocolor"],
        cwd=project,
        env=harness.environment(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_line_failure(result, "config file config/config.yaml:3: not valid YAML")


def test_a_read_only_results_folder_stops_before_any_job(attacked):
    results = attacked / "results"
    results.mkdir(exist_ok=True)
    # Root ignores permission bits; an immutable folder refuses it too.
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("chattr"):
        pytest.skip("running as root without chattr")
    lock = ["chattr", "+i", str(results)] if as_root else ["chmod", "a-w", str(results)]
    unlock = ["chattr", "-i", str(results)] if as_root else ["chmod", "u+w", str(results)]
    if subprocess.run(lock, capture_output=True).returncode != 0:
        pytest.skip("this file system cannot make a folder read-only for root")
    try:
        stopped_before_any_job(attacked, harness.TINY_CONFIG, "results: cannot write there")
    finally:
        subprocess.run(unlock, check=True)


def test_a_users_config_replaces_the_default_instead_of_merging_into_it(tmp_path):
    # The default's model specs and pairs (classes 2-4 of five) would break the tiny run if merged.
    project = harness.copy_project(tmp_path / "with-default")
    shutil.copytree(harness.REPO / "config", project / "config")
    default = yaml.safe_load((project / "config" / "config.yaml").read_text())
    assert default["counterfactuals"]["pairs"] and set(default["classes"]) - set(harness.TINY_CONFIG["classes"])
    plain = harness.planned_jobs(project)
    replaced = harness.planned_jobs(project, "--replace-workflow-config")
    assert plain == replaced
    assert not [job for job in plain if job.startswith("counterfactual")]


def test_a_lock_left_by_a_dead_run_is_cleared_and_a_live_ones_is_kept(tmp_path):
    from pipeline.locks import OWNER_FILE, clear_stale_lock, is_locked, record_owner

    state = tmp_path / ".snakemake"
    (state / "locks").mkdir(parents=True)
    (state / "locks" / "0.input.lock").write_text("results/tiny/latents.zarr\n")
    assert "left no record" in clear_stale_lock(state) and is_locked(state)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record_owner(state, pid=int(dead.stdout))
    assert "Removed the lock" in clear_stale_lock(state)
    assert not is_locked(state)

    # A live process whose command line names snakemake, as a running workflow's does.
    (state / "locks" / "0.output.lock").write_text("results/tiny/latents.zarr\n")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "snakemake"]) as live:
        try:
            # Popen may return before the child's exec has replaced its command line.
            cmdline = Path(f"/proc/{live.pid}/cmdline")
            while cmdline.exists() and b"snakemake" not in cmdline.read_bytes():
                time.sleep(0.01)
            record_owner(state, pid=live.pid)
            assert (
                clear_stale_lock(state)
                == f"Another run (pid {live.pid}) is working in this folder; wait for it to end, or stop it."
            )
            assert is_locked(state)
        finally:
            live.kill()
    assert (state / OWNER_FILE).exists()


def test_a_link_that_predicts_nothing_is_refused_and_writes_nothing(tmp_path):
    import numpy as np

    from pipeline.stages.common import ModelSetup
    from pipeline.stages.link import fit_link
    from pipeline.stages.samples import Samples
    from pipeline.store import write_zarr

    rng = np.random.default_rng(0)
    n = 60
    split = np.array(["train"] * 40 + ["test"] * 20)
    # Activations of pure noise: nothing in them says anything about w.
    write_zarr(
        tmp_path / "latents.zarr",
        {"w": rng.normal(size=(n, 4)).astype(np.float32), "class": np.zeros(n, int), "split": split},
    )
    write_zarr(
        tmp_path / "activations.zarr", {"r": rng.normal(size=(n, 30)).astype(np.float32), "accepted": np.ones(n, bool)}
    )
    outputs = [tmp_path / "link" / name for name in ("model.pt", "metrics.json", "units.parquet")]
    with pytest.raises(ValueError, match=r"link: held-out R² of w is -?[0-9.e-]+, not above 0"):
        fit_link(
            Samples(tmp_path / "latents.zarr", tmp_path / "activations.zarr"),
            *outputs,
            models=ModelSetup(classifier=None, generator=None, device="cpu"),
            alpha=0.001,
            alphas=[],
            folds=2,
            seed=0,
            mlp=False,
            mlp_hidden=4,
            mlp_epochs=1,
            batch_size=8,
        )
    assert not any(path.exists() for path in outputs)


def test_ctrl_c_in_a_job_is_one_line_not_a_traceback(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "from pipeline.job import run_stage\n"
        "snakemake = object()  # what Snakemake's script directive injects\n"
        "def sweep():\n"
        "    raise KeyboardInterrupt\n"
        "run_stage(sweep, log_path=None, threads=1)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=harness.environment(harness.REPO)
    )
    assert result.returncode == 130
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()][-1].endswith("sweep interrupted")


def test_what_was_made_from_an_artifact_follows_snakemakes_records(tmp_path):
    from pipeline.provenance import dependents, recorded_inputs

    records = {
        "results/r/activations.zarr": ["results/r/latents.zarr"],
        "results/r/tables/chunk-0.parquet": ["results/r/renders/chunk-0.zarr"],
        "results/r/tables/chunk-1.parquet": ["results/r/renders/chunk-1.zarr"],
        "results/r/tables/activation_changes.parquet": [
            "results/r/tables/chunk-0.parquet",
            "results/r/tables/chunk-1.parquet",
        ],
        "results/r/report": ["results/r/tables/activation_changes.parquet"],
        "results/r/many": None,
    }
    metadata = tmp_path / "metadata"
    for output, inputs in records.items():
        name = base64.urlsafe_b64encode(output.encode()).decode()
        # Snakemake splits long names into folders of @-prefixed parts.
        parts = [f"@{name[:10]}", name[10:]] if output.endswith("report") else [name]
        (metadata / Path(*parts)).parent.mkdir(parents=True, exist_ok=True)
        (metadata / Path(*parts)).write_text(json.dumps({"rule": "x", "input": inputs}))
    assert recorded_inputs(metadata) == records
    assert dependents(["results/r/tables/chunk-0.parquet"], records) == [
        "results/r/many",
        "results/r/report",
        "results/r/tables/activation_changes.parquet",
    ]


@pytest.mark.parametrize(
    ("device", "cuda_devices", "message"),
    [
        ("cuda", 0, "config key 'device': 'cuda' requested but this machine has no CUDA GPU"),
        ("cuda:2", 2, "config key 'device': 'cuda:2' requested but only 2 CUDA device(s) exist"),
        ("cuda:1", 2, None),
        ("auto", 0, None),
        ("cpu", 0, None),
    ],
)
def test_the_device_must_exist_where_the_jobs_run(device, cuda_devices, message):
    from pipeline.stages.config import ConfigError, check_device

    if message is None:
        check_device(device, cuda_devices)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_device(device, cuda_devices)


def test_pairs_need_a_target_the_head_has_and_two_classes():
    from pipeline.stages.config import ConfigError, check_pairs

    check_pairs([[0, 7]], classes=[0, 1], num_classes=8)  # a target need not be sampled
    with pytest.raises(ConfigError, match=r"pair \[0, 8\] aims at class 8; the classifier has 8 classes"):
        check_pairs([[0, 8]], classes=[0, 1], num_classes=8)
    with pytest.raises(ConfigError, match=r"pair \[1, 1\] names one class twice"):
        check_pairs([[1, 1]], classes=[0, 1], num_classes=8)
    check_pairs([], classes=[0], num_classes=None)
