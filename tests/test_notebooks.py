"""The notebook contract: every stage has a thin, output-free notebook whose parameters cell
names exactly the stage's params.yaml keys, with the default profile's values."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest
import yaml

from lib import config, notebooks, runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {p.stem: p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
# A notebook calls lib; it holds no loops over data (figures and tables are lib functions).
LOOPS = (ast.For, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
         ast.Lambda)


def test_one_notebook_per_stage():
    assert set(NOTEBOOKS) == set(config.STAGES)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    # The CLI stages: the ablation grid and the studies' generations and runs (many runs or
    # settings each; see their comments in dvc.yaml).
    cli = {"sweep": "lib.sweep", "synth": "lib.study.synth", "retrieval": "lib.study.synth",
           "study": "lib.study"}
    stages = set(dvc["stages"]) - {"strip", *cli}
    assert stages == set(config.STAGES)
    for stage, module in cli.items():
        assert dvc["stages"][stage]["cmd"].startswith(f"python -m {module} ")
    assert dvc["stages"]["strip"]["foreach"] == list(config.STAGES)
    for stage in config.STAGES:
        assert dvc["stages"][stage]["cmd"] == f"python -m lib.runner {stage}"
        assert f"reports/source/{stage}.ipynb" in dvc["stages"][stage]["deps"]


@pytest.mark.parametrize("stage", config.STAGES)
def test_parameters_match_params_yaml(stage):
    nb = notebooks.read(NOTEBOOKS[stage])
    values = notebooks.parameter_values(nb, NOTEBOOKS[stage])
    assert list(values) == config.stage_keys(stage)
    assert values == config.load(stage, ROOT / "params.yaml").as_params()


@pytest.mark.parametrize("stage", config.STAGES)
def test_committed_without_outputs_and_thin(stage):
    nb = notebooks.read(NOTEBOOKS[stage])
    assert not notebooks.has_outputs(nb)
    assert nb["metadata"]["kernelspec"]["name"] == "synthscale"
    assert notebooks.dumps(notebooks.strip(nb)) == NOTEBOOKS[stage].read_text(encoding="utf-8")
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            tree = ast.parse("".join(cell["source"]))
            defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            assert not defs, f"{stage}: functions and classes belong in lib/, not notebooks"
            loops = [n for n in ast.walk(tree) if isinstance(n, LOOPS)]
            assert not loops, f"{stage}: loops over data belong in lib/ (e.g. lib/plots/)"


def test_strip_ignores_what_jupyterlab_changes():
    nb = notebooks.read(NOTEBOOKS["train"])
    saved = copy.deepcopy(nb)
    saved["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    saved["metadata"]["widgets"] = {"state": {}}
    for i, cell in enumerate(saved["cells"]):
        cell["metadata"]["collapsed"] = True
        if cell["cell_type"] == "code":
            cell["execution_count"] = i
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x\n"}]
    assert notebooks.has_outputs(saved)
    assert notebooks.dumps(notebooks.strip(saved)) == notebooks.dumps(notebooks.strip(nb))
    # ...but a change of code is a change.
    saved["cells"][-1]["source"] = "print('changed')"
    assert notebooks.dumps(notebooks.strip(saved)) != notebooks.dumps(notebooks.strip(nb))


def test_strip_cli_writes_stripped_copy(tmp_path):
    src = tmp_path / "nb.ipynb"
    nb = notebooks.read(NOTEBOOKS["zoo"])
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
    nb["cells"][2]["execution_count"] = 3
    src.write_text(json.dumps(nb))
    assert notebooks.main(["strip", "--check", str(src)]) == 1
    dest = tmp_path / "out" / "nb.ipynb"
    assert notebooks.main(["strip", str(src), str(dest)]) == 0
    assert notebooks.main(["strip", "--check", str(dest)]) == 0


def test_parameters_cell_mismatch_is_refused():
    nb = notebooks.read(NOTEBOOKS["train"])
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = cell["source"].replace("lr = ", "learning_rate = ")
    with pytest.raises(ValueError, match=r"missing: lr.*not in params.yaml: learning_rate"):
        notebooks.check_parameters(nb, config.stage_keys("train"), "train.ipynb")


def test_parameters_cell_must_be_literals():
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]},
                     "source": "import os\nx = 1\n"}]}
    with pytest.raises(ValueError, match="name = literal"):
        notebooks.parameter_values(nb)
    nb["cells"][0]["source"] = "x = os.getcwd()\n"
    with pytest.raises(ValueError, match="x is not a literal"):
        notebooks.parameter_values(nb)
    nb["cells"].append(copy.deepcopy(nb["cells"][0]))
    with pytest.raises(ValueError, match="exactly one cell tagged 'parameters'"):
        notebooks.parameter_values(nb)


def test_runner_refuses_bad_params_before_any_kernel(tmp_path, capsys, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("SYNTHSCALE_ROOT", str(tmp_path))
    assert runner.main(["train"]) == 2
    assert "[train] unknown parameter(s): learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
