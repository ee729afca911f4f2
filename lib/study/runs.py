"""Training the runs of one study, and the table of their results.

    python -m lib.study --study scaling

Each run of :func:`lib.study.spec.study_runs` is the ``train`` stage's configuration with
the run's data, size, norm, architecture, seed and length (:func:`run_config`), trained into
``<study>/runs/<study>/<run>/`` by :func:`lib.training.many.train_runs` (resumed, grouped,
``study.workers`` at a time). Before training, the class table and every generation the runs
read are checked to be this profile's and these settings' (:mod:`lib.provenance`). At the
end ``runs.parquet`` holds one row per (curve, run): what the analysis fits and the report
compares (:mod:`lib.analysis.curves`), and ``per_class.parquet`` each run's per-class top-1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from lib import config, prompts, provenance
from lib.choices import StudyName
from lib.io import read_json, write_parquet
from lib.study import synth
from lib.study.spec import StudyRun, steps_for, study_runs
from lib.training import many

TABLE = "runs.parquet"
PER_CLASS = "per_class.parquet"


def folder(cfg: config.StageConfig, which: str) -> Path:
    return cfg.path("study") / "runs" / which


def train_counts(cfg: config.StageConfig) -> pd.Series:
    """Real train images per class (the classes stage's table)."""
    return prompts.train_counts(pd.read_parquet(cfg.path("classes") / "images.parquet"))


def run_config(train: config.TrainConfig, study: config.StudyConfig, run: StudyRun,
               counts: pd.Series) -> config.TrainConfig:
    """The ``train`` configuration of ``run``."""
    dirs = train.common.dirs
    if run.setting:
        dirs = dataclasses.replace(
            dirs, generate=str(Path(dirs.study) / "synth" / run.setting / "images"))
    common = dataclasses.replace(train.common, seed=run.seed, progress=False, dirs=dirs)
    return dataclasses.replace(
        train, common=common, arch=run.arch, aux_norm=run.aux_norm,
        use_synthetic=run.kind != "real", synthetic_strategy=None,
        synthetic_multiplier=run.multiplier if run.kind != "real" else None,
        real_fraction=0.0 if run.kind == "synthetic" else 1.0,
        real_per_class=run.real_per_class or None if run.kind != "synthetic" else None,
        steps=steps_for(study, train, run, counts), epochs=None)


def check_inputs(train: config.TrainConfig, params: dict[str, Any],
                 settings: set[str]) -> dict[str, str]:
    """The digests of the records the runs read (the class table, each generation used),
    after checking each is this profile's, made with the settings params.yaml gives now."""
    inputs = {"classes": provenance.digest(provenance.check_folder(
        train, "classes", provenance.expected_settings(params, "classes")))}
    for s in sorted(settings):
        name = f"synth/{s}"
        inputs[name] = provenance.digest(provenance.check_folder(
            train, name, synth.recorded_settings(params, s)))
    return inputs


def run_study(which: StudyName, params: dict[str, Any] | None = None,
              workers: int | None = None) -> pd.DataFrame:
    """Train the missing runs of ``which``; the runs table."""
    from lib import plan

    params = params if params is not None else config.load_params()
    cfgs = plan.check(params)
    train, study = cfgs["train"], cfgs["study"]
    runs = study_runs(study, which)
    out = folder(train, which)
    inputs = check_inputs(train, params, {r.setting for r in runs if r.setting})
    (out / provenance.RECORD).unlink(missing_ok=True)
    counts = train_counts(train)
    specs = [many.RunSpec(r.name, run_config(train, study, r, counts), r.record()) for r in runs]
    by_name = {r.name: r for r in runs}

    def run_inputs(spec: many.RunSpec) -> dict[str, str]:
        setting = by_name[spec.name].setting
        return {k: v for k, v in inputs.items() if k == "classes" or k == f"synth/{setting}"}

    many.train_runs(specs, out, workers=workers or study.workers, group_size=study.group_size,
                    inputs=run_inputs, label=f"study {which}")
    table, per_class = collect(which, runs, out)
    write_parquet(out / TABLE, table)
    write_parquet(out / PER_CLASS, per_class)
    provenance.finish(train, f"study/{which}", inputs, out=out, recorded={
        "train": provenance.settings(train), "study": provenance.settings(study),
        "which": which})
    return table


def collect(which: str, runs: list[StudyRun], out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per (curve, run) from the runs' ``metrics.json``, and their per-class top-1."""
    rows, per_class = [], []
    for run in runs:
        m = read_json(out / run.name / many.RESULTS)
        metrics = {k: v for k, v in m.items() if k.endswith((".loss", ".top1"))}
        base = {"study": which, "run": run.name, "setting": run.setting, "kind": run.kind,
                "arch": run.arch, "aux_norm": run.aux_norm,
                # real images per class: -1 all of them, 0 none (synthetic only)
                "real_per_class": 0 if run.kind == "synthetic" else run.real_per_class or -1,
                "multiplier": run.multiplier, "seed": run.seed, "length": run.length,
                "steps": m["steps"],
                "num_real": m["num_real"], "num_synthetic": m["num_synthetic"],
                "n_images": m["num_real"] + m["num_synthetic"]}
        table = pd.read_csv(out / run.name / "per_class.csv", dtype={"class_id": str})
        for curve in run.curves:
            rows.append({"curve": curve, **base, **metrics})
            per_class.append(table.assign(curve=curve, run=run.name, seed=run.seed,
                                          multiplier=run.multiplier,
                                          n_images=base["n_images"], top1=table["val"]))
    return pd.DataFrame(rows), pd.concat(per_class, ignore_index=True)
