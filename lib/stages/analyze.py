"""Stage ``analyze``: per-class recognizability of the synthetic images, and the figures.

Recognizability of class c = the share of synthetic images generated for c that the trained
classifier (loaded as a *plain* timm model from the checkpoint, auxiliary norms dropped)
assigns to c. In the paper-scale runs the judge is a classifier trained on real data only;
here it is the ``train`` stage's model, as recorded in the metrics.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib import plots, shards
from lib.config import AnalyzeConfig
from lib.io import read_json, write_json
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


def run(cfg: AnalyzeConfig) -> dict[str, Any]:
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    table = recognizability(cfg, classes)
    per_class = pd.read_csv(cfg.path("train") / "per_class.csv")
    table = table.merge(per_class[["label", "val"]], on="label")
    zero_shot = read_json(cfg.path("clip") / "zero_shot.json")
    out = cfg.path("analyze")
    figures = {"per_class": per_class_figure(table), "clip_zero_shot": clip_figure(zero_shot)}
    for name, fig in figures.items():
        plots.save_figure(fig, out / name, dpi=cfg.dpi)
        plt.close(fig)  # shown where the notebook displays it, not twice
    write_json(out / "per_class.json",
               table.astype(object).where(table.notna(), None).to_dict(orient="records"))
    metrics = {"recognizability_mean": float(table["recognizability"].mean()),
               "recognizability_min": float(table["recognizability"].min()),
               "classes_without_synthetic": int((table["num_synthetic"] == 0).sum())}
    write_metrics(cfg.path("metrics"), "analyze", metrics)
    return {"table": table, "figures": figures, "metrics": metrics}
