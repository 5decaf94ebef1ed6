"""The people-facing commands on a finished tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from pipeline.cli import main
from tests.conftest import REPO_ROOT

RUN = "results/tiny"


def test_visualize_writes_a_tuning_strip(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "strip.png"
    run = finished_run / RUN
    probe = int(np.flatnonzero(zarr.open_group(run / "latents.zarr", mode="r")["split"][...] == "probe")[0])
    argv = ["visualize", "--run", str(run), "--unit", "2", "--sample", str(probe), "--steps", "4", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height > 0


def test_render_activation_renders_every_row(finished_run: Path, tmp_path: Path) -> None:
    run = finished_run / RUN
    r = zarr.open_group(run / "activations.zarr", mode="r")["r"][:3]
    np.save(tmp_path / "r.npy", r)
    out = tmp_path / "images.png"
    assert main(["render-activation", "--run", str(run), "--npy", str(tmp_path / "r.npy"), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG"

    np.save(tmp_path / "wrong.npy", r[:, :5])
    assert main(["render-activation", "--run", str(run), "--npy", str(tmp_path / "wrong.npy"), "--out", str(out)]) == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--unit", "99", "--sample", "0"], "--unit: 99 is out of range; the classifier has 16 units"),
        (["--unit", "0", "--sample", "100000"], "--sample: 100000 is out of range"),
    ],
)
def test_visualize_rejects_bad_ids_in_one_line(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    argv = ["visualize", "--run", str(finished_run / RUN), *arguments, "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_missing_run_directory_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["visualize", "--run", str(tmp_path / "nowhere"), "--unit", "0", "--sample", "0", "--out", "x.png"]
    assert main(argv) == 2
    assert "nowhere/latents.zarr: not found" in capsys.readouterr().err


def test_module_entry_point() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0
    assert "visualize" in process.stdout and "render-activation" in process.stdout
