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
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lib import config, paths, provenance
from lib.grid import GridPoint, config_hash, grid_points, point_config
from lib.processes import die_with_parent

RESULTS = "metrics.json"  # a run's flat results, in its folder


def _done(cfg: config.TrainConfig, sweep: config.SweepConfig, point: GridPoint,
          out: Path, inputs: dict[str, str] | None = None) -> bool:
    path = out / point.name / RESULTS
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("config_hash") == config_hash(
            point_config(cfg, sweep, point), inputs)
    except (OSError, ValueError):
        return False


def _run_point(cfg: config.TrainConfig, sweep: config.SweepConfig, point: GridPoint,
               out: Path, inputs: dict[str, str] | None = None) -> str:
    import torch

    from lib.training.classifier_run import train_and_evaluate

    torch.set_num_threads(1)  # the same kernels whether one run or several run at a time
    run_dir = out / point.name
    run_cfg = point_config(cfg, sweep, point)
    result = train_and_evaluate(
        run_cfg, out=run_dir, metrics_path=run_dir / RESULTS,
        history_path=run_dir / "history.csv",
        extra_metrics={**point.record(), "config_hash": config_hash(run_cfg, inputs)})
    return f"{point.name}: val top1 {result['metrics']['val']['top1']:.4f}"


def _run_group(cfg: config.TrainConfig, sweep: config.SweepConfig, points: list[GridPoint],
               out: Path, inputs: dict[str, str] | None = None) -> list[str]:
    """Train ``points`` together (:func:`lib.training.group_run.train_and_evaluate_group`:
    each run's outputs are the bytes :func:`_run_point` writes), or the one point alone
    when it cannot share a group; one summary line per run."""
    import torch

    from lib.training.group_run import groupable, train_and_evaluate_group

    run_cfgs = [point_config(cfg, sweep, p) for p in points]
    if len(points) == 1 and not groupable(run_cfgs[0]):
        return [_run_point(cfg, sweep, points[0], out, inputs)]
    torch.set_num_threads(1)  # as _run_point
    results = train_and_evaluate_group(
        run_cfgs, [out / p.name for p in points],
        [{**p.record(), "config_hash": config_hash(c, inputs)} for p, c in zip(points, run_cfgs)],
        results=RESULTS, history="history.csv")
    return [f"{p.name}: val top1 {r['metrics']['val']['top1']:.4f}"
            for p, r in zip(points, results)]


def sweep_tasks(cfg: config.TrainConfig, sweep: config.SweepConfig, points: list[GridPoint],
                out: Path) -> list[list[GridPoint]]:
    """``points`` cut into the tasks the workers run, in grid order: groups of at most
    ``sweep.group_size`` runs that can train together (the small CNNs of one batch layout,
    :func:`lib.training.group_run.group_key`, resuming from the same step), and single runs
    (the others). A run's numbers do not depend on the grouping: a group trains each run
    bit for bit as it trains alone."""
    size = sweep.group_size
    if size < 1:
        raise ValueError(f"sweep.group_size must be positive, got {size}")
    if size == 1:
        return [[p] for p in points]
    from lib.training.group_run import group_key, groupable

    buckets: dict[tuple[str, int], list[GridPoint]] = {}
    tasks: list[list[GridPoint]] = []
    for point in points:
        run_cfg = point_config(cfg, sweep, point)
        step = _resume_step(out / point.name / "state.pt")
        if not groupable(run_cfg) or step is None:
            tasks.append([point])
            continue
        bucket = buckets.setdefault((group_key(run_cfg), step), [])
        if not bucket:
            tasks.append(bucket)  # filled below, in order of first appearance
        bucket.append(point)
    out_tasks: list[list[GridPoint]] = []
    for task in tasks:
        out_tasks += [task[i:i + size] for i in range(0, len(task), size)]
    return out_tasks


def _resume_step(path: Path) -> int | None:
    """The step a run's checkpoint resumes from (0 without one); None when it cannot be
    read (the run then trains alone and its error names the file)."""
    if not path.exists():
        return 0
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # noqa: BLE001 - any unreadable file: left to the lone run to report
        return None


def run_sweep(cfg: config.TrainConfig, sweep: config.SweepConfig, source: str, out: Path,
              workers: int | None = None) -> list[str]:
    """Train the missing runs of ``source``; returns one summary line per run trained.

    Checks first that the images it reads are the current profile's and settings' (the
    ``train`` stage's inputs, :func:`lib.provenance.begin`); records its own provenance in
    ``out`` once every run is done. Runs train in the tasks of :func:`sweep_tasks`."""
    inputs = provenance.begin(cfg, "sweep", out=out)
    points = grid_points(sweep, source)
    todo = [p for p in points if not _done(cfg, sweep, p, out, inputs)]
    print(f"[sweep] {source}: {len(points)} runs, {len(points) - len(todo)} already done",
          flush=True)
    out.mkdir(parents=True, exist_ok=True)
    workers = sweep.workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"sweep.workers must be positive, got {workers}")
    tasks = sweep_tasks(cfg, sweep, todo, out)
    if workers == 1 or len(tasks) <= 1:
        lines = [line for task in tasks for line in _run_group(cfg, sweep, task, out, inputs)]
    else:
        with worker_pool(workers) as pool:
            futures = [pool.submit(_run_group, cfg, sweep, task, out, inputs) for task in tasks]
            lines = []
            for f in futures:
                for line in f.result():
                    lines.append(line)
                    print(f"[sweep] {len(lines)}/{len(todo)} {line}", flush=True)
    provenance.finish(cfg, "sweep", inputs, out=out,
                      recorded=provenance.sweep_settings(cfg, sweep, source))
    return lines


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` fresh (spawned) processes of one CPU thread each, each of which dies with
    this process (:func:`lib.processes.die_with_parent`): a killed sweep stops its runs."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                 initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    for line in lines:
        print(f"[sweep] {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
