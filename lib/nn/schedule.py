"""Learning-rate schedules: a linear warm-up, then cosine decay (or a constant rate).

:func:`lr_factor` is the classifier trainer's multiplier (:mod:`lib.training.checkpoints`
hands it to ``LambdaLR``); :func:`warmup_cosine_lr` is the rate itself, set by the mini
models' trainers (:mod:`lib.mini.t2i_pretraining`, :mod:`lib.mini.clip_pretraining`). Both
are pure functions of
the step, so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

import math


def lr_factor(step: int, steps: int, warmup: int, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at 0-based ``step``: linear warmup, then
    cosine decay to 0 (``cosine``) or the base rate (``constant``)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine_lr(step: int, steps: int, lr: float, warmup: int,
                     final_frac: float = 0.0) -> float:
    """Learning rate at 0-based ``step``: linear warm-up over ``warmup`` steps, then cosine
    decay from ``lr`` to ``final_frac * lr`` (the mini models' trainers)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))
