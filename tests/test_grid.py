"""The ablation grid: its points and their configurations (lib.grid), resuming and the CLI
(lib.sweep), the aggregation over seeds and the headline numbers (lib.analysis.sweep), its figures (lib.plots.ablation)
and its declaration in dvc.yaml. Running sweep runs end to end (1 and 2 workers) is covered
by tests/test_pipeline.py."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from lib import config
from lib.analysis.sweep import grid_runs, grid_table, headline, summary_table
from lib.grid import config_hash, grid_points, point_config
from lib.io import write_json
from lib.plots.ablation import grid_figure, synthetic_only_figure
from lib.sweep import RESULTS, _done, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def train() -> config.TrainConfig:
    return config.load("train", ROOT / "params.yaml")


@pytest.fixture
def base() -> config.SweepConfig:
    cfg = config.load("sweep", ROOT / "params.yaml")
    return dataclasses.replace(cfg, regimes=("full", "limited", "none"), multipliers=(0.5, 1.0),
                               aux_norm=(True, False), seeds=(0, 1, 2), large=False,
                               limited_per_class=5)


def test_grid_points_per_source(base) -> None:
    real = grid_points(base, "real")
    assert [p.name for p in real] == [f"{r}-real-mna-aux0-s{s}" for r in ("full", "limited")
                                      for s in (0, 1, 2)]
    cdsd = grid_points(base, "cdsd")
    # full and limited: 2 multipliers x 2 aux x 3 seeds; none (synthetic only): aux off only
    assert len(cdsd) == 12 + 12 + 6
    assert not any(p.aux_norm for p in cdsd if p.regime == "none")
    assert len({p.name for p in cdsd}) == len(cdsd)
    large = dataclasses.replace(base, large=True, large_seeds=(0, 1, 2, 3, 4),
                                large_multipliers=(0.25, 0.5, 1.0))
    assert len(grid_points(large, "cdsd")) == 5 * 3 * (2 + 2 + 1)
    with pytest.raises(ValueError, match="multipliers must be positive"):
        grid_points(dataclasses.replace(base, multipliers=(0.0,)), "cdsd")


def test_point_config_sets_exactly_the_point(train, base) -> None:
    by_name = {p.name: p for p in grid_points(base, "cd") + grid_points(base, "real-noaug")}
    limited = point_config(train, base, by_name["limited-cd-m0.5-aux1-s2"])
    assert (limited.use_synthetic, limited.synthetic_strategy, limited.synthetic_multiplier,
            limited.aux_norm, limited.real_fraction, limited.real_per_class,
            limited.common.seed) == (True, "cd", 0.5, True, 1.0, 5, 2)
    assert limited.augment == train.augment and limited.lr == train.lr
    only = point_config(train, base, by_name["none-cd-m1-aux0-s0"])
    assert (only.real_fraction, only.aux_norm, only.use_synthetic) == (0.0, False, True)
    noaug = point_config(train, base, by_name["full-real-noaug-mna-aux0-s1"])
    assert (noaug.use_synthetic, noaug.augment, noaug.real_per_class) == (False, (), None)


def test_finished_runs_are_kept_only_with_the_same_configuration(train, base, tmp_path) -> None:
    point = grid_points(base, "sd")[0]
    assert not _done(train, base, point, tmp_path)
    write_json(tmp_path / point.name / RESULTS,
               {"config_hash": config_hash(point_config(train, base, point))})
    assert _done(train, base, point, tmp_path)
    assert not _done(dataclasses.replace(train, lr=train.lr * 2), base, point, tmp_path)
    # ... and only when trained on the same inputs (the digests of their provenance records)
    inputs = {"classes": "c1", "generate": "g1"}
    write_json(tmp_path / point.name / RESULTS,
               {"config_hash": config_hash(point_config(train, base, point), inputs)})
    assert _done(train, base, point, tmp_path, inputs)
    assert not _done(train, base, point, tmp_path, {**inputs, "generate": "g2"})
    (tmp_path / point.name / RESULTS).write_text("{truncated")
    assert not _done(train, base, point, tmp_path)


def test_cli_refuses_a_source_outside_the_sweep(capsys) -> None:
    assert main(["--source", "templates-x", "--out", "x"]) == 2
    assert "is not in sweep.sources" in capsys.readouterr().err


def _run(folder: Path, source: str, regime: str, mult: float, aux: bool, seed: int,
         top1: float) -> None:
    write_json(folder / source / f"{regime}-{source}-{mult}-{aux}-{seed}" / RESULTS,
               {"source": source, "regime": regime, "multiplier": mult, "aux_norm": aux,
                "seed": seed, "val.top1": top1, "val.loss": 1.0, "ood_blur.top1": top1 / 2,
                "ood_noise.top1": top1 / 4})


def test_grid_table_is_mean_std_count_over_seeds(tmp_path) -> None:
    for aux, seed, top1 in ((True, 0, 0.5), (True, 1, 0.7), (False, 0, 0.4)):
        _run(tmp_path, "cdsd", "full", 1.0, aux, seed, top1)
    runs = grid_runs(tmp_path)
    table = grid_table(runs).set_index("aux_norm")
    assert len(runs) == 3 and len(table) == 2
    assert runs["ood_mean.top1"].tolist() == pytest.approx(
        [0.4 * 3 / 8, 0.5 * 3 / 8, 0.7 * 3 / 8])
    assert table.loc[True, "val.top1.mean"] == pytest.approx(0.6)
    assert table.loc[True, "val.top1.std"] == pytest.approx(0.1414, abs=1e-4)
    assert table.loc[True, "val.top1.count"] == 2 and table.loc[True, "ood_blur.top1.count"] == 2
    assert math.isnan(table.loc[False, "val.top1.std"])  # one seed: no spread to report
    assert "val.loss.mean" not in table.columns
    assert grid_table(grid_runs(tmp_path / "none")).empty
    assert len(grid_runs(tmp_path, sources=("cdsd",))) == 3
    assert grid_runs(tmp_path, sources=("sd",)).empty


def test_summary_and_figures(tmp_path) -> None:
    for seed, top1 in ((0, 0.8), (1, 0.9)):
        _run(tmp_path, "real", "full", 0.0, False, seed, top1)
        _run(tmp_path, "real", "limited", 0.0, False, seed, top1 - 0.3)
        for mult in (0.5, 1.0):
            for aux in (True, False):
                _run(tmp_path, "cdsd", "full", mult, aux, seed, top1 + 0.01 * mult)
                _run(tmp_path, "cdsd", "limited", mult, aux, seed, top1 - 0.2)
            _run(tmp_path, "cdsd", "none", mult, False, seed, 0.3 * mult)
    table = grid_table(grid_runs(tmp_path))
    summary = summary_table(table)
    assert summary.loc[("full", "real", "-"), "-"] == "0.850 ± 0.071 (2)"
    assert summary.loc[("none", "cdsd", "off"), "1x"] == "0.300 ± 0.000 (2)"
    fig = grid_figure(table)
    assert [ax.get_title() for ax in fig.axes] == ["full real data", "limited real data"] * 2
    labels = fig.legends[0].get_texts()
    assert {t.get_text() for t in labels} >= {"real only (augmented)", "cdsd, aux on",
                                              "cdsd, aux off"}
    top = headline(table, runs=16)
    assert top["sweep_runs"] == 16
    assert top["full.real_only.val"] == pytest.approx(0.85)
    assert top["full.best_with_synthetic.val"] == pytest.approx(0.86)  # (0.81 + 0.91) / 2
    assert top["limited.real_only.val"] == pytest.approx(0.55)
    assert top["limited.best_with_synthetic.val"] == pytest.approx(0.65)
    assert top["synthetic_only.best.val"] == pytest.approx(0.3)
    assert top["full.real_only.ood_mean"] == pytest.approx(0.85 * 3 / 8)
    assert headline(table.iloc[0:0], runs=0) == {"sweep_runs": 0}
    synth = synthetic_only_figure(table, real_per_class=100)
    assert list(synth.axes[0].lines[-1].get_xdata()) == [50.0, 100.0]
    assert synthetic_only_figure(table[table["regime"] != "none"], 100) is None


def test_the_sweep_is_declared_as_a_dvc_matrix_over_the_sources() -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["sweep"]
    assert stage["matrix"] == {"source": "${sweep.sources}"}
    assert stage["cmd"].startswith("python -m lib.sweep ")
    assert "train" in stage["params"] and "sweep" in stage["params"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    strategies = params["profiles"]["mini"]["prompts"]["strategies"]
    assert set(params["sweep"]["sources"]) == {"real", "real-noaug", *strategies}
    assert not any(k.startswith("grid") for k in params["train"])  # a sweep edit spares `train`
