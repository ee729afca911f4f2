"""The sweep runner: every training run of one data source of the ablation grid.

    python -m lib.sweep --source cdsd --out outputs/sweep/cdsd

dvc.yaml's ``sweep`` stage is a matrix with one stage per *source* (``sweep.sources``); each
trains every point of ``regimes x multipliers x aux_norm x seeds`` of the ``sweep`` section
(with ``large``: the ``large_*`` seeds and multipliers) that applies to its source,
``workers`` tasks at a time (one CPU thread each, so a run's numbers do not depend on how many
run beside it); with ``group_size`` > 1 a task trains up to that many runs of the small CNNs
together (:mod:`lib.training.group_run`), each bit for bit as it trains alone. Each run writes
its folder ``<out>/<run>/`` with its flat results ``metrics.json`` (kept as data: the
``analyze`` stage aggregates them). A run is the ``train``
stage's configuration (params.yaml, active profile) with the grid point's settings replaced,
so a sweep run and the single ``train`` run differ only in what the sweep names.

Sources:

* ``real``: real images only, with the profile's augmentation (the baseline that synthetic
  data must beat: gains from mere regularisation are already in it);
* ``real-noaug``: real images only, no augmentation;
* a prompt strategy (``classname``, ``cd``, ``sd``, ``cdsd``, ...): real images plus the
  generated images of that strategy, ``synthetic_multiplier`` x the real train count per
  class, ``synthetic_fraction`` of every batch, with or without the auxiliary norm.

Regimes: ``full`` (every real train image), ``limited`` (``limited_per_class`` real
images per class), ``none`` (synthetic only: the scaling paper's main setting; strategies
only, auxiliary norm off). Real-only sources ignore the multiplier and the aux norm (one run
per regime and seed). A run whose ``metrics.json`` exists and records the same configuration
(``config_hash``) is kept, so a killed sweep resumes; any other run is trained again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib import config, paths, provenance
from lib.grid import GridPoint, grid_points, point_config
from lib.training import many
from lib.training.many import RESULTS, worker_pool

__all__ = ["RESULTS", "run_sweep", "sweep_tasks", "worker_pool", "main"]


def _spec(cfg: config.TrainConfig, sweep: config.SweepConfig, point: GridPoint) -> many.RunSpec:
    return many.RunSpec(point.name, point_config(cfg, sweep, point), point.record())


def _done(cfg: config.TrainConfig, sweep: config.SweepConfig, point: GridPoint,
          out: Path, inputs: dict[str, str] | None = None) -> bool:
    return many.is_done(_spec(cfg, sweep, point), out, inputs)


def _run_point(cfg: config.TrainConfig, sweep: config.SweepConfig, point: GridPoint,
               out: Path, inputs: dict[str, str] | None = None) -> str:
    """Train one grid point alone (:func:`lib.training.many.run_one`)."""
    return many.run_one(_spec(cfg, sweep, point), out, inputs)


def _run_group(cfg: config.TrainConfig, sweep: config.SweepConfig, points: list[GridPoint],
               out: Path, inputs: dict[str, str] | None = None) -> list[str]:
    """Train ``points`` together, each bit for bit as alone (:func:`lib.training.many.run_group`)."""
    return many.run_group([_spec(cfg, sweep, p) for p in points], out, inputs)


def sweep_tasks(cfg: config.TrainConfig, sweep: config.SweepConfig, points: list[GridPoint],
                out: Path) -> list[list[GridPoint]]:
    """``points`` cut into the tasks the workers run (:func:`lib.training.many.tasks`)."""
    by_name = {p.name: p for p in points}
    cut = many.tasks([_spec(cfg, sweep, p) for p in points], out, sweep.group_size)
    return [[by_name[s.name] for s in task] for task in cut]


def run_sweep(cfg: config.TrainConfig, sweep: config.SweepConfig, source: str, out: Path,
              workers: int | None = None) -> list[str]:
    """Train the missing runs of ``source``; returns one summary line per run trained.

    Checks first that the images it reads are the current profile's and settings' (the
    ``train`` stage's inputs, :func:`lib.provenance.begin`); records its own provenance in
    ``out`` once every run is done."""
    inputs = provenance.begin(cfg, "sweep", out=out)
    specs = [_spec(cfg, sweep, p) for p in grid_points(sweep, source)]
    lines = many.train_runs(specs, out, workers=sweep.workers if workers is None else workers,
                            group_size=sweep.group_size, inputs=inputs, label=f"sweep {source}")
    provenance.finish(cfg, "sweep", inputs, out=out,
                      recorded=provenance.sweep_settings(cfg, sweep, source))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.sweep",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True,
                        help="real, real-noaug or a prompt strategy (sweep.sources)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder of the runs (one subfolder each)")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at a time (default: sweep.workers)")
    args = parser.parse_args(argv)
    try:
        from lib import plan

        cfgs = plan.check(config.load_params())
        cfg, sweep = cfgs["train"], cfgs["sweep"]
        if args.source not in sweep.sources:
            raise config.ConfigError(f"--source {args.source!r} is not in sweep.sources "
                                     f"({', '.join(sweep.sources)})")
        grid_points(sweep, args.source)
    except (config.ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        lines = run_sweep(cfg, sweep, args.source,
                          paths.resolve(args.out, paths.project_root()), args.workers)
    except provenance.ProvenanceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[sweep] {args.source}: {len(lines)} runs trained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
