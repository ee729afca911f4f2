"""Which runs the two studies train, and how many images each generation setting needs.

docs/studies.md states the settings; ``params.yaml``'s ``study`` section holds them. A run
is a :class:`StudyRun`: real images only, synthetic images of one generation setting only,
or both (``kind``), at a size (real images per class, synthetic multiplier), with or without
the auxiliary norm, one architecture, one seed. Curves are lists of runs; one run can be a
point of several curves (the classname setting's 1x run is on the scale-up curve and in the
ablation), and is trained once.

Curves (names as the analysis reads them, :mod:`lib.analysis.claims`):

* scaling: ``real`` (real images per class ``real_sizes``), ``synthetic/<setting>`` (one per
  setting of the prompt, guidance and generator factors, at ``synthetic_multipliers``),
  ``mixed/<setting>`` (``mixed_real_sizes`` real + ``mixed_multiplier`` synthetic);
* diversify: ``scaleup/<setting>/aux<0|1>`` (all real + ``scaleup_multipliers``; 0 is the
  real-only run), ``ablation/<setting>`` (all real + ``ablation_multiplier``, norm off) and
  ``ablation/<last>_aux`` (norm on), ``arch/<arch>/aux<0|1>`` (``arch_setting`` at
  ``arch_multipliers``), ``retrieval`` (corpus images instead of generated ones, norm on).

The training length is one rule (:func:`steps_for`): ``epochs`` passes over the run's
images -- the real ones when there are real ones, which fill ``1 - synthetic_fraction`` of
each batch (an epoch is a pass over the real data, Diversify's convention) -- clamped to
``[min_steps, max_steps]``. The convergence check (``check/real``, ``check/<setting>``)
trains the largest size of the real and the class-name curves twice as long.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd

from lib import config
from lib.choices import StudyName

RETRIEVAL = "retrieval"  # the retrieval baseline's "setting": corpus images, not generated
KINDS = ("real", "synthetic", "mixed")


@dataclasses.dataclass(frozen=True)
class StudyRun:
    kind: str  # real | synthetic | mixed
    setting: str  # generation setting ("" for real-only runs)
    real_per_class: int  # cap on real images per class; 0: all (real and mixed runs)
    multiplier: float  # synthetic per class = multiplier x the class's real train count
    aux_norm: bool
    arch: str
    seed: int
    curves: tuple[str, ...] = ()
    length: int = 1  # x the rule's steps (2: the convergence check)

    @property
    def name(self) -> str:
        """The run's folder: every setting that makes it differ from another run."""
        data = {"real": f"real-r{self.real_per_class}",
                "synthetic": f"syn-{self.setting}-m{self.multiplier:g}",
                "mixed": f"mix-{self.setting}-r{self.real_per_class}-m{self.multiplier:g}"}
        longer = f"-x{self.length}" if self.length != 1 else ""
        return f"{data[self.kind]}-aux{int(self.aux_norm)}-{self.arch}-s{self.seed}{longer}"

    def record(self) -> dict[str, Any]:
        """The values stored beside the run's results."""
        return {"kind": self.kind, "setting": self.setting,
                "real_per_class": self.real_per_class, "multiplier": self.multiplier,
                "aux_norm": self.aux_norm, "arch": self.arch, "seed": self.seed,
                "length": self.length, "curves": ";".join(self.curves)}


def sizes(study: config.StudyConfig) -> dict[str, tuple[float, ...]]:
    """The multipliers that run: the profile's, or the full ones with ``large``."""
    if study.large:
        return {"synthetic": study.large_synthetic_multipliers,
                "scaleup": study.large_scaleup_multipliers,
                "arch": study.large_arch_multipliers}
    return {"synthetic": study.synthetic_multipliers, "scaleup": study.scaleup_multipliers,
            "arch": study.arch_multipliers}


def check(study: config.StudyConfig) -> None:
    """Refuse a study section whose lists name unknown settings or hold unusable sizes."""
    named = {
        "prompt_settings": study.prompt_settings, "guidance_settings": study.guidance_settings,
        "generator_settings": study.generator_settings, "mixed_setting": (study.mixed_setting,),
        "scaleup_settings": study.scaleup_settings, "ablation_settings": study.ablation_settings,
        "arch_setting": (study.arch_setting,),
    }
    for key, names in named.items():
        unknown = [n for n in names if n not in study.settings]
        if unknown:
            raise config.ConfigError(
                f"[study] {key} names {', '.join(unknown)}, not in study.settings "
                f"({', '.join(study.settings)})")
    if RETRIEVAL in study.settings:
        raise config.ConfigError(f"[study] {RETRIEVAL!r} is the retrieval baseline's name; "
                                 "give the setting another one")
    for key in ("real_sizes", "mixed_real_sizes"):
        if any(v < 0 for v in getattr(study, key)):
            raise config.ConfigError(f"[study] {key} must be >= 0 (0: all real images)")
    for key, values in sizes(study).items():
        if any(v < 0 for v in values):
            raise config.ConfigError(f"[study] the {key} multipliers must be >= 0")
    if not study.seeds:
        raise config.ConfigError("[study] seeds is empty")
    if not study.archs:
        raise config.ConfigError("[study] archs is empty")
    if not 1 <= study.min_steps <= study.max_steps:
        raise config.ConfigError("[study] need 1 <= min_steps <= max_steps")
    if study.epochs <= 0 or study.workers < 1 or study.group_size < 1:
        raise config.ConfigError("[study] epochs, workers and group_size must be positive")


def study_runs(study: config.StudyConfig, which: StudyName) -> list[StudyRun]:
    """Every run of ``which`` ("scaling" or "diversify"), each once, with its curves."""
    check(study)
    arch, seeds, mult = study.archs[0], study.seeds, sizes(study)
    found: dict[str, StudyRun] = {}

    def add(curve: str, kind: str, setting: str, real: int, m: float, aux: bool,
            arch: str = arch, length: int = 1) -> None:
        for seed in seeds:
            if kind == "mixed" and m == 0:  # the real-only point of a curve
                kind_, setting_, aux_ = "real", "", False
            else:
                kind_, setting_, aux_ = kind, setting, aux
            run = StudyRun(kind_, setting_, real, float(m), aux_, arch, int(seed),
                           length=length)
            if kind_ == "real":
                run = dataclasses.replace(run, multiplier=0.0)
            old = found.get(run.name, run)
            found[run.name] = dataclasses.replace(old, curves=(*old.curves, curve))

    if which == "scaling":
        for r in study.real_sizes:
            add("real", "real", "", r, 0, False)
        factors = (*study.prompt_settings, *study.guidance_settings, *study.generator_settings)
        for s in dict.fromkeys(factors):
            for m in mult["synthetic"]:
                add(f"synthetic/{s}", "synthetic", s, 0, m, False)
        for r in study.mixed_real_sizes:
            add(f"mixed/{study.mixed_setting}", "mixed", study.mixed_setting, r,
                study.mixed_multiplier, False)
            add("real", "real", "", r, 0, False)
        # The convergence check: the largest size of the real and the class-name curves
        # trained twice as long (docs/studies.md, "Training length").
        if study.real_sizes:
            largest = 0 if 0 in study.real_sizes else max(study.real_sizes)
            add("check/real", "real", "", largest, 0, False, length=2)
        if mult["synthetic"]:
            add(f"check/{study.mixed_setting}", "synthetic", study.mixed_setting, 0,
                max(mult["synthetic"]), False, length=2)
    elif which == "diversify":
        for s in study.scaleup_settings:
            for aux in (True, False):
                for m in mult["scaleup"]:
                    add(f"scaleup/{s}/aux{int(aux)}", "mixed", s, 0, m, aux)
        for s in study.ablation_settings:
            add(f"ablation/{s}", "mixed", s, 0, study.ablation_multiplier, False)
        last = study.ablation_settings[-1] if study.ablation_settings else None
        if last:
            add(f"ablation/{last}_aux", "mixed", last, 0, study.ablation_multiplier, True)
        for a in study.archs:
            for aux in (True, False):
                for m in mult["arch"]:
                    add(f"arch/{a}/aux{int(aux)}", "mixed", study.arch_setting, 0, m, aux, a)
        if study.retrieval:
            for m in mult["scaleup"]:
                add(RETRIEVAL, "mixed", RETRIEVAL, 0, m, True)
    else:
        raise config.ConfigError(f"unknown study {which!r}; valid: scaling, diversify")
    return list(found.values())


def generation_multiplier(study: config.StudyConfig, setting: str) -> float:
    """The largest synthetic multiplier any run of either study takes from ``setting``
    (0: no run uses it): its one generation is this size, every smaller run a subset."""
    runs = [r for which in ("scaling", "diversify") for r in study_runs(study, which)]
    return max((r.multiplier for r in runs if r.setting == setting), default=0.0)


def steps_for(study: config.StudyConfig, train: config.TrainConfig, run: StudyRun,
              counts: pd.Series) -> int:
    """The training length rule (module docstring) for ``run``; ``counts``: the real train
    images per class."""
    real = int(counts.clip(upper=run.real_per_class).sum()) if run.real_per_class else int(
        counts.sum())
    if run.kind == "synthetic":
        n = int((counts * run.multiplier).round().sum())
        per_step = train.batch_size
    elif run.kind == "real":
        n, per_step = real, train.batch_size
    else:
        n, per_step = real, train.batch_size * (1.0 - train.synthetic_fraction)
    steps = math.ceil(study.epochs * n / per_step)
    return int(min(max(steps, study.min_steps), study.max_steps)) * run.length
