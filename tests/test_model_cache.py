"""Weight hashes and model descriptions: computed once per file and spec, then read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.models import ModelDescription, describe_model, registry
from pipeline.models import description as description_module
from pipeline.models.cache import CACHE_DIR_VARIABLE, TRACE_VARIABLE
from tests.workflow_harness import export_tiny_classifier

TINY_GENERATOR = {"kind": "python", "entrypoint": "tests.tiny_models:tiny_generator"}


@pytest.fixture
def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh cache directory and memory, and a function returning the trace lines so far."""
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv(TRACE_VARIABLE, str(tmp_path / "trace"))
    monkeypatch.setattr(registry, "_FILE_HASHES", {})
    monkeypatch.setattr(description_module, "_MEMORY", {})

    def lines() -> list[str]:
        trace = tmp_path / "trace"
        return trace.read_text().splitlines() if trace.exists() else []

    return lines


def forget_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new process (a cluster job, the next plan) starts with: the disk cache alone."""
    monkeypatch.setattr(registry, "_FILE_HASHES", {})
    monkeypatch.setattr(description_module, "_MEMORY", {})


def test_a_file_is_hashed_once_per_size_and_mtime(tmp_path, traced, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"first")
    first = registry.file_sha256(path)
    assert registry.file_sha256(path) == first
    forget_memory(monkeypatch)
    assert registry.file_sha256(path) == first
    assert traced() == [f"sha256 {path.resolve()}"]

    path.write_bytes(b"other")  # same size, new mtime
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert registry.file_sha256(path) != first
    assert len(traced()) == 2


def test_a_description_loads_the_model_once_and_follows_its_weights(tmp_path, traced, monkeypatch):
    path = tmp_path / "classifier.pt"
    export_tiny_classifier(path)
    spec = {"kind": "torchscript", "path": str(path), "input_size": 32}
    described = describe_model(spec, "classifier")
    assert described == ModelDescription(role="classifier", num_units=16, num_classes=8, has_head=True)
    forget_memory(monkeypatch)
    assert describe_model(spec, "classifier") == described
    assert [line for line in traced() if line.startswith("load")] == ["load classifier torchscript"]

    export_tiny_classifier(path, seed=1)
    describe_model(spec, "classifier")
    assert [line for line in traced() if line.startswith("load")] == ["load classifier torchscript"] * 2


def test_a_generator_description_has_its_shape_numbers(traced):
    described = describe_model(TINY_GENERATOR, "generator")
    generator = __import__("tests.tiny_models", fromlist=["tiny_generator"]).tiny_generator()
    with torch.no_grad():
        image = generator.synthesis(torch.zeros(1, generator.num_ws, generator.w_dim))
    assert (described.z_dim, described.c_dim, described.w_dim, described.num_ws) == (
        generator.z_dim,
        generator.c_dim,
        generator.w_dim,
        generator.num_ws,
    )
    assert described.resolution == image.shape[-1]
    assert described.num_units is None
    with pytest.raises(ValueError, match="role: expected one of classifier, generator"):
        describe_model(TINY_GENERATOR, "discriminator")
