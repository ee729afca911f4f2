"""Stage ``generate``: text-to-image generation of the prompt manifest into WebDataset shards.

With ``nproc: 1`` the worker runs in this process; with ``nproc > 1`` the stage launches
``torchrun --standalone --nproc-per-node nproc -m lib.generation`` (one process per GPU on
CUDA, ``OMP_NUM_THREADS=1`` each on CPU) and reads the ranks' summaries back
(:mod:`lib.generation.launch`). The same worker runs directly under torchrun on many nodes
or under Slurm (see :mod:`lib.generation.__main__`); this stage then finds every id done
and only reports.

Before resuming, each worker verifies its shards and sets damaged ones aside, generating
their ids again (:mod:`lib.generation.repair`); the metrics count what was repaired
(``repaired_shards``, ``repaired_ids``).
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from lib import provenance
from lib.config import GenerateConfig
from lib.generation.launch import SUMMED, combine, run_workers
from lib.io import read_json
from lib.metrics import write_metrics


def run(cfg: GenerateConfig) -> dict[str, Any]:
    """Generate (or resume) the run; returns summary (this invocation), manifest, dropped,
    ranks (per-rank summaries) and metrics (``metrics/generate.json``: the last run that
    generated anything, plus the folder's totals)."""
    out = cfg.path("generate")
    inputs = provenance.begin(cfg, "generate")
    start = time.perf_counter()
    ranks = run_workers(cfg)
    wall = time.perf_counter() - start
    if not (out / "manifest.parquet").is_file():
        raise RuntimeError(
            f"the workers finished but {out} has no manifest.parquet: some ids are not done "
            "(a rank of another world size still running?); rerun to resume"
        )
    manifest = pd.read_parquet(out / "manifest.parquet")
    dropped = pd.read_parquet(out / "dropped.parquet")
    summary = combine(ranks, wall)
    if summary["repaired_shards"]:
        print(f"[generate] repaired {summary['repaired_shards']} damaged shards of {out}: "
              f"{summary['repaired_ids']} ids generated again (the damaged files are kept as "
              "*.damaged; delete them once inspected)")
    metrics = {
        **{k: summary[k] for k in (*SUMMED, "nproc", "seconds", "wall_seconds",
                                   "images_per_s", "seconds_per_image")},
        "num_images": len(manifest),
        "num_dropped": len(dropped),
        "num_regenerated": int((manifest["retries"] > 0).sum()),
    }  # fmt: skip
    metrics_file = cfg.path("metrics") / "generate.json"
    if summary["attempts"] == 0 and not summary["repaired_shards"] and metrics_file.is_file():
        # Nothing left to do (the notebook reopened after `dvc repro`, or a report after a
        # torchrun/Slurm run): keep the metrics of the run that made the images, so DVC
        # sees an unchanged output.
        metrics = read_json(metrics_file)
    else:
        write_metrics(cfg.path("metrics"), "generate", metrics)
    total = len(manifest) + len(dropped)
    if len(dropped) > cfg.max_dropped_fraction * total:
        raise RuntimeError(
            f"{len(dropped)} of {total} ids were dropped as blank or NSFW after "
            f"{cfg.max_retries} retries, more than max_dropped_fraction="
            f"{cfg.max_dropped_fraction}; see {out / 'dropped.parquet'}. The images are kept: "
            "raise the bound (or max_retries) and rerun to finish the stage"
        )
    provenance.finish(cfg, "generate", inputs)
    return {"summary": summary, "manifest": manifest, "dropped": dropped,
            "ranks": pd.DataFrame(ranks), "metrics": metrics}
