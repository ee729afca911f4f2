"""The studies' runs (lib/study/spec.py, lib/study/runs.py): which runs each curve has, that a
run shared by curves trains once, the training-length rule, the size of each generation,
and the checks of the study section."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from lib import config, plan
from lib.study import spec
from lib.study.runs import run_config


def load(profile: str = "mini") -> dict[str, config.StageConfig]:
    params = config.load_params()
    params["common"]["profile"] = profile
    return plan.load_sections(params)


@pytest.fixture(scope="module")
def mini() -> dict[str, config.StageConfig]:
    return load("mini")


COUNTS = pd.Series([134] * 8 + [136, 136], index=[str(i) for i in range(10)])  # 1,344


def test_each_curve_has_every_size_and_seed(mini) -> None:
    study = mini["study"]
    runs = spec.study_runs(study, "scaling")
    seeds = len(study.seeds)
    points = lambda curve: [r for r in runs if curve in r.curves]  # noqa: E731
    assert len(points("real")) == len(set(study.real_sizes) | set(study.mixed_real_sizes)) * seeds
    for s in (*study.prompt_settings, *study.guidance_settings):
        got = points(f"synthetic/{s}")
        assert sorted({r.multiplier for r in got}) == sorted(study.synthetic_multipliers)
        assert len(got) == len(study.synthetic_multipliers) * seeds
        assert all(r.kind == "synthetic" and not r.aux_norm and r.setting == s for r in got)
    mixed = points(f"mixed/{study.mixed_setting}")
    assert sorted({r.real_per_class for r in mixed}) == sorted(study.mixed_real_sizes)


def test_a_run_shared_by_curves_trains_once(mini) -> None:
    study = mini["study"]
    runs = spec.study_runs(study, "diversify")
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    # classname at the ablation multiplier without the norm is on the scale-up curve too
    shared = [r for r in runs if r.setting == "classname" and r.multiplier == 1.0
              and not r.aux_norm]
    assert len(shared) == len(study.seeds)
    assert {"scaleup/classname/aux0", "ablation/classname"} <= set(shared[0].curves)
    # the 0x point of every scale-up curve is one real-only run per seed, norm off
    zero = [r for r in runs if r.multiplier == 0]
    assert all(r.kind == "real" and not r.aux_norm and r.setting == "" for r in zero)
    assert len(zero) == len(study.seeds) * len(study.archs)
    assert "ablation/cdsd_aux" in {c for r in runs for c in r.curves}


def test_the_training_length_rule(mini) -> None:
    study, train = mini["study"], mini["train"]
    run = lambda kind, real, m: spec.StudyRun(kind, "x", real, m, False, "mini_cnn", 0)  # noqa: E731
    assert spec.steps_for(study, train, run("real", 0, 0), COUNTS) == 168  # 8 x 1344 / 64
    assert spec.steps_for(study, train, run("real", 4, 0), COUNTS) == study.min_steps
    assert spec.steps_for(study, train, run("mixed", 0, 2.0), COUNTS) == 336  # real half
    assert spec.steps_for(study, train, run("synthetic", 0, 2.0), COUNTS) == 336
    assert spec.steps_for(study, train, run("synthetic", 0, 6.0), COUNTS) == study.max_steps
    long = dataclasses.replace(study, epochs=100)
    assert spec.steps_for(long, train, run("real", 67, 0), COUNTS) == study.max_steps


def test_one_generation_per_setting_at_its_largest_size(mini) -> None:
    study = mini["study"]
    assert spec.generation_multiplier(study, "classname") == max(
        *study.scaleup_multipliers, study.mixed_multiplier, *study.synthetic_multipliers)
    assert spec.generation_multiplier(study, "guidance-3") == max(study.synthetic_multipliers)
    unused = dataclasses.replace(study, guidance_settings=("classname",))
    assert spec.generation_multiplier(unused, "guidance-3") == 0
    large = dataclasses.replace(study, large=True)
    assert spec.generation_multiplier(large, "cdsd") == max(study.large_scaleup_multipliers)


def test_run_configs_train_what_the_run_names(mini) -> None:
    study, train = mini["study"], mini["train"]
    syn = run_config(train, study, spec.StudyRun("synthetic", "cd", 0, 0.5, False,
                                                 "mini_cnn", 2), COUNTS)
    assert (syn.real_fraction, syn.use_synthetic, syn.synthetic_multiplier) == (0.0, True, 0.5)
    assert syn.common.dirs.generate.endswith("synth/cd/images") and syn.common.seed == 2
    real = run_config(train, study, spec.StudyRun("real", "", 17, 0.0, False, "mini_cnn", 1),
                      COUNTS)
    assert (real.real_per_class, real.use_synthetic, real.steps) == (17, False, 100)
    assert real.common.dirs.generate == train.common.dirs.generate
    mixed = run_config(train, study, spec.StudyRun("mixed", "cdsd", 0, 1.0, True,
                                                   "mini_cnn", 0), COUNTS)
    assert (mixed.real_per_class, mixed.real_fraction, mixed.aux_norm) == (None, 1.0, True)


def test_a_study_naming_an_unknown_setting_is_refused(mini) -> None:
    bad = dataclasses.replace(mini["study"], prompt_settings=("classname", "clasname"))
    with pytest.raises(config.ConfigError, match="prompt_settings names clasname"):
        spec.study_runs(bad, "scaling")
    with pytest.raises(config.ConfigError, match="real_sizes must be >= 0"):
        spec.check(dataclasses.replace(mini["study"], real_sizes=(4, -1)))
    with pytest.raises(config.ConfigError, match="unknown study"):
        spec.study_runs(mini["study"], "other")


def test_the_plan_refuses_a_generation_it_cannot_make(mini) -> None:
    cfgs = dict(mini)
    cfgs["finetune"] = dataclasses.replace(mini["finetune"], backend="none")
    problems = plan.check_profile(cfgs)
    assert any("study.settings.finetuned samples the fine-tuned model" in p for p in problems)
    # not when no run of the profile samples it
    cfgs["study"] = dataclasses.replace(mini["study"], scaleup_settings=("classname", "cdsd"))
    assert not any("study.settings.finetuned" in p for p in plan.check_profile(cfgs))
