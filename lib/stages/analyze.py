"""Stage ``analyze``: recognizability of the synthetic images, the sweep, the figures, and the
headline numbers.

The logic is in :mod:`lib.analysis` (recognizability by a real-only judge; the sweep's runs
aggregated over seeds) and :mod:`lib.plots`; this stage reads the other stages' outputs,
writes ``grid.csv``, ``recognizability.csv``, ``per_class.json`` and the figures (PNG + PDF)
to its folder, and ``metrics/headline.json``: the few numbers a researcher compares between
experiments (``dvc metrics diff``). The per-run sweep results stay data, under the sweep's
folder.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from lib import plots, provenance
from lib.analysis.recognizability import judge_checkpoint, recognizability
from lib.analysis.sweep import grid_runs, grid_table, headline, summary_table
from lib.config import AnalyzeConfig
from lib.io import atomic_path, read_json, write_json
from lib.metrics import write_metrics
from lib.plots.ablation import grid_figure, synthetic_only_figure
from lib.plots.evaluation import per_class_figure, recognizability_figure, zero_shot_figure
from lib.plots.tables import lookalike_table


def run(cfg: AnalyzeConfig) -> dict[str, Any]:
    inputs = provenance.begin(cfg, "analyze")
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    judge, judge_name = judge_checkpoint(cfg.path("sweep"), cfg.path("train"))
    rec = recognizability(judge, cfg.path("generate"), classes, cfg.batch_size,
                          cfg.common.device)
    per_class = pd.read_csv(cfg.path("train") / "per_class.csv")
    table = (rec.groupby("label")[["recognizability"]].mean().reset_index()
             .merge(rec.groupby("label")["num_synthetic"].sum().reset_index(), on="label")
             .merge(per_class[["label", "name", "val"]], on="label"))
    zero_shot = read_json(cfg.path("clip") / "zero_shot.json")
    out = cfg.path("analyze")
    from lib import config  # the sweep's sources (dvc.yaml's matrix): params.yaml sweep.sources

    sources = config.load("sweep").sources
    runs = grid_runs(cfg.path("sweep"), sources)
    grid = grid_table(runs)
    with atomic_path(out / "grid.csv") as tmp:
        grid.to_csv(tmp, index=False)
    with atomic_path(out / "recognizability.csv") as tmp:
        rec.to_csv(tmp, index=False)
    n_train = int((images["split"] == "train").sum())
    figures = {"per_class": per_class_figure(table), "recognizability": recognizability_figure(rec),
               "clip_zero_shot": zero_shot_figure(zero_shot)}
    if not grid.empty:
        figures["grid"] = grid_figure(grid)
        synth = synthetic_only_figure(grid, n_train / max(1, len(classes)))
        if synth is not None:
            figures["synthetic_only"] = synth
    for name, fig in figures.items():
        plots.save_figure(fig, out / name, dpi=cfg.dpi)
        plt.close(fig)  # shown where the notebook displays it, not twice
    write_json(out / "per_class.json",
               table.astype(object).where(table.notna(), None).to_dict(orient="records"))
    by_strategy = rec.groupby("strategy")["recognizability"].mean()
    metrics = {**{f"clip_zero_shot.{k}": v["top1"] for k, v in zero_shot.items()},
               "recognizability_judge": judge_name,
               "recognizability_mean": float(table["recognizability"].mean()),
               "recognizability_min": float(table["recognizability"].min()),
               "recognizability": {k: float(v) for k, v in by_strategy.items()},
               "classes_without_synthetic": int((table["num_synthetic"] == 0).sum()),
               **headline(grid, len(runs))}
    write_metrics(cfg.path("metrics"), "headline", metrics)
    provenance.finish(cfg, "analyze", inputs)
    candidates = pd.read_parquet(cfg.path("disambiguate") / "candidates.parquet")
    return {"table": table, "recognizability": rec, "figures": figures, "metrics": metrics,
            "grid": grid, "grid_runs": runs, "summary": summary_table(grid),
            "summary_ood": summary_table(grid, "ood_mean.top1"),
            "lookalikes": lookalike_table(candidates)}
