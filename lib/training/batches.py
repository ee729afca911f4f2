"""The batches of a training run: which real and synthetic samples each step draws.

Indices are a pure function of ``(seed, step)`` (``numpy_rng(seed, "batch", step)``), so a
resumed run draws what an uninterrupted one would. A batch holds its real samples first, then
its synthetic ones; under DDP each process keeps the same share of each domain
(:mod:`lib.training.distributed`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.seeding import numpy_rng
from lib.training.datasets import fetch_batch
from lib.training.distributed import DistInfo
from lib.training.recipe import RunConfig

_ONE_PROCESS = DistInfo()  # the default share: everything


def draw_indices(cfg: RunConfig, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The real and synthetic indices of ``step``; a pure function of (seed, step)."""
    rng = numpy_rng(cfg.seed, "batch", step)
    n_syn = cfg.n_synthetic_per_batch
    n_real = cfg.batch_size - n_syn
    real = rng.choice(cfg.n_real, n_real, replace=n_real > cfg.n_real) if n_real else []
    syn = rng.choice(cfg.n_synthetic, n_syn, replace=n_syn > cfg.n_synthetic) if n_syn else []
    return np.asarray(real, dtype=np.int64), np.asarray(syn, dtype=np.int64)


def _rank_indices(
    cfg: RunConfig, step: int, info: DistInfo = _ONE_PROCESS
) -> tuple[np.ndarray, np.ndarray]:
    """This process's share of the step's indices: the ``rank``-th of ``world_size`` equal
    parts of the real indices and of the synthetic ones (all of them for one process)."""
    real_idx, syn_idx = draw_indices(cfg, step)
    if not info.enabled:
        return real_idx, syn_idx
    return (np.split(real_idx, info.world_size)[info.rank],
            np.split(syn_idx, info.world_size)[info.rank])


def make_batch(
    real: Dataset,
    synthetic: Dataset | None,
    cfg: RunConfig,
    step: int,
    info: DistInfo = _ONE_PROCESS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real samples first, then synthetic (this process's share under DDP); the mask says
    which are synthetic."""
    real_idx, syn_idx = _rank_indices(cfg, step, info)
    parts = []
    for dataset, idx, is_syn in ((real, real_idx, False), (synthetic, syn_idx, True)):
        if len(idx) == 0:
            continue
        x, y, flags = fetch_batch(dataset, idx)
        if bool((flags != is_syn).any()):
            role = "synthetic" if is_syn else "real"
            raise ValueError(f"the dataset passed as {role} yields items flagged otherwise")
        parts.append((x, y, torch.full((len(idx),), is_syn, dtype=torch.bool)))
    x, y, mask = (torch.cat(t) for t in zip(*parts))
    return x, y, mask
