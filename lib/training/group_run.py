"""Several classifier runs of the study trained and evaluated together, each with exactly
the outputs it has alone: :func:`train_and_evaluate_group`.

The sweep (:mod:`lib.sweep`) hands it runs of the ablation grid that can share a training
group (:func:`groupable`, :func:`group_key`): the small CNNs of the mini world, one batch
layout. Each run gets what :func:`lib.training.classifier_run.train_and_evaluate` gives it,
byte for byte (checkpoint, model, per-class table, curve, metrics): the training is
:func:`lib.training.group_loop.train_group`; each trained model is then evaluated alone, as
it is after lone training (stacked, the evaluation measured no faster: its batches are
large already), with the OOD corruptions of the val split, which depend on the seed only,
made once per process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lib import data
from lib.config import TrainConfig
from lib.training.classifier_run import (
    evaluation_sets,
    finish_run,
    new_model,
    read_tables,
    run_inputs,
    save_model,
    training_settings,
)
from lib.training.evaluation import evaluate
from lib.training.group_loop import GroupMember, train_group
from lib.training.loop import run_config

GROUPABLE_ARCHS = ("mini_cnn", "mini_cnn_small")  # lib.nn.mini_cnn: MiniCNNGroup runs them


def groupable(cfg: TrainConfig) -> bool:
    """Whether the run ``cfg`` can train in a group: a small CNN of :mod:`lib.nn.mini_cnn`
    on the CPU (where the exactness is established), a fixed number of steps (``epochs``
    would make them depend on the data), no fp16 loss scaler."""
    return (cfg.arch in GROUPABLE_ARCHS and cfg.common.device == "cpu" and cfg.epochs is None
            and cfg.amp in (None, "bf16", "bfloat16"))


def group_key(cfg: TrainConfig) -> str:
    """Runs with the same key can share a group: every setting but the seed, the data
    (real, synthetic or synthetic only) and the augmentation; with the auxiliary norm, the
    share of synthetic samples per batch (the batch is split per domain). :func:`lib.training.group_loop.train_group` checks the
    resulting runs again."""
    synthetic = (cfg.use_synthetic and cfg.real_fraction > 0 and cfg.synthetic_fraction > 0
                 and cfg.synthetic_multiplier != 0)
    shared = dataclasses.replace(
        cfg, common=dataclasses.replace(cfg.common, seed=0, progress=False),
        real_fraction=1.0, real_per_class=None,
        use_synthetic=False, synthetic_multiplier=None, synthetic_strategy=None, augment=(),
        synthetic_fraction=cfg.synthetic_fraction if cfg.aux_norm and synthetic else 0.0)
    return json.dumps(shared.as_params(), sort_keys=True, default=str)


def train_and_evaluate_group(cfgs: Sequence[TrainConfig], outs: Sequence[Path],
                             extra_metrics: Sequence[dict[str, Any] | None],
                             results: str = "metrics.json",
                             history: str = "history.csv") -> list[dict[str, Any]]:
    """Train and evaluate the runs ``cfgs`` together; run ``i`` writes into ``outs[i]`` what
    :func:`~lib.training.classifier_run.train_and_evaluate` writes (metrics to ``results``,
    the curve to ``history`` in that folder, after ``extra_metrics[i]``) and gets what it
    returns."""
    first = cfgs[0]
    tables = read_tables(first)
    inputs = [run_inputs(cfg, tables) for cfg in cfgs]
    n_cls = len(tables.classes)
    models = [new_model(cfg, n_cls) for cfg in cfgs]
    settings = [training_settings(cfg, inp) for cfg, inp in zip(cfgs, inputs)]
    members = [GroupMember(model, inp.real, inp.synthetic,
                           run_config(inp.real, inp.synthetic, **s), out / "state.pt")
               for model, inp, s, out in zip(models, inputs, settings, outs)]
    steps = settings[0]["steps"]
    histories = train_group(members, device=first.common.device, amp=first.amp or False,
                            channels_last=first.channels_last, log_every=max(1, steps // 20),
                            checkpoint_every=first.checkpoint_every)
    for cfg, model, out in zip(cfgs, models, outs):
        save_model(cfg, model, out, n_cls)
    evals = [{name: evaluate(model, ds, n_cls, device=cfg.common.device, class_mask=mask)
              for name, (ds, mask)
              in evaluation_sets(cfg, inp, tables.ood, corrupt=_corrupt).items()}
             for cfg, inp, model in zip(cfgs, inputs, models)]
    return [finish_run(cfg, tables, inp, ev, steps, hist, out=out,
                       metrics_path=out / results, history_path=out / history,
                       extra_metrics=extra)
            for cfg, inp, ev, hist, out, extra
            in zip(cfgs, inputs, evals, histories, outs, extra_metrics)]


_CORRUPTED: dict[tuple[str, str, int], np.ndarray] = {}  # _corrupt's memo, per process
_CORRUPTED_MAX = 64


def _corrupt(images: np.ndarray, image_ids: list[str], name: str, seed: int) -> np.ndarray:
    """:func:`lib.data.corrupt`, memoised per process by the images' and ids' digest (the
    runs of a sweep share their val split and differ in the seed); a copy."""
    digest = hashlib.sha256(images.tobytes() + "\x1f".join(image_ids).encode()).hexdigest()
    key = (digest, name, seed)
    if key not in _CORRUPTED:
        if len(_CORRUPTED) >= _CORRUPTED_MAX:
            _CORRUPTED.pop(next(iter(_CORRUPTED)))
        _CORRUPTED[key] = data.corrupt(images, image_ids, name, seed)
    return _CORRUPTED[key].copy()
