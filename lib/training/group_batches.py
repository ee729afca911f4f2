"""The batches of a training group: every run's batch of one step, in one tensor.

Each run of a group (:mod:`lib.training.group_loop`) draws exactly what it draws when
trained alone: its indices from :func:`lib.training.batches.draw_indices` (``numpy_rng(seed,
"batch", step)``), real samples first, and its augmentation from ``torch_generator(seed,
"augment", step)``. The group does the shared work once: every run's images are converted
to normalised tensors once (not at every step; the conversion is elementwise, so a gathered
sample holds the values a step's own conversion gives), one gather takes all runs' samples
and one resampling augments them (:func:`lib.nn.augment.augment_batches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.nn.augment import augment_batch, augment_batches
from lib.seeding import torch_generator
from lib.training.batches import draw_indices
from lib.training.datasets import fetch_batch
from lib.training.recipe import RunConfig


@dataclass
class GroupBatch:
    """One step's batches of K runs."""

    x: torch.Tensor  # (K*B, C, H, W): run k's batch is rows k*B:(k+1)*B, real samples first
    y: torch.Tensor  # (K, B) labels
    synthetic: torch.Tensor  # (K, B) bool: which samples are synthetic
    n_synthetic: list[int]  # per run: its last n samples are synthetic


@dataclass
class _RunTable:
    """One run's images as normalised tensors: its real ones, then its synthetic ones."""

    start: int  # the row of its first real image in the group's table
    n_real: int
    cfg: RunConfig


class GroupBatches:
    """The batches of ``runs`` (each ``(real, synthetic, cfg)``, as given to
    :func:`lib.training.loop.train_classifier`), step by step: :meth:`batch`."""

    def __init__(self, runs: Sequence[tuple[Dataset, Dataset | None, RunConfig]]):
        if len({cfg.batch_size for _, _, cfg in runs}) != 1:
            raise ValueError("the runs of a group must share the batch size")
        xs, ys, self.tables, start = [], [], [], 0
        for real, synthetic, cfg in runs:
            parts = [_table(real, False)] + ([] if synthetic is None
                                             else [_table(synthetic, True)])
            self.tables.append(_RunTable(start, len(parts[0][0]), cfg))
            for x, y in parts:
                xs.append(x), ys.append(y)
                start += len(x)
        self.x = torch.cat(xs)
        self.y = torch.cat(ys)
        self.batch_size = runs[0][2].batch_size

    def batch(self, step: int) -> GroupBatch:
        """Every run's batch of ``step``, augmented, as it draws it alone."""
        rows, n_syn = [], []
        for t in self.tables:
            real_idx, syn_idx = draw_indices(t.cfg, step)
            rows += [t.start + real_idx, t.start + t.n_real + syn_idx]
            n_syn.append(len(syn_idx))
        index = torch.from_numpy(np.concatenate(rows))
        k, b = len(self.tables), self.batch_size
        x = self._augment(self.x.index_select(0, index), step)
        synthetic = torch.arange(b)[None, :] >= torch.tensor([b - n for n in n_syn])[:, None]
        return GroupBatch(x, self.y.index_select(0, index).view(k, b), synthetic, n_syn)

    def _augment(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Each run's batch augmented with its generator of ``step``: in one call when the
        runs augment alike, else run by run."""
        ops = [t.cfg.augment_ops for t in self.tables]
        gens = [torch_generator(t.cfg.seed, "augment", step) if o else None
                for t, o in zip(self.tables, ops)]
        if len(set(ops)) == 1:
            return augment_batches(x, ops[0], gens) if ops[0] else x
        parts = torch.chunk(x, len(self.tables))
        return torch.cat([augment_batch(p, o, g) if o else p
                          for p, o, g in zip(parts, ops, gens)])


def _table(dataset: Dataset, synthetic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of ``dataset`` as :func:`~lib.training.datasets.fetch_batch` serves it
    (images, labels); refuses a dataset whose items are flagged as the other domain."""
    x, y, flags = fetch_batch(dataset, np.arange(len(dataset)))
    if bool((flags != synthetic).any()):
        role = "synthetic" if synthetic else "real"
        raise ValueError(f"the dataset passed as {role} yields items flagged otherwise")
    return x, y
