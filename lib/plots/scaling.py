"""Figures of the two studies: scaling curves with their fitted power laws, accuracy against
the synthetic multiplier, the ablation's rows, and the verdicts of the claims.

The inputs are the tables of :mod:`lib.analysis.curves` and :mod:`lib.analysis.verdicts`
(passed in, not imported: the plots and the analysis are independent layers): the study runs
table (one row per run), the fits table of ``curve_fits`` (one row per curve and metric with
``B``/``k`` or ``E``/``A``/``alpha``, ``k_lo``/``k_hi``, ``error``), the ablation table of
``claims_diversify.ablation_table`` and the claims table of ``verdicts.claims_table``. A
top-1 metric is drawn on the scaling plots as its error ``1 - top1``, as it is fitted.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.plots import palette, style

Z95 = 1.96
VERDICT_COLOURS = {"reproduced": "#a6dba0", "not reproduced": "#f4a582",
                   "inconclusive": "#d9d9d9", "not measured": "#ffffff"}


def _fitted(values: pd.Series, metric: str) -> pd.Series:
    return 1.0 - values if metric.endswith("top1") else values


def _seed_stats(rows: pd.DataFrame, x: str, y: pd.Series) -> pd.DataFrame:
    """Per value of ``x``: mean over seeds and the 95 % half-width (0 for one seed)."""
    g = y.groupby(rows[x]).agg(["mean", "std", "count"])
    g["half"] = (Z95 * g["std"] / np.sqrt(g["count"])).fillna(0.0)
    return g


def _fit_row(fits: pd.DataFrame, curve: str, metric: str) -> pd.Series | None:
    rows = fits[(fits["curve"] == curve) & (fits["metric"] == metric)]
    return None if rows.empty else rows.iloc[0]


def _fit_label(curve: str, fit: pd.Series | None) -> str:
    if fit is None:
        return f"{curve} (not fitted)"
    if isinstance(fit.get("error"), str) and fit["error"]:
        return f"{curve} (no fit: {textwrap.shorten(fit['error'], 40)})"
    exp = "alpha" if fit.get("form") == "saturating" else "k"
    return f"{curve}: {exp}={fit[exp]:.3f} [{fit[f'{exp}_lo']:.3f}, {fit[f'{exp}_hi']:.3f}]"


def _fit_curve_values(fit: pd.Series, n: np.ndarray) -> np.ndarray:
    if fit.get("form") == "saturating":
        return fit["E"] + fit["A"] * n ** (-fit["alpha"])
    return fit["B"] * n ** (-fit["k"])


def _draw_curves(ax: plt.Axes, runs: pd.DataFrame, fits: pd.DataFrame, curves: Sequence[str],
                 metric: str, x: str) -> None:
    """Seed means with 95 % error bars and the fitted law (a line, gid "fit") per curve."""
    for colour, curve in zip(palette(max(1, len(curves))), curves):
        rows = runs[(runs["curve"] == curve) & runs[metric].notna()]
        if rows.empty:
            continue
        stats = _seed_stats(rows, x, _fitted(rows[metric], metric))
        fit = _fit_row(fits, curve, metric)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["half"], fmt="o", capsize=3,
                    color=colour, label=_fit_label(curve, fit))
        if fit is not None and not (isinstance(fit.get("error"), str) and fit["error"]):
            n = np.geomspace(stats.index.min(), stats.index.max(), 50)
            ax.plot(n, _fit_curve_values(fit, n), color=colour, gid="fit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    what = "top-1 error" if metric.endswith("top1") else "loss"
    ax.set(xlabel=f"training images ({x})", ylabel=f"{metric} ({what})")
    ax.legend(fontsize=7)


def scaling_figure(runs: pd.DataFrame, fits: pd.DataFrame, curves: Sequence[str],
                   metric: str = "val.loss", x: str = "n_images") -> plt.Figure:
    """Log-log ``metric`` (a top-1 as its error) against ``x``: per curve, the seed means with
    95 % error bars and the fitted power law; the legend gives k and its 95 % interval."""
    style()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    _draw_curves(ax, runs, fits, curves, metric, x)
    ax.set_title(f"Scaling of {metric} (mean ± 95 % over seeds; line: fit)")
    fig.tight_layout()
    return fig


def factor_panels(runs: pd.DataFrame, fits: pd.DataFrame, panels: Mapping[str, Sequence[str]],
                  metric: str = "val.loss", x: str = "n_images") -> plt.Figure:
    """One log-log panel per factor (``{title: curves}``, e.g. prompts, guidance, generator,
    real vs synthetic), drawn as :func:`scaling_figure`; two panels per row."""
    style()
    ncols = min(2, max(1, len(panels)))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.2 * nrows), squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        _draw_curves(ax, runs, fits, curves, metric, x)
        ax.set_title(title)
    for ax in axes.flat[len(panels):]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


def multiplier_figure(runs: pd.DataFrame, curves: Sequence[str],
                      metrics: Sequence[str] = ("val.top1", "ood.top1")) -> plt.Figure:
    """Accuracy against the synthetic multiplier (symlog x, so 0 = real only is shown): per
    curve the mean over seeds as a line and its 95 % interval as a band; one panel per
    metric. A missing metric column fails naming it (``ood.top1``: add it with
    ``lib.analysis.curves.ood_mean``)."""
    missing = [m for m in metrics if m not in runs.columns]
    if missing:
        raise KeyError(f"the runs table has no column(s) {missing}; ood.top1 / ood.loss come "
                       f"from lib.analysis.curves.ood_mean(runs)")
    style()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for colour, curve in zip(palette(max(1, len(curves))), curves):
            rows = runs[(runs["curve"] == curve) & runs[metric].notna()]
            if rows.empty:
                continue
            s = _seed_stats(rows, "multiplier", rows[metric])
            ax.plot(s.index, s["mean"], marker="o", color=colour, label=curve)
            ax.fill_between(s.index, s["mean"] - s["half"], s["mean"] + s["half"],
                            color=colour, alpha=0.2)
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set(xlabel="synthetic images per real image (multiplier)", ylabel=metric,
               title=f"{metric} (mean ± 95 % over seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ablation_figure(table: pd.DataFrame, metric: str = "val.top1") -> plt.Figure:
    """The ablation's rows as horizontal bars (mean, 95 % error bars), first row on top, each
    annotated with its delta against the row above (``*``: larger than 2 std of that row)."""
    style()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(table) + 1.2))
    y = np.arange(len(table))
    ax.barh(y, table["mean"], xerr=table["half"].fillna(0), capsize=3,
            color=palette(1)[0], alpha=0.8)
    ax.set_yticks(y, table["label"] if "label" in table else table["row"])
    ax.invert_yaxis()
    for yi, (_, r) in zip(y, table.iterrows()):
        if pd.notna(r["delta"]):
            big = r.get("exceeds_2std")
            star = "*" if pd.notna(big) and bool(big) else ""
            ax.annotate(f"{r['delta']:+.3f}{star}", (r["mean"] + r["half"], yi),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    low = float((table["mean"] - table["half"].fillna(0)).min())
    ax.set_xlim(max(0.0, low - 0.05), float((table["mean"] + table["half"].fillna(0)).max())
                + 0.05)
    ax.set(xlabel=f"{metric} (mean ± 95 % over seeds; delta vs the row above, * > 2 std)",
           title="Ablation")
    fig.tight_layout()
    return fig


def _interval_text(r: pd.Series) -> str:
    if pd.isna(r["estimate"]) or pd.isna(r["low"]):
        return "-"
    return f"{r['estimate']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"


def verdict_figure(claims: pd.DataFrame) -> plt.Figure:
    """The claims as a table (id, statement, ours with its 95 % interval, verdict), each row
    coloured by its verdict: green reproduced, red not reproduced, grey inconclusive, white
    not measured."""
    style()
    cells = [[r["id"], textwrap.shorten(str(r["statement"]), 64), _interval_text(r),
              r["verdict"]] for _, r in claims.iterrows()]
    fig, ax = plt.subplots(figsize=(12, 0.25 * (len(cells) + 1)))
    ax.axis("off")
    if not cells:
        return fig
    colours = [[VERDICT_COLOURS.get(r["verdict"], "#ffffff")] * 4 for _, r in claims.iterrows()]
    table = ax.table(cellText=cells, cellColours=colours, bbox=[0, 0, 1, 1], cellLoc="left",
                     colLabels=["claim", "statement", "ours [95 %]", "verdict"],
                     colWidths=[0.2, 0.47, 0.2, 0.13])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    fig.tight_layout()
    return fig


def per_class_gain_figure(per_class: pd.DataFrame, curves: Sequence[str],
                          metric: str = "val") -> plt.Figure:
    """Per class, the top-1 gain of each curve's largest multiplier over its real-only point
    (multiplier 0), mean over seeds: one group of bars per class, one bar per curve."""
    style()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    present = [c for c in curves if c in set(per_class["curve"])]
    width = 0.8 / max(len(present), 1)
    for i, curve in enumerate(present):
        rows = per_class[per_class["curve"] == curve]
        means = rows.groupby(["name", "multiplier"])[metric].mean().unstack("multiplier")
        if 0.0 not in means.columns or len(means.columns) < 2:
            continue
        top = max(means.columns)
        gain = (means[top] - means[0.0]).reindex(rows.drop_duplicates("name")
                                                 .sort_values("label")["name"])
        x = np.arange(len(gain)) + i * width
        ax.bar(x, gain.values, width, label=f"{curve} ({top:g}x)", color=palette(len(present))[i])
        ax.set_xticks(np.arange(len(gain)) + 0.4 - width / 2, gain.index, rotation=30, fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(f"{metric} top-1 gain over real only")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
