"""The figures (lib.plots): each returns a figure with the expected panels and labels on tiny
inputs; the display tables the notebooks show; the save helper. The ablation grid's figures
are tested with its aggregation in tests/test_grid.py."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib import plots
from lib.finetuning import ModelSamples
from lib.mini.t2i import GuidanceSamples
from lib.plots.evaluation import per_class_figure, recognizability_figure, zero_shot_figure
from lib.plots.images import (
    corruption_figure,
    guidance_grid_figure,
    model_grid_figure,
    sample_grid_figure,
)
from lib.plots.prompts import diversity_figure
from lib.plots.tables import (
    closest_candidates,
    evaluation_table,
    model_sizes,
    value_counts,
    zero_shot_table,
)
from lib.plots.training import (
    classifier_curves_figure,
    clip_loss_figure,
    diffusion_loss_figure,
)

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")


def test_save_figure_writes_png_and_pdf(tmp_path) -> None:
    fig = plots.image_grid([np.zeros((4, 4))] * 3, titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    paths = plots.save_figure(fig, tmp_path / "grid")
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    first = paths[1].read_bytes()
    plots.save_figure(fig, tmp_path / "grid")
    assert paths[1].read_bytes() == first  # no creation date: a re-run writes the same bytes


def test_recognizability_and_per_class_figures() -> None:
    rec = pd.DataFrame({"strategy": ["cd", "cd", "sd", "sd"], "label": [1, 0, 1, 0],
                        "name": ["one", "zero", "one", "zero"],
                        "recognizability": [0.5, 1.0, 0.25, 0.75]})
    fig = recognizability_figure(rec)
    ax = fig.axes[0]
    assert ax.get_title() == "Recognizability of the synthetic images"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["zero", "one"]  # by label
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cd", "sd"]
    table = pd.DataFrame({"name": ["zero", "one"], "val": [0.9, 0.8],
                          "recognizability": [0.875, 0.375]})
    fig = per_class_figure(table)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "top-1" and ax.get_ylim() == (0, 1)
    assert sorted(round(p.get_height(), 3) for p in ax.patches if p.get_height()) == [
        0.375, 0.8, 0.875, 0.9]


def test_zero_shot_figure() -> None:
    fig = zero_shot_figure({"before": {"top1": 0.2}, "real": {"top1": 0.7}})
    ax = fig.axes[0]
    assert ax.get_title() == "CLIP by training pairs"
    assert [p.get_height() for p in ax.patches] == [0.2, 0.7]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["before", "real"]


def test_classifier_curves_skip_empty_columns() -> None:
    history = pd.DataFrame({"step": [1, 2], "loss": [2.0, 1.0], "loss_real": [2.0, 1.0],
                            "loss_synthetic": [np.nan, np.nan], "acc_real": [0.1, 0.5]})
    fig = classifier_curves_figure(history)
    loss, acc = fig.axes
    assert [line.get_label() for line in loss.lines] == ["loss", "loss_real"]
    assert [line.get_label() for line in acc.lines] == ["acc_real"]
    assert (loss.get_title(), acc.get_title()) == ("Training loss", "Training-batch accuracy")


def test_clip_loss_figure_one_line_per_source() -> None:
    history = pd.DataFrame({"source": ["real"] * 3 + ["synthetic"] * 3,
                            "step": [0, 1, 2] * 2, "loss": [3.0, 2.0, 1.0, 3.0, 2.5, 2.0]})
    fig = clip_loss_figure(history)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "loss")
    assert len([line for line in ax.lines if len(line.get_xdata())]) == 2
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"real", "synthetic"}


def test_corruption_figure_rows_titled_by_set() -> None:
    val = np.zeros((2, 4, 4), np.uint8)
    fig = corruption_figure({"val": val, "invert": 255 - val})
    assert [ax.get_title() for ax in fig.axes] == ["val", "val", "invert", "invert"]
    assert all(ax.images[0].get_cmap().name == "gray" for ax in fig.axes)  # grey, not false colour


def test_sample_grid_figure_labels_rows() -> None:
    white = Image.new("RGB", (4, 4), "white")
    grid = {"images": [white] * 4, "titles": ["cd", "", "", ""], "ncols": 2,
            "row_labels": ["one", "two"]}
    fig = sample_grid_figure(grid)
    assert fig.axes[0].get_title() == "cd"
    assert [t.get_text() for ax in fig.axes[::2] for t in ax.texts] == ["one", "two"]


def test_guidance_grid_figure() -> None:
    images = np.zeros((3, 2, 4, 8, 8), np.uint8)
    samples = GuidanceSamples(images, ["a", "b", "c"], [1.0, 2.5], [0, 1, 2, 3], steps=5)
    fig = guidance_grid_figure(samples)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:2]] == ["guidance 1", "guidance 2.5"]
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["a", "b", "c"]
    assert fig.get_suptitle() == "mini text-to-image: 4 seeds per cell, 5 steps"
    strip = fig.axes[0].images[0].get_array()
    assert strip.shape == (8, 4 * 9 - 1) and strip.mask[:, 8].all()  # a gap between seeds


def test_model_grid_figure_one_column_per_model() -> None:
    images = np.full((2, 2, 3, 8, 8), 255, np.uint8)
    samples = ModelSamples(images, ["the digit one", "the digit two"],
                           ["off-the-shelf", "fine-tuned"], [0, 1, 2], steps=20, guidance=2.0)
    fig = model_grid_figure(samples)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["off-the-shelf", "fine-tuned"]
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["the digit one", "the digit two"]
    assert fig.get_suptitle() == "3 seeds per cell, 20 steps, guidance 2"
    assert fig.axes[0].images[0].get_clim() == (0, 255)  # pixels, not the mini levels


def test_diffusion_loss_figure_adds_a_running_mean() -> None:
    fig = diffusion_loss_figure([1.0, 0.5, 0.3, 0.2], window=2)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and list(lines[1].get_ydata()) == [1.0, 0.75, 0.4, 0.25]


def test_diversity_figure_orders_strategies_by_dispersion() -> None:
    table = pd.DataFrame({"strategy": ["cd", "cd", "sd", "sd"], "class_id": ["a", "b"] * 2,
                          "dispersion": [0.5, 0.7, 0.1, 0.2], "distinct_2": [0.4, 0.5, 0.9, 1]})
    fig = diversity_figure(table)
    assert [ax.get_ylabel() for ax in fig.axes] == ["embedding dispersion", "distinct bigrams"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["sd", "cd"]


def test_zero_shot_and_evaluation_tables() -> None:
    results = {"before": {"top1": 0.2}, "real": {"top1": 0.7, "num_pairs": 40}}
    table = zero_shot_table(results)
    assert list(table.index) == ["before", "real"] and list(table.columns) == ["top1", "pairs"]
    assert table.loc["real", "pairs"] == 40 and pd.isna(table.loc["before", "pairs"])
    evals = {"val": {"top1": 0.9, "top5": 1.0, "loss": 0.3, "n": 10, "per_class": []}}
    assert evaluation_table(evals).loc["val"].tolist() == [0.9, 1.0, 0.3, 10]


def test_closest_candidates() -> None:
    cands = pd.DataFrame({"class_id": ["a", "a", "b", "b", "c"],
                          "text": ["a1", "a2", "b1", "b2", "c1"],
                          "score": [0.1, 0.9, 0.5, 0.45, 0.3]})
    out = closest_candidates(cands, n=1)
    assert out["text"].tolist() == ["b1", "b2"]  # margin 0.05 < a's 0.8 < c's (one: inf)
    assert closest_candidates(cands, n=2)["text"].tolist() == ["a2", "a1", "b1", "b2"]


def test_model_sizes_and_value_counts(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 2000)
    sizes = model_sizes({"t2i": "m"}, tmp_path)
    assert sizes.to_dict(orient="records") == [{"model": "t2i", "files": 1, "MB": 0.002}]
    attrs = pd.DataFrame({"weight": ["bold", "thin", "bold"], "aspect": [1, 1, 2]})
    counts = value_counts(attrs, ["weight", "aspect"])
    assert counts.loc["bold", "weight"] == 2 and counts.loc["bold", "aspect"] == 0
    assert counts.loc["1", "aspect"] == 2
