"""The training loop: :func:`train_classifier` and its steps.

Every random choice is derived from the seed and the step number (:mod:`lib.seeding`),
never from a global stream: batches come from :mod:`lib.training.batches`, the forward pass
(dropout, drop-path) runs under a torch seed derived from ``(seed, step)`` and augmentation
(:mod:`lib.nn.augment`) under a generator seeded from ``(seed, "augment", step)``. When the
model has auxiliary norms (:mod:`lib.nn.aux_norm`) the synthetic images are routed through
them.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from lib.nn.augment import augment_batch
from lib.nn.aux_norm import has_aux_norm, set_synthetic_mask, synced_batchnorm
from lib.seeding import seed_for, torch_generator
from lib.training.batches import make_batch
from lib.training.checkpoints import RunState
from lib.training.distributed import (
    DistInfo,
    broadcast_buffers,
    check_world,
    collective_device,
    data_parallel,
    init_distributed,
    rank_step_seed,
    same_on_all_ranks,
)
from lib.training.history import HistoryWindow, Throughput
from lib.training.recipe import RunConfig, check_run

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
              "float16": torch.float16}


def train_classifier(
    model: nn.Module,
    real: Dataset,
    synthetic: Dataset | None,
    *,
    steps: int,
    batch_size: int,
    synthetic_fraction: float,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    synthetic_loss_weight: float,
    seed: int,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    schedule: str = "cosine",
    warmup_fraction: float = 0.05,
    augment: tuple[str, ...] | list[str] = (),
    device: str = "cpu",
    amp: bool | str = False,
    channels_last: bool = False,
    sync_bn: bool = False,
    log_every: int = 10,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    throughput: Throughput | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on batches mixing real and synthetic images; return history.

    Each batch holds ``round(batch_size * synthetic_fraction)`` synthetic images (drawn without
    replacement within the batch from ``numpy_rng(seed, "batch", step)``) and real images
    for the rest. ``optimizer`` "adamw" or "sgd" (Nesterov, ``momentum``), no weight decay
    on 1-D parameters; ``schedule`` "cosine" or "constant" after a linear warmup over
    ``warmup_fraction`` of the steps. ``augment`` names operations of
    :mod:`lib.nn.augment`. Synthetic losses are scaled by ``synthetic_loss_weight``.

    Speed options (numerics only, so not part of what a resumed checkpoint must agree with):
    ``amp`` runs the forward pass under autocast: ``True`` or ``"bf16"`` bfloat16 (no loss
    scaler needed), ``"fp16"`` float16 with a dynamic ``GradScaler`` (saved in checkpoints);
    ``channels_last`` uses the NHWC memory format (both for GPUs). ``sync_bn`` (only with
    several processes) normalises every BN over the whole distributed batch, per domain.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the run is data-parallel (see
    :mod:`lib.training.distributed`): ``batch_size`` is the global batch, ``device="cuda"``
    means each process's ``cuda:LOCAL_RANK``, only rank 0 writes the checkpoint, and every
    process returns the same history and ends with the same weights and buffers (rank 0's). The process group stays initialised for
    :func:`lib.training.evaluation.evaluate`.

    With ``checkpoint_path``, the model, optimizer, scheduler, step and history are saved
    atomically every ``checkpoint_every`` steps (0 = only at the end) and at the end; an
    existing checkpoint is resumed (exactly), or returned as is when already finished. A
    checkpoint from a run with other settings is refused.

    History rows (every ``log_every`` steps and the last): step, loss, loss_real,
    loss_synthetic, acc_real, acc_synthetic (means over the rows' steps; None when that
    domain was absent), lr. They hold no timing, nor does the checkpoint: the same run writes
    the same bytes. Pass a :class:`~lib.training.history.Throughput` as ``throughput`` to
    measure the steps run here (images/s, the share of time spent assembling batches).
    """
    cfg = run_config(real, synthetic, steps=steps, batch_size=batch_size,
                     synthetic_fraction=synthetic_fraction, lr=lr, weight_decay=weight_decay,
                     label_smoothing=label_smoothing,
                     synthetic_loss_weight=synthetic_loss_weight, seed=seed,
                     optimizer=optimizer, momentum=momentum, schedule=schedule,
                     warmup_fraction=warmup_fraction, augment=augment)
    amp_dtype = amp_dtype_of(amp)
    info, device = init_distributed(device)
    check_world(cfg, info.world_size)
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=fmt).train()
    aux = has_aux_norm(model)
    synced = synced_batchnorm(model) if sync_bn and info.enabled else contextlib.nullcontext()
    with synced:
        scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
        run = RunState.start(model, cfg, checkpoint_path, dev, scaler)
        net = model
        if info.enabled:
            same_on_all_ranks(run.step, "the step to resume from")
            net = data_parallel(model, dev, cfg, aux)
        try:
            _train_loop(run, net, real, synthetic, dev, fmt, info, aux, amp_dtype,
                        log_every, checkpoint_path, checkpoint_every, progress,
                        throughput or Throughput())
        finally:
            if aux:
                set_synthetic_mask(model, None)
        del net
    if info.enabled:
        broadcast_buffers(model)  # every process ends with rank 0's (the checkpoint's) model
        dist.barrier()  # and returns once rank 0 has written the checkpoint
    return run.history


def run_config(real: Dataset, synthetic: Dataset | None, *, steps: int, batch_size: int,
               synthetic_fraction: float, lr: float, weight_decay: float,
               label_smoothing: float, synthetic_loss_weight: float, seed: int,
               optimizer: str = "adamw", momentum: float = 0.9, schedule: str = "cosine",
               warmup_fraction: float = 0.05,
               augment: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """The checked settings of a run of :func:`train_classifier` (its arguments of the same
    names); the runs of a training group (:mod:`lib.training.group_loop`) are built alike."""
    cfg = RunConfig(
        steps=steps,
        batch_size=batch_size,
        synthetic_fraction=float(synthetic_fraction),
        lr=float(lr),
        weight_decay=float(weight_decay),
        label_smoothing=float(label_smoothing),
        synthetic_loss_weight=float(synthetic_loss_weight),
        seed=int(seed),
        n_real=len(real),
        n_synthetic=0 if synthetic is None else len(synthetic),
        optimizer=optimizer,
        momentum=float(momentum),
        schedule=schedule,
        warmup_fraction=float(warmup_fraction),
        augment=",".join(augment),
    )
    check_run(cfg, synthetic)
    return cfg


def amp_dtype_of(amp: bool | str | None) -> torch.dtype | None:
    """The autocast dtype of ``amp``: False/None/"" = off, True = bfloat16, or a name."""
    if amp is None or amp is False or amp == "" or amp == "none":
        return None
    if amp is True:
        return torch.bfloat16
    if isinstance(amp, str) and amp.lower() in AMP_DTYPES:
        return AMP_DTYPES[amp.lower()]
    raise ValueError(f"amp must be a bool or one of none, {', '.join(AMP_DTYPES)}; got {amp!r}")


def _train_loop(
    run: RunState,
    net: nn.Module,
    real: Dataset,
    synthetic: Dataset | None,
    dev: torch.device,
    fmt: torch.memory_format,
    info: DistInfo,
    aux: bool,
    amp_dtype: torch.dtype | None,
    log_every: int,
    checkpoint_path: str | os.PathLike | None,
    checkpoint_every: int,
    progress: bool,
    throughput: Throughput,
) -> None:
    """Steps ``run.step`` .. ``cfg.steps`` of :func:`train_classifier`, timed in
    ``throughput``."""
    cfg, steps, seed = run.cfg, run.cfg.steps, run.cfg.seed
    bar = tqdm(total=steps, initial=run.step, disable=not progress or not info.is_main,
               desc="train", mininterval=1)
    throughput.start()
    for step in range(run.step, steps):
        with torch.random.fork_rng(devices=_fork_devices(dev)):
            torch.manual_seed(seed_for(*rank_step_seed(seed, "forward", step, info)))
            started = time.perf_counter()
            x, y, mask = make_batch(real, synthetic, cfg, step, info)
            if cfg.augment:
                gen = torch_generator(*rank_step_seed(seed, "augment", step, info))
                x = augment_batch(x, cfg.augment_ops, gen)
            n_syn = int(mask.sum())
            x = x.to(dev, non_blocking=True, memory_format=fmt)
            batch = (x, y.to(dev), mask.to(dev))
            data_s = time.perf_counter() - started
            lr_now = run.optimizer.param_groups[0]["lr"]
            stats = _train_step(net, run.model, run.optimizer, run.scheduler, run.scaler, batch,
                                n_syn, cfg, aux, amp_dtype)
        if info.enabled:  # the global means: every process holds the same share of each domain
            stats = stats.to(collective_device(dev))
            dist.all_reduce(stats)
            stats = stats / info.world_size
        losses = [None if math.isnan(v) else v for v in stats.tolist()]
        run.window.add(*losses)
        throughput.add(cfg.batch_size, data_s)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[0]:.4f}", refresh=False)
        run.step = step + 1
        if (log_every > 0 and run.step % log_every == 0) or run.step == steps:
            run.history.append(run.window.row(run.step, lr_now))
            run.window = HistoryWindow()
        if checkpoint_path is not None and info.is_main and (
            run.step == steps or (checkpoint_every > 0 and run.step % checkpoint_every == 0)
        ):
            run.save(checkpoint_path)
    throughput.stop()
    bar.close()


def _train_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n_syn: int,
    cfg: RunConfig,
    aux: bool,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimizer step through ``net`` (``model`` or its DDP wrapper); the loss stats."""
    x, y, mask = batch
    if aux:
        set_synthetic_mask(model, mask)
    enabled = amp_dtype is not None
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.bfloat16, enabled=enabled):
        logits = net(x)
    loss, stats = _batch_loss(logits.float(), y, mask, cfg, n_syn)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # a disabled scaler (all but fp16) is a pass-through
    scaler.step(optimizer)
    scaler.update()
    if not scaler.is_enabled():
        scheduler.step()
        return stats
    with warnings.catch_warnings():
        # fp16: a step skipped for inf/NaN gradients still advances the schedule (by design)
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()
    return stats


def _batch_loss(
    logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, cfg: RunConfig, n_syn: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss = (sum over real + w * sum over synthetic) / batch size; w=1 is the plain mean.

    Under DDP ``y`` is one process's share (``batch_size / world_size`` samples, the same
    share of each domain on every process): DDP's average of the gradients is then the
    gradient of the global loss. Also returns the detached ``(loss, mean real loss, mean
    synthetic loss)``, NaN for a domain absent from the batch, without synchronising a GPU:
    the batch is in the trainer's layout, real samples first and the last ``n_syn``
    synthetic, so the means are over slices.
    """
    per_sample = F.cross_entropy(logits, y, reduction="none", label_smoothing=cfg.label_smoothing)
    weights = torch.where(mask, cfg.synthetic_loss_weight, 1.0).to(per_sample.dtype)
    loss = (per_sample * weights).sum() / len(y)
    detached = per_sample.detach()
    nan = detached.new_full((), float("nan"))
    n_real = len(y) - n_syn
    loss_real = detached[:n_real].mean() if n_real else nan
    loss_syn = detached[n_real:].mean() if n_syn else nan
    hit = (logits.detach().argmax(dim=1) == y).to(per_sample.dtype)
    acc_real = hit[:n_real].mean() if n_real else nan
    acc_syn = hit[n_real:].mean() if n_syn else nan
    return loss, torch.stack([loss.detach(), loss_real, loss_syn, acc_real, acc_syn])


def _fork_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
