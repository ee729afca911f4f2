"""Stage ``prompts``: the prompt manifest for every strategy, sized by the synthetic multiplier."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lib import prompts
from lib.config import PromptsConfig
from lib.io import write_parquet
from lib.metrics import write_metrics


def run(cfg: PromptsConfig) -> dict[str, Any]:
    names = pd.read_parquet(cfg.path("disambiguate") / "prompt_names.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    train_counts = images[images["split"] == "train"].groupby("class_id").size()
    targets = prompts.targets_per_class(train_counts, cfg.synthetic_multiplier)
    manifest = prompts.build_manifest(
        names, targets, cfg.strategies, seed=cfg.common.seed, negative_prompt=cfg.negative_prompt
    )
    if manifest.empty:
        raise ValueError("the prompt manifest is empty: check prompts.synthetic_multiplier")
    write_parquet(cfg.path("prompts") / "prompts.parquet", manifest)
    per_strategy = manifest.groupby("strategy").size().to_dict()
    metrics = {"num_prompts": len(manifest), "num_unique_prompts": manifest["prompt"].nunique(),
               "per_strategy": per_strategy}
    write_metrics(cfg.path("metrics"), "prompts", metrics)
    return {"manifest": manifest, "metrics": metrics}
