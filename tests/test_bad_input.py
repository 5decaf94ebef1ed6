"""Bad input fails the run with one clear line that names the key or file, and nothing completes.

Each case runs the real workflow on a copy of the project with one thing wrong: a config
key, a model file, or a model that misbehaves. The run must exit non-zero, print a line that
names the culprit, and leave no output behind that Snakemake could take for a finished job.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests import workflow_harness as harness

STYLEGAN_CODE = harness.REPO / "tests" / "stylegan_fixture" / "code"

# Models that speak the protocols but misbehave, importable in the copy as bad_models.
BAD_MODELS = '''
import torch

from tests.tiny_models import tiny_classifier, tiny_generator


class FlatImages:
    """Renders [B, H, W] instead of [B, 3, H, W]."""

    def __init__(self):
        self.inner = tiny_generator(image_size=32)
        for name in ("z_dim", "c_dim", "w_dim", "num_ws"):
            setattr(self, name, getattr(self.inner, name))

    def mapping(self, z, c, truncation_psi=1.0):
        return self.inner.mapping(z, c, truncation_psi)

    def synthesis(self, ws):
        return self.inner.synthesis(ws).mean(dim=1)

    def to(self, device):
        return self


def flat_generator():
    return FlatImages()


def nan_classifier():
    model = tiny_classifier(image_size=32)
    features = model.features
    model.features = lambda x: features(x) * torch.where(torch.arange(len(x)) % 5 == 0, float("nan"), 1.0)[:, None]
    return model


def stubborn_classifier():
    """Calls everything class 7, so no sample of classes 0 and 1 is classified correctly."""
    model = tiny_classifier(image_size=32)
    model.linear.weight.data.zero_()
    model.linear.bias.data.copy_(torch.nn.functional.one_hot(torch.tensor(7), 8).float())
    return model
'''


def with_changes(**sections) -> dict:
    config = copy.deepcopy(harness.TINY_CONFIG)
    config.update(sections)
    return config


def python_model(factory: str) -> dict:
    return {"kind": "python", "entrypoint": f"bad_models:{factory}"}


def stylegan(path: str) -> dict:
    return {"kind": "stylegan_pkl", "path": path, "code_dir": str(STYLEGAN_CODE)}


CASES = {
    "unknown key": (with_changes(link={"alpah": 1.0}), "config key 'link.alpah' is unknown"),
    "wrong type": (with_changes(samples={"train": "many"}), "config key 'samples.train': 'many' is not of type"),
    "class outside the models": (with_changes(classes=[0, 11]), "config key 'classes': class 11 is out of range"),
    "unit out of range": (with_changes(units=[0, 99]), "config key 'units': unit 99 is out of range"),
    "chunk size 0": (
        with_changes(tuning={**harness.TINY_CONFIG["tuning"], "chunk_size": 0}),
        "config key 'tuning.chunk_size'",
    ),
    "missing weights": (
        with_changes(classifier={**harness.TINY_CONFIG["classifier"], "path": "missing.pt"}),
        "classifier.path: TorchScript file 'missing.pt' does not exist",
    ),
    "corrupt weights": (
        with_changes(classifier={**harness.TINY_CONFIG["classifier"], "path": "corrupt.pt"}),
        "classifier.path: corrupt.pt is not a TorchScript archive",
    ),
    "unknown builtin generator": (
        with_changes(generator={"kind": "builtin", "name": "nope-generator"}),
        "generator.name: unknown builtin model 'nope-generator'",
    ),
    "missing pickle": (with_changes(generator=stylegan("missing.pkl")), "generator.path: network pickle 'missing.pkl'"),
    "corrupt pickle": (with_changes(generator=stylegan("corrupt.pkl")), "generator.path: cannot unpickle corrupt.pkl"),
    "generator output not [B,3,H,W]": (
        with_changes(generator=python_model("flat_generator")),
        "generator: synthesis returned shape",
    ),
    "NaN activations": (
        with_changes(classifier=python_model("nan_classifier")),
        "classifier activations: ",
    ),
    "empty accepted set": (
        with_changes(classifier=python_model("stubborn_classifier")),
        "samples: no candidate of class 0 was classified as class 0",
    ),
}


@pytest.fixture
def project(tmp_path) -> Path:
    project = harness.copy_project(tmp_path / "project")
    (project / "bad_models.py").write_text(BAD_MODELS)
    (project / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a TorchScript archive")
    (project / "corrupt.pkl").write_bytes(b"\x80\x04\x95 this is not a network pickle")
    return project


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_with_one_clear_line_and_completes_nothing(project, case):
    config, expected = CASES[case]
    harness.write_config(project, config, name="bad.yaml")
    result = harness.run_snakemake(project, config_name="bad.yaml", check=False, timeout=300)
    output = result.stdout + result.stderr

    assert result.returncode != 0
    assert any(expected in line for line in output.splitlines()), f"no line with {expected!r} in:\n{output[-4000:]}"
    # Snakemake counts a job as done when its outputs exist; a failed job must leave none.
    results = project / "results"
    assert not results.exists() or not [p for p in results.rglob("*") if p.is_file()]
