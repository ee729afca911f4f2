"""What ``dvc repro`` would do with a profile, checked before anything runs.

    python -m lib.plan                     # the profile params.yaml selects
    python -m lib.plan --profile imagenet  # another one (params.yaml is not changed)

Validates every section of the profile (unknown, missing, mistyped or out-of-choice keys),
checks that the stages ask each other only for what they produce (:func:`check_profile`:
e.g. every prompt strategy and synthetic multiplier of the sweep is generated), and prints the
stages, the images to generate per strategy, the training runs and an estimate of the compute
from measured throughputs (``lib/resources/costs.yaml``: GPU-hours at paper scale, minutes on
the CPU profiles). Needs no model and no data: the real images are counted when ``data/``
holds them, else the dataset's known size is used. ``python -m lib.runner`` runs the same
check before every stage, so an inconsistent profile fails at once, not after hours of
generation.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lib import config, grid, paths
from lib.choices import REAL_SOURCES, T2I_FOLDERS

COSTS = Path(__file__).parent / "resources" / "costs.yaml"
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".JPEG"}


def profile_params(params: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """``params`` with ``common.profile`` set to ``profile``."""
    return {**params, "common": {**params["common"], "profile": profile}}


def load_sections(params: Mapping[str, Any]) -> dict[str, config.StageConfig]:
    """Every section's validated configuration (raises :class:`config.ConfigError`)."""
    return {s: config.build(s, config.stage_section(params, s)) for s in config.SECTIONS}


def generated_per_strategy(prompts: config.PromptsConfig) -> float:
    """Synthetic images generated per class and strategy, as a multiple of the class's real
    train count: each class's ``synthetic_multiplier`` x n images cycle through the
    strategies."""
    return prompts.synthetic_multiplier / max(1, len(prompts.strategies))


def check_profile(cfgs: Mapping[str, config.StageConfig]) -> list[str]:
    """What the profile's stages ask for that the stages before them do not produce; [] if
    consistent. ``cfgs``: :func:`load_sections` of the profile."""
    prompts, sweep, train = cfgs["prompts"], cfgs["sweep"], cfgs["train"]
    dis, zoo = cfgs["disambiguate"], cfgs["zoo"]
    problems = []
    have = generated_per_strategy(prompts)
    made = f"prompts.strategies={list(prompts.strategies)}"
    for source in sweep.sources:
        if source not in REAL_SOURCES and source not in prompts.strategies:
            problems.append(f"sweep.sources asks for {source!r}, which is not generated ({made})")
    needs_synthetic = any(s not in REAL_SOURCES for s in sweep.sources)
    grids = [("sweep.multipliers", sweep.multipliers),
             ("sweep.large_multipliers", sweep.large_multipliers)]
    for key, mults in grids if needs_synthetic else []:
        if (key == "sweep.large_multipliers") != sweep.large:
            continue  # only the grid that runs must be generated
        if mults and max(mults) > have * (1 + 1e-9):
            problems.append(
                f"{key} goes up to {max(mults):g}x but each strategy is generated at "
                f"{have:g}x (prompts.synthetic_multiplier={prompts.synthetic_multiplier:g} over "
                f"{len(prompts.strategies)} strategies); set prompts.synthetic_multiplier >= "
                f"{max(mults) * len(prompts.strategies):g}")
    if train.use_synthetic and train.synthetic_strategy is not None:
        if train.synthetic_strategy not in prompts.strategies:
            problems.append(f"train.synthetic_strategy={train.synthetic_strategy!r} is not "
                            f"generated ({made})")
    if train.use_synthetic and train.synthetic_multiplier is not None:
        limit = have if train.synthetic_strategy is not None else prompts.synthetic_multiplier
        if train.synthetic_multiplier > limit * (1 + 1e-9):
            problems.append(f"train.synthetic_multiplier={train.synthetic_multiplier:g} but "
                            f"only {limit:g}x is generated for it")
    if "captions" in prompts.strategies and (dis.captioner_model is None
                                             or dis.captions_per_class < 1):
        problems.append("prompts.strategies has 'captions' but the profile has no captioner "
                        "(disambiguate.captioner_model / captions_per_class)")
    problems += _captioner_problems(dis)
    if zoo.build == "none":
        local = _refs_into(cfgs, "zoo")
        if local:
            problems.append(f"zoo.build is 'none' but {', '.join(local)} name models the zoo "
                            "stage builds")
    if zoo.build == "mini":
        problems += _untrained_t2i(cfgs, zoo)
    return problems + _finetune_problems(cfgs) + _study_problems(cfgs)


def _study_problems(cfgs: Mapping[str, config.StageConfig]) -> list[str]:
    """The studies' settings: known names, and each generation that runs can be made."""
    from lib.study import spec

    study, tune, dis = cfgs["study"], cfgs["finetune"], cfgs["disambiguate"]
    try:
        spec.check(study)
    except config.ConfigError as err:
        return [str(err)]
    tuned = tune.path("finetune").resolve()
    problems = []
    for name, setting in _used_settings(study).items():
        local = setting.model and setting.model.startswith("./")
        model = paths.resolve(setting.model, tune.root).resolve() if local else None
        if model and tune.backend == "none" and model.is_relative_to(tuned):
            problems.append(f"study.settings.{name} samples the fine-tuned model "
                            f"({setting.model}) but finetune.backend is 'none'")
        if setting.strategy == "captions" and (dis.captioner_model is None
                                               or dis.captions_per_class < 1):
            problems.append(f"study.settings.{name} prompts with captions but the profile has "
                            "no captioner (disambiguate.captioner_model / captions_per_class)")
    return problems


def _used_settings(study: config.StudyConfig) -> dict[str, config.GenerationSetting]:
    """The generation settings some run of the profile reads (the others are not made)."""
    from lib.study import spec

    try:
        spec.check(study)
    except config.ConfigError:
        return {}  # reported by _study_problems
    return {name: s for name, s in study.settings.items()
            if spec.generation_multiplier(study, name) > 0}


def _untrained_t2i(cfgs: Mapping[str, config.StageConfig], zoo: config.ZooConfig) -> list[str]:
    """The keys naming a mini text-to-image folder whose denoiser ``zoo.t2i_archs`` lacks."""
    problems = []
    for arch, folder in T2I_FOLDERS.items():
        target = posixpath.normpath(f"{zoo.common.dirs.zoo}/{folder}")
        keys = [f"{section}.{key}" for section, cfg in cfgs.items()
                for key, value in cfg.as_params().items()
                if isinstance(value, str) and value.startswith("./")
                and posixpath.normpath(value) == target]
        keys += [f"study.settings.{name}" for name, s in _used_settings(cfgs["study"]).items()
                 if s.model and s.model.startswith("./")
                 and posixpath.normpath(s.model) == target]
        if keys and arch not in zoo.t2i_archs:
            problems.append(f"{', '.join(keys)} name{'s' * (len(keys) == 1)} {target}, which "
                            f"zoo.t2i_archs={list(zoo.t2i_archs)} does not train: add {arch!r}")
    return problems


def _finetune_problems(cfgs: Mapping[str, config.StageConfig]) -> list[str]:
    """The fine-tuned generator exists only with a fine-tuner, and the mini fine-tuner needs
    the mini model's UNet (it fine-tunes the UNet only, not the transformer)."""
    tune, zoo = cfgs["finetune"], cfgs["zoo"]
    if tune.backend == "none":
        users = _refs_into(cfgs, "finetune")
        verb = "names" if len(users) == 1 else "name"
        return [f"finetune.backend is 'none' (nothing is fine-tuned) but {', '.join(users)} "
                f"{verb} the fine-tuned model's folder"] if users else []
    if tune.backend == "mini" and "finetune.base_model" in _refs_into(cfgs, "zoo") \
            and zoo.build != "mini":
        return [f"finetune.backend is 'mini' but finetune.base_model={tune.base_model!r} is a "
                f"model of zoo.build={zoo.build!r}, not the mini world's"]
    folders = {arch: posixpath.normpath(f"{zoo.common.dirs.zoo}/{folder}")
               for arch, folder in T2I_FOLDERS.items()}
    other = [arch for arch, folder in folders.items()
             if arch != "unet" and posixpath.normpath(tune.base_model) == folder]
    if tune.backend == "mini" and other:
        return [f"finetune.backend is 'mini' but finetune.base_model={tune.base_model!r} is "
                f"the {other[0]!r} denoiser's pipeline; the mini fine-tuner fine-tunes the "
                f"UNet: name ./{folders['unet']}"]
    return []


def _captioner_problems(dis: config.DisambiguateConfig) -> list[str]:
    """The retrieval captioner needs its caption collection; no other captioner reads one."""
    if dis.captioner_model is None or dis.captions_per_class < 1:
        return []
    if dis.captioner_backend == "retrieval" and not dis.captioner_captions:
        return ["disambiguate.captioner_backend is 'retrieval' but captioner_captions (the "
                "caption collection it picks from) is not set"]
    if dis.captioner_backend != "retrieval" and dis.captioner_captions:
        return [f"disambiguate.captioner_captions is set but only the retrieval captioner reads "
                f"it (captioner_backend={dis.captioner_backend!r})"]
    return []


def _refs_into(cfgs: Mapping[str, config.StageConfig], stage: str) -> list[str]:
    """The model keys that point into ``stage``'s output folder (``common.dirs.<stage>``)."""
    refs = []
    for section, cfg in cfgs.items():
        folder = getattr(cfg.common.dirs, stage).strip("./")
        for key, value in cfg.as_params().items():
            if isinstance(value, str) and value.startswith("./") and \
                    value[2:].startswith(folder):
                refs.append(f"{section}.{key}")
    return refs


def check(params: Mapping[str, Any]) -> dict[str, config.StageConfig]:
    """Validate the selected profile and its consistency; raise :class:`config.ConfigError`
    listing every problem. Returns the sections' configurations."""
    cfgs = load_sections(params)
    problems = check_profile(cfgs)
    if problems:
        profile = cfgs["train"].common.profile
        raise config.ConfigError(f"profile {profile!r} is inconsistent:\n  - "
                                 + "\n  - ".join(problems))
    return cfgs


# -- the plan ------------------------------------------------------------------------------

def real_counts(cfgs: Mapping[str, config.StageConfig], costs: Mapping[str, Any],
                root: Path) -> tuple[int, int, str]:
    """(real train images, classes, where the numbers come from) of the profile's dataset."""
    cls = cfgs["classes"]
    folder = paths.resolve(cls.common.dirs.data, root) / cls.dataset_dir
    known = costs["datasets"].get(cls.subset or cls.dataset_dir)
    if folder.is_dir() and cls.subset is None:
        train, n_classes = _count_images(folder, cls.val_fraction)
        source = f"counted in {cls.common.dirs.data}/{cls.dataset_dir}"
    elif known:
        train, n_classes = known["train"], known["classes"]
        source = f"the known size of {cls.subset or cls.dataset_dir}"
    else:
        raise config.ConfigError(f"no data under {folder} and no known size for "
                                 f"{cls.dataset_dir!r} in {COSTS.name}")
    if cls.train_per_class is not None:
        train = min(train, cls.train_per_class * n_classes)
    return train, n_classes, source


def _count_images(folder: Path, val_fraction: float) -> tuple[int, int]:
    split = folder / "train"
    base = split if split.is_dir() else folder
    classes = [d for d in os.scandir(base) if d.is_dir()]
    total = sum(1 for d in classes for f in os.scandir(d.path)
                if os.path.splitext(f.name)[1] in _IMAGE_EXTS)
    return (total if split.is_dir() else round(total * (1 - val_fraction))), len(classes)


def make_plan(params: Mapping[str, Any], root: Path | None = None) -> dict[str, Any]:
    """The numbers ``dvc repro`` would produce work for, with a compute estimate."""
    root = root or paths.project_root()
    cfgs = check(params)
    costs = yaml.safe_load(COSTS.read_text(encoding="utf-8"))
    n_train, n_classes, counted = real_counts(cfgs, costs, root)
    prompts, gen, train, sw = cfgs["prompts"], cfgs["generate"], cfgs["train"], cfgs["sweep"]
    per_strategy = n_train * generated_per_strategy(prompts)
    images = round(n_train * prompts.synthetic_multiplier)
    runs = {s: len(grid.grid_points(sw, s)) for s in sw.sources}
    steps = train.steps if train.epochs is None else None
    work = {
        "zoo": _zoo_seconds(cfgs["zoo"], costs),
        "finetune": _finetune_seconds(cfgs["finetune"], costs),
        "generate": _per_item(costs["generation"], _model_key(cfgs, gen.model), images,
                              gen.steps),
        "train": _steps_seconds(costs["training"], train, steps),
        "sweep": _steps_seconds(costs["training"], train,
                                None if steps is None else steps * sum(runs.values())),
    }
    study = _study_work(cfgs, costs, n_train, n_classes)
    work |= study.pop("work")
    return {"profile": train.common.profile, "real_train_images": n_train,
            "classes": n_classes, "counted": counted, "strategies": list(prompts.strategies),
            "images_per_strategy": round(per_strategy), "images": images,
            "sweep_runs": runs, "steps_per_run": steps, **study, "work": work,
            "stages": _stages(sw.sources, cfgs["study"])}


def _study_work(cfgs: Mapping[str, config.StageConfig], costs: Mapping[str, Any],
                n_train: int, n_classes: int) -> dict[str, Any]:
    """The studies' generations (images per setting) and runs (count, optimizer steps,
    with the real images spread evenly over the classes), and their compute estimate."""
    import pandas as pd

    from lib.study import spec

    study, gen, train = cfgs["study"], cfgs["generate"], cfgs["train"]
    counts = pd.Series([n_train / n_classes] * n_classes)
    images = {name: round(n_train * spec.generation_multiplier(study, name))
              for name in (*study.settings, spec.RETRIEVAL)}
    images = {k: v for k, v in images.items() if v}
    runs = {w: spec.study_runs(study, w) for w in ("scaling", "diversify")}
    steps = {w: sum(spec.steps_for(study, train, r, counts) for r in rs)
             for w, rs in runs.items()}
    generated = sum(v for k, v in images.items() if k != spec.RETRIEVAL)
    return {"study_images": images, "study_runs": {w: len(rs) for w, rs in runs.items()},
            "study_steps": steps,
            "work": {"synth": _per_item(costs["generation"], _model_key(cfgs, gen.model),
                                        generated, gen.steps),
                     "study": _steps_seconds(costs["training"], train, sum(steps.values()))}}


def _stages(sources: tuple[str, ...], study: config.StudyConfig) -> list[str]:
    return ["zoo", "classes", "finetune", "disambiguate", "prompts", "generate", "train",
            *(f"sweep@{s}" for s in sources), "clip", "analyze",
            *(f"synth@{s}" for s in study.settings), "retrieval",
            "study@scaling", "study@diversify", "report"]


def _model_key(cfgs: Mapping[str, config.StageConfig], model: str) -> str:
    """``zoo:<build>`` for a model the zoo stage builds, else the model reference."""
    zoo = cfgs["zoo"]
    inside = model.startswith("./") and model[2:].startswith(zoo.common.dirs.zoo.strip("./"))
    return f"zoo:{zoo.build}" if inside else model


def _match(table: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The entry of ``table`` whose key is part of the model or architecture ``name``."""
    hits = [k for k in table if k in name]
    return table[max(hits, key=len)] if hits else None


def _per_item(table: Mapping[str, Any], model: str, n: int, steps: int) -> dict[str, Any]:
    entry = _match(table, model)
    if entry is None or entry.get("seconds_per_image") is None:
        return {"device": None, "seconds": None, "note": f"no measured throughput for {model}"}
    scale = steps / entry["steps"]
    return {"device": entry["device"], "seconds": n * entry["seconds_per_image"] * scale,
            "measured": entry["measured"]}


def _steps_seconds(table: Mapping[str, Any], train: config.TrainConfig,
                   steps: int | None) -> dict[str, Any]:
    entry = _match(table, train.arch)
    if steps is None:
        return {"device": None, "seconds": None, "note": "steps follow from epochs and data"}
    if entry is None or entry.get("seconds_per_step") is None:
        return {"device": None, "seconds": None,
                "note": f"no measured throughput for {train.arch}"}
    scale = train.batch_size / entry["batch_size"]
    return {"device": entry["device"], "seconds": steps * entry["seconds_per_step"] * scale,
            "measured": entry["measured"]}


def _zoo_seconds(zoo: config.ZooConfig, costs: Mapping[str, Any]) -> dict[str, Any]:
    """The zoo's measured cost, plus the transformer denoiser's steps when the mini zoo trains
    it (``zoo.t2i_archs``)."""
    entry = costs["zoo"].get(zoo.build)
    if not entry:
        return {"device": None, "seconds": 0.0}
    seconds, measured = entry["seconds"], entry["measured"]
    if zoo.build == "mini" and "dit" in zoo.t2i_archs:
        seconds += zoo.dit_steps * entry["dit_seconds_per_step"] * zoo.t2i_batch_size / 128
        measured += f"; transformer: {entry['dit_measured']}"
    return {"device": entry["device"], "seconds": seconds, "measured": measured}


def _finetune_seconds(tune: config.FinetuneConfig, costs: Mapping[str, Any]) -> dict[str, Any]:
    entry = costs["finetune"].get(tune.backend)
    if not entry:
        return {"device": None, "seconds": 0.0}
    scale = tune.batch_size / entry["batch_size"]
    return {"device": entry["device"], "measured": entry["measured"],
            "seconds": tune.steps * entry["seconds_per_step"] * scale + entry["seconds_fixed"]}


def format_plan(plan: Mapping[str, Any]) -> str:
    """The plan as a few lines of text."""
    lines = [
        f"profile {plan['profile']}: {plan['classes']} classes, {plan['real_train_images']:,} "
        f"real train images ({plan['counted']})",
        "stages: " + ", ".join(plan["stages"]),
        f"generate: {plan['images']:,} images, ~{plan['images_per_strategy']:,} per strategy "
        f"({', '.join(plan['strategies'])})",
        f"sweep: {sum(plan['sweep_runs'].values())} training runs ("
        + ", ".join(f"{s} {n}" for s, n in plan["sweep_runs"].items()) + ")"
        + (f", {plan['steps_per_run']} steps each" if plan["steps_per_run"] else ""),
        f"studies: {sum(plan['study_images'].values()):,} images in "
        f"{len(plan['study_images'])} settings ("
        + ", ".join(f"{s} {n:,}" for s, n in plan["study_images"].items()) + "); "
        + ", ".join(f"{w} {n} runs ({plan['study_steps'][w]:,} steps)"
                    for w, n in plan["study_runs"].items()),
        "estimated compute (measured throughputs, lib/resources/costs.yaml):",
    ]
    for stage, w in plan["work"].items():
        lines.append(f"  {stage:<9} {_duration(w)}")
    return "\n".join(lines)


def _duration(w: Mapping[str, Any]) -> str:
    if w.get("seconds") is None:
        return f"unknown: {w.get('note', 'not measured')}"
    s = w["seconds"]
    if w["device"] == "gpu":
        return f"{s / 3600:,.1f} GPU-hours ({w['measured']})"
    if w["device"] == "cpu":
        return f"{s / 60:,.1f} core-minutes ({w['measured']})"
    return "nothing to do"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.plan",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", help="plan this profile (default: common.profile)")
    parser.add_argument("--params", help="params.yaml to read (default: the project's)")
    args = parser.parse_args(argv)
    try:
        params = config.load_params(args.params)
        if args.profile:
            params = profile_params(params, args.profile)
        print(format_plan(make_plan(params)))
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
