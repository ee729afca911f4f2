"""The generation worker: one process of a (possibly multi-node) generation run.

Each process reads its rank from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun) or
``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (srun), takes every ``WORLD_SIZE``-th id
of the prompt manifest and writes its own shards (:func:`lib.generation.core.generate`).
Ranks coordinate only through the output folder (completion markers; the last rank to
finish writes the manifest), so no process group is created and a rank may finish hours
after the others, or be rerun alone, without a collective timeout. With ``common.device:
cuda`` rank ``r`` uses ``cuda:LOCAL_RANK``. The command line is ``python -m
lib.generation`` (:mod:`lib.generation.__main__`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from lib import config
from lib.config import GenerateConfig
from lib.generation.core import generate
from lib.generation.runs import validate_prompts
from lib.io import read_json


def dist_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's or Slurm's variables; (0, 1, 0) alone."""
    env = os.environ if environ is None else environ

    def first(*names: str, default: int) -> int:
        for name in names:
            if env.get(name, "") != "":
                return int(env[name])
        return default

    rank = first("RANK", "SLURM_PROCID", default=0)
    world = first("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local = first("LOCAL_RANK", "SLURM_LOCALID", default=0)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1} (RANK/WORLD_SIZE)")
    return rank, world, local


def rank_device(device: str, local_rank: int, world_size: int) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` for cuda runs of several processes."""
    if device == "cuda" or (device.startswith("cuda") and world_size > 1):
        return f"cuda:{local_rank}"
    return device


def read_prompt_manifest(cfg: GenerateConfig) -> pd.DataFrame:
    """The prompt manifest of the ``prompts`` stage."""
    path = cfg.path("prompts") / "prompts.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt manifest at {path}: run the prompts stage first")
    return pd.read_parquet(path)


def create_backend(cfg: GenerateConfig, device: str) -> Any:
    """The configured text-to-image backend on ``device``."""
    model = cfg.resolve_model(cfg.model)  # a missing local folder fails before the imports
    from lib.backends.t2i import create_t2i

    t2i = create_t2i(cfg.backend, model=model, device=device,
                     dtype=cfg.dtype, scheduler=cfg.scheduler, compile=cfg.compile,
                     cpu_offload=cfg.cpu_offload)
    t2i.model_id = cfg.model  # records name the model as params.yaml does, not a local path
    return t2i


def run_worker(
    cfg: GenerateConfig, rank: int = 0, world_size: int = 1, local_rank: int = 0
) -> dict[str, Any]:
    """Generate rank ``rank``'s share of the prompts; the summary of
    :func:`~lib.generation.core.generate` plus the device and the model loading time
    (setup_seconds)."""
    prompts = read_prompt_manifest(cfg)
    validate_prompts(prompts)  # before the slow model load
    device = rank_device(cfg.common.device, local_rank, world_size)
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))
    start = time.perf_counter()
    t2i = create_backend(cfg, device)
    setup = time.perf_counter() - start
    summary = generate(
        prompts, cfg.path("generate"), t2i,
        seed=cfg.common.seed, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
        guidance_by_strategy=cfg.guidance_by_strategy, height=cfg.height, width=cfg.width,
        output_size=cfg.output_size, batch_size=cfg.batch_size, shard_size=cfg.shard_size,
        image_format=cfg.image_format, jpeg_quality=cfg.jpeg_quality,
        max_retries=cfg.max_retries, rank=rank, world_size=world_size,
        progress=cfg.common.progress,
    )  # fmt: skip
    return {**summary, "device": device, "setup_seconds": round(setup, 3)}


def load_config(path: str | os.PathLike | None, params: str | os.PathLike | None) -> GenerateConfig:
    """The generate config from a flat JSON file (``--config``) or from params.yaml."""
    if path is not None:
        return config.build("generate", read_json(path))
    return config.load("generate", params)
