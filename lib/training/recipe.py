"""The settings of a training run and their checks: what a resumed checkpoint must agree with.

:class:`RunConfig` holds them (a checkpoint stores it and refuses to resume under other
settings); :func:`check_run` validates them against the datasets; :func:`steps_for_epochs`
turns an epoch budget into optimizer steps; :func:`param_groups` exempts 1-D parameters from
weight decay. Speed options (AMP, memory format) are not settings of the run
(:func:`lib.training.loop.train_classifier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from lib.choices import Epoch, Optimizer, Schedule, values
from lib.nn.augment import check_augment


@dataclass(frozen=True)
class RunConfig:
    """What a checkpoint must agree with to be resumed (not logging or device options)."""

    steps: int
    batch_size: int
    synthetic_fraction: float
    lr: float
    weight_decay: float
    label_smoothing: float
    synthetic_loss_weight: float
    seed: int
    n_real: int
    n_synthetic: int
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    augment: str = ""  # comma-joined operation names of lib.nn.augment

    @property
    def n_synthetic_per_batch(self) -> int:
        return round(self.batch_size * self.synthetic_fraction)

    @property
    def warmup_steps(self) -> int:
        """A linear warmup over ``warmup_fraction`` of the run, at least one step."""
        return max(1, round(self.warmup_fraction * self.steps))

    @property
    def augment_ops(self) -> tuple[str, ...]:
        return tuple(a for a in self.augment.split(",") if a)


OPTIMIZERS = values(Optimizer)
SCHEDULES = values(Schedule)
EPOCHS = values(Epoch)


def steps_for_epochs(
    epochs: float,
    epoch: str,
    *,
    n_real: int,
    n_synthetic: int,
    batch_size: int,
    synthetic_fraction: float,
) -> int:
    """Optimizer steps of ``epochs`` epochs (rounded up, at least 1).

    ``epoch="real"``: one epoch = as many real images as the real set holds (the paper's
    convention: adding synthetic data does not shorten the real schedule); ``"all"``: as
    many images as real + synthetic hold. Batches are drawn with replacement across steps,
    so an "epoch" is a budget of images, not a permutation.
    """
    if epoch not in EPOCHS:
        raise ValueError(f"epoch must be one of {', '.join(EPOCHS)}, got {epoch!r}")
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    n_syn = round(batch_size * synthetic_fraction)
    if epoch == "real":
        per_step, size = batch_size - n_syn, n_real
        if per_step == 0:
            raise ValueError("epoch='real' needs real images in each batch (synthetic_fraction < 1)")
    else:
        per_step, size = batch_size, n_real + (n_synthetic if n_syn else 0)
    return max(1, math.ceil(epochs * size / per_step))


def check_run(cfg: RunConfig, synthetic: Dataset | None) -> None:
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be positive, got {cfg.steps}, {cfg.batch_size}"
        )
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction}")
    check_augment(cfg.augment_ops)
    if not 0.0 <= cfg.synthetic_fraction <= 1.0:
        raise ValueError(f"synthetic_fraction must be in [0, 1], got {cfg.synthetic_fraction}")
    if synthetic is None and cfg.synthetic_fraction > 0:
        raise ValueError(
            f"synthetic_fraction is {cfg.synthetic_fraction} but no synthetic dataset was given"
        )
    n_syn = cfg.n_synthetic_per_batch
    if n_syn > 0 and cfg.n_synthetic == 0:
        raise ValueError("the synthetic dataset is empty")
    if cfg.batch_size - n_syn > 0 and cfg.n_real == 0:
        raise ValueError("the real dataset is empty")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D parameters), as timm does."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
