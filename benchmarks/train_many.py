"""Many small training runs: sweep runs one at a time (the previous method) against training
groups (``sweep.group_size``), in the same process, on the real data of a finished mini run.

    python benchmarks/train_many.py --project PATH_OF_A_FINISHED_MINI_RUN
    python benchmarks/train_many.py --project ... --runs 30 --group-size 6 --amp bf16

The project's ``outputs/{classes,generate,prompts,zoo,disambiguate}`` and ``data`` are
linked (read only) into a temporary project root, with this checkout's ``params.yaml`` and
``dvc.yaml``; ``--runs`` runs of the ``--source`` sweep stage (its first points in grid
order) are trained the old way (``lib.sweep._run_point``: ``train_and_evaluate`` one run at
a time) and the new way (``lib.sweep.sweep_tasks`` then ``lib.sweep._run_group``), each
into a fresh folder, alternating, ``--repeats`` times, after one untimed warm-up group of
each way (image decoding, kernel setup). One torch thread, as a sweep worker.

Prints, per way, runs per core-minute (runs / CPU minutes of this process: waiting for a
core on a shared machine does not count) and per wall-clock minute, the ratio new / old (the
median of the repeats' paired ratios), and the largest difference of any metric of any run
between the two ways, with the count of output files that are byte-identical. ``--amp bf16``
trains the new way under bfloat16 autocast (a different run: its metrics are compared with
the fp32 ones). ``--breakdown`` adds where each way's CPU time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import filecmp
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LINKED = ("outputs/classes", "outputs/generate", "outputs/prompts", "outputs/zoo",
          "outputs/disambiguate", "data")


def project_root(project: Path, where: Path) -> Path:
    """A project root under ``where`` reading ``project``'s finished outputs (links)."""
    root = where / "root"
    (root / "outputs").mkdir(parents=True)
    for rel in LINKED:
        if not (project / rel).exists():
            raise SystemExit(f"{project / rel} is missing: --project must be a finished mini "
                             f"run (dvc repro of the mini profile)")
        (root / rel).symlink_to((project / rel).resolve())
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    return root


@contextlib.contextmanager
def timed(spots: dict[str, tuple[Any, str]], totals: Counter) -> Iterator[None]:
    """Within the block, add the CPU time of each ``label: (owner, attribute)`` call to
    ``totals[label]`` (outermost calls only)."""
    saved = {label: getattr(owner, attr) for label, (owner, attr) in spots.items()}
    depth: Counter = Counter()

    def wrap(label: str, fn: Callable) -> Callable:
        def inner(*args: Any, **kwargs: Any) -> Any:
            depth[label] += 1
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[label] -= 1
                if depth[label] == 0:
                    totals[label] += time.process_time() - started
        return inner

    for label, (owner, attr) in spots.items():
        setattr(owner, attr, wrap(label, saved[label]))
    try:
        yield
    finally:
        for label, (owner, attr) in spots.items():
            setattr(owner, attr, saved[label])


def breakdown_spots() -> dict[str, dict[str, tuple[Any, str]]]:
    """What ``--breakdown`` times, per way."""
    import torch

    from lib.nn.mini_cnn_group import MiniCNNGroup
    from lib.training import classifier_run, group_loop, group_run, loop

    common = {"backward": (torch.Tensor, "backward"),
              "optimizer": (torch.optim.AdamW, "step")}
    return {
        "old": {"inputs": (classifier_run, "run_inputs"),
                "training": (classifier_run, "train_classifier"),
                "forward": (loop, "_train_step"),  # forward + backward + optimizer
                "batches": (loop, "make_batch"), "augment": (loop, "augment_batch"),
                "evaluation": (classifier_run, "evaluate"),
                "ood sets": (classifier_run, "evaluation_sets"), **common},
        "new": {"inputs": (group_run, "run_inputs"), "training": (group_run, "train_group"),
                "forward": (MiniCNNGroup, "forward"), "batches": (group_loop.GroupBatches,
                                                                  "batch"),
                "loss": (group_loop, "_group_loss"), "evaluation": (group_run, "evaluate"),
                "ood sets": (group_run, "evaluation_sets"), **common},
    }


def conv_floor(train: Any, dtype: Any = None, repeats: int = 5,
               calls: int = 30) -> dict[str, float]:
    """The convolutions of one training step alone, at the run's shapes: forward and
    backward of each layer (no input gradient for the first), the best of ``repeats``
    timings of ``calls`` calls, in CPU-ms per step; with FLOP/s and the CPU-s they take in
    a run of ``train.steps`` steps (what no grouping can remove); in ``dtype`` (default
    float32)."""
    import torch
    import torch.nn.functional as F

    from lib.backends.classifier import create_classifier

    fmt = torch.channels_last if train.channels_last else torch.contiguous_format
    model = create_classifier("timm", arch=train.arch, num_classes=10, in_chans=train.channels)
    model = model.to(memory_format=fmt)
    shapes: list[tuple[torch.nn.Conv2d, torch.Size]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    x = torch.randn(train.batch_size, train.channels, train.image_size, train.image_size)
    with torch.no_grad():
        model(x.to(memory_format=fmt))
    for h in hooks:
        h.remove()
    ms, flop = 0.0, 0.0
    for i, (conv, shape) in enumerate(shapes):
        xi = torch.randn(shape).to(dtype or torch.float32).to(memory_format=fmt)
        w = conv.weight.detach().to(dtype or torch.float32)
        out = F.conv2d(xi, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        g = torch.randn_like(out)
        args = (list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0],
                conv.groups, [i > 0, True, False])  # no input gradient for the first layer

        def step(xi=xi, w=w, g=g, conv=conv, args=args) -> None:
            F.conv2d(xi, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            torch.ops.aten.convolution_backward(g, xi, w, None, *args)

        step()
        best = min(_cpu_ms(step, calls) for _ in range(repeats))
        ms += best
        macs = out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
        flop += 2 * macs * (3 if i > 0 else 2)
    return {"ms_per_step": ms, "gflop_per_s": flop / (ms / 1e3) / 1e9,
            "cpu_s_per_run": ms / 1e3 * train.steps}


def _cpu_ms(fn: Callable[[], None], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - started) / calls * 1e3


def metric_differences(a: Path, b: Path, names: list[str]) -> dict[str, Any]:
    """Between the runs of the folders ``a`` and ``b``: the largest |difference| of any
    numeric metric (and of each kind: top1, top5, loss), the numbers compared, and the
    output files compared and byte-identical."""
    worst = {"any": 0.0, "top1": 0.0, "top5": 0.0, "loss": 0.0}
    numbers, same, files = 0, 0, 0
    for name in names:
        ma = json.loads((a / name / "metrics.json").read_text())
        mb = json.loads((b / name / "metrics.json").read_text())
        for key, value in ma.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                diff = abs(value - mb[key])
                kind = key.rsplit(".", 1)[-1]
                for k in ("any", kind):
                    if k in worst:
                        worst[k] = max(worst[k], diff)
                numbers += 1
        for file in sorted((a / name).iterdir()):
            files += 1
            same += filecmp.cmp(file, b / name / file.name, shallow=False)
    return {"max_metric_difference": worst["any"],
            "max_difference_by_kind": {k: v for k, v in worst.items() if k != "any"},
            "metrics_compared": numbers, "identical_files": same, "files_compared": files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True,
                        help="a project folder holding a finished mini run (outputs/, data/)")
    parser.add_argument("--source", default="cdsd", help="the sweep source whose runs to train")
    parser.add_argument("--runs", type=int, default=12, help="runs per way and repeat")
    parser.add_argument("--group-size", type=int, default=None,
                        help="runs per group (default: params.yaml sweep.group_size)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--amp", choices=("none", "bf16"), default="none",
                        help="the new way under bfloat16 autocast (the old way stays fp32)")
    parser.add_argument("--breakdown", action="store_true",
                        help="CPU time per phase, and the convolutions' own time (the floor)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="train-many-"))
    try:
        return _run(args, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _run(args: argparse.Namespace, where: Path) -> int:
    root = project_root(args.project.resolve(), where)
    os.environ["SYNTHSCALE_ROOT"] = str(root)
    sys.path.insert(0, str(REPO))
    import torch

    from lib import config, plan
    from lib.grid import grid_points
    from lib.sweep import _run_group, _run_point, sweep_tasks

    torch.set_num_threads(1)
    cfgs = plan.check(config.load_params(root / "params.yaml"))
    train, sweep = cfgs["train"], cfgs["sweep"]
    size = args.group_size or sweep.group_size
    sweep = dataclasses.replace(sweep, group_size=size)
    new_train = dataclasses.replace(train, amp=None if args.amp == "none" else args.amp)
    points = grid_points(sweep, args.source)[:args.runs]
    names = [p.name for p in points]
    spots = breakdown_spots() if args.breakdown else {"old": {}, "new": {}}

    # No provenance check (lib.provenance.begin): the runs read the linked outputs as they
    # are, also when this checkout's params.yaml has grown keys since they were made.
    def old(out: Path) -> None:
        for point in points:
            _run_point(train, sweep, point, out)

    def new(out: Path) -> None:
        for task in sweep_tasks(new_train, sweep, points, out):
            _run_group(new_train, sweep, task, out)

    ways = {"old": old, "new": new}
    warm = sweep_tasks(new_train, sweep, points, where / "warm")[0]
    for way, fn in (("old", lambda o: [_run_point(train, sweep, p, o) for p in warm]),
                    ("new", lambda o: _run_group(new_train, sweep, warm, o))):
        fn(where / f"warm-{way}")
    figures: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    totals = {"old": Counter(), "new": Counter()}
    for rep in range(args.repeats):
        order = ("old", "new") if rep % 2 == 0 else ("new", "old")
        for way in order:
            out = where / f"{way}-{rep}" / args.source
            with timed(spots[way], totals[way]):
                cpu, wall = time.process_time(), time.perf_counter()
                ways[way](out)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            figures[way].append({"cpu_s": cpu, "wall_s": wall,
                                 "per_core_minute": len(points) / (cpu / 60),
                                 "per_wall_minute": len(points) / (wall / 60)})
            print(f"[{rep}] {way}: {cpu:.1f} CPU-s, {wall:.1f} s wall", flush=True)
    summary = _summary(figures, len(points), size, args)
    summary.update(metric_differences(where / "old-0" / args.source,
                                      where / "new-0" / args.source, names))
    summary.update({"breakdown_cpu_s_per_run": {
                        way: {k: round(v / len(points) / args.repeats, 4)
                              for k, v in sorted(t.items(), key=lambda kv: -kv[1])}
                        for way, t in totals.items() if t}})
    if args.breakdown:
        summary["convolutions_alone"] = conv_floor(train)
        if args.amp == "bf16":
            summary["convolutions_alone_bf16"] = conv_floor(train, torch.bfloat16)
    _print(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


def _summary(figures: dict[str, list[dict[str, float]]], runs: int, size: int,
             args: argparse.Namespace) -> dict[str, Any]:
    ratios = [n["per_core_minute"] / o["per_core_minute"]
              for o, n in zip(figures["old"], figures["new"])]
    wall = [n["per_wall_minute"] / o["per_wall_minute"]
            for o, n in zip(figures["old"], figures["new"])]
    med = {way: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
           for way, rows in figures.items()}
    return {"source": args.source, "runs": runs, "group_size": size, "amp": args.amp,
            "repeats": args.repeats, "median": med,
            "ratio_per_core_minute": statistics.median(ratios), "ratios": ratios,
            "ratio_per_wall_minute": statistics.median(wall), "runs_detail": figures}


def _print(s: dict[str, Any]) -> None:
    for way, label in (("old", "one run at a time"),
                       ("new", f"groups of {s['group_size']}"
                               + (" (bf16 autocast)" if s["amp"] == "bf16" else ""))):
        m = s["median"][way]
        print(f"{way}: {s['runs']} runs, {label}: {m['cpu_s'] / s['runs']:.2f} CPU-s a run, "
              f"{m['per_core_minute']:.1f} runs per core-minute "
              f"({m['per_wall_minute']:.1f} per wall-clock minute)")
    print(f"ratio new / old: {s['ratio_per_core_minute']:.2f}x runs per core-minute "
          f"(repeats: {', '.join(f'{r:.2f}' for r in s['ratios'])}); wall clock "
          f"{s['ratio_per_wall_minute']:.2f}x")
    kinds = ", ".join(f"{k} {v:.3g}" for k, v in s["max_difference_by_kind"].items())
    print(f"max |metric difference| new vs old: {s['max_metric_difference']:.3g} ({kinds}) "
          f"over {s['metrics_compared']} numbers; byte-identical output files: "
          f"{s['identical_files']}/{s['files_compared']}")
    for way, parts in s["breakdown_cpu_s_per_run"].items():
        print(f"{way} CPU-s per run: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    for key, dtype in (("convolutions_alone", "fp32"), ("convolutions_alone_bf16", "bf16")):
        if key in s:
            c = s[key]
            print(f"the convolutions alone (forward + backward, {dtype}): "
                  f"{c['ms_per_step']:.2f} CPU-ms a step at {c['gflop_per_s']:.0f} GFLOP/s = "
                  f"{c['cpu_s_per_run']:.2f} CPU-s a run")


if __name__ == "__main__":
    raise SystemExit(main())
