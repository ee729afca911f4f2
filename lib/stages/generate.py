"""Stage ``generate``: text-to-image generation of the prompt manifest into WebDataset shards.

With ``nproc: 1`` the worker runs in this process; with ``nproc > 1`` the stage launches
``torchrun --standalone --nproc-per-node nproc -m lib.generate_cli`` (one process per GPU on
CUDA, ``OMP_NUM_THREADS=1`` each on CPU) and reads the ranks' summaries back. The same
worker runs directly under torchrun on many nodes or under Slurm (see
:mod:`lib.generate_cli`); this stage then finds every id done and only reports.
"""

from __future__ import annotations

import codecs
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from lib import generate_cli, paths
from lib.config import GenerateConfig
from lib.io import read_json, write_json
from lib.metrics import write_metrics
from lib.seeding import torch_threads

# Counts summed over ranks.
_SUMMED = ("total", "generated", "skipped", "regenerated", "dropped", "attempts", "padded",
           "rejected_blank", "rejected_nsfw", "shards")  # fmt: skip


def _in_process(cfg: GenerateConfig) -> dict[str, Any]:
    """One worker in this process; on CPU with one thread, like torchrun's workers
    (OMP_NUM_THREADS=1): CPU kernels differ with the thread count, and the bytes of an image
    must not depend on ``nproc``."""
    if not cfg.common.device.startswith("cpu"):
        return generate_cli.run_worker(cfg)
    with torch_threads(1):
        return generate_cli.run_worker(cfg)


def run(cfg: GenerateConfig) -> dict[str, Any]:
    """Generate (or resume) the run; returns summary (this invocation), manifest, dropped,
    ranks (per-rank summaries) and metrics (``metrics/generate.json``: the last run that
    generated anything, plus the folder's totals)."""
    out = cfg.path("generate")
    start = time.perf_counter()
    if cfg.nproc > 1:
        ranks = launch(cfg)
    else:
        ranks = [_in_process(cfg)]
    wall = time.perf_counter() - start
    if not (out / "manifest.parquet").is_file():
        raise RuntimeError(
            f"the workers finished but {out} has no manifest.parquet: some ids are not done "
            "(a rank of another world size still running?); rerun to resume"
        )
    manifest = pd.read_parquet(out / "manifest.parquet")
    dropped = pd.read_parquet(out / "dropped.parquet")
    summary = combine(ranks, wall)
    metrics = {
        **{k: summary[k] for k in (*_SUMMED, "nproc", "seconds", "wall_seconds",
                                   "images_per_s", "seconds_per_image")},
        "num_images": len(manifest),
        "num_dropped": len(dropped),
        "num_regenerated": int((manifest["retries"] > 0).sum()),
    }  # fmt: skip
    metrics_file = cfg.path("metrics") / "generate.json"
    if summary["attempts"] == 0 and metrics_file.is_file():
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
    return {"summary": summary, "manifest": manifest, "dropped": dropped,
            "ranks": pd.DataFrame(ranks), "metrics": metrics}


def combine(ranks: list[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """One summary of the ranks' summaries: summed counts and the run's throughput.

    ``seconds`` is the slowest rank's generation time (model loading excluded; that is in
    ``wall_seconds``, which also counts process start-up), so ``images_per_s`` is the
    throughput of all ranks together.
    """
    summary: dict[str, Any] = {k: sum(r[k] for r in ranks) for k in _SUMMED}
    seconds = max(r["seconds"] for r in ranks)
    generated = summary["generated"]
    summary |= {
        "nproc": len(ranks),
        "seconds": round(seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "setup_seconds": round(max(r.get("setup_seconds", 0.0) for r in ranks), 3),
        "images_per_s": round(generated / seconds, 3) if seconds > 0 else 0.0,
        "seconds_per_image": round(seconds / generated, 4) if generated else 0.0,
    }
    return summary


def launch(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """Run ``cfg.nproc`` workers under torchrun; their summaries, by rank."""
    with tempfile.TemporaryDirectory(prefix="synthscale-generate-") as tmp:
        cfg_file = write_json(Path(tmp) / "config.json", cfg.as_params())
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={cfg.nproc}", "-m", "lib.generate_cli",
            "--config", str(cfg_file), "--summary-dir", tmp,
        ]  # fmt: skip
        env = {**os.environ, paths.ROOT_ENV: str(cfg.root)}
        code, tail = _stream(cmd, env, cfg.root)
        if code != 0:
            raise RuntimeError(
                f"generation workers failed (exit code {code}); completed shards are kept and "
                f"a rerun resumes after them. Last output:\n{tail}"
            )
        ranks = [read_json(p) for p in sorted(Path(tmp).glob("rank-*.json"))]
    if len(ranks) != cfg.nproc:
        raise RuntimeError(f"expected {cfg.nproc} rank summaries, got {len(ranks)}")
    return ranks


def _stream(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``cmd``, relaying its output (progress bars included) to our stdout as it comes.

    Returns the exit code and the last few kB of output (for the error message).
    """
    tail: collections.deque[str] = collections.deque(maxlen=64)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 14):
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail.append(text)
    return proc.returncode, "".join(tail)[-4000:]
