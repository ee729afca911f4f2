"""Recognizability of the synthetic images, judged by a classifier trained on real images.

Recognizability of class c (per prompt strategy) = the share of synthetic images generated
for c that a classifier trained on *real* images only assigns to c. The judge is the sweep's
first real-only run (``sweep/real``, regime ``full``, lowest seed) when the sweep has one,
else the ``train`` stage's model. It is loaded as a *plain* timm model from its checkpoint
(auxiliary norms dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib import shards
from lib.training.checkpoints import load_plain_timm
from lib.training.datasets import ImageArrayDataset
from lib.training.evaluation import predict


def judge_checkpoint(sweep_dir: Path, train_dir: Path) -> tuple[Path, str]:
    """The real-only classifier that judges recognizability, and a name for it."""
    runs = sorted((sweep_dir / "real").glob("full-real-*-s*/model.pt"),
                  key=lambda p: int(p.parent.name.rsplit("-s", 1)[1]))
    if runs:
        return runs[0], f"sweep/real/{runs[0].parent.name}"
    return train_dir / "model.pt", "train"


def recognizability(ckpt: Path, generate_dir: Path, classes: pd.DataFrame,
                    batch_size: int, device: str) -> pd.DataFrame:
    """Per (strategy, class): share of its synthetic images the judge ``ckpt`` assigns to the
    class, and how many there are."""
    import torch

    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["meta"]
    model = load_plain_timm(ckpt, meta["arch"], meta["num_classes"], meta["in_chans"])
    label_of = dict(zip(classes["class_id"], classes["label"]))
    ims, labels, strategies = [], [], []
    for s in shards.iter_samples(generate_dir):
        ims.append(np.asarray(s["image"].convert("RGB")))
        labels.append(label_of[s["meta"]["class_id"]])
        strategies.append(s["meta"]["strategy"])
    ds = ImageArrayDataset(np.stack(ims), np.asarray(labels), meta["image_size"],
                           meta["in_chans"], synthetic=True)
    probs, y = predict(model, ds, batch_size=batch_size, device=device)
    found = pd.DataFrame({"strategy": strategies, "label": y, "hit": probs.argmax(axis=1) == y})
    table = found.groupby(["strategy", "label"]).agg(
        recognizability=("hit", "mean"), num_synthetic=("hit", "size")).reset_index()
    return table.merge(classes[["label", "class_id", "name"]], on="label")
