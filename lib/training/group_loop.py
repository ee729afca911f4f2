"""Training a group of runs at once: :func:`train_group`, bit for bit as each run alone.

The small classifiers of the sweep spend about half of a step outside their convolutions
when trained one at a time. A group trains K runs of one architecture and batch layout in
one process and one loop: one stacked model (:class:`lib.nn.mini_cnn_group.MiniCNNGroup`),
one batch assembly (:class:`lib.training.group_batches.GroupBatches`), one optimizer step
over the stacked parameters, so that the per-step work outside the convolutions is shared.

Each run keeps everything that makes it itself: its data, seed, batches, augmentation and
dropout draws (from its own generators, seeded as :func:`lib.training.loop.train_classifier`
seeds them), its auxiliary-norm split, its history. Every kernel computes a run's part of
the stacked tensors as it computes the run alone (see :mod:`lib.nn.mini_cnn_group`; the
optimizers are elementwise, and the loss reduces each run's row), so a run ends with
exactly the weights, buffers, optimizer state and history it ends with alone, whichever
runs share its group and however many; ``tests/test_training_group.py`` checks it. Its
checkpoints are the lone run's (:class:`lib.training.checkpoints.RunState`, the same bytes),
so a killed group resumes, each run from its own file, alone or in any group.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from lib.nn.aux_norm import has_aux_norm
from lib.nn.mini_cnn_group import MiniCNNGroup
from lib.seeding import torch_generator
from lib.training.checkpoints import RunState, new_optimizer, new_scheduler
from lib.training.distributed import dist_info
from lib.training.group_batches import GroupBatch, GroupBatches
from lib.training.history import HistoryWindow
from lib.training.loop import amp_dtype_of
from lib.training.recipe import RunConfig


@dataclass
class GroupMember:
    """One run of a group: what :func:`lib.training.loop.train_classifier` gets for it."""

    model: nn.Module  # its initial weights in; its trained weights out (a MiniCNN)
    real: Dataset
    synthetic: Dataset | None
    cfg: RunConfig  # lib.training.loop.run_config of its settings
    checkpoint_path: str | os.PathLike | None = None


def group_key(cfg: RunConfig, aux_norm: bool) -> RunConfig:
    """What the runs of one group share: every setting but the seed, the data sizes and the
    augmentation; with the auxiliary norm also the number of synthetic samples per batch
    (the split is along the batch)."""
    share = cfg.n_synthetic_per_batch / cfg.batch_size if aux_norm else 0.0
    return dataclasses.replace(cfg, seed=0, n_real=0, n_synthetic=0, augment="",
                               synthetic_fraction=share)


def train_group(members: Sequence[GroupMember], *, device: str = "cpu",
                amp: bool | str | None = False, channels_last: bool = False,
                log_every: int = 10, checkpoint_every: int = 0) -> list[list[dict[str, Any]]]:
    """Train every member's model in place as :func:`~lib.training.loop.train_classifier`
    trains it alone (same arguments, per member or shared); return their histories.

    The members must share :func:`group_key`, the architecture and the step to resume from
    (each resumes from its ``checkpoint_path`` when that file exists, and its checkpoints
    are written there every ``checkpoint_every`` steps and at the end). One process on the
    CPU (no torchrun, no GPU: the per-run dropout generators are CPU generators, as the lone
    run's global one is there); ``amp`` off or bfloat16 (fp16's loss scaler is per run)."""
    dtype = amp_dtype_of(amp)
    if dtype == torch.float16:
        raise ValueError("amp fp16 (a loss scaler per run) is not supported in a training "
                         "group; train such runs alone")
    if dist_info().enabled:
        raise ValueError("a training group runs in one process, not under torchrun")
    dev = torch.device(device)
    if dev.type != "cpu":
        raise ValueError(f"training groups run on the CPU (the small CNNs of the mini world), "
                         f"not on {device}; train such runs alone")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    aux = _check_members(members)
    for m in members:
        m.model.to(dev, memory_format=fmt).train()
    runs = [RunState.start(m.model, m.cfg, m.checkpoint_path, dev) for m in members]
    starts = sorted({r.step for r in runs})
    if len(starts) > 1:
        raise ValueError(f"the runs of a group must resume from the same step; their "
                         f"checkpoints are at steps {starts}")
    group = MiniCNNGroup([r.model for r in runs], fmt)
    optimizer, scheduler = _stacked_optimizer(group, runs)
    batches = GroupBatches([(m.real, m.synthetic, m.cfg) for m in members])
    stepper = _Stepper(group, optimizer, scheduler, fmt, dtype, aux)
    paths = [m.checkpoint_path for m in members]
    steps = runs[0].cfg.steps
    for step in range(runs[0].step, steps):
        stats, lr_now = stepper.step(batches.batch(step), runs, step)
        _record(runs, stats, step + 1, lr_now, log_every)
        if step + 1 == steps or (checkpoint_every > 0 and (step + 1) % checkpoint_every == 0):
            _save(group, runs, optimizer, scheduler, paths)
    group.load_into([r.model for r in runs])
    return [r.history for r in runs]


@dataclass
class _Stepper:
    """One optimizer step of a group, as :func:`lib.training.loop._train_step` makes it for
    a run alone."""

    group: MiniCNNGroup
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    fmt: torch.memory_format
    dtype: torch.dtype | None  # autocast, None: off
    aux: bool

    def step(self, batch: GroupBatch, runs: list[RunState], step: int
             ) -> tuple[list[list[float]], float]:
        """Train on ``batch``; every run's loss stats and the learning rate used."""
        cfg = runs[0].cfg
        gens = [torch_generator(r.cfg.seed, "forward", step) for r in runs]  # dropout
        lr_now = self.optimizer.param_groups[0]["lr"]
        x = batch.x.to(memory_format=self.fmt)
        n_real = cfg.batch_size - batch.n_synthetic[0] if self.aux else None
        with torch.autocast("cpu", dtype=self.dtype or torch.bfloat16,
                            enabled=self.dtype is not None):
            logits = self.group.forward(x, training=True, generators=gens, n_real=n_real)
        losses, stats = _group_loss(logits.float(), batch, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        self.scheduler.step()
        return stats.tolist(), lr_now


def _check_members(members: Sequence[GroupMember]) -> bool:
    """Refuse members that cannot share a group; whether they have auxiliary norms."""
    if not members:
        raise ValueError("a training group needs at least one run")
    aux = {has_aux_norm(m.model) for m in members}
    if len(aux) > 1:
        raise ValueError("the runs of a group must all have auxiliary norms or none")
    keys = [group_key(m.cfg, aux == {True}) for m in members]
    for i, key in enumerate(keys[1:], 1):
        if key != keys[0]:
            differ = [f.name for f in dataclasses.fields(key)
                      if getattr(key, f.name) != getattr(keys[0], f.name)]
            raise ValueError(f"run {i} of the group differs from run 0 in {', '.join(differ)}; "
                             f"a group's runs share every setting but the seed, the data "
                             f"and the augmentation")
    return aux == {True}


def _group_loss(logits: torch.Tensor, batch: GroupBatch, cfg: RunConfig
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every run's loss ``(K,)`` and its detached stats ``(K, 5)``, as
    :func:`lib.training.loop._batch_loss` computes them for the run alone: (real + w x
    synthetic per-sample losses) / batch size; loss, mean real and synthetic loss, real and
    synthetic training accuracy (NaN for a domain absent from the batch)."""
    k, b, n = logits.shape
    per_sample = F.cross_entropy(logits.reshape(k * b, n), batch.y.reshape(-1),
                                 reduction="none", label_smoothing=cfg.label_smoothing).view(k, b)
    weights = torch.where(batch.synthetic, cfg.synthetic_loss_weight, 1.0).to(per_sample.dtype)
    losses = (per_sample * weights).sum(1) / b
    detached = per_sample.detach()
    hit = (logits.detach().argmax(dim=2) == batch.y).to(per_sample.dtype)
    columns = [losses.detach()]
    for values in (detached, hit):
        columns += _domain_means(values, batch.n_synthetic)
    loss, loss_real, acc_real = columns[0], columns[1], columns[3]
    loss_syn, acc_syn = columns[2], columns[4]
    return losses, torch.stack([loss, loss_real, loss_syn, acc_real, acc_syn], 1)


def _domain_means(values: torch.Tensor, n_synthetic: list[int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per run (row), the mean of its real samples (the first ones) and of its synthetic
    ones (the last ``n_synthetic``), NaN where there are none; rows that split alike are
    reduced together."""
    b = values.shape[1]
    real = values.new_full((len(values),), float("nan"))
    synthetic = real.clone()
    for n_syn in sorted(set(n_synthetic)):
        rows = torch.tensor([i for i, n in enumerate(n_synthetic) if n == n_syn])
        part = values.index_select(0, rows)
        if n_syn < b:
            real[rows] = part[:, :b - n_syn].mean(1)
        if n_syn:
            synthetic[rows] = part[:, b - n_syn:].mean(1)
    return real, synthetic


def _record(runs: list[RunState], stats: list[list[float]], step: int, lr: float,
            log_every: int) -> None:
    """Each run's history window and rows, as the lone loop keeps them."""
    for run, row in zip(runs, stats):
        run.window.add(*[None if math.isnan(v) else v for v in row])
        run.step = step
        if (log_every > 0 and step % log_every == 0) or step == run.cfg.steps:
            run.history.append(run.window.row(step, lr))
            run.window = HistoryWindow()


# --------------------------------------------------------------------------- optimizer state


def _param_names(group: MiniCNNGroup) -> list[str]:
    """The parameter names in the optimizer's order (its param groups, one after the other)."""
    decay, no_decay = group.param_group_names()
    return decay + no_decay


def _stacked_optimizer(group: MiniCNNGroup, runs: list[RunState]
                       ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The runs' optimizer and schedule over the stacked parameters, with their state
    (moments, step counts, learning rates) stacked as the parameters are."""
    cfg = runs[0].cfg
    optimizer = new_optimizer(group.param_groups(cfg.weight_decay), cfg)
    scheduler = new_scheduler(optimizer, cfg)
    saved = [r.optimizer.state_dict() for r in runs]
    state: dict[int, dict[str, Any]] = {}
    for idx, name in enumerate(_param_names(group)):
        entries = [s["state"].get(idx) for s in saved]
        if all(e is None for e in entries):
            continue
        if any(e is None for e in entries):
            raise ValueError(f"the runs' optimizer states differ in which parameters they hold "
                             f"({name}); they cannot resume together")
        state[idx] = {key: _stack_value(group, name, [e[key] for e in entries])
                      for key in entries[0]}
    optimizer.load_state_dict({"state": state, "param_groups": saved[0]["param_groups"]})
    scheduler.load_state_dict(runs[0].scheduler.state_dict())
    return optimizer, scheduler


def _stack_value(group: MiniCNNGroup, name: str, values: list[Any]) -> Any:
    """The runs' optimizer-state values of parameter ``name`` as one: tensors of the
    parameter's shape stacked like it, others (step counts) shared and equal."""
    first = values[0]
    if isinstance(first, torch.Tensor) and first.ndim > 0 and first.shape == group.shapes[name]:
        stacked = torch.cat(values)
        return stacked.contiguous(memory_format=_layout_of(group.tensors[name]))
    for v in values[1:]:
        if not (torch.equal(v, first) if isinstance(v, torch.Tensor) else v == first):
            raise ValueError(f"the runs' optimizer states differ in {name} ({first} vs {v}); "
                             f"they cannot resume together")
    return first.clone() if isinstance(first, torch.Tensor) else first


def _layout_of(t: torch.Tensor) -> torch.memory_format:
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _save(group: MiniCNNGroup, runs: list[RunState], optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler,
          paths: list[str | os.PathLike | None]) -> None:
    """Write each run's checkpoint, as the lone run writes it (its model, optimizer and
    schedule unstacked into its own objects)."""
    state = optimizer.state_dict()
    names = _param_names(group)
    for k, (run, path) in enumerate(zip(runs, paths)):
        if path is None:
            continue
        mine = {idx: {key: _unstack_value(group, names[idx], v, k) for key, v in entry.items()}
                for idx, entry in state["state"].items()}
        run.optimizer.load_state_dict({"state": mine, "param_groups": state["param_groups"]})
        run.scheduler.load_state_dict(scheduler.state_dict())
        run.model.load_state_dict(group.state_of(k))
        run.save(path)


def _unstack_value(group: MiniCNNGroup, name: str, value: Any, k: int) -> Any:
    """Run ``k``'s part of an optimizer-state value of ``name`` (a copy)."""
    stacked = group.tensors[name]
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape == stacked.shape:
        return group.slice_of(name, value, k).clone()
    return value.clone() if isinstance(value, torch.Tensor) else value
