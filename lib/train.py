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

Data-parallel training (``torchrun --nproc-per-node N``, one process per GPU)
    :func:`train_classifier` joins the process group of the launch (``WORLD_SIZE > 1``;
    gloo on CPU, NCCL on CUDA, ``cuda:LOCAL_RANK`` per process) and wraps the model in
    ``DistributedDataParallel``. ``batch_size`` stays the global batch: every process draws
    the same indices as one process would and keeps its share, the ``rank``-th
    ``1 / world_size`` of the real indices and of the synthetic ones, so each process's
    batch is again real-then-synthetic in the run's ratio (both counts must divide by the
    number of processes). The loss of a process is its weighted sum over its
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
    float rounding. :func:`evaluate` and :func:`predict` shard the dataset over the
    processes and gather the result when called by all of them; :func:`save_checkpoint`
    writes on rank 0 only, and :func:`is_main_process` tells a caller whether to write its
    own files.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from lib.io import atomic_path
from lib.nn.augment import augment_batch, check_augment
from lib.nn.aux_norm import has_aux_norm, set_synthetic_mask, strip_aux, synced_batchnorm
from lib.nn.schedule import lr_factor
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


# --------------------------------------------------------------------------- distributed


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


def _collective_device(device: torch.device) -> torch.device:
    """Where tensors of a collective must live: the GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_world(cfg: _RunConfig, world: int) -> None:
    """Each domain's share of the batch must split evenly over the processes."""
    n_syn = cfg.n_synthetic_per_batch
    n_real = cfg.batch_size - n_syn
    if world > 1 and (n_real % world or n_syn % world):
        raise ValueError(
            f"with {world} processes the batch's {n_real} real and {n_syn} synthetic images "
            f"must each divide by {world}; change batch_size or synthetic_fraction"
        )


def _same_on_all_ranks(value: int, what: str) -> None:
    """Refuse to go on when the processes disagree (e.g. a checkpoint only one could read)."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"the processes disagree on {what}: {values} (by rank); is the "
                           f"checkpoint on a file system that every process can read?")


def _rank_step_seed(seed: int, what: str, step: int, info: DistInfo) -> tuple[Any, ...]:
    """The seed parts of ``what`` at ``step``: one process keeps the historical ones."""
    return (seed, what, step) if not info.enabled else (seed, what, step, "rank", info.rank)


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


def _rank_indices(
    cfg: _RunConfig, step: int, info: DistInfo = DistInfo()
) -> tuple[np.ndarray, np.ndarray]:
    """This process's share of the step's indices: the ``rank``-th of ``world_size`` equal
    parts of the real indices and of the synthetic ones (all of them for one process)."""
    real_idx, syn_idx = _draw_indices(cfg, step)
    if not info.enabled:
        return real_idx, syn_idx
    return (np.split(real_idx, info.world_size)[info.rank],
            np.split(syn_idx, info.world_size)[info.rank])


def _make_batch(
    real: Dataset,
    synthetic: Dataset | None,
    cfg: _RunConfig,
    step: int,
    info: DistInfo = DistInfo(),
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


# sums since the last history row: steps, loss, real/synthetic losses and their counts, images
_EMPTY_WINDOW = {"steps": 0, "loss": 0, "real": 0, "n_real": 0, "syn": 0, "n_syn": 0, "images": 0,
                 "data_s": 0.0, "acc_real": 0.0, "acc_syn": 0.0}


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
        acc_real: float | None = None,
        acc_syn: float | None = None,
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
            s["acc_real"] += acc_real or 0.0
        if loss_syn is not None:
            s["syn"], s["n_syn"] = s["syn"] + loss_syn, s["n_syn"] + 1
            s["acc_syn"] += acc_syn or 0.0

    def row(self, step: int, lr: float) -> dict[str, Any]:
        s = self.state
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {
            "step": step,
            "loss": s["loss"] / s["steps"],
            "loss_real": s["real"] / s["n_real"] if s["n_real"] else None,
            "loss_synthetic": s["syn"] / s["n_syn"] if s["n_syn"] else None,
            # top-1 on the (augmented) training batches, per domain
            "acc_real": s["acc_real"] / s["n_real"] if s["n_real"] else None,
            "acc_synthetic": s["acc_syn"] / s["n_syn"] if s["n_syn"] else None,
            "lr": lr,
            "images_per_s": s["images"] / elapsed,
            # share of the wall time spent assembling batches (decode, resize, augment, copy):
            # loading is synchronous, so this is the time the model waits for data
            "data_share": min(1.0, s["data_s"] / elapsed),
        }


def _batch_loss(
    logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, cfg: _RunConfig, n_syn: int
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


AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
              "float16": torch.float16}


def _amp_dtype(amp: bool | str | None) -> torch.dtype | None:
    """The autocast dtype of ``amp``: False/None/"" = off, True = bfloat16, or a name."""
    if amp is None or amp is False or amp == "" or amp == "none":
        return None
    if amp is True:
        return torch.bfloat16
    if isinstance(amp, str) and amp.lower() in AMP_DTYPES:
        return AMP_DTYPES[amp.lower()]
    raise ValueError(f"amp must be a bool or one of none, {', '.join(AMP_DTYPES)}; got {amp!r}")


def _train_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n_syn: int,
    cfg: _RunConfig,
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
    amp: bool | str = False,
    channels_last: bool = False,
    sync_bn: bool = False,
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

    Speed options (numerics only, so not part of what a resumed checkpoint must agree with):
    ``amp`` runs the forward pass under autocast: ``True`` or ``"bf16"`` bfloat16 (no loss
    scaler needed), ``"fp16"`` float16 with a dynamic ``GradScaler`` (saved in checkpoints);
    ``channels_last`` uses the NHWC memory format (both for GPUs). ``sync_bn`` (only with
    several processes) normalises every BN over the whole distributed batch, per domain.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the run is data-parallel (see the module
    docstring): ``batch_size`` is the global batch, ``device="cuda"`` means each process's
    ``cuda:LOCAL_RANK``, only rank 0 writes the checkpoint, and every process returns the
    same history (but for its own timings) and ends with the same weights and buffers
    (rank 0's). The process group stays initialised for :func:`evaluate`.

    With ``checkpoint_path``, the model, optimizer, scheduler, step and history are saved
    atomically every ``checkpoint_every`` steps (0 = only at the end) and at the end; an
    existing checkpoint is resumed (exactly), or returned as is when already finished. A
    checkpoint from a run with other settings is refused.

    History rows (every ``log_every`` steps and the last): step, loss, loss_real,
    loss_synthetic (means over the rows' steps; None when that domain was absent), lr,
    images_per_s (global), data_share (share of wall time spent assembling batches, on
    rank 0).
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
    amp_dtype = _amp_dtype(amp)
    info, device = init_distributed(device)
    _check_world(cfg, info.world_size)
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=fmt).train()
    aux = has_aux_norm(model)
    synced = synced_batchnorm(model) if sync_bn and info.enabled else contextlib.nullcontext()
    with synced:
        scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
        run = _Run.start(model, cfg, checkpoint_path, dev, scaler)
        net = model
        if info.enabled:
            _same_on_all_ranks(run.step, "the step to resume from")
            net = _data_parallel(model, dev, cfg, aux)
        try:
            _train_loop(run, net, real, synthetic, dev, fmt, info, aux, amp_dtype,
                        log_every, checkpoint_path, checkpoint_every, progress)
        finally:
            if aux:
                set_synthetic_mask(model, None)
        del net
    if info.enabled:
        _broadcast_buffers(model)  # every process ends with rank 0's (the checkpoint's) model
        dist.barrier()  # and returns once rank 0 has written the checkpoint
    return run.history


def _data_parallel(model: nn.Module, dev: torch.device, cfg: _RunConfig, aux: bool) -> nn.Module:
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


def _broadcast_buffers(model: nn.Module) -> None:
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _train_loop(
    run: _Run,
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
) -> None:
    """Steps ``run.step`` .. ``cfg.steps`` of :func:`train_classifier`."""
    cfg, steps, seed = run.cfg, run.cfg.steps, run.cfg.seed
    bar = tqdm(total=steps, initial=run.step, disable=not progress or not info.is_main,
               desc="train", mininterval=1)
    for step in range(run.step, steps):
        with torch.random.fork_rng(devices=_fork_devices(dev)):
            torch.manual_seed(seed_for(*_rank_step_seed(seed, "forward", step, info)))
            started = time.perf_counter()
            x, y, mask = _make_batch(real, synthetic, cfg, step, info)
            if cfg.augment:
                gen = torch_generator(*_rank_step_seed(seed, "augment", step, info))
                x = augment_batch(x, cfg.augment_ops, gen)
            n_syn = int(mask.sum())
            x = x.to(dev, non_blocking=True, memory_format=fmt)
            batch = (x, y.to(dev), mask.to(dev))
            data_s = time.perf_counter() - started
            lr_now = run.optimizer.param_groups[0]["lr"]
            stats = _train_step(net, run.model, run.optimizer, run.scheduler, run.scaler, batch,
                                n_syn, cfg, aux, amp_dtype)
        if info.enabled:  # the global means: every process holds the same share of each domain
            stats = stats.to(_collective_device(dev))
            dist.all_reduce(stats)
            stats = stats / info.world_size
        losses = [None if math.isnan(v) else v for v in stats.tolist()]
        run.window.add(*losses, images=cfg.batch_size, data_s=data_s)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[0]:.4f}", refresh=False)
        run.step = step + 1
        if (log_every > 0 and run.step % log_every == 0) or run.step == steps:
            run.history.append(run.window.row(run.step, lr_now))
            run.window = _Window()
        if checkpoint_path is not None and info.is_main and (
            run.step == steps or (checkpoint_every > 0 and run.step % checkpoint_every == 0)
        ):
            run.save(checkpoint_path)
    bar.close()


@dataclass
class _Run:
    """The mutable state of one training run: what a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: _RunConfig
    scaler: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False)
    )
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
        scaler: torch.amp.GradScaler | None = None,
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
        if scaler is not None:
            run.scaler = scaler
        state = None if checkpoint_path is None else _load_resume(checkpoint_path, cfg, device)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if run.scaler.is_enabled() and state.get("scaler"):
                run.scaler.load_state_dict(state["scaler"])
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
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "step": self.step,
                "history": self.history,
                "window": self.window.state,
                "config": asdict(self.cfg),
            },
        )


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _logits(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: str,
    distributed: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the whole dataset, in order, with the model in eval mode.

    Sharded when ``distributed`` (``None``: whenever a process group of more than one
    process is initialised): process ``r`` of ``W`` computes the ``r``-th contiguous part
    and the parts are gathered on every process, which must all call this with the same
    model and dataset.
    """
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    info = dist_info() if distributed is not False else DistInfo()
    if info.enabled and device.startswith("cuda"):
        device = f"cuda:{info.local_rank}"
    bounds = [len(dataset) * r // info.world_size for r in range(info.world_size + 1)]
    lo, hi = bounds[info.rank], bounds[info.rank + 1]
    was_training = model.training
    model.to(device).eval()
    outs, labels = [], []
    try:
        for start in range(lo, hi, batch_size):
            idx = np.arange(start, min(start + batch_size, hi))
            x, y, _ = fetch_batch(dataset, idx)
            outs.append(model(x.to(device)).float().cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    if not info.enabled:
        return torch.cat(outs), torch.cat(labels)
    return _gather_parts(outs, labels, bounds, torch.device(device))


def _gather_parts(
    outs: list[torch.Tensor], labels: list[torch.Tensor], bounds: list[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's logits and labels (parts of sizes ``diff(bounds)``), in rank order."""
    world = len(bounds) - 1
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    width = max(sizes)
    where = _collective_device(device)
    # the number of classes, from the processes with data (a share can be empty when there
    # are fewer samples than processes)
    n_cls = torch.tensor([outs[0].shape[1] if outs else 0], device=where)
    dist.all_reduce(n_cls, op=dist.ReduceOp.MAX)
    # labels ride along as a float32 column (exact for any class index below 2**24)
    mine = torch.zeros(width, int(n_cls) + 1, dtype=torch.float32, device=where)
    if outs:
        part = torch.cat([torch.cat(outs), torch.cat(labels).float()[:, None]], dim=1)
        mine[: len(part)] = part.to(where)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    table = torch.cat([g[:n] for g, n in zip(gathered, sizes)]).cpu()
    return table[:, :-1], table[:, -1].long()


def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    distributed: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, num_classes)`` and labels ``(N,)`` of ``dataset`` in order.

    Under DDP (``distributed``: see :func:`evaluate`) every process gets the whole result.
    """
    logits, labels = _logits(model, dataset, batch_size, device, distributed)
    return torch.softmax(logits, dim=1).numpy(), labels.numpy()


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    *,
    batch_size: int = 256,
    device: str = "cpu",
    class_mask: np.ndarray | None = None,
    distributed: bool | None = None,
) -> dict[str, Any]:
    """top1, top5 (when num_classes >= 5), mean cross-entropy loss, n, per-class accuracy.

    ``class_mask`` restricts the prediction to those output columns (see
    :func:`score_logits`): how ImageNet-R and -A are evaluated with a 1000-way model.

    ``distributed`` (default ``None``: when a process group of several processes is
    initialised, e.g. after :func:`train_classifier` under torchrun) shards the dataset over
    the processes and gathers the logits, so every process returns the same metrics; all
    processes must then call it. ``False`` evaluates everything in this process (e.g. on
    rank 0 only).
    """
    logits, labels = _logits(model, dataset, batch_size, device, distributed)
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
    """Write ``{"state_dict", "meta"}`` atomically; aux branches kept (see load_plain_timm).

    Under DDP only rank 0 writes (every process holds the same weights after
    :func:`train_classifier`); the others return at once.
    """
    if is_main_process():
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

    import lib.nn.mini_cnn  # noqa: F401  (registers the small 8x8 architectures with timm)

    state = torch.load(path, map_location="cpu", weights_only=True)
    key = "state_dict" if "state_dict" in state else "model"
    if key not in state:
        raise ValueError(f"{os.fspath(path)!r} holds no 'state_dict' or 'model' entry")
    model = timm.create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    model.load_state_dict(strip_aux(state[key]), strict=True)
    return model.eval()
