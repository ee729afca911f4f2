"""One generation setting of the studies: its prompts and its images.

    python -m lib.study.synth --setting guidance-1.5

A setting (``study.settings``) is a prompt strategy with the chosen (or the raw) class
names, a model and a guidance scale; everything else is the profile's ``generate`` and
``prompts`` sections. Its folder ``<study>/synth/<setting>/`` holds ``prompts/prompts.parquet``
(the strategy's prompts, per class :func:`lib.study.spec.generation_multiplier` x the real
train count: the largest size any run takes; a smaller run takes a subset) and ``images/``,
a generation run as the ``generate`` stage writes one (shards, ``manifest.parquet``), made
by the same workers: resumable, repaired when damaged, the same bytes from 1 or N
processes. The noise of an image depends on its id only, so two settings with the same
prompts (guidance values, models) start from the same noise. A setting no run of the
profile uses gets an empty folder that says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from lib import config, paths, prompts, provenance
from lib.generation.launch import combine, run_workers
from lib.io import write_json, write_parquet
from lib.study.spec import RETRIEVAL, generation_multiplier

SUMMARY = "summary.json"
UNUSED = {"num_images": 0, "note": "no run of this profile uses this setting"}


def folder(cfg: config.StageConfig, setting: str) -> Path:
    """The folder of ``setting``'s generation."""
    return cfg.path("study") / "synth" / setting


def generate_config(gen: config.GenerateConfig, study: config.StudyConfig,
                    setting: str) -> config.GenerateConfig:
    """The ``generate`` configuration of ``setting``: its model and guidance, its folders."""
    s = study.settings[setting]
    base = Path(gen.common.dirs.study) / "synth" / setting
    dirs = dataclasses.replace(gen.common.dirs, prompts=str(base / "prompts"),
                               generate=str(base / "images"))
    return dataclasses.replace(
        gen, model=s.model or gen.model,
        guidance_scale=gen.guidance_scale if s.guidance is None else s.guidance,
        guidance_by_strategy={}, common=dataclasses.replace(gen.common, dirs=dirs))


def recorded_settings(params: dict[str, Any], setting: str) -> dict[str, Any]:
    """What the folder of ``setting`` records as its settings (and what a reader expects)."""
    study = _build(params, "study")
    if setting == RETRIEVAL:
        dis = _build(params, "disambiguate")
        return {"setting": RETRIEVAL, "multiplier": generation_multiplier(study, RETRIEVAL),
                "clip_model": dis.clip_model, "clip_pretrained": dis.clip_pretrained,
                "template": _build(params, "finetune").caption_template}
    gen = generate_config(_build(params, "generate"), study, setting)
    return {"setting": dataclasses.asdict(study.settings[setting]),
            "multiplier": generation_multiplier(study, setting),
            "generate": provenance.settings(gen),
            "prompts": provenance.settings(_build(params, "prompts"))}


def _build(params: dict[str, Any], section: str) -> Any:
    return config.build(section, config.stage_section(params, section))


def upstream(gen: config.GenerateConfig) -> list[str]:
    """The stages whose outputs a setting's generation reads: the class table, the prompt
    names and texts, and the folder its model lies in (the zoo or the fine-tuned model)."""
    names = ["classes", "disambiguate"]
    if gen.model.startswith("./"):  # a local folder: the stage that makes it is upstream
        model = paths.resolve(gen.model, gen.root).resolve()
        names += [stage for stage in ("zoo", "finetune")
                  if model.is_relative_to(gen.path(stage).resolve())]
    return names


def begin(cfg: config.StageConfig, params: dict[str, Any], out: Path,
          reads: list[str]) -> dict[str, str]:
    """Check the records of the stages ``reads`` (:func:`lib.provenance.check_folder`) and
    remove the record of ``out``, rewritten now; the digests of the records read."""
    inputs = {name: provenance.digest(provenance.check_folder(
        cfg, name, provenance.expected_settings(params, name))) for name in reads}
    (out / provenance.RECORD).unlink(missing_ok=True)
    return inputs


def prompt_table(gen: config.GenerateConfig, pr: config.PromptsConfig,
                 study: config.StudyConfig, setting: str) -> pd.DataFrame:
    """The prompts of ``setting`` (:func:`lib.prompts.build_prompt_manifest`, one strategy)."""
    s = study.settings[setting]
    names = pd.read_parquet(gen.path("disambiguate") / "prompt_names.parquet")
    texts = pd.read_parquet(gen.path("disambiguate") / "texts.parquet")
    if s.names == "raw":  # the ablation's naive row: the class names as the dataset has them
        names = names.assign(prompt_name=names["name"])
    images = pd.read_parquet(gen.path("classes") / "images.parquet")
    targets = prompts.targets_per_class(prompts.train_counts(images),
                                        generation_multiplier(study, setting))
    return prompts.build_prompt_manifest(
        names, targets, [s.strategy], seed=gen.common.seed, negative_prompt=pr.negative_prompt,
        texts=prompts.class_texts(names, texts), sd_ratio=pr.sd_ratio)


def run(setting: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate (or resume) ``setting``; its summary (counts; no timings: the file is a
    tracked output, and the same inputs must give the same bytes)."""
    from lib import plan

    params = params if params is not None else config.load_params()
    cfgs = plan.check(params)
    study, base_gen, pr = cfgs["study"], cfgs["generate"], cfgs["prompts"]
    if setting == RETRIEVAL:
        return run_retrieval(cfgs, params)
    if setting not in study.settings:
        raise config.ConfigError(f"--setting {setting!r} is not in study.settings "
                                 f"({', '.join(study.settings)})")
    gen = generate_config(base_gen, study, setting)
    out = folder(gen, setting)
    multiplier = generation_multiplier(study, setting)
    # an unused setting reads nothing more than the class table
    inputs = begin(gen, params, out, upstream(gen) if multiplier else ["classes"])
    summary: dict[str, Any] = {"setting": setting, "multiplier": multiplier}
    if multiplier == 0:
        summary |= UNUSED
    else:
        table = prompt_table(gen, pr, study, setting)
        write_parquet(gen.path("prompts") / "prompts.parquet", table)
        ranks = run_workers(gen)
        done = combine(ranks, 0.0)
        manifest_path = gen.path("generate") / "manifest.parquet"
        if not manifest_path.is_file():
            raise RuntimeError(f"the workers finished but {manifest_path.parent} has no "
                               "manifest.parquet: some ids are not done; rerun to resume")
        manifest = pd.read_parquet(manifest_path)
        dropped = pd.read_parquet(gen.path("generate") / "dropped.parquet")
        total = len(manifest) + len(dropped)
        if len(dropped) > gen.max_dropped_fraction * total:
            raise RuntimeError(
                f"{setting}: {len(dropped)} of {total} ids were dropped as blank or NSFW, more "
                f"than generate.max_dropped_fraction={gen.max_dropped_fraction}; see "
                f"{gen.path('generate') / 'dropped.parquet'}")
        print(f"[synth {setting}] {done['generated']} generated, {done['skipped']} already "
              f"done, {done['repaired_ids']} repaired; {done['images_per_s']} images/s",
              flush=True)
        summary |= {"num_prompts": len(table), "num_images": len(manifest),
                    "num_dropped": len(dropped),
                    "num_regenerated": int((manifest["retries"] > 0).sum())}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY, summary)
    provenance.finish(gen, f"synth/{setting}", inputs, out=out,
                      recorded=recorded_settings(params, setting))
    return summary


def run_retrieval(cfgs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The retrieval baseline's images (:func:`lib.retrieval.retrieve_set`): per class, the
    corpus images the profile's CLIP finds closest to the class's caption
    (``finetune.caption_template``), as many as the largest retrieval run takes; a smaller
    run takes a subset of them in the training code's order, as from a generation."""
    from lib.retrieval.sets import profile_set

    study, dis, tune = cfgs["study"], cfgs["disambiguate"], cfgs["finetune"]
    out = folder(dis, RETRIEVAL)
    multiplier = generation_multiplier(study, RETRIEVAL)
    inputs = begin(dis, params, out,
                   ["classes", "disambiguate", "zoo"] if multiplier else ["classes"])
    summary: dict[str, Any] = {"setting": RETRIEVAL, "multiplier": multiplier}
    if multiplier == 0:
        summary |= UNUSED
    else:
        found = profile_set(dis, tune.caption_template, out / "images", multiplier)
        summary |= {"num_images": found["images"], "precision": found["precision"],
                    "contested": found["contested"]}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SUMMARY, summary)
    provenance.finish(dis, f"synth/{RETRIEVAL}", inputs, out=out,
                      recorded=recorded_settings(params, RETRIEVAL))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.study.synth",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--setting", required=True,
                        help=f"a name of study.settings, or {RETRIEVAL!r} (the baseline)")
    args = parser.parse_args(argv)
    try:
        summary = run(args.setting)
    except (config.ConfigError, provenance.ProvenanceError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[synth {args.setting}] {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
