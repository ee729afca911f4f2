"""The ablation grid: one run's configuration (lib.train_cli) and the aggregation over seeds
(lib.stages.analyze), and its declaration in dvc.yaml."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from lib import config
from lib.io import write_json
from lib.stages.analyze import grid_figure, grid_runs, grid_table
from lib.train_cli import grid_config, main

ROOT = Path(__file__).resolve().parents[1]


def test_grid_config_replaces_only_the_grid_settings() -> None:
    base = config.load("train", ROOT / "params.yaml")
    run = grid_config(base, "combined", 0.5, False, 3)
    assert (run.use_synthetic, run.synthetic_multiplier, run.aux_norm, run.common.seed) == (
        True, 0.5, False, 3)
    assert grid_config(base, "real", 2, True, 0).use_synthetic is False
    assert run.steps == base.steps and run.lr == base.lr and run.common.dirs == base.common.dirs
    with pytest.raises(ValueError, match="unknown variant 'synthetic'; valid: real, combined"):
        grid_config(base, "synthetic", 1, True, 0)


def test_cli_refuses_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["--variant", "combined", "--multiplier", "1", "--aux-norm", "maybe", "--seed", "0",
              "--out", "x", "--metrics", "y.json"])


def test_grid_table_is_mean_std_count_over_seeds(tmp_path) -> None:
    for aux, seed, top1 in ((True, 0, 0.5), (True, 1, 0.7), (False, 0, 0.4)):
        write_json(tmp_path / f"r-{aux}-{seed}.json",
                   {"variant": "combined", "multiplier": 1.0, "aux_norm": aux, "seed": seed,
                    "val.top1": top1, "val.loss": 1.0, "ood_blur.top1": top1 / 2})
    runs = grid_runs(tmp_path)
    table = grid_table(runs).set_index("aux_norm")
    assert len(runs) == 3 and len(table) == 2
    assert table.loc[True, "val.top1.mean"] == pytest.approx(0.6)
    assert table.loc[True, "val.top1.std"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc[True, "val.top1.count"] == 2 and table.loc[True, "ood_blur.top1.count"] == 2
    assert math.isnan(table.loc[False, "val.top1.std"])  # one seed: no spread to report
    assert "val.loss.mean" not in table.columns
    assert grid_figure(grid_table(runs)).axes[0].get_legend() is not None
    assert grid_table(grid_runs(tmp_path / "none")).empty


def test_the_grid_is_declared_as_a_dvc_matrix_over_the_params() -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train-grid"]
    assert set(stage["matrix"]) == {"variant", "multiplier", "aux", "seed"}
    assert stage["matrix"]["multiplier"] == "${train.grid_multipliers}"
    params = config.load("train", ROOT / "params.yaml")
    smoke_runs = (len(params.grid_variants) * len(params.grid_multipliers)
                  * len(params.grid_aux_norm) * len(params.grid_seeds))
    assert smoke_runs <= 4  # the smoke pipeline stays small
