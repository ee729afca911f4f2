"""Figures of the ablation grid: real + synthetic training against the real-only baselines,
and synthetic-only training against its size.

Both take the grid table of :func:`lib.stages.analyze.grid_table` (one row per source, regime,
multiplier and aux norm; ``<metric>.mean`` / ``.std`` / ``.count`` over seeds).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lib.plots import palette, style

# The real-only sources of the grid and how their baselines are drawn (line style, label);
# every other source is a prompt strategy (real + its synthetic images).
BASELINES = {"real": ("-", "real only (augmented)"),
             "real-noaug": (":", "real only (no augmentation)")}


def _baseline(ax: plt.Axes, rows: pd.DataFrame, metric: str, line: str, label: str) -> None:
    """A real-only baseline: its mean as a grey line, ± its std over seeds as a band."""
    if rows.empty:
        return
    m, s = rows[f"{metric}.mean"].iloc[0], rows[f"{metric}.std"].fillna(0).iloc[0]
    ax.axhline(m, color="0.3", linestyle=line, label=label)
    ax.axhspan(m - s, m + s, color="0.5", alpha=0.15)


def grid_figure(table: pd.DataFrame, metrics: tuple[str, ...] = ("val.top1", "ood_mean.top1")
                ) -> plt.Figure:
    """Real + synthetic against the real-only baselines: one panel per (metric, regime with
    real images); x = synthetic multiplier, colour = prompt strategy, solid = aux norm on,
    dashed = off; grey lines and bands = real-only (mean ± std over seeds)."""
    style()
    metrics = tuple(m for m in metrics if f"{m}.mean" in table.columns)
    regimes = [r for r in ("full", "limited") if r in set(table["regime"])]
    regimes += sorted(set(table["regime"]) - {"none", *regimes})
    strategies = sorted(set(table["source"]) - set(BASELINES))
    colors = dict(zip(strategies, palette(max(1, len(strategies)))))
    fig, axes = plt.subplots(len(metrics), max(1, len(regimes)), squeeze=False,
                             figsize=(4.6 * max(1, len(regimes)), 3.4 * len(metrics)))
    for i, metric in enumerate(metrics):
        for j, regime in enumerate(regimes):
            ax, rows = axes[i, j], table[table["regime"] == regime]
            for source, (line, label) in BASELINES.items():
                _baseline(ax, rows[rows["source"] == source], metric, line, label)
            for (source, aux), g in rows[rows["source"].isin(strategies)].groupby(
                    ["source", "aux_norm"]):
                ax.errorbar(g["multiplier"], g[f"{metric}.mean"],
                            yerr=g[f"{metric}.std"].fillna(0), marker="o", capsize=3,
                            color=colors[source], linestyle="-" if aux else "--",
                            label=f"{source}, aux {'on' if aux else 'off'}")
            ax.set(xlabel="synthetic images per real image (multiplier)", ylabel=metric,
                   title=f"{regime} real data")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle("Real + synthetic vs real only (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def synthetic_only_figure(table: pd.DataFrame, real_per_class: float,
                          metric: str = "val.top1") -> plt.Figure | None:
    """Synthetic-only training (regime ``none``) against the number of synthetic images per
    class, one line per prompt strategy; the real-only baseline as a grey band. None when the
    grid has no synthetic-only runs."""
    rows = table[table["regime"] == "none"]
    if rows.empty:
        return None
    style()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    full_real = table[(table["regime"] == "full") & (table["source"] == "real")]
    _baseline(ax, full_real, metric, "-", "real only (all real images)")
    strategies = sorted(set(rows["source"]))
    for color, source in zip(palette(len(strategies)), strategies):
        g = rows[rows["source"] == source]
        ax.errorbar(g["multiplier"] * real_per_class, g[f"{metric}.mean"],
                    yerr=g[f"{metric}.std"].fillna(0), marker="o", capsize=3, color=color,
                    label=source)
    ax.set_xscale("log")
    ax.set(xlabel="synthetic images per class", ylabel=metric,
           title="Synthetic-only training (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return fig
