"""The training ablation grid of one data source (the ``train-grid`` matrix stage of dvc.yaml).

    python -m lib.train_cli --source cdsd --out outputs/train-grid/cdsd \\
        --metrics metrics/train-grid/cdsd

dvc.yaml declares one stage per *source* (``train.grid_sources``); each stage trains every
point of ``grid_regimes x grid_multipliers x grid_aux_norm x grid_seeds`` (with
``grid_large``: the ``grid_large_*`` seeds and multipliers) that applies to its source, ``grid_workers`` runs at a time (one CPU thread each, so a run's numbers do not depend
on how many run beside it), and writes one flat metrics JSON per run. A run is the ``train``
stage's configuration (params.yaml, active profile) with the grid point's settings replaced,
so a grid run and the single ``train`` run differ only in what the grid names.

Sources:

* ``real``: real images only, with the profile's augmentation (the baseline that synthetic
  data must beat: gains from mere regularisation are already in it);
* ``real-noaug``: real images only, no augmentation;
* a prompt strategy (``classname``, ``cd``, ``sd``, ``cdsd``, ...): real images plus the
  generated images of that strategy, ``synthetic_multiplier`` x the real train count per
  class, ``synthetic_fraction`` of every batch, with or without the auxiliary norm.

Regimes: ``full`` (every real train image), ``limited`` (``grid_limited_per_class`` real
images per class), ``none`` (synthetic only: the scaling paper's main setting; strategies
only, auxiliary norm off). Real-only sources ignore the multiplier and the aux norm (one run
per regime and seed). A run whose metrics file exists and records the same configuration
(``config_hash``) is kept, so a killed grid resumes; any other file is trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lib import config, paths

REAL_SOURCES = ("real", "real-noaug")
REGIMES = ("full", "limited", "none")


@dataclasses.dataclass(frozen=True)
class GridPoint:
    source: str
    regime: str
    multiplier: float | None  # None for real-only runs
    aux_norm: bool
    seed: int

    @property
    def name(self) -> str:
        mult = "na" if self.multiplier is None else f"{self.multiplier:g}"
        return f"{self.regime}-{self.source}-m{mult}-aux{int(self.aux_norm)}-s{self.seed}"

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "regime": self.regime,
                "multiplier": 0.0 if self.multiplier is None else self.multiplier,
                "aux_norm": self.aux_norm, "seed": self.seed,
                "synthetic": self.source not in REAL_SOURCES}


def grid_points(cfg: config.TrainConfig, source: str) -> list[GridPoint]:
    """Every run of ``source`` in the grid of ``cfg`` (see the module docstring)."""
    bad = sorted(set(cfg.grid_regimes) - set(REGIMES))
    if bad:
        raise ValueError(f"unknown grid regime(s) {', '.join(bad)}; valid: {', '.join(REGIMES)}")
    if cfg.grid_limited_per_class < 1:
        raise ValueError(f"grid_limited_per_class must be positive, got "
                         f"{cfg.grid_limited_per_class}")
    points = []
    for regime in cfg.grid_regimes:
        for seed in cfg.seeds:
            if source in REAL_SOURCES:
                if regime != "none":
                    points.append(GridPoint(source, regime, None, False, seed))
                continue
            for mult in cfg.multipliers:
                if mult <= 0:
                    raise ValueError(f"grid_multipliers must be positive (the real-only runs "
                                     f"are the sources {REAL_SOURCES}), got {mult}")
                for aux in (False,) if regime == "none" else cfg.grid_aux_norm:
                    points.append(GridPoint(source, regime, float(mult), aux, seed))
    return points


def point_config(cfg: config.TrainConfig, point: GridPoint) -> config.TrainConfig:
    """``cfg`` with one grid point's settings."""
    real = point.source in REAL_SOURCES
    values: dict[str, Any] = {
        "use_synthetic": not real, "aux_norm": point.aux_norm,
        "synthetic_multiplier": point.multiplier,
        "synthetic_strategy": None if real else point.source,
        "real_fraction": 0.0 if point.regime == "none" else 1.0,
        "real_per_class": cfg.grid_limited_per_class if point.regime == "limited" else None,
        "common": dataclasses.replace(cfg.common, seed=int(point.seed), progress=False),
    }
    if point.source == "real-noaug":
        values["augment"] = ()
    return dataclasses.replace(cfg, **values)


def config_hash(cfg: config.TrainConfig) -> str:
    """A digest of every setting of a run except progress bars (what its numbers depend on)."""
    params = {k: v for k, v in cfg.as_params().items() if k != "progress"}
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(cfg: config.TrainConfig, point: GridPoint, metrics: Path) -> bool:
    path = metrics / f"{point.name}.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("config_hash") == config_hash(
            point_config(cfg, point))
    except (OSError, ValueError):
        return False


def _run_point(cfg: config.TrainConfig, point: GridPoint, out: Path, metrics: Path) -> str:
    import torch

    from lib.training.classifier_run import train_and_evaluate

    torch.set_num_threads(1)  # the same kernels whether one run or several run at a time
    run_dir = out / point.name
    run_cfg = point_config(cfg, point)
    result = train_and_evaluate(
        run_cfg, out=run_dir, metrics_path=metrics / f"{point.name}.json",
        history_path=run_dir / "history.csv",
        extra_metrics={**point.record(), "config_hash": config_hash(run_cfg)})
    return f"{point.name}: val top1 {result['metrics']['val']['top1']:.4f}"


def run_grid(cfg: config.TrainConfig, source: str, out: Path, metrics: Path,
             workers: int | None = None) -> list[str]:
    """Train the missing runs of ``source``; returns one summary line per run trained."""
    points = grid_points(cfg, source)
    todo = [p for p in points if not _done(cfg, p, metrics)]
    print(f"[train-grid] {source}: {len(points)} runs, {len(points) - len(todo)} already done",
          flush=True)
    out.mkdir(parents=True, exist_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    workers = cfg.grid_workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"grid_workers must be positive, got {workers}")
    if workers == 1 or len(todo) <= 1:
        lines = [_run_point(cfg, p, out, metrics) for p in todo]
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_run_point, cfg, p, out, metrics) for p in todo]
                lines = []
                for i, f in enumerate(futures, 1):
                    lines.append(f.result())
                    print(f"[train-grid] {i}/{len(todo)} {lines[-1]}", flush=True)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train_cli",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True,
                        help="real, real-noaug or a prompt strategy (train.grid_sources)")
    parser.add_argument("--out", required=True, type=Path, help="folder of the runs' outputs")
    parser.add_argument("--metrics", required=True, type=Path,
                        help="folder of the runs' metrics JSON")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at a time (default: train.grid_workers)")
    args = parser.parse_args(argv)
    try:
        cfg = config.load("train")
        if args.source not in cfg.grid_sources:
            raise config.ConfigError(f"--source {args.source!r} is not in train.grid_sources "
                                     f"({', '.join(cfg.grid_sources)})")
        grid_points(cfg, args.source)
    except (config.ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = paths.project_root()
    lines = run_grid(cfg, args.source, paths.resolve(args.out, root),
                     paths.resolve(args.metrics, root), args.workers)
    for line in lines:
        print(f"[train-grid] {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
