"""One classifier run of the study: its images, the model, training, evaluation, the outputs.

:func:`train_and_evaluate` is the ``train`` stage (:mod:`lib.stages.train`) and every point
of the ablation grid (:mod:`lib.sweep`): a timm classifier (with the auxiliary BN when
``aux_norm``) trained on the real (+ synthetic) images that :func:`lib.training.inputs.load_inputs`
selects. It is evaluated on the real val split, each OOD corruption of it, and each of
``eval_sets`` that exists; ImageNet-R and -A are scored with the logits restricted to their
200 classes. Under torchrun every process trains and evaluates its share and rank 0 writes
the checkpoint, the tables, the training curve and the metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from lib import data
from lib.backends.classifier import create_classifier
from lib.config import TrainConfig
from lib.io import atomic_path, read_json
from lib.metrics import write_curve, write_metrics
from lib.seeding import seed_for
from lib.training.checkpoints import save_checkpoint
from lib.training.datasets import ImageArrayDataset
from lib.training.distributed import is_main_process
from lib.training.evaluation import evaluate
from lib.training.history import Throughput
from lib.training.inputs import TrainingInputs, load_inputs
from lib.training.loop import train_classifier
from lib.training.recipe import steps_for_epochs

_BAD_COLUMNS = ["set", "name", "error"]


def train_and_evaluate(cfg: TrainConfig, out: Path, metrics_path: Path, history_path: Path,
                       extra_metrics: dict[str, Any] | None = None,
                       report_throughput: bool = False) -> dict[str, Any]:
    """Train and evaluate the run ``cfg``; write the checkpoint and tables to ``out``, the
    flat metrics (after ``extra_metrics``) to ``metrics_path`` and the curve to
    ``history_path``. Returns the history, every set's evaluation, the per-class table, the
    metrics and the unreadable images skipped.

    Nothing written holds a timing, so the same run writes the same bytes; with
    ``report_throughput`` the metrics also get ``throughput`` (steps timed, images/s, data
    share: :class:`~lib.training.history.Throughput`), for a metrics file that DVC does not
    track as an output (the ``train`` stage's, not a sweep run's ``metrics.json``)."""
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    ood = read_json(cfg.path("classes") / "ood.json")["corruptions"]
    if cfg.real_fraction == 0 and cfg.aux_norm:
        raise ValueError("real_fraction=0 (synthetic-only): aux_norm must be false, there "
                         "are no real images for the main norm")
    inputs = load_inputs(
        classes, images, root=cfg.root, generate_dir=cfg.path("generate"),
        data_dir=cfg.path("data"), image_size=cfg.image_size, channels=cfg.channels,
        seed=cfg.common.seed, real_fraction=cfg.real_fraction, real_per_class=cfg.real_per_class,
        use_synthetic=cfg.use_synthetic, synthetic_fraction=cfg.synthetic_fraction,
        synthetic_strategy=cfg.synthetic_strategy, synthetic_multiplier=cfg.synthetic_multiplier,
        eval_sets=cfg.eval_sets, max_bad_fraction=cfg.max_bad_fraction,
    )
    n_cls = len(classes)
    model = _new_model(cfg, n_cls)
    meter = Throughput()
    steps, history = _train(cfg, model, inputs, out, meter)
    save_checkpoint(model, out / "model.pt", {"arch": cfg.arch, "num_classes": n_cls,
                                              "in_chans": cfg.channels, "aux_norm": cfg.aux_norm,
                                              "image_size": cfg.image_size})
    evals = _evaluate(cfg, model, inputs, ood, n_cls)
    per_class = pd.DataFrame({"label": classes["label"], "class_id": classes["class_id"],
                              "name": classes["name"],
                              **{k: v["per_class"] for k, v in evals.items()}})
    metrics = _metrics(cfg, inputs, evals, steps, extra_metrics)
    if report_throughput:
        metrics["throughput"] = meter.summary()
    if is_main_process():  # under torchrun, rank 0 writes
        with atomic_path(out / "per_class.csv") as tmp:
            per_class.to_csv(tmp, index=False)
        with atomic_path(out / "bad_images.csv") as tmp:
            pd.DataFrame(inputs.bad_images, columns=_BAD_COLUMNS).to_csv(tmp, index=False)
        write_curve(history_path.parent, history_path.stem, history)
        write_metrics(metrics_path.parent, metrics_path.stem, metrics)
        # Finished: the model and the metrics hold the result, so the resumable state (the
        # optimizer's moments, 3x the model) is dropped; a rerun starts afresh.
        (out / "state.pt").unlink(missing_ok=True)
    return {"history": pd.DataFrame(history), "evals": evals, "per_class": per_class,
            "metrics": metrics, "bad_images": pd.DataFrame(inputs.bad_images, columns=_BAD_COLUMNS)}


def _new_model(cfg: TrainConfig, n_cls: int) -> nn.Module:
    """The run's untrained classifier."""
    # The initial weights come from torch's global generator: seed it per run (forked, so the
    # caller's stream is untouched), or two runs of the same settings would differ.
    with torch.random.fork_rng():
        torch.manual_seed(seed_for(cfg.common.seed, "init"))
        return create_classifier("timm", arch=cfg.arch, num_classes=n_cls,
                                 in_chans=cfg.channels, aux_norm=cfg.aux_norm)


def _train(cfg: TrainConfig, model: nn.Module, inputs: TrainingInputs, out: Path,
           meter: Throughput) -> tuple[int, list[dict[str, Any]]]:
    """Train ``model`` in place (resumable from ``out/state.pt``), timed in ``meter``; the
    steps and history."""
    real, synthetic = inputs.real, inputs.synthetic
    fraction = cfg.synthetic_fraction if synthetic is not None else 0.0
    steps = cfg.steps if cfg.epochs is None else steps_for_epochs(
        cfg.epochs, cfg.epoch, n_real=len(real),
        n_synthetic=0 if synthetic is None else len(synthetic),
        batch_size=cfg.batch_size, synthetic_fraction=fraction)
    history = train_classifier(
        model, real, synthetic, steps=steps, batch_size=cfg.batch_size,
        synthetic_fraction=fraction, lr=cfg.lr, weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing, synthetic_loss_weight=cfg.synthetic_loss_weight,
        seed=cfg.common.seed, optimizer=cfg.optimizer, momentum=cfg.momentum,
        schedule=cfg.schedule, warmup_fraction=cfg.warmup_fraction, augment=cfg.augment,
        device=cfg.common.device, log_every=max(1, steps // 20),
        checkpoint_path=out / "state.pt", checkpoint_every=cfg.checkpoint_every,
        progress=cfg.common.progress, amp=cfg.amp or False, channels_last=cfg.channels_last,
        sync_bn=cfg.sync_bn, throughput=meter,
    )
    return steps, history


def _evaluate(cfg: TrainConfig, model: nn.Module, inputs: TrainingInputs, ood: list[str],
              n_cls: int) -> dict[str, dict[str, Any]]:
    """Metrics of real val, of each OOD corruption of it and of each evaluation set."""
    seed, device = cfg.common.seed, cfg.common.device
    vx, vy, vids = inputs.val_images, inputs.val_labels, inputs.val_ids

    def dataset(arr: Any) -> ImageArrayDataset:
        return ImageArrayDataset(arr, vy, cfg.image_size, cfg.channels, synthetic=False)

    evals = {"val": evaluate(model, dataset(vx), n_cls, device=device)}
    for name in ood:
        evals[f"ood_{name}"] = evaluate(model, dataset(data.corrupt(vx, vids, name, seed)),
                                        n_cls, device=device)
    for name, (ds, mask) in inputs.eval_sets.items():
        evals[name] = evaluate(model, ds, n_cls, device=device, class_mask=mask)
    return evals


def _metrics(cfg: TrainConfig, inputs: TrainingInputs, evals: dict[str, dict[str, Any]],
             steps: int, extra_metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The run's flat metrics: ``extra_metrics``, each set's scores, data counts, steps."""
    real, synthetic = inputs.real, inputs.synthetic
    metrics: dict[str, Any] = {**(extra_metrics or {})} | {
        k: {m: v[m] for m in ("top1", "top5", "loss", "n") if m in v} for k, v in evals.items()}
    bad_counts = pd.Series([b["set"] for b in inputs.bad_images], dtype=object).value_counts()
    metrics.update({
        "num_real": 0 if cfg.real_fraction == 0 else len(real),
        "num_synthetic": (len(real) if cfg.real_fraction == 0
                          else 0 if synthetic is None else len(synthetic)),
        "synthetic_missing": inputs.synthetic_missing, "steps": steps,
        "bad_images": {s: int(bad_counts.get(s, 0)) for s in ("train", "val", "synthetic")},
        **inputs.eval_info,
    })
    return metrics
