"""Stage ``train``: a timm classifier on real (+ synthetic) images, with the auxiliary BN.

Evaluates on the real val split and on each OOD corruption of it; writes the checkpoint,
metrics, the per-class accuracies and the training curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lib import data, shards
from lib.backends import create_classifier
from lib.config import TrainConfig
from lib.io import atomic_path, read_json
from lib.metrics import write_curve, write_metrics
from lib.train import ImageArrayDataset, evaluate, save_checkpoint, train_classifier


def real_split(cfg: TrainConfig, images: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rows = images[images["split"] == split]
    if rows.empty:
        raise ValueError(f"the real {split} split is empty")
    arr = data.load_images(rows["path"].tolist(), cfg.root, mode="L" if cfg.channels == 1 else "RGB")
    return arr, rows["label"].to_numpy(), rows["image_id"].tolist()


def synthetic_set(cfg: TrainConfig, classes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    label_of = dict(zip(classes["class_id"], classes["label"]))
    ims, labels = [], []
    for s in shards.iter_samples(cfg.path("generate")):
        ims.append(np.asarray(s["image"].convert("RGB")))
        labels.append(label_of[s["meta"]["class_id"]])
    if not ims:
        raise ValueError(f"no generated images under {cfg.path('generate')}")
    return np.stack(ims), np.asarray(labels)


def run(cfg: TrainConfig) -> dict[str, Any]:
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    ood = read_json(cfg.path("classes") / "ood.json")["corruptions"]
    seed, device, n_cls = cfg.common.seed, cfg.common.device, len(classes)

    def dataset(arr: np.ndarray, labels: np.ndarray, synthetic: bool) -> ImageArrayDataset:
        return ImageArrayDataset(arr, labels, cfg.image_size, cfg.channels, synthetic=synthetic)

    x, y, _ = real_split(cfg, images, "train")
    real = dataset(x, y, False)
    synthetic = dataset(*synthetic_set(cfg, classes), True) if cfg.use_synthetic else None
    model = create_classifier("timm", arch=cfg.arch, num_classes=n_cls, in_chans=cfg.channels,
                              aux_norm=cfg.aux_norm)
    out = cfg.path("train")
    history = train_classifier(
        model, real, synthetic, steps=cfg.steps, batch_size=cfg.batch_size,
        synthetic_fraction=cfg.synthetic_fraction if synthetic is not None else 0.0,
        lr=cfg.lr, weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing,
        synthetic_loss_weight=cfg.synthetic_loss_weight, seed=seed, device=device,
        log_every=max(1, cfg.steps // 20), checkpoint_path=out / "state.pt",
        checkpoint_every=cfg.checkpoint_every, progress=cfg.common.progress,
    )
    save_checkpoint(model, out / "model.pt", {"arch": cfg.arch, "num_classes": n_cls,
                                              "in_chans": cfg.channels, "aux_norm": cfg.aux_norm,
                                              "image_size": cfg.image_size})
    vx, vy, vids = real_split(cfg, images, "val")
    evals = {"val": evaluate(model, dataset(vx, vy, False), n_cls, device=device)}
    for name in ood:
        evals[f"ood_{name}"] = evaluate(model, dataset(data.corrupt(vx, vids, name, seed), vy, False),
                                        n_cls, device=device)
    per_class = pd.DataFrame({"label": classes["label"], "class_id": classes["class_id"],
                              "name": classes["name"],
                              **{k: v["per_class"] for k, v in evals.items()}})
    with atomic_path(out / "per_class.csv") as tmp:
        per_class.to_csv(tmp, index=False)
    write_curve(cfg.path("metrics"), "train_history", history)
    metrics = {k: {m: v[m] for m in ("top1", "top5", "loss") if m in v} for k, v in evals.items()}
    metrics["num_real"] = len(real)
    metrics["num_synthetic"] = 0 if synthetic is None else len(synthetic)
    write_metrics(cfg.path("metrics"), "train", metrics)
    return {"history": pd.DataFrame(history), "evals": evals, "per_class": per_class,
            "metrics": metrics}
