"""Stage ``clip``: CLIP trained on real, synthetic or combined image-text pairs; zero-shot eval.

With ``lock_text`` the text tower stays frozen (``lock_text_tower``; the mini CLIP's MiniLM).
Real pairs caption each real training image with its class's prompt name; synthetic pairs
are the generated images with the prompts that made them. Each source trains a fresh copy
of the configured model, and all are evaluated zero-shot on the real val split.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from PIL import Image

from lib import clip_train, provenance, shards
from lib.choices import ClipSource, values
from lib.config import ClipConfig
from lib.io import write_json, write_torch
from lib.metrics import write_curve, write_metrics

SOURCES = values(ClipSource)
REAL_CAPTION = "a photo of {}."


def _real_pairs(cfg: ClipConfig, images: pd.DataFrame, names: pd.DataFrame, split: str):
    rows = images[images["split"] == split].merge(names[["class_id", "prompt_name"]], on="class_id")
    ims = []
    for p in rows["path"]:
        with Image.open(cfg.root / p) as im:
            ims.append(im.convert("RGB"))
    return ims, [REAL_CAPTION.format(n) for n in rows["prompt_name"]], rows["label"].to_numpy()


def _synthetic_pairs(cfg: ClipConfig):
    ims, texts = [], []
    for s in shards.iter_samples(cfg.path("generate")):
        ims.append(s["image"].convert("RGB"))
        texts.append(s["meta"]["prompt"])
    return ims, texts


def run(cfg: ClipConfig) -> dict[str, Any]:
    unknown = [s for s in cfg.sources if s not in SOURCES]
    if unknown or not cfg.sources:
        raise ValueError(f"clip.sources: unknown {unknown or cfg.sources}; valid: {', '.join(SOURCES)}")
    inputs = provenance.begin(cfg, "clip")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    names = pd.read_parquet(cfg.path("disambiguate") / "prompt_names.parquet")
    real = _real_pairs(cfg, images, names, "train")
    val_ims, _, val_labels = _real_pairs(cfg, images, names, "val")
    synth = _synthetic_pairs(cfg)
    pairs = {"real": real[:2], "synthetic": synth,
             "combined": (real[0] + synth[0], real[1] + synth[1])}
    classnames = names.sort_values("label")["prompt_name"].tolist()
    device, out = cfg.common.device, cfg.path("clip")

    net, _, eval_tf, tok = clip_train.load(cfg.resolve_model(cfg.model), cfg.pretrained, device)
    results: dict[str, Any] = {"before": clip_train.zero_shot(net, eval_tf, tok, val_ims, val_labels,
                                                              classnames, device)}
    curves = []
    for source in cfg.sources:
        net, train_tf, eval_tf, tok = clip_train.load(cfg.resolve_model(cfg.model), cfg.pretrained,
                                                      device)
        if cfg.lock_text:
            net.lock_text_tower()
        ims, texts = pairs[source]
        history = clip_train.train_clip(
            net, train_tf, tok, ims, texts, steps=cfg.steps, batch_size=cfg.batch_size,
            lr=cfg.lr, seed=cfg.common.seed, tag=source, device=device,
            progress=cfg.common.progress,
        )
        curves += [{"source": source, "step": h["step"], "loss": h["loss"]} for h in history]
        results[source] = clip_train.zero_shot(net, eval_tf, tok, val_ims, val_labels, classnames,
                                               device)
        results[source]["num_pairs"] = len(ims)
        write_torch(out / f"clip-{source}.pt",
                    clip_train.trained_checkpoint(net, cfg.model, cfg.pretrained))
    write_json(out / "zero_shot.json", results)
    write_curve(cfg.path("metrics"), "clip_history", curves)
    metrics = {"zero_shot_top1": {k: v["top1"] for k, v in results.items()}}
    write_metrics(cfg.path("metrics"), "clip", metrics)
    provenance.finish(cfg, "clip", inputs)
    return {"results": results, "history": pd.DataFrame(curves), "metrics": metrics}
