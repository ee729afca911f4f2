"""Stage ``generate``: text-to-image generation of the prompt manifest into WebDataset shards.

Runs alone or as one rank of ``torchrun`` (``RANK``/``WORLD_SIZE`` from the environment).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from lib import generate, shards
from lib.backends import create_t2i
from lib.config import GenerateConfig
from lib.metrics import write_metrics


def run(cfg: GenerateConfig) -> dict[str, Any]:
    prompts = pd.read_parquet(cfg.path("prompts") / "prompts.parquet")
    t2i = create_t2i(cfg.backend, model=cfg.resolve_model(cfg.model), device=cfg.common.device,
                     dtype=cfg.dtype, scheduler=cfg.scheduler)
    t2i.model_id = cfg.model  # records name the model as params.yaml does
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    out = cfg.path("generate")
    summary = generate.generate(
        prompts, out, t2i,
        seed=cfg.common.seed, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
        height=cfg.height, width=cfg.width, batch_size=cfg.batch_size,
        shard_size=cfg.shard_size, image_format=cfg.image_format,
        jpeg_quality=cfg.jpeg_quality, rank=rank, world_size=world,
        progress=cfg.common.progress,
    )
    manifest = shards.build_manifest(out)
    metrics = {k: summary[k] for k in ("total", "generated", "skipped_done", "blank", "nsfw",
                                       "seconds", "images_per_s")}
    metrics["num_images"] = len(manifest)
    if rank == 0:
        write_metrics(cfg.path("metrics"), "generate", metrics)
    return {"summary": summary, "manifest": manifest, "metrics": metrics}
