"""The training curve (running sums between two history rows, and the rows themselves) and the
loop's throughput.

The history is part of a run's outputs (the checkpoint, the curve) and holds only what the
seed and the settings determine, so the same run writes the same bytes twice; the wall-clock
measurements go to :class:`Throughput`, which the stage reports in its metrics only.
"""

from __future__ import annotations

import time
from typing import Any

# sums since the last history row: steps, loss, real/synthetic losses and accuracies, counts
_EMPTY_WINDOW = {"steps": 0, "loss": 0, "real": 0, "n_real": 0, "syn": 0, "n_syn": 0,
                 "acc_real": 0.0, "acc_syn": 0.0}
# Keys of the history rows of older checkpoints that were wall-clock measurements.
TIMING_KEYS = ("images_per_s", "data_share")


class HistoryWindow:
    """Running sums of losses and accuracies between two history rows."""

    def __init__(self, state: dict[str, float] | None = None):
        # only the known sums: a checkpoint of an older version also kept timings here
        self.state = {k: (state or {}).get(k, v) for k, v in _EMPTY_WINDOW.items()}

    def add(
        self,
        loss: float,
        loss_real: float | None,
        loss_syn: float | None,
        acc_real: float | None = None,
        acc_syn: float | None = None,
    ) -> None:
        s = self.state
        s["steps"] += 1
        s["loss"] += loss
        if loss_real is not None:
            s["real"], s["n_real"] = s["real"] + loss_real, s["n_real"] + 1
            s["acc_real"] += acc_real or 0.0
        if loss_syn is not None:
            s["syn"], s["n_syn"] = s["syn"] + loss_syn, s["n_syn"] + 1
            s["acc_syn"] += acc_syn or 0.0

    def row(self, step: int, lr: float) -> dict[str, Any]:
        s = self.state
        return {
            "step": step,
            "loss": s["loss"] / s["steps"],
            "loss_real": s["real"] / s["n_real"] if s["n_real"] else None,
            "loss_synthetic": s["syn"] / s["n_syn"] if s["n_syn"] else None,
            # top-1 on the (augmented) training batches, per domain
            "acc_real": s["acc_real"] / s["n_real"] if s["n_real"] else None,
            "acc_synthetic": s["acc_syn"] / s["n_syn"] if s["n_syn"] else None,
            "lr": lr,
        }


def without_timings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows without the timing keys an older checkpoint may hold."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


class Throughput:
    """Wall-clock throughput of the steps a training loop ran in this process.

    Filled by :func:`lib.training.loop.train_classifier` (``throughput=``); never saved in a
    checkpoint or a history row. :meth:`summary` is what the ``train`` stage reports as
    ``throughput.*`` in ``metrics/train.json``.
    """

    def __init__(self, warmup: int = 0) -> None:
        """``warmup``: the first steps are not timed (the clock starts after them)."""
        self.steps, self.images, self.data_seconds, self.seconds = 0, 0, 0.0, 0.0
        self._warmup = warmup
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def add(self, images: int, data_seconds: float) -> None:
        """One step of ``images`` (global batch), ``data_seconds`` of it assembling the batch."""
        if self._warmup > 0:
            self._warmup -= 1
            self._started = time.perf_counter()
            return
        self.steps += 1
        self.images += images
        self.data_seconds += data_seconds

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def summary(self) -> dict[str, Any]:
        """steps (timed here: 0 when a finished checkpoint was returned as is), images_per_s
        (global) and data_share (share of the loop's wall time spent assembling batches:
        decode, resize, augment, copy; loading is synchronous, so the time the model waits for
        data); None without a timed step."""
        timed = self.steps > 0 and self.seconds > 0
        return {
            "steps": self.steps,
            "images_per_s": round(self.images / self.seconds, 1) if timed else None,
            "data_share": round(min(1.0, self.data_seconds / self.seconds), 4) if timed else None,
        }
