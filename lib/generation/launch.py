"""Running the generation workers of one run: in this process, or ``nproc`` of them under
torchrun, and one summary of the ranks' summaries.

With ``nproc: 1`` the worker runs in this process; with ``nproc > 1``
``torchrun --standalone --nproc-per-node nproc -m lib.generation`` starts one process per
GPU on CUDA (``OMP_NUM_THREADS=1`` each on CPU), and their summaries are read back.
"""

from __future__ import annotations

import codecs
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lib import paths
from lib.config import GenerateConfig
from lib.generation.worker import run_worker
from lib.io import read_json, write_json
from lib.processes import parent_death_hook
from lib.seeding import torch_threads

# Counts summed over ranks.
SUMMED = ("total", "generated", "skipped", "regenerated", "dropped", "attempts", "padded",
          "rejected_blank", "rejected_nsfw", "shards", "repaired_shards",
          "repaired_ids")  # fmt: skip


def run_workers(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """The summaries of the run's workers, by rank: ``cfg.nproc`` processes under torchrun,
    or one in this process."""
    if cfg.nproc > 1:
        return launch(cfg)
    return [run_in_process(cfg)]


def run_in_process(cfg: GenerateConfig) -> dict[str, Any]:
    """One worker in this process; on CPU with one thread, like torchrun's workers
    (OMP_NUM_THREADS=1): CPU kernels differ with the thread count, and the bytes of an image
    must not depend on ``nproc``."""
    if not cfg.common.device.startswith("cpu"):
        return run_worker(cfg)
    with torch_threads(1):
        return run_worker(cfg)


def combine(ranks: list[dict[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """One summary of the ranks' summaries: summed counts and the run's throughput.

    ``seconds`` is the slowest rank's generation time (model loading excluded; that is in
    ``wall_seconds``, which also counts process start-up), so ``images_per_s`` is the
    throughput of all ranks together.
    """
    summary: dict[str, Any] = {k: sum(r[k] for r in ranks) for k in SUMMED}
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
        cmd = torchrun_command(cfg.nproc, cfg_file, Path(tmp))
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


def torchrun_command(nproc: int, cfg_file: Path, summary_dir: Path) -> list[str]:
    """The command that runs ``nproc`` generation workers with the flat config ``cfg_file``,
    each writing its summary to ``summary_dir``."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "lib.generation",
        "--config", str(cfg_file), "--summary-dir", str(summary_dir),
    ]  # fmt: skip


def _stream(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``cmd``, relaying its output (progress bars included) to our stdout as it comes.

    Returns the exit code and the last few kB of output (for the error message). torchrun
    dies with this process (:func:`lib.processes.parent_death_hook`), and its workers with it.
    """
    tail: collections.deque[str] = collections.deque(maxlen=64)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, preexec_fn=parent_death_hook()) as proc:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 14):
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail.append(text)
    return proc.returncode, "".join(tail)[-4000:]
