"""Figures of how the models and the synthetic images score: recognizability of the synthetic
images (per class and prompt strategy), real val accuracy against it per class, and CLIP
zero-shot accuracy per set of training pairs."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib.plots import palette, style


def recognizability_figure(table: pd.DataFrame) -> plt.Figure:
    """Heatmap: classes x prompt strategies, share of synthetic images recognised (the
    ``recognizability`` table of :func:`lib.stages.analyze.recognizability`)."""
    style()
    grid = table.pivot(index="strategy", columns="name", values="recognizability")
    grid = grid[table.drop_duplicates("name").sort_values("label")["name"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.85 * grid.shape[1] + 2), 0.5 * len(grid) + 1.6))
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax,
                annot_kws={"fontsize": 8},
                cbar_kws={"label": "recognised by a real-only classifier"})
    ax.set(xlabel="class", ylabel="prompt strategy",
           title="Recognizability of the synthetic images")
    return fig


def per_class_figure(table: pd.DataFrame) -> plt.Figure:
    """Bars per class: real val top-1 (column ``val``) next to the recognizability of the
    class's synthetic images (column ``recognizability``)."""
    style()
    long = table.melt(id_vars="name", value_vars=["val", "recognizability"],
                      var_name="measure", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(table)), 3.5))
    sns.barplot(long, x="name", y="accuracy", hue="measure", ax=ax)
    ax.set(xlabel="class", ylabel="top-1", ylim=(0, 1),
           title="Real val accuracy vs recognizability of synthetic images")
    ax.tick_params(axis="x", rotation=45)
    return fig


def zero_shot_figure(zero_shot: dict[str, Any]) -> plt.Figure:
    """Bars: CLIP zero-shot top-1 on real val per set of training pairs (``before`` = as
    loaded), from the clip stage's ``zero_shot.json``."""
    style()
    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(zero_shot)
    ax.bar(names, [zero_shot[n]["top1"] for n in names], color=palette(len(names)))
    ax.set(ylabel="zero-shot top-1 (real val)", ylim=(0, 1), title="CLIP by training pairs")
    return fig
