"""Recognizability and diversity of synthetic images, as the scaling-laws paper defines them.

* **Recognizability** of a set of synthetic images = the per-class F1 score of a classifier
  trained on real images only (the judge), applied to the synthetic images with their
  intended classes as labels, averaged over classes (Fan et al., section 4). F1 rather than
  recall: a judge that calls every image "3" would recall all threes, but its precision on
  threes exposes it.
* **Diversity** of a set = per class, the standard deviation of the image embeddings (each
  embedding dimension's standard deviation over the class's images, averaged over the
  dimensions), averaged over classes. The embeddings are L2-normalised first so that the
  number does not depend on their scale.

Both are reported per configuration (prompt strategy x guidance x generator) and per class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score


def per_class_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """F1 of each class (0 for a class that is neither intended nor predicted)."""
    return f1_score(labels, predicted, labels=np.arange(num_classes), average=None,
                    zero_division=0.0)


def per_class_diversity(embeddings: np.ndarray, labels: np.ndarray,
                        num_classes: int) -> np.ndarray:
    """The mean over dimensions of the per-dimension standard deviation of the normalised
    embeddings of each class (NaN for a class with fewer than two images)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = emb[labels == c]
        if len(rows) > 1:
            out[c] = float(rows.std(axis=0, ddof=1).mean())
    return out


def quality_table(groups: pd.Series, labels: np.ndarray, predicted: np.ndarray,
                  embeddings: np.ndarray, num_classes: int) -> pd.DataFrame:
    """One row per (configuration, class): recognizability (F1), diversity, and the number
    of images; ``groups`` names each image's configuration."""
    rows = []
    groups = pd.Series(groups).reset_index(drop=True)
    for name, idx in groups.groupby(groups).groups.items():
        idx = np.asarray(idx)
        f1 = per_class_f1(labels[idx], predicted[idx], num_classes)
        div = per_class_diversity(embeddings[idx], labels[idx], num_classes)
        counts = np.bincount(labels[idx], minlength=num_classes)
        rows += [{"setting": name, "label": c, "recognizability": float(f1[c]),
                  "diversity": float(div[c]), "num_images": int(counts[c])}
                 for c in range(num_classes)]
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: recognizability and diversity averaged over the classes that have
    images."""
    present = table[table["num_images"] > 0]
    return present.groupby("setting")[["recognizability", "diversity"]].mean().reset_index()
