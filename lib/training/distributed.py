"""Helpers of data-parallel training under ``torchrun``: process group, ranks, collectives.

Data-parallel training (``torchrun --nproc-per-node N``, one process per GPU)
    :func:`lib.training.loop.train_classifier` joins the process group of the launch
    (``WORLD_SIZE > 1``; gloo on CPU, NCCL on CUDA, ``cuda:LOCAL_RANK`` per process) and
    wraps the model in ``DistributedDataParallel``. ``batch_size`` stays the global batch:
    every process draws the same indices as one process would and keeps its share, the
    ``rank``-th ``1 / world_size`` of the real indices and of the synthetic ones, so each
    process's batch is again real-then-synthetic in the run's ratio (both counts must divide
    by the number of processes). The loss of a process is its weighted sum over its
    ``batch_size / world_size`` samples divided by that number, and DDP averages the
    gradients, so the update is that of the global weighted mean (the synthetic loss weight
    included); the logged losses are averaged over the processes, i.e. the global means.

    BatchNorm: by default per process (timm's ImageNet recipe, AdvProp): each process's main
    and auxiliary BNs normalise its own real and synthetic samples, and the running
    statistics kept (and saved) are rank 0's (DDP broadcasts rank 0's buffers before every
    forward pass). The result then differs from one process by exactly that: normalisation
    over ``1 / world_size`` of each domain. ``sync_bn=True`` normalises over the whole
    distributed batch, per domain (:func:`lib.nn.aux_norm.synced_batchnorm`), and N
    processes then compute what one computes, up to float summation order.

    What still differs from one process by design: augmentation and dropout/drop-path draw
    from generators seeded with ``(seed, step, rank)`` when ``world_size > 1``. Both draw
    their random numbers for a whole batch at once, so a sample's draw depends on the batch
    it is in, and one process's draws cannot be cut into the processes' shares. Runs stay
    exactly reproducible for a given number of processes.

    Files and evaluation: only rank 0 writes checkpoints; every process resumes from the
    same file (so it must be on a file system they all read; they refuse to go on when they
    disagree on the step). A checkpoint can be resumed with another number of processes;
    with ``sync_bn`` and without augmentation or dropout that continues the same run up to
    float rounding. :func:`lib.training.evaluation.evaluate` and
    :func:`lib.training.evaluation.predict` shard the dataset over the processes and gather
    the result when called by all of them; :func:`lib.training.checkpoints.save_checkpoint`
    writes on rank 0 only, and :func:`is_main_process` tells a caller whether to write its
    own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lib.training.recipe import RunConfig


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel run; ``DistInfo()`` is a lone process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The initialised process group's rank and size (``LOCAL_RANK`` from torchrun)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo()


def is_main_process() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return dist_info().is_main


def init_distributed(device: str = "cpu") -> tuple[DistInfo, str]:
    """Join torchrun's process group when ``WORLD_SIZE > 1``; idempotent.

    Returns this process's :class:`DistInfo` and its device: ``cuda`` (or any ``cuda:i``)
    becomes ``cuda:LOCAL_RANK`` when there are several processes, one GPU each. The
    backend is NCCL for CUDA and gloo otherwise. A group initialised by the caller is used
    as it is (its backend must suit the device). Call :func:`shutdown_distributed` at the
    end of the process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and dist.is_available() and not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    info = dist_info()
    if info.enabled and device.startswith("cuda"):
        device = f"cuda:{info.local_rank}"
    return info, device


def shutdown_distributed() -> None:
    """Leave the process group (a no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def collective_device(device: torch.device) -> torch.device:
    """Where tensors of a collective must live: the GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_world(cfg: RunConfig, world: int) -> None:
    """Each domain's share of the batch must split evenly over the processes."""
    n_syn = cfg.n_synthetic_per_batch
    n_real = cfg.batch_size - n_syn
    if world > 1 and (n_real % world or n_syn % world):
        raise ValueError(
            f"with {world} processes the batch's {n_real} real and {n_syn} synthetic images "
            f"must each divide by {world}; change batch_size or synthetic_fraction"
        )


def same_on_all_ranks(value: int, what: str) -> None:
    """Refuse to go on when the processes disagree (e.g. a checkpoint only one could read)."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"the processes disagree on {what}: {values} (by rank); is the "
                           f"checkpoint on a file system that every process can read?")


def rank_step_seed(seed: int, what: str, step: int, info: DistInfo) -> tuple[Any, ...]:
    """The seed parts of ``what`` at ``step``: one process keeps the historical ones."""
    return (seed, what, step) if not info.enabled else (seed, what, step, "rank", info.rank)


def data_parallel(model: nn.Module, dev: torch.device, cfg: RunConfig, aux: bool) -> nn.Module:
    """``model`` in DDP; buffers (BN running statistics) follow rank 0 before each forward.

    A run whose batches never hold one of the domains leaves that domain's norm branch of an
    auxiliary model without gradients, which DDP only allows with ``find_unused_parameters``.
    """
    one_domain = cfg.n_synthetic_per_batch in (0, cfg.batch_size)
    return DistributedDataParallel(  # buffers: synced from rank 0 before forward by default
        model,
        device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=aux and one_domain,
    )


def broadcast_buffers(model: nn.Module) -> None:
    """Every process takes rank 0's buffers (BN running statistics: the checkpoint's)."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
