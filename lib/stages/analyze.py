"""Stage ``analyze``: recognizability of the synthetic images, the ablation grid, the figures.

Recognizability of class c (per prompt strategy) = the share of synthetic images generated
for c that a classifier trained on *real* images only assigns to c. The judge is the sweep's
first real-only run (``sweep/real``, regime ``full``, lowest seed) when the sweep has
one, else the ``train`` stage's model; which one is recorded in the metrics. It is loaded as
a *plain* timm model from its checkpoint (auxiliary norms dropped).

The ablation grid (dvc.yaml ``sweep``, one stage per source) is aggregated into one row
per (source, regime, multiplier, aux norm): mean, standard deviation (ddof=1; empty for a
single seed) and count over seeds of each set's top-1 (``ood_mean`` = the mean over the OOD
corruptions), written as ``grid.csv`` and shown as figures (:mod:`lib.plots.ablation`): real +
synthetic against the real-only baselines per regime, and synthetic-only training against its
size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib import plots, shards
from lib.choices import REAL_SOURCES
from lib.config import AnalyzeConfig
from lib.io import atomic_path, read_json, write_json
from lib.metrics import write_metrics
from lib.plots.ablation import grid_figure, synthetic_only_figure
from lib.plots.evaluation import per_class_figure, recognizability_figure, zero_shot_figure
from lib.training.checkpoints import load_plain_timm
from lib.training.datasets import ImageArrayDataset
from lib.training.evaluation import predict


def judge_checkpoint(cfg: AnalyzeConfig) -> tuple[Path, str]:
    """The real-only classifier that judges recognizability, and a name for it."""
    runs = sorted((cfg.path("sweep") / "real").glob("full-real-*-s*/model.pt"),
                  key=lambda p: int(p.parent.name.rsplit("-s", 1)[1]))
    if runs:
        return runs[0], f"sweep/real/{runs[0].parent.name}"
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


GRID_KEYS = ["source", "regime", "multiplier", "aux_norm"]


def grid_runs(folder: Path, sources: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per sweep run (``<folder>/<source>/<run>/metrics.json``; with ``sources`` only
    those sources' folders, so folders left by another profile's sweep are not mixed in),
    sorted by the grid keys and seed; ``ood_mean.top1`` = the mean top-1 over the run's
    ``ood_*`` sets."""
    files = sorted(Path(folder).glob("*/*/metrics.json"))
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
    from lib import config  # the sweep's sources (dvc.yaml's matrix): params.yaml sweep.sources

    sources = config.load("sweep").sources
    runs = grid_runs(cfg.path("sweep"), sources)
    grid = grid_table(runs)
    with atomic_path(out / "grid.csv") as tmp:
        grid.to_csv(tmp, index=False)
    with atomic_path(out / "recognizability.csv") as tmp:
        rec.to_csv(tmp, index=False)
    n_train = int((images["split"] == "train").sum())
    figures = {"per_class": per_class_figure(table), "recognizability": recognizability_figure(rec),
               "clip_zero_shot": zero_shot_figure(zero_shot)}
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
