"""Incremental re-runs, read off dry-run job lists of a finished tiny run.

Each test clones one finished run, changes one thing (a config slice, the unit selection,
the classifier's weights file, a module of ``pipeline/``) and asserts the exact set of jobs
Snakemake would run: the stage that reads the change, what depends on it, and nothing else.
"""

from __future__ import annotations

import copy

import pytest

from tests import workflow_harness as harness

PERTURB = ["perturb chunk=0", "perturb chunk=1"]
MEASURE = ["measure chunk=0", "measure chunk=1"]
AFTER_RANGES = [*PERTURB, *MEASURE, "gather_tables", "null_controls", "concepts", "report_strips", "report"]
# observe renders the samples again for their tuning: it follows sample and extract only.
EVERY_JOB = sorted(["sample", "extract", "observe", "link", "units", *AFTER_RANGES])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return harness.finished_project(tmp_path_factory.getbasetemp())


@pytest.fixture
def project(finished, tmp_path):
    return harness.clone_project(finished, tmp_path / "project")


def changed_config(section: str, key: str, value) -> dict:
    config = copy.deepcopy(harness.TINY_CONFIG)
    config[section][key] = value
    return config


def test_a_finished_run_has_nothing_to_do(project):
    assert harness.planned_jobs(project) == []


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("samples", "seed", 1, EVERY_JOB),
        ("link", "alpha", 2.0, ["link", *AFTER_RANGES]),
        ("tuning", "range_quantiles", [0.1, 0.9], ["units", *AFTER_RANGES]),
        ("concepts", "q", 0.1, ["concepts", "report_strips", "report"]),
    ],
)
def test_a_config_change_reruns_its_stage_and_dependents_only(project, section, key, value, expected):
    harness.write_config(project, changed_config(section, key, value), name="changed.yaml")
    assert harness.planned_jobs(project, config_name="changed.yaml") == sorted(expected)


def test_a_new_precision_reruns_every_stage_that_renders(project):
    config = copy.deepcopy(harness.TINY_CONFIG) | {"precision": "bf16"}
    harness.write_config(project, config, name="changed.yaml")
    assert harness.planned_jobs(project, config_name="changed.yaml") == EVERY_JOB


def test_adding_units_runs_only_the_new_chunk(project):
    # chunk_size 3: units 0-5 fill chunks 0 and 1; units 6 and 7 open chunk 2.
    harness.write_config(project, changed_config("units", "stop", 8), name="more.yaml")
    planned = harness.planned_jobs(project, config_name="more.yaml")
    after_chunks = ["gather_tables", "concepts", "report_strips", "report"]
    assert planned == sorted(["perturb chunk=2", "measure chunk=2", *after_chunks])


def test_new_classifier_weights_rerun_everything_downstream(project):
    weights = project / harness.CLASSIFIER_FILE
    weights.write_bytes(weights.read_bytes())
    assert harness.planned_jobs(project) == [], "a rewrite with the same bytes must not re-run anything"

    harness.export_tiny_classifier(weights, seed=1)
    assert harness.planned_jobs(project) == EVERY_JOB


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("stages/link.py", ["link", *AFTER_RANGES]),
        ("stages/concepts.py", ["concepts", "report_strips", "report"]),
        ("stages/strips.py", ["report_strips", "report"]),
        ("reporting/site.py", ["report"]),
        ("reporting/templates/unit.html", ["report"]),
    ],
)
def test_editing_a_pipeline_module_reruns_the_stages_that_use_it(project, module, expected):
    source = project / "pipeline" / module
    source.write_text(source.read_text() + "\n# an edit\n")
    assert harness.planned_jobs(project) == sorted(expected)


def test_a_module_no_stage_uses_reruns_nothing(project):
    (project / "pipeline" / "scratch_notes.py").write_text('"""Not imported by any stage."""\n')
    assert harness.planned_jobs(project) == []
