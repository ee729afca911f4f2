"""Stage ``finetune``: the Diversify study's fine-tuned generator (:mod:`lib.finetuning`).

Writes ``captions.parquet`` (the real train split, each image captioned by
``caption_template`` with its class name: what the fine-tuning sees, and nothing of val),
then, unless ``backend`` is ``none``, fine-tunes ``base_model`` on it with the fine-tuner of
that name (:mod:`lib.backends.finetune`) into the pipeline folder ``t2i/``, served by the
same text-to-image backend as the base, and samples both models on the class prompts for
the notebook's grid. ``finetune.json`` says what the folder holds; ``metrics/finetune.json``
keeps the losses (first/last), steps and speed. With ``none`` (paper scale: the README's
documented step) there is no ``t2i/``, and :mod:`lib.plan` refuses any setting that names it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from lib import finetuning, provenance
from lib.config import FinetuneConfig
from lib.io import write_json, write_parquet
from lib.metrics import write_metrics

MODEL = "t2i"  # the fine-tuned pipeline's folder inside the stage's


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (or, with backend ``none``, only caption); returns info (``finetune.json``),
    the train set, metrics, losses and samples (None without a model)."""
    inputs = provenance.begin(cfg, "finetune")
    out, classes_dir = cfg.path("finetune"), cfg.path("classes")
    classes = pd.read_parquet(classes_dir / "classes.parquet")
    images = pd.read_parquet(classes_dir / "images.parquet")
    train_set = finetuning.finetune_set(classes, images, cfg.caption_template)
    write_parquet(out / "captions.parquet", train_set)
    model = out / MODEL
    info: dict[str, Any] = {"backend": cfg.backend, "base_model": cfg.base_model, "model": None,
                            "t2i_backend": None, "train_images": len(train_set)}
    metrics: dict[str, Any] = {"train_images": len(train_set)}
    losses: list[float] = []
    samples = None
    if cfg.backend == "none":
        shutil.rmtree(model, ignore_errors=True)  # an earlier run's model is not this run's
    else:
        result = _finetune(cfg, train_set, model)
        metrics.update({k: v for k, v in result["metrics"].items() if k in finetuning.MEASURED})
        losses = result["losses"]
        info.update(model=f"{cfg.common.dirs.finetune}/{MODEL}", t2i_backend=result["t2i_backend"])
        samples = finetuning.sample_models(
            result["t2i_backend"],
            {"off-the-shelf": cfg.resolve_model(cfg.base_model), "fine-tuned": str(model)},
            finetuning.class_prompts(classes, cfg.caption_template), n=cfg.samples_per_class,
            steps=cfg.sample_steps, guidance=cfg.sample_guidance, size=result["size"],
            device=cfg.common.device)
    write_json(out / "finetune.json", info)
    write_metrics(cfg.path("metrics"), "finetune", metrics)
    provenance.finish(cfg, "finetune", inputs)
    return {"info": info, "train_set": train_set, "metrics": metrics, "losses": losses,
            "samples": samples}


def _finetune(cfg: FinetuneConfig, train_set: pd.DataFrame, model: Path) -> dict[str, Any]:
    settings = {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                "cond_dropout": cfg.cond_dropout, "seed": cfg.common.seed,
                "checkpoint_every": cfg.checkpoint_every}
    return finetuning.finetune_generator(
        cfg.root, train_set, cfg.backend, cfg.resolve_model(cfg.base_model), model,
        settings=settings, device=cfg.common.device, progress=cfg.common.progress)
