"""Stage ``analyze``: per-class recognizability of the synthetic images, and the figures.

Recognizability of class c = the share of synthetic images generated for c that the trained
classifier (loaded as a *plain* timm model from the checkpoint, auxiliary norms dropped)
assigns to c. In the paper-scale runs the judge is a classifier trained on real data only;
here it is the ``train`` stage's model, as recorded in the metrics.

The ablation grid (dvc.yaml ``train-grid``) is aggregated into one row per (variant,
multiplier, aux norm): mean, standard deviation (ddof=1; empty for a single seed) and count
over seeds of each set's top-1, written as ``grid.csv`` and a figure.
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
from lib.train import ImageArrayDataset, load_plain_timm, predict


def recognizability(cfg: AnalyzeConfig, classes: pd.DataFrame) -> pd.DataFrame:
    ckpt = cfg.path("train") / "model.pt"
    import torch

    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]
    model = load_plain_timm(ckpt, meta["arch"], meta["num_classes"], meta["in_chans"])
    label_of = dict(zip(classes["class_id"], classes["label"]))
    ims, labels = [], []
    for s in shards.iter_samples(cfg.path("generate")):
        ims.append(np.asarray(s["image"].convert("RGB")))
        labels.append(label_of[s["meta"]["class_id"]])
    ds = ImageArrayDataset(np.stack(ims), np.asarray(labels), meta["image_size"],
                           meta["in_chans"], synthetic=True)
    probs, y = predict(model, ds, batch_size=cfg.batch_size, device=cfg.common.device)
    hit = probs.argmax(axis=1) == y
    rec = pd.Series(hit).groupby(y).mean()
    out = classes[["label", "class_id", "name"]].copy()
    out["recognizability"] = out["label"].map(rec)
    out["num_synthetic"] = out["label"].map(pd.Series(y).value_counts()).fillna(0).astype(int)
    return out


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


GRID_KEYS = ["variant", "multiplier", "aux_norm"]


def grid_runs(folder: Path) -> pd.DataFrame:
    """One row per grid run (its flat metrics JSON), sorted by the grid keys and seed."""
    rows = [read_json(f) for f in sorted(Path(folder).glob("*.json"))]
    if not rows:
        return pd.DataFrame(columns=[*GRID_KEYS, "seed"])
    return pd.DataFrame(rows).sort_values([*GRID_KEYS, "seed"]).reset_index(drop=True)


def grid_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of every ``*.top1`` column, per grid point."""
    cols = [c for c in runs.columns if c.endswith(".top1")]
    if runs.empty or not cols:
        return pd.DataFrame(columns=GRID_KEYS)
    agg = runs.groupby(GRID_KEYS)[cols].agg(["mean", "std", "count"])
    agg.columns = [f"{c}.{stat}" for c, stat in agg.columns]
    return agg.reset_index()


def grid_figure(table: pd.DataFrame, metric: str = "val.top1") -> plt.Figure:
    """``metric`` against the synthetic multiplier, one line per (variant, aux norm)."""
    plots.style()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    groups = list(table.groupby(["variant", "aux_norm"]))
    for color, ((variant, aux), g) in zip(plots.palette(len(groups)), groups):
        ax.errorbar(g["multiplier"], g[f"{metric}.mean"], yerr=g[f"{metric}.std"].fillna(0),
                    marker="o", capsize=3, color=color,
                    label=f"{variant}, aux {'on' if aux else 'off'}")
    ax.set(xlabel="synthetic images per real image (multiplier)", ylabel=metric,
           title="Ablation grid (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return fig


def run(cfg: AnalyzeConfig) -> dict[str, Any]:
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    table = recognizability(cfg, classes)
    per_class = pd.read_csv(cfg.path("train") / "per_class.csv")
    table = table.merge(per_class[["label", "val"]], on="label")
    zero_shot = read_json(cfg.path("clip") / "zero_shot.json")
    out = cfg.path("analyze")
    runs = grid_runs(paths.resolve(cfg.grid_metrics, cfg.root))
    grid = grid_table(runs)
    with atomic_path(out / "grid.csv") as tmp:
        grid.to_csv(tmp, index=False)
    figures = {"per_class": per_class_figure(table), "clip_zero_shot": clip_figure(zero_shot)}
    if not grid.empty:
        figures["grid"] = grid_figure(grid)
    for name, fig in figures.items():
        plots.save_figure(fig, out / name, dpi=cfg.dpi)
        plt.close(fig)  # shown where the notebook displays it, not twice
    write_json(out / "per_class.json",
               table.astype(object).where(table.notna(), None).to_dict(orient="records"))
    metrics = {"recognizability_mean": float(table["recognizability"].mean()),
               "recognizability_min": float(table["recognizability"].min()),
               "classes_without_synthetic": int((table["num_synthetic"] == 0).sum()),
               "grid_runs": len(runs)}
    write_metrics(cfg.path("metrics"), "analyze", metrics)
    return {"table": table, "figures": figures, "metrics": metrics, "grid": grid,
            "grid_runs": runs}
