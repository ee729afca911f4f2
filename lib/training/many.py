"""Many training runs, each into its own folder: resumed, grouped, a few at a time.

The sweep (:mod:`lib.sweep`) and the studies (:mod:`lib.study`) both train lists of runs.
A run is a :class:`RunSpec`: its folder name, its ``train`` configuration and the values
recorded beside its results. :func:`train_runs` trains the runs whose folder does not hold
finished results of the same configuration (``config_hash`` in ``metrics.json``, so a
killed job resumes and a changed run is trained again), ``workers`` tasks at a time (one
CPU thread each, so a run's numbers do not depend on how many run beside it); with
``group_size`` > 1 a task trains up to that many runs of the small CNNs together
(:mod:`lib.training.group_run`), each bit for bit as it trains alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lib import config
from lib.processes import die_with_parent

RESULTS = "metrics.json"  # a run's flat results, in its folder
HISTORY = "history.csv"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: ``name`` (its folder), its configuration and the values recorded with its
    results (``record``; ``config_hash`` is added)."""

    name: str
    cfg: config.TrainConfig
    record: dict[str, Any]


def config_hash(cfg: config.TrainConfig, inputs: dict[str, str] | None = None) -> str:
    """A digest of what a run's numbers depend on: every setting except progress bars, and
    the digests of the input records it read (``inputs``: :func:`lib.provenance.begin`), so
    a run trained on images that have since been regenerated is not kept."""
    params = {k: v for k, v in cfg.as_params().items() if k != "progress"}
    params["inputs"] = dict(sorted((inputs or {}).items()))
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_done(spec: RunSpec, out: Path, inputs: dict[str, str] | None = None) -> bool:
    """Whether ``out/<name>/metrics.json`` holds the results of this very configuration."""
    path = out / spec.name / RESULTS
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("config_hash") == config_hash(spec.cfg, inputs)
    except (OSError, ValueError):
        return False


def run_one(spec: RunSpec, out: Path, inputs: dict[str, str] | None = None) -> str:
    """Train and evaluate one run alone; its summary line."""
    import torch

    from lib.training.classifier_run import train_and_evaluate

    torch.set_num_threads(1)  # the same kernels whether one run or several run at a time
    run_dir = out / spec.name
    result = train_and_evaluate(
        spec.cfg, out=run_dir, metrics_path=run_dir / RESULTS, history_path=run_dir / HISTORY,
        extra_metrics={**spec.record, "config_hash": config_hash(spec.cfg, inputs)})
    return f"{spec.name}: val top1 {result['metrics']['val']['top1']:.4f}"


def run_group(specs: list[RunSpec], out: Path, inputs: dict[str, str] | None = None) -> list[str]:
    """Train ``specs`` together (:func:`lib.training.group_run.train_and_evaluate_group`:
    each run's outputs are the bytes :func:`run_one` writes), or the one run alone when it
    cannot share a group; one summary line per run."""
    import torch

    from lib.training.group_run import groupable, train_and_evaluate_group

    if len(specs) == 1 and not groupable(specs[0].cfg):
        return [run_one(specs[0], out, inputs)]
    torch.set_num_threads(1)  # as run_one
    results = train_and_evaluate_group(
        [s.cfg for s in specs], [out / s.name for s in specs],
        [{**s.record, "config_hash": config_hash(s.cfg, inputs)} for s in specs],
        results=RESULTS, history=HISTORY)
    return [f"{s.name}: val top1 {r['metrics']['val']['top1']:.4f}"
            for s, r in zip(specs, results)]


def tasks(specs: list[RunSpec], out: Path, group_size: int) -> list[list[RunSpec]]:
    """``specs`` cut into the tasks the workers run, in order: groups of at most
    ``group_size`` runs that can train together (the small CNNs of one batch layout,
    :func:`lib.training.group_run.group_key`, resuming from the same step), and single runs
    (the others). A run's numbers do not depend on the grouping."""
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if group_size == 1:
        return [[s] for s in specs]
    from lib.training.group_run import group_key, groupable

    buckets: dict[tuple[str, int], list[RunSpec]] = {}
    found: list[list[RunSpec]] = []
    for spec in specs:
        step = _resume_step(out / spec.name / "state.pt")
        if not groupable(spec.cfg) or step is None:
            found.append([spec])
            continue
        bucket = buckets.setdefault((group_key(spec.cfg), step), [])
        if not bucket:
            found.append(bucket)  # filled below, in order of first appearance
        bucket.append(spec)
    cut: list[list[RunSpec]] = []
    for task in found:
        cut += [task[i:i + group_size] for i in range(0, len(task), group_size)]
    return cut


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


def train_runs(specs: list[RunSpec], out: Path, *, workers: int, group_size: int,
               inputs: dict[str, str] | Callable[[RunSpec], dict[str, str]] | None = None,
               label: str = "runs") -> list[str]:
    """Train the runs of ``specs`` not finished in ``out``; one summary line per run trained.

    ``inputs``: the digests of the records the runs read (one mapping for all, or a function
    of the run), part of each run's ``config_hash``."""
    def inputs_of(spec: RunSpec) -> dict[str, str] | None:
        return inputs(spec) if callable(inputs) else inputs

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{label}: two runs share a folder name")
    todo = [s for s in specs if not is_done(s, out, inputs_of(s))]
    print(f"[{label}] {len(specs)} runs, {len(specs) - len(todo)} already done", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    work = tasks(todo, out, group_size)
    by_task = [{s.name: inputs_of(s) for s in task} for task in work]
    if any(len({json.dumps(v, sort_keys=True) for v in t.values()}) > 1 for t in by_task):
        # Runs of one group read the same inputs (a group key includes the data folder).
        raise ValueError(f"{label}: runs of one group read different inputs")
    lines: list[str] = []
    if workers == 1 or len(work) <= 1:
        for task in work:
            for line in run_group(task, out, inputs_of(task[0])):
                lines.append(line)
                print(f"[{label}] {len(lines)}/{len(todo)} {line}", flush=True)
        return lines
    with worker_pool(workers) as pool:
        futures = [pool.submit(run_group, task, out, inputs_of(task[0])) for task in work]
        for f in futures:
            for line in f.result():
                lines.append(line)
                print(f"[{label}] {len(lines)}/{len(todo)} {line}", flush=True)
    return lines


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` fresh (spawned) processes of one CPU thread each, each of which dies with
    this process (:func:`lib.processes.die_with_parent`): a killed job stops its runs."""
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
