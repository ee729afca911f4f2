"""Stage ``train``: a timm classifier on real (+ synthetic) images, with the auxiliary BN.

The run is :func:`lib.training.classifier_run.train_and_evaluate` with the ``train``
settings of params.yaml (which images: :mod:`lib.training.inputs`); it writes the
checkpoint, per-class accuracies and unreadable images to ``dirs.train`` (no timing there:
the same inputs give the same bytes), and the metrics (with the run's ``throughput``) and
training curve to ``metrics/train.json`` and ``metrics/train_history.csv``.
"""

from __future__ import annotations

from typing import Any

from lib import provenance
from lib.config import TrainConfig
from lib.training.classifier_run import train_and_evaluate
from lib.training.distributed import is_main_process, shutdown_distributed


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train and evaluate (see :func:`lib.training.classifier_run.train_and_evaluate`)."""
    inputs = provenance.begin(cfg, "train")
    metrics = cfg.path("metrics")
    result = train_and_evaluate(cfg, out=cfg.path("train"), metrics_path=metrics / "train.json",
                                history_path=metrics / "train_history.csv",
                                report_throughput=True)
    if is_main_process():
        provenance.finish(cfg, "train", inputs)
    return result


def main() -> int:
    """Run the stage with params.yaml's settings in every process of a torchrun launch:

        torchrun --standalone --nproc-per-node 8 -m lib.stages.train

    Each rank trains on its share of every (globally drawn) batch (see
    :func:`lib.training.loop.train_classifier`); rank 0 writes the outputs. ``dvc commit train``
    then records them (the `train` notebook is the single-process entry point).
    """
    from lib import config
    from lib.processes import die_with_launcher

    die_with_launcher()  # torchrun starts each worker in its own session: end with torchrun
    try:
        result = run(config.load("train"))
        if is_main_process():
            print(f"[train] val top1 {result['metrics']['val']['top1']:.4f}")
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
