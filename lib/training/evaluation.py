"""Evaluation of a classifier: class probabilities, and top-1/top-5/loss/per-class metrics.

Sharded over the processes of a data-parallel run when called by all of them
(:mod:`lib.training.distributed`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from lib.training.datasets import fetch_batch
from lib.training.distributed import DistInfo, collective_device, dist_info


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
    initialised, e.g. after :func:`lib.training.loop.train_classifier` under torchrun) shards
    the dataset over the processes and gathers the logits, so every process returns the same
    metrics; all processes must then call it. ``False`` evaluates everything in this process
    (e.g. on rank 0 only).
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
    where = collective_device(device)
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
