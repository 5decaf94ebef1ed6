"""The conda environment and the Python package declare the same dependencies."""

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_reqs = {r for r in pip_section if not r.startswith("-e")}
    assert conda_reqs == set(project["dependencies"])
    python_req = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python_req.removeprefix("python") == project["requires-python"]


def test_gitignore_excludes_outputs():
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {".venv/", "results/", ".snakemake/"} <= ignored
