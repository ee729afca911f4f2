"""Stage ``analyze``: recognizability of the synthetic images, the ablation grid, the figures.

Recognizability of class c (per prompt strategy) = the share of synthetic images generated
for c that a classifier trained on *real* images only assigns to c. The judge is the grid's
first real-only run (``train-grid/real``, regime ``full``, lowest seed) when the grid has
one, else the ``train`` stage's model; which one is recorded in the metrics. It is loaded as
a *plain* timm model from its checkpoint (auxiliary norms dropped).

The ablation grid (dvc.yaml ``train-grid``, one stage per source) is aggregated into one row
per (source, regime, multiplier, aux norm): mean, standard deviation (ddof=1; empty for a
single seed) and count over seeds of each set's top-1 (``ood_mean`` = the mean over the OOD
corruptions), written as ``grid.csv`` and shown as figures: real + synthetic against the
real-only baselines per regime, and synthetic-only training against its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib import paths, plots, shards
from lib.config import AnalyzeConfig
from lib.io import atomic_path, read_json, write_json
from lib.metrics import write_metrics
from lib.training.checkpoints import load_plain_timm
from lib.training.datasets import ImageArrayDataset
from lib.training.evaluation import predict

REAL_SOURCES = ("real", "real-noaug")


def judge_checkpoint(cfg: AnalyzeConfig) -> tuple[Path, str]:
    """The real-only classifier that judges recognizability, and a name for it."""
    grid = Path(f"{cfg.path('train')}-grid") / "real"
    runs = sorted(grid.glob("full-real-*-s*/model.pt"),
                  key=lambda p: int(p.parent.name.rsplit("-s", 1)[1]))
    if runs:
        return runs[0], f"train-grid/real/{runs[0].parent.name}"
    return cfg.path("train") / "model.pt", "train"


def recognizability(cfg: AnalyzeConfig, classes: pd.DataFrame,
                    ckpt: Path | None = None) -> pd.DataFrame:
    """Per (strategy, class): share of its synthetic images the judge assigns to the class."""
    import torch

    ckpt = ckpt or judge_checkpoint(cfg)[0]
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]
    model = load_plain_timm(ckpt, meta["arch"], meta["num_classes"], meta["in_chans"])
    label_of = dict(zip(classes["class_id"], classes["label"]))
    ims, labels, strategies = [], [], []
    for s in shards.iter_samples(cfg.path("generate")):
        ims.append(np.asarray(s["image"].convert("RGB")))
        labels.append(label_of[s["meta"]["class_id"]])
        strategies.append(s["meta"]["strategy"])
    ds = ImageArrayDataset(np.stack(ims), np.asarray(labels), meta["image_size"],
                           meta["in_chans"], synthetic=True)
    probs, y = predict(model, ds, batch_size=cfg.batch_size, device=cfg.common.device)
    found = pd.DataFrame({"strategy": strategies, "label": y, "hit": probs.argmax(axis=1) == y})
    table = found.groupby(["strategy", "label"]).agg(
        recognizability=("hit", "mean"), num_synthetic=("hit", "size")).reset_index()
    return table.merge(classes[["label", "class_id", "name"]], on="label")


def recognizability_figure(table: pd.DataFrame) -> plt.Figure:
    """Heatmap: classes x prompt strategies, share of synthetic images recognised."""
    import seaborn as sns

    plots.style()
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
    plots.style()
    long = table.melt(id_vars="name", value_vars=["val", "recognizability"],
                      var_name="measure", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(table)), 3.5))
    import seaborn as sns

    sns.barplot(long, x="name", y="accuracy", hue="measure", ax=ax)
    ax.set(xlabel="class", ylabel="top-1", ylim=(0, 1),
           title="Real val accuracy vs recognizability of synthetic images")
    ax.tick_params(axis="x", rotation=45)
    return fig


def clip_figure(zero_shot: dict[str, Any]) -> plt.Figure:
    plots.style()
    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(zero_shot)
    ax.bar(names, [zero_shot[n]["top1"] for n in names], color=plots.palette(len(names)))
    ax.set(ylabel="zero-shot top-1 (real val)", ylim=(0, 1), title="CLIP by training pairs")
    return fig


GRID_KEYS = ["source", "regime", "multiplier", "aux_norm"]


def grid_runs(folder: Path, sources: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per grid run (its flat metrics JSON, in any subfolder; with ``sources`` only in
    those sources' subfolders, so folders left by another profile's grid are not mixed in),
    sorted by the grid keys and seed; ``ood_mean.top1`` = the mean top-1 over the run's
    ``ood_*`` sets."""
    files = sorted(Path(folder).rglob("*.json"))
    if sources is not None:
        files = [f for f in files if f.relative_to(folder).parts[0] in sources]
    rows = [read_json(f) for f in files]
    if not rows:
        return pd.DataFrame(columns=[*GRID_KEYS, "seed"])
    runs = pd.DataFrame(rows)
    ood = [c for c in runs.columns if c.startswith("ood_") and c.endswith(".top1")]
    if ood:
        runs["ood_mean.top1"] = runs[ood].mean(axis=1)
    return runs.sort_values([*GRID_KEYS, "seed"]).reset_index(drop=True)


def grid_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of every ``*.top1`` column, per grid point."""
    cols = [c for c in runs.columns if c.endswith(".top1")]
    if runs.empty or not cols:
        return pd.DataFrame(columns=GRID_KEYS)
    agg = runs.groupby(GRID_KEYS)[cols].agg(["mean", "std", "count"])
    agg.columns = [f"{c}.{stat}" for c, stat in agg.columns]
    return agg.reset_index()


def summary_table(table: pd.DataFrame, metric: str = "val.top1") -> pd.DataFrame:
    """``metric`` as "mean ± std (n)" strings: rows (regime, source, aux norm), columns the
    multipliers (real-only rows: column "-")."""
    if table.empty:
        return pd.DataFrame()
    t = table.copy()
    std = t[f"{metric}.std"].fillna(0.0)
    t["cell"] = [f"{m:.3f} ± {s:.3f} ({int(n)})" for m, s, n in
                 zip(t[f"{metric}.mean"], std, t[f"{metric}.count"])]
    t["aux"] = np.where(t["source"].isin(REAL_SOURCES), "-",
                        np.where(t["aux_norm"], "on", "off"))
    t["mult"] = np.where(t["source"].isin(REAL_SOURCES), "-", t["multiplier"].map("{:g}x".format))
    return t.pivot_table(index=["regime", "source", "aux"], columns="mult", values="cell",
                         aggfunc="first").fillna("")


def _baseline(ax: plt.Axes, rows: pd.DataFrame, metric: str, style: str, label: str) -> None:
    if rows.empty:
        return
    m, s = rows[f"{metric}.mean"].iloc[0], rows[f"{metric}.std"].fillna(0).iloc[0]
    ax.axhline(m, color="0.3", linestyle=style, label=label)
    ax.axhspan(m - s, m + s, color="0.5", alpha=0.15)


def grid_figure(table: pd.DataFrame, metrics: tuple[str, ...] = ("val.top1", "ood_mean.top1")
                ) -> plt.Figure:
    """Real + synthetic against the real-only baselines: one panel per (metric, regime with
    real images); x = synthetic multiplier, colour = prompt strategy, solid = aux norm on,
    dashed = off; grey lines and bands = real-only (mean ± std over seeds)."""
    plots.style()
    metrics = tuple(m for m in metrics if f"{m}.mean" in table.columns)
    regimes = [r for r in ("full", "limited") if r in set(table["regime"])]
    regimes += sorted(set(table["regime"]) - {"none", *regimes})
    strategies = sorted(set(table["source"]) - set(REAL_SOURCES))
    colors = dict(zip(strategies, plots.palette(max(1, len(strategies)))))
    fig, axes = plt.subplots(len(metrics), max(1, len(regimes)), squeeze=False,
                             figsize=(4.6 * max(1, len(regimes)), 3.4 * len(metrics)))
    for i, metric in enumerate(metrics):
        for j, regime in enumerate(regimes):
            ax, rows = axes[i, j], table[table["regime"] == regime]
            _baseline(ax, rows[rows["source"] == "real"], metric, "-", "real only (augmented)")
            _baseline(ax, rows[rows["source"] == "real-noaug"], metric, ":",
                      "real only (no augmentation)")
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
    class, one line per prompt strategy; the real-only baseline as a grey band."""
    rows = table[table["regime"] == "none"]
    if rows.empty:
        return None
    plots.style()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    full_real = table[(table["regime"] == "full") & (table["source"] == "real")]
    _baseline(ax, full_real, metric, "-", "real only (all real images)")
    strategies = sorted(set(rows["source"]))
    for color, source in zip(plots.palette(len(strategies)), strategies):
        g = rows[rows["source"] == source]
        ax.errorbar(g["multiplier"] * real_per_class, g[f"{metric}.mean"],
                    yerr=g[f"{metric}.std"].fillna(0), marker="o", capsize=3, color=color,
                    label=source)
    ax.set_xscale("log")
    ax.set(xlabel="synthetic images per class", ylabel=metric,
           title="Synthetic-only training (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return fig


def lookalike_table(candidates: pd.DataFrame) -> pd.DataFrame:
    """The disambiguation candidates of every class with their scores, winner marked."""
    cols = ["name", "source", "text", "own", "other", "score", "winner"]
    return candidates[[c for c in cols if c in candidates.columns]].round(4)


def run(cfg: AnalyzeConfig) -> dict[str, Any]:
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    judge, judge_name = judge_checkpoint(cfg)
    rec = recognizability(cfg, classes, judge)
    per_class = pd.read_csv(cfg.path("train") / "per_class.csv")
    table = (rec.groupby("label")[["recognizability"]].mean().reset_index()
             .merge(rec.groupby("label")["num_synthetic"].sum().reset_index(), on="label")
             .merge(per_class[["label", "name", "val"]], on="label"))
    zero_shot = read_json(cfg.path("clip") / "zero_shot.json")
    out = cfg.path("analyze")
    from lib import config  # the grid's sources are the train stage's (dvc.yaml matrix)

    sources = config.load("train").grid_sources
    runs = grid_runs(paths.resolve(cfg.grid_metrics, cfg.root), sources)
    grid = grid_table(runs)
    with atomic_path(out / "grid.csv") as tmp:
        grid.to_csv(tmp, index=False)
    with atomic_path(out / "recognizability.csv") as tmp:
        rec.to_csv(tmp, index=False)
    n_train = int((images["split"] == "train").sum())
    figures = {"per_class": per_class_figure(table), "recognizability": recognizability_figure(rec),
               "clip_zero_shot": clip_figure(zero_shot)}
    if not grid.empty:
        figures["grid"] = grid_figure(grid)
        synth = synthetic_only_figure(grid, n_train / max(1, len(classes)))
        if synth is not None:
            figures["synthetic_only"] = synth
    for name, fig in figures.items():
        plots.save_figure(fig, out / name, dpi=cfg.dpi)
        plt.close(fig)  # shown where the notebook displays it, not twice
    write_json(out / "per_class.json",
               table.astype(object).where(table.notna(), None).to_dict(orient="records"))
    by_strategy = rec.groupby("strategy")["recognizability"].mean()
    metrics = {"recognizability_judge": judge_name,
               "recognizability_mean": float(table["recognizability"].mean()),
               "recognizability_min": float(table["recognizability"].min()),
               "recognizability": {k: float(v) for k, v in by_strategy.items()},
               "classes_without_synthetic": int((table["num_synthetic"] == 0).sum()),
               "grid_runs": len(runs)}
    write_metrics(cfg.path("metrics"), "analyze", metrics)
    candidates = pd.read_parquet(cfg.path("disambiguate") / "candidates.parquet")
    return {"table": table, "recognizability": rec, "figures": figures, "metrics": metrics,
            "grid": grid, "grid_runs": runs, "summary": summary_table(grid),
            "summary_ood": summary_table(grid, "ood_mean.top1"),
            "lookalikes": lookalike_table(candidates)}
