"""Stage ``classes``: the label set of the profile and the manifests of the real splits
(``images.parquet``: id, path, class, label, split and the sha256 of each image)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lib import classsets, data, provenance
from lib.config import ClassesConfig
from lib.io import write_json, write_parquet
from lib.metrics import write_metrics


def with_wordnet(classes: pd.DataFrame) -> pd.DataFrame:
    """Fill name, gloss and hypernyms of ImageNet classes (folders named by WordNet id) that
    ``classes.tsv`` left empty, from the shipped ImageNet-1k table (lib/classsets/)."""
    table = classsets.load("imagenet1k").set_index("wnid")
    out = classes.copy()
    known = out["class_id"].isin(table.index) & (out["gloss"] == "")
    for col in ("gloss", "hypernyms"):
        out.loc[known, col] = out.loc[known, "class_id"].map(table[col])
    unnamed = known & (out["name"] == out["class_id"])
    out.loc[unnamed, "name"] = out.loc[unnamed, "class_id"].map(table["name"])
    return out


def restrict(classes: pd.DataFrame, images: pd.DataFrame, keep, subset: str):
    """Only the classes in ``keep`` (relabelled 0..C-1 in class-id order); an id of the subset
    that the dataset lacks is an error naming it."""
    keep = set(keep)
    unknown = sorted(keep - set(classes["class_id"]))
    if unknown:
        raise ValueError(f"class set {subset!r}: {len(unknown)} class id(s) not in the dataset, "
                         f"e.g. {', '.join(unknown[:5])}")
    classes = classes[classes["class_id"].isin(keep)].reset_index(drop=True)
    classes["label"] = range(len(classes))
    images = images[images["class_id"].isin(keep)].copy()
    images["label"] = images["class_id"].map(dict(zip(classes["class_id"], classes["label"])))
    return classes, images.reset_index(drop=True)


def run(cfg: ClassesConfig) -> dict[str, Any]:
    inputs = provenance.begin(cfg, "classes")
    for name in cfg.ood:
        if name not in data.CORRUPTIONS:
            raise ValueError(
                f"classes.ood: unknown corruption {name!r}; valid: {', '.join(data.CORRUPTIONS)}"
            )
    dataset = cfg.path("data") / cfg.dataset_dir
    classes, images = data.build_splits(
        dataset,
        cfg.root,
        val_fraction=cfg.val_fraction,
        train_per_class=cfg.train_per_class,
        val_per_class=cfg.val_per_class,
        seed=cfg.common.seed,
    )
    if cfg.subset:
        classes, images = restrict(classes, images, classsets.load(cfg.subset)["wnid"], cfg.subset)
    if classes.empty:
        raise ValueError(f"{dataset} holds no classes")
    classes = with_wordnet(classes)
    # Contents, not only paths: a changed image changes this stage's outputs (DVC re-runs
    # what was trained on it).
    images["sha256"] = data.file_digests(images["path"].tolist(), cfg.root)
    out = cfg.path("classes")
    write_parquet(out / "classes.parquet", classes)
    write_parquet(out / "images.parquet", images)
    write_json(out / "ood.json", {"source_split": "val", "corruptions": list(cfg.ood)})
    counts = images.groupby("split").size().to_dict()
    metrics = {"num_classes": len(classes), "num_train": counts.get("train", 0),
               "num_val": counts.get("val", 0), "num_ood_sets": len(cfg.ood)}
    write_metrics(cfg.path("metrics"), "classes", metrics)
    # the images' contents too: a run of other data is not this one
    content = {"images": provenance.digest(images[["image_id", "sha256"]].values.tolist())}
    provenance.finish(cfg, "classes", inputs, content=content)
    return {"classes": classes, "images": images, "metrics": metrics}
