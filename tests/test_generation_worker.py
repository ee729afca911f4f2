"""The generate config and the generation worker's rank/device plumbing
(lib.generation.worker) and command line (``python -m lib.generation``)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lib import config
from lib.generation import worker
from lib.generation.__main__ import main
from lib.io import write_json

ROOT = Path(__file__).resolve().parents[1]


def prompt_table(n: int = 4) -> pd.DataFrame:
    """A prompt manifest of ``n`` rows with the columns the worker needs."""
    return pd.DataFrame(
        {"id": [f"img-{i:04d}" for i in range(n)], "class_id": [i % 2 for i in range(n)],
         "class_name": [f"class{i % 2}" for i in range(n)], "strategy": ["classname"] * n,
         "prompt": [f"a photo of {i}" for i in range(n)], "negative_prompt": [""] * n}
    )


def _generate_section(**changes) -> dict:
    """The generate section of params.yaml with ``changes`` where each key lives."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = params["profiles"][params["common"]["profile"]]["generate"]
    for key, value in changes.items():
        (profile if key in profile else params["generate"])[key] = value
    return config.stage_section(params, "generate")


def test_config_guidance_by_strategy_is_a_checked_mapping():
    cfg = config.build("generate", _generate_section(guidance_by_strategy={"classname": 4}))
    assert cfg.guidance_by_strategy == {"classname": 4.0}
    assert isinstance(cfg.guidance_by_strategy["classname"], float)
    assert cfg.as_params()["guidance_by_strategy"] == {"classname": 4.0}
    for bad, message in [
        ([4.0], "guidance_by_strategy must be a mapping, got list"),
        ({"classname": "high"}, "guidance_by_strategy.classname must be float, got str"),
        ({1: 2.0}, "guidance_by_strategy key 1 must be str, got int"),
    ]:
        with pytest.raises(config.ConfigError, match=re.escape(f"[generate] {message}")):
            config.build("generate", _generate_section(guidance_by_strategy=bad))
    with pytest.raises(config.ConfigError, match=re.escape("[generate] nproc must be int")):
        config.build("generate", _generate_section(nproc="2"))


def test_dist_env_and_rank_device():
    assert worker.dist_env({}) == (0, 1, 0)
    assert worker.dist_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5"}
    assert worker.dist_env(slurm) == (5, 16, 5)
    with pytest.raises(ValueError, match="rank 4 is not in 0..3"):
        worker.dist_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert worker.rank_device("cuda", 3, 8) == "cuda:3"
    assert worker.rank_device("cuda:1", 0, 1) == "cuda:1"
    assert worker.rank_device("cuda:0", 2, 4) == "cuda:2"
    assert worker.rank_device("cpu", 2, 4) == "cpu"


def test_worker_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHSCALE_ROOT", str(tmp_path))
    cfg = config.build("generate", _generate_section())
    with pytest.raises(FileNotFoundError, match="run the prompts stage first"):
        worker.run_worker(cfg)
    (tmp_path / "outputs/prompts").mkdir(parents=True)
    prompt_table().iloc[:0].to_parquet(tmp_path / "outputs/prompts/prompts.parquet")
    with pytest.raises(ValueError, match="prompts table is empty"):
        worker.run_worker(cfg)
    prompt_table().to_parquet(tmp_path / "outputs/prompts/prompts.parquet")
    with pytest.raises(FileNotFoundError, match="'./outputs/zoo/t2i' does not exist"):
        worker.run_worker(cfg)  # the zoo was not built under this root


# torchrun's error recorder cannot install its fault handler on pytest's captured stderr.
@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")
def test_command_line_reports_a_bad_config(tmp_path, capsys):
    values = config.build("generate", _generate_section()).as_params() | {"nproc": "2"}
    path = write_json(tmp_path / "config.json", values)
    assert main(["--config", str(path)]) == 2
    assert "[generate] nproc must be int" in capsys.readouterr().err
