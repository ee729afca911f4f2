"""pyproject.toml and environment.yml name the same pinned dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> tuple[str, str]:
    name, _, version = req.partition("==")
    return re.sub(r"[-_.]+", "-", name.strip().lower()), version.strip()


def test_pyproject_and_environment_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert all("==" in r for r in pip_reqs), "every dependency is pinned"
    assert dict(map(_norm, pip_reqs)) == dict(map(_norm, conda_pip))
    assert "python=3.11" in env["dependencies"]


def test_torch_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(map(_norm, project["dependencies"]))
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"


def test_notebook_progress_bars_have_widgets():
    """tqdm.auto renders widgets in JupyterLab only with ipywidgets installed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "ipywidgets" in dict(map(_norm, project["dependencies"]))
