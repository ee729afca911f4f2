"""The classifier training core: datasets of image arrays, training, evaluation, checkpoints.

Pure except for what is passed in (device, paths). Every random choice is derived from the
seed and the step number (:mod:`lib.seeding`), never from a global stream, so

* two runs with the same seed give identical weights (on CPU), and
* a run interrupted and resumed from its checkpoint ends with exactly the weights of an
  uninterrupted run: batches are drawn from ``numpy_rng(seed, "batch", step)`` and the
  forward pass (dropout, drop-path) runs under a torch seed derived from ``(seed, step)``.

Batches mix real and synthetic images in a fixed ratio; when the model has auxiliary norms
(:mod:`lib.nn.aux_norm`) the synthetic ones are routed through them. Augmentation
(:mod:`lib.nn.augment`) is applied per batch on tensors with a generator seeded from
``(seed, "augment", step)``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from lib.io import atomic_path
from lib.nn.augment import augment_batch, check_augment
from lib.nn.aux_norm import has_aux_norm, set_synthetic_mask, strip_aux
from lib.seeding import numpy_rng, seed_for, torch_generator

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")


# --------------------------------------------------------------------------- datasets


class ImageArrayDataset(Dataset):
    """Images held as one uint8 array, served as normalised float tensors.

    Items are ``(x, label, is_synthetic)`` with ``x`` of shape ``(channels, image_size,
    image_size)`` scaled to mean 0.5 / std 0.5 (values in [-1, 1]). RGB is converted to gray
    (BT.601 luma) when ``channels == 1`` and gray is repeated when ``channels == 3``; images
    are resized (bilinear, antialiased, aspect not kept) to ``image_size``. Conversion happens
    per batch (:meth:`batch`), so the array stays uint8 in memory.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        image_size: int,
        channels: int,
        synthetic: bool,
    ):
        _check_images(images, labels, image_size, channels)
        arr = images if images.ndim == 4 else images[..., None]
        self.images = torch.from_numpy(np.ascontiguousarray(arr))  # (N, H, W, C) uint8
        self.labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.synthetic = bool(synthetic)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        x, y, _ = self.batch(np.array([i]))
        return x[0], int(y[0]), self.synthetic

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The items at ``idx`` as stacked tensors ``(x, labels, is_synthetic)``."""
        idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        x = self.images[idx_t].permute(0, 3, 1, 2).float().div_(255.0)
        x = _convert_channels(x, self.channels)
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = (x - 0.5) / 0.5
        synthetic = torch.full((len(idx_t),), self.synthetic, dtype=torch.bool)
        return x.contiguous(), self.labels[idx_t], synthetic


def _check_images(images: np.ndarray, labels: np.ndarray, image_size: int, channels: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images))}"
        )
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(
            f"images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3); got {images.shape}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({len(images)},); "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray <-> RGB for a float batch ``(N, C, H, W)``."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    weights = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def fetch_batch(
    dataset: Dataset, idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items ``idx`` of any dataset of ``(x, label, is_synthetic)`` items, stacked."""
    if isinstance(dataset, ImageArrayDataset):
        return dataset.batch(idx)
    items = [dataset[int(i)] for i in idx]
    x = torch.stack([item[0] for item in items])
    labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
    synthetic = torch.tensor([bool(item[2]) for item in items], dtype=torch.bool)
    return x, labels, synthetic


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _RunConfig:
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


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
EPOCHS = ("real", "all")


def lr_factor(step: int, steps: int, warmup: int, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at 0-based ``step``: linear warmup, then
    cosine decay to 0 (``cosine``) or the base rate (``constant``)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


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


def _check_run(cfg: _RunConfig, synthetic: Dataset | None) -> None:
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


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D parameters), as timm does."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _draw_indices(cfg: _RunConfig, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The real and synthetic indices of ``step``; a pure function of (seed, step)."""
    rng = numpy_rng(cfg.seed, "batch", step)
    n_syn = cfg.n_synthetic_per_batch
    n_real = cfg.batch_size - n_syn
    real = rng.choice(cfg.n_real, n_real, replace=n_real > cfg.n_real) if n_real else []
    syn = rng.choice(cfg.n_synthetic, n_syn, replace=n_syn > cfg.n_synthetic) if n_syn else []
    return np.asarray(real, dtype=np.int64), np.asarray(syn, dtype=np.int64)


def _make_batch(
    real: Dataset, synthetic: Dataset | None, cfg: _RunConfig, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real samples first, then synthetic; the mask says which are synthetic."""
    real_idx, syn_idx = _draw_indices(cfg, step)
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


# sums since the last history row: steps, loss, real/synthetic losses and their counts, images
_EMPTY_WINDOW = {"steps": 0, "loss": 0, "real": 0, "n_real": 0, "syn": 0, "n_syn": 0, "images": 0,
                 "data_s": 0.0}


class _Window:
    """Running sums of losses and throughput between two history rows."""

    def __init__(self, state: dict[str, float] | None = None):
        self.state = {**_EMPTY_WINDOW, **(state or {})}
        self.started = time.perf_counter()

    def add(
        self,
        loss: float,
        loss_real: float | None,
        loss_syn: float | None,
        *,
        images: int,
        data_s: float = 0.0,
    ) -> None:
        s = self.state
        s["data_s"] += data_s
        s["steps"] += 1
        s["loss"] += loss
        s["images"] += images
        if loss_real is not None:
            s["real"], s["n_real"] = s["real"] + loss_real, s["n_real"] + 1
        if loss_syn is not None:
            s["syn"], s["n_syn"] = s["syn"] + loss_syn, s["n_syn"] + 1

    def row(self, step: int, lr: float) -> dict[str, Any]:
        s = self.state
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {
            "step": step,
            "loss": s["loss"] / s["steps"],
            "loss_real": s["real"] / s["n_real"] if s["n_real"] else None,
            "loss_synthetic": s["syn"] / s["n_syn"] if s["n_syn"] else None,
            "lr": lr,
            "images_per_s": s["images"] / elapsed,
            # share of the wall time spent assembling batches (decode, resize, augment, copy):
            # loading is synchronous, so this is the time the model waits for data
            "data_share": min(1.0, s["data_s"] / elapsed),
        }


def _batch_loss(
    logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, cfg: _RunConfig
) -> tuple[torch.Tensor, float | None, float | None]:
    """Loss = (sum over real + w * sum over synthetic) / batch size; w=1 is the plain mean."""
    per_sample = F.cross_entropy(logits, y, reduction="none", label_smoothing=cfg.label_smoothing)
    weights = torch.where(mask, cfg.synthetic_loss_weight, 1.0).to(per_sample.dtype)
    loss = (per_sample * weights).sum() / len(y)
    detached = per_sample.detach()
    loss_real = detached[~mask].mean().item() if bool((~mask).any()) else None
    loss_syn = detached[mask].mean().item() if bool(mask.any()) else None
    return loss, loss_real, loss_syn


def _fork_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: _RunConfig,
    aux: bool,
    amp: bool = False,
) -> tuple[float, float | None, float | None]:
    x, y, mask = batch
    if aux:
        set_synthetic_mask(model, mask)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss, loss_real, loss_syn = _batch_loss(logits.float(), y, mask, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item(), loss_real, loss_syn


def _save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_resume(
    path: str | os.PathLike, cfg: _RunConfig, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; refuses one written by another configuration."""
    if not os.path.exists(path):
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    saved = state.get("config", {})
    differ = sorted(k for k, v in asdict(cfg).items() if saved.get(k) != v)
    if differ:
        detail = ", ".join(
            f"{k}: checkpoint {saved.get(k)!r} vs now {getattr(cfg, k)!r}" for k in differ
        )
        raise ValueError(f"cannot resume {os.fspath(path)!r}: the run's settings differ ({detail})")
    return state


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
    amp: bool = False,
    channels_last: bool = False,
    log_every: int = 10,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on batches mixing real and synthetic images; return history.

    Each batch holds ``round(batch_size * synthetic_fraction)`` synthetic images (drawn without
    replacement within the batch from ``numpy_rng(seed, "batch", step)``) and real images
    for the rest. ``optimizer`` "adamw" or "sgd" (Nesterov, ``momentum``), no weight decay
    on 1-D parameters; ``schedule`` "cosine" or "constant" after a linear warmup over
    ``warmup_fraction`` of the steps. ``augment`` names operations of
    :mod:`lib.nn.augment`. Synthetic losses are scaled by ``synthetic_loss_weight``.
    ``amp`` runs the forward pass under bfloat16 autocast (no loss scaler needed);
    ``channels_last`` uses the NHWC memory format (both for GPUs; numerics only, so they are
    not part of what a resumed checkpoint must agree with).

    With ``checkpoint_path``, the model, optimizer, scheduler, step and history are saved
    atomically every ``checkpoint_every`` steps (0 = only at the end) and at the end; an
    existing checkpoint is resumed (exactly), or returned as is when already finished. A
    checkpoint from a run with other settings is refused.

    History rows (every ``log_every`` steps and the last): step, loss, loss_real,
    loss_synthetic (means over the rows' steps; None when that domain was absent), lr,
    images_per_s, data_share (share of wall time spent assembling batches).
    """
    cfg = _RunConfig(
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
    _check_run(cfg, synthetic)
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    run = _Run.start(model.to(dev, memory_format=fmt).train(), cfg, checkpoint_path, dev)
    aux = has_aux_norm(model)
    bar = tqdm(total=steps, initial=run.step, disable=not progress, desc="train", mininterval=1)
    for step in range(run.step, steps):
        with torch.random.fork_rng(devices=_fork_devices(dev)):
            torch.manual_seed(seed_for(seed, "forward", step))
            started = time.perf_counter()
            x, y, mask = _make_batch(real, synthetic, cfg, step)
            if cfg.augment:
                x = augment_batch(x, cfg.augment_ops, torch_generator(seed, "augment", step))
            x = x.to(dev, non_blocking=True, memory_format=fmt)
            batch = (x, y.to(dev), mask.to(dev))
            data_s = time.perf_counter() - started
            lr_now = run.optimizer.param_groups[0]["lr"]
            losses = _train_step(model, run.optimizer, run.scheduler, batch, cfg, aux, amp)
        run.window.add(*losses, images=len(y), data_s=data_s)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[0]:.4f}", refresh=False)
        run.step = step + 1
        if (log_every > 0 and run.step % log_every == 0) or run.step == steps:
            run.history.append(run.window.row(run.step, lr_now))
            run.window = _Window()
        if checkpoint_path is not None and (
            run.step == steps or (checkpoint_every > 0 and run.step % checkpoint_every == 0)
        ):
            run.save(checkpoint_path)
    bar.close()
    if aux:
        set_synthetic_mask(model, None)
    return run.history


@dataclass
class _Run:
    """The mutable state of one training run: what a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: _RunConfig
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    window: _Window = field(default_factory=_Window)

    @classmethod
    def start(
        cls,
        model: nn.Module,
        cfg: _RunConfig,
        checkpoint_path: str | os.PathLike | None,
        device: torch.device,
    ) -> _Run:
        """A fresh run, or the one saved at ``checkpoint_path`` when that file exists."""
        groups = _param_groups(model, cfg.weight_decay)
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                        nesterov=cfg.momentum > 0)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.schedule)
        )
        run = cls(model, optimizer, scheduler, cfg)
        state = None if checkpoint_path is None else _load_resume(checkpoint_path, cfg, device)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            run.step, run.history = state["step"], state["history"]
            run.window = _Window(state["window"])
        return run

    def save(self, path: str | os.PathLike) -> None:
        _save_state(
            path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "history": self.history,
                "window": self.window.state,
                "config": asdict(self.cfg),
            },
        )


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _logits(
    model: nn.Module, dataset: Dataset, batch_size: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the whole dataset, in order, with the model in eval mode."""
    was_training = model.training
    model.to(device).eval()
    outs, labels = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            idx = np.arange(start, min(start + batch_size, len(dataset)))
            x, y, _ = fetch_batch(dataset, idx)
            outs.append(model(x.to(device)).float().cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("cannot evaluate on an empty dataset")
    return torch.cat(outs), torch.cat(labels)


def predict(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, num_classes)`` and labels ``(N,)`` of ``dataset`` in order."""
    logits, labels = _logits(model, dataset, batch_size, device)
    return torch.softmax(logits, dim=1).numpy(), labels.numpy()


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    class_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """top1, top5 (when num_classes >= 5), mean cross-entropy loss, n, per-class accuracy.

    ``class_mask`` restricts the prediction to those output columns (see
    :func:`score_logits`): how ImageNet-R and -A are evaluated with a 1000-way model.
    """
    logits, labels = _logits(model, dataset, batch_size, device)
    return score_logits(logits, labels, num_classes, class_mask=class_mask)


def score_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    class_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of ``logits`` ``(N, num_classes)`` against ``labels`` (model label indices).

    With ``class_mask`` (the output columns of the evaluated class set, e.g.
    ``lib.classsets.for_mask("imagenet-r")`` for a 1000-way ImageNet model), every other
    column is set to -inf before argmax, top-5 and the loss, so the model chooses among the
    set's classes only; every label must be one of those columns. ``per_class[c]`` is the
    top-1 accuracy on the samples labelled ``c`` (None when there are none), so the metrics
    stay valid JSON. top5 is reported when at least 5 classes compete.
    """
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"the model has {logits.shape[1]} outputs but num_classes is {num_classes}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    competing = num_classes
    if class_mask is not None:
        cols = torch.as_tensor(np.asarray(class_mask, dtype=np.int64))
        if len(cols) == 0 or cols.min() < 0 or cols.max() >= num_classes:
            raise ValueError(f"class_mask must hold column indices in [0, {num_classes})")
        keep = torch.zeros(num_classes, dtype=torch.bool)
        keep[cols] = True
        if not bool(keep[labels].all()):
            outside = sorted(set(labels[~keep[labels]].tolist()))[:5]
            raise ValueError(f"labels outside class_mask, e.g. {outside}")
        logits = logits.masked_fill(~keep, float("-inf"))
        competing = int(keep.sum())
    correct = logits.argmax(dim=1) == labels
    metrics: dict[str, Any] = {
        "top1": correct.float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "n": len(labels),
        "per_class": _per_class(correct, labels, num_classes),
    }
    if competing >= 5:
        top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(dim=1)
        metrics["top5"] = top5.float().mean().item()
    return metrics


def _per_class(correct: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    hits = torch.bincount(labels, weights=correct.double(), minlength=num_classes)
    counts = torch.bincount(labels, minlength=num_classes)
    return [(h / c) if c else None for h, c in zip(hits.tolist(), counts.tolist())]


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``{"state_dict", "meta"}`` atomically; aux branches kept (see load_plain_timm)."""
    _save_state(path, {"state_dict": model.state_dict(), "meta": meta})


def load_plain_timm(
    path: str | os.PathLike, arch: str, num_classes: int, in_chans: int, **kwargs: Any
) -> nn.Module:
    """A plain ``timm`` model (eval mode) with the main-branch weights of a checkpoint.

    Accepts files of :func:`save_checkpoint` and of :func:`train_classifier`; the auxiliary
    branches are dropped, and the rest must match the architecture exactly (strict load).
    ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size`` of a ViT).
    """
    import timm

    state = torch.load(path, map_location="cpu", weights_only=True)
    key = "state_dict" if "state_dict" in state else "model"
    if key not in state:
        raise ValueError(f"{os.fspath(path)!r} holds no 'state_dict' or 'model' entry")
    model = timm.create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    model.load_state_dict(strip_aux(state[key]), strict=True)
    return model.eval()
