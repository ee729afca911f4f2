"""Stage ``classes``: the label set of the profile and the manifests of the real splits."""

from __future__ import annotations

from typing import Any

from lib import data
from lib.config import ClassesConfig
from lib.io import write_json, write_parquet
from lib.metrics import write_metrics


def run(cfg: ClassesConfig) -> dict[str, Any]:
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
    if classes.empty:
        raise ValueError(f"{dataset} holds no classes")
    out = cfg.path("classes")
    write_parquet(out / "classes.parquet", classes)
    write_parquet(out / "images.parquet", images)
    write_json(out / "ood.json", {"source_split": "val", "corruptions": list(cfg.ood)})
    counts = images.groupby("split").size().to_dict()
    metrics = {"num_classes": len(classes), "num_train": counts.get("train", 0),
               "num_val": counts.get("val", 0), "num_ood_sets": len(cfg.ood)}
    write_metrics(cfg.path("metrics"), "classes", metrics)
    return {"classes": classes, "images": images, "metrics": metrics}
