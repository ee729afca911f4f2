"""Stage ``prompts``: the prompt manifest for every strategy, and its diversity.

Pure prompt assembly from what earlier stages wrote: the class table (gloss, hypernyms), the
prompt names chosen by disambiguation, and the LLM/captioner texts. Diversity of the prompts
(distinct n-grams, embedding dispersion) is measured per class and strategy before any image
exists.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from lib import diversity, plots, prompts, provenance
from lib.config import PromptsConfig
from lib.io import write_parquet
from lib.metrics import write_metrics
from lib.plots.prompts import diversity_figure


def run(cfg: PromptsConfig) -> dict[str, Any]:
    prompts.check_strategies(cfg.strategies)
    inputs = provenance.begin(cfg, "prompts")
    names = pd.read_parquet(cfg.path("disambiguate") / "prompt_names.parquet")
    texts = pd.read_parquet(cfg.path("disambiguate") / "texts.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    targets = prompts.targets_per_class(prompts.train_counts(images), cfg.synthetic_multiplier)
    manifest = prompts.build_prompt_manifest(
        names, targets, list(cfg.strategies), seed=cfg.common.seed,
        negative_prompt=cfg.negative_prompt, texts=prompts.class_texts(names, texts),
        sd_ratio=cfg.sd_ratio,
    )
    if manifest.empty:
        raise ValueError("the prompt manifest is empty: check prompts.synthetic_multiplier")
    out = cfg.path("prompts")
    write_parquet(out / "prompts.parquet", manifest)
    embed = diversity.sentence_embedder(cfg.diversity_embedder, device=cfg.common.device)
    table = diversity.diversity_table(manifest, embed)
    write_parquet(out / "diversity.parquet", table)
    figure = diversity_figure(table)
    plots.save_figure(figure, out / "diversity")
    plt.close(figure)
    by_strategy = table.groupby("strategy")[["dispersion", "distinct_2"]].mean()
    metrics = {
        "num_prompts": len(manifest),
        "num_unique_prompts": manifest["prompt"].nunique(),
        "per_strategy": manifest.groupby("strategy").size().to_dict(),
        "dispersion": (by_strategy["dispersion"].round(6) + 0.0).to_dict(),  # no -0.0
        "distinct_2": by_strategy["distinct_2"].round(6).to_dict(),
    }
    write_metrics(cfg.path("metrics"), "prompts", metrics)
    provenance.finish(cfg, "prompts", inputs)
    return {"manifest": manifest, "diversity": table, "figure": figure, "metrics": metrics}
