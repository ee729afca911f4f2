"""Figure of the prompts: their diversity per prompt strategy, before any image exists."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib.plots import style


def diversity_figure(table: pd.DataFrame) -> plt.Figure:
    """Embedding dispersion and distinct bigrams per strategy (mean ± sd over classes), from
    the per-class table of :func:`lib.diversity.diversity_table`; strategies by dispersion."""
    style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    order = table.groupby("strategy")["dispersion"].mean().sort_values().index
    for ax, col, label in zip(axes, ["dispersion", "distinct_2"],
                              ["embedding dispersion", "distinct bigrams"]):
        sns.barplot(table, x="strategy", y=col, order=order, ax=ax, errorbar="sd")
        ax.set(xlabel="", ylabel=label)
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle("Prompt diversity per strategy (mean ± sd over classes)")
    fig.tight_layout()
    return fig
