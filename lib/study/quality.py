"""Recognizability and diversity of each generation setting (:mod:`lib.analysis.quality`).

The judge is a classifier trained on real images only: the scaling study's real-only run on
all real images, first seed (its ``model.pt``, loaded as a plain timm model). The embedding
that diversity is measured in is a CLIP image tower (the report's ``embed_model``: the mini
CLIP in the mini world). Every image of a setting is judged and embedded; each setting's
table has one row per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib import shards
from lib.analysis.quality import quality_table
from lib.training.checkpoints import load_plain_timm
from lib.training.datasets import ImageArrayDataset
from lib.training.evaluation import predict


def judge_run(runs: pd.DataFrame) -> str:
    """The run that judges: real images only, all of them, the first architecture's
    lowest seed (rows of the scaling study's ``real`` curve)."""
    real = runs[(runs["study"] == "scaling") & (runs["curve"] == "real")
                & (runs["real_per_class"] == -1)]
    if real.empty:
        raise ValueError("the scaling study has no real-only run on all real images: no judge "
                         "for recognizability (study.real_sizes must contain 0)")
    return str(real.sort_values("seed")["run"].iloc[0])


def setting_images(folder: Path, label_of: dict[str, int]) -> tuple[list, np.ndarray]:
    """The images of one generation (a ``synth/<setting>/images`` folder) and their labels."""
    ims, labels = [], []
    for s in shards.iter_samples(folder):
        ims.append(s["image"])
        labels.append(label_of[s["meta"]["class_id"]])
    return ims, np.asarray(labels, dtype=np.int64)


def quality(settings: dict[str, Path], judge: Path, embedder: Any, classes: pd.DataFrame,
            batch_size: int, device: str, progress: bool = True) -> pd.DataFrame:
    """One row per (setting, class): recognizability (F1 of the judge), diversity (std of
    the ``embedder``'s image embeddings), number of images, class id and name."""
    import torch

    meta = torch.load(judge, map_location="cpu", weights_only=True)["meta"]
    model = load_plain_timm(judge, meta["arch"], meta["num_classes"], meta["in_chans"])
    label_of = dict(zip(classes["class_id"], classes["label"]))
    tables = []
    for name, folder in tqdm(settings.items(), desc="quality", disable=not progress):
        ims, labels = setting_images(folder, label_of)
        if not ims:
            continue
        arrays = np.stack([np.asarray(im.convert("RGB")) for im in ims])
        ds = ImageArrayDataset(arrays, labels, meta["image_size"], meta["in_chans"],
                               synthetic=True)
        probs, y = predict(model, ds, batch_size=batch_size, device=device)
        emb = np.concatenate([embedder.encode_images(ims[i:i + batch_size]).numpy()
                              for i in range(0, len(ims), batch_size)])
        table = quality_table(pd.Series([name] * len(y)), y, probs.argmax(axis=1), emb,
                              len(classes))
        tables.append(table)
    out = pd.concat(tables, ignore_index=True)
    return out.merge(classes[["label", "class_id", "name"]], on="label")


def sample_grid(settings: dict[str, Path], classes: pd.DataFrame) -> dict[str, Any]:
    """One image per class (its first id) of each setting: rows are the settings, columns
    the classes (:func:`lib.plots.images.sample_grid_figure`)."""
    names = dict(zip(classes["class_id"], classes["name"]))
    order = list(classes["class_id"])
    images, titles, rows = [], [], []
    for row, (setting, folder) in enumerate(settings.items()):
        first: dict[str, Any] = {}
        for s in shards.iter_samples(folder):
            cid = s["meta"]["class_id"]
            if cid not in first or s["id"] < first[cid][0]:
                first[cid] = (s["id"], s["image"])
        if not first:
            continue
        rows.append(setting)
        for cid in order:
            images.append(first[cid][1] if cid in first else np.zeros((8, 8)))
            titles.append(names[cid] if row == 0 else "")
    return {"images": images, "titles": titles, "ncols": len(order), "row_labels": rows}
