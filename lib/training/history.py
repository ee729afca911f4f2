"""The training curve: running sums between two history rows, and the rows themselves."""

from __future__ import annotations

import time
from typing import Any

# sums since the last history row: steps, loss, real/synthetic losses and their counts, images
_EMPTY_WINDOW = {"steps": 0, "loss": 0, "real": 0, "n_real": 0, "syn": 0, "n_syn": 0, "images": 0,
                 "data_s": 0.0, "acc_real": 0.0, "acc_syn": 0.0}


class HistoryWindow:
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
