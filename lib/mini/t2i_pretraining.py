"""Pretraining the mini text-to-image model: its denoiser trained from scratch on the corpus.

The mini world's stand-in for a generator pretrained on web data: :func:`train_denoiser`
trains the denoiser of :class:`lib.mini.t2i.MiniT2IPipeline`, a UNet or a transformer
(:mod:`lib.mini.denoisers`; :func:`train_mini_t2i`: the UNet), on the captioned glyph corpus
(DDPM objective with v-prediction on the cosine schedule, caption dropout for guidance,
AdamW, warm-up then cosine learning rate; the caption states are computed once per unique
caption), deterministically given ``seed``: the model initialisation and each step's batch,
noise, timesteps and dropout are drawn from generators seeded by
:func:`lib.seeding.seed_for`, so a CPU run reproduces bit for bit and a run resumed from a
checkpoint equals an uninterrupted one. It saves the whole pipeline.

Measured on this project's 2 CPU cores while other jobs also ran (load average 2.5-6;
torch 2.14 CPU; default UNet: block widths 32/64, one layer per block, cross-attention at
the 4x4 level only, pooled text embedding, 1.23 M parameters; 16,000 corpus samples):

* training, batch 128: 1.6-2.0 steps/s with one torch thread (1,000 steps in 9.5 min); two
  threads were 4-8x *slower* under that load (0.4-0.6 steps/s), hence ``num_threads``. On an
  otherwise idle machine a short benchmark gave 4-5 steps/s with two threads (1,000 steps
  in about 4 min).
* caption states: 60-150 unique captions/s (16,000 captions: 110-260 s), once per run; on
  an idle machine with two threads ~300 captions/s (54 s), shared with the mini CLIP by
  the ``zoo`` stage (:mod:`lib.mini.text`).
* quality after 1,000 steps (final v-loss 0.28): digits and letters are readable at guidance
  2-4 ("the digit 3", "the capital letter S", "the digit 5", "a bold digit 8"), and context
  words act ("inverted" brightens the background, "in the top left corner" moves the glyph,
  at guidance 4). At guidance 1 the text has little effect (the same seed gives nearly the
  same glyph for every prompt), rare glyphs ("the small letter a", "a dollar sign") are not
  yet clean and guidance 4 adds some speckle: more steps would help.
* the transformer (:class:`~lib.mini.denoisers.DiTSpec` defaults, 1.27 M parameters) with
  the same settings (2026-11-27, one thread, load average 1.3-7): 1,000 steps in 406 s (1.8
  to 2.9 steps/s as the load varied; taking turns step by step with the UNet, 3.6 vs 3.2
  steps/s), final v-loss 0.30. Its learning rate, 0.002 as the UNet's, had the lower loss
  at step 300 of 1,000 than 0.001 (0.352 vs 0.365). It follows the digit word much less
  than the UNet (``benchmarks/README.md``, "Mini generators").
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.mini.denoisers import DenoiserSpec, UNetSpec
from lib.mini.t2i import SCHEDULE, build_pipeline
from lib.mini.t2i_training import (
    PREDICTION_TYPES,
    caption_conditioning,
    check_images,
    loss_summary,
    optimise,
    save_pipeline,
)
from lib.mini.text import MAX_LENGTH, CaptionFeatures, load_minilm
from lib.seeding import seed_for, seeded, torch_threads


def train_mini_t2i(
    images: np.ndarray,
    captions: Sequence[str],
    folder: str | os.PathLike,
    *,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 50,
    cond_dropout: float = 0.1,
    seed: int = 0,
    prediction_type: str = "v_prediction",
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    attention_heads: int = 8,
    norm_num_groups: int = 8,
    pooled_text: bool = True,
    max_length: int = MAX_LENGTH,
    text_encoder_path: str | os.PathLike | None = None,
    caption_features: CaptionFeatures | None = None,
    checkpoint_every: int | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    device: str = "cpu",
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Train the mini text-to-image model with a UNet denoiser (:class:`UNetSpec` of
    ``block_out_channels`` .. ``pooled_text``); the rest as :func:`train_denoiser`."""
    unet = UNetSpec(tuple(block_out_channels), layers_per_block, attention_heads,
                    norm_num_groups, pooled_text)
    return train_denoiser(
        images, captions, folder, unet, steps=steps, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, cond_dropout=cond_dropout,
        seed=seed, prediction_type=prediction_type, max_length=max_length,
        text_encoder_path=text_encoder_path, caption_features=caption_features,
        checkpoint_every=checkpoint_every, stop_at=stop_at, progress=progress, device=device,
        num_threads=num_threads)


def train_denoiser(
    images: np.ndarray,
    captions: Sequence[str],
    folder: str | os.PathLike,
    denoiser: DenoiserSpec,
    *,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 50,
    cond_dropout: float = 0.1,
    seed: int = 0,
    prediction_type: str = "v_prediction",
    max_length: int = MAX_LENGTH,
    text_encoder_path: str | os.PathLike | None = None,
    caption_features: CaptionFeatures | None = None,
    checkpoint_every: int | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    device: str = "cpu",
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Train the mini text-to-image model with ``denoiser`` (a :class:`UNetSpec` or a
    :class:`DiTSpec`) on ``images`` (uint8 ``[N, H, W]``, 0..16).

    DDPM objective: ``prediction_type`` (v, epsilon or the clean sample) under the
    :data:`SCHEDULE` noise schedule (the target is the model's prediction type), images
    scaled to [-1, 1]; each caption is replaced by the empty caption with probability
    ``cond_dropout`` (for classifier-free guidance). AdamW with ``warmup_steps`` of linear
    warm-up, then cosine decay to a tenth of ``lr`` (the loop: :func:`lib.mini.t2i_training.
    optimise`). The model initialisation and each step's batch (drawn with replacement),
    timesteps, noise and dropout come from generators seeded by ``seed_for(seed, ...)``: the
    same seed gives the same weights bit for bit on CPU, and two denoisers trained with one
    seed see the same batches, noise, timesteps and dropout.

    The pipeline (the denoiser and the DDIM scheduler; MiniLM and its tokenizer are named, not
    copied) is saved to ``folder`` atomically (written next to it, then renamed), with the
    losses and the metrics in ``training.json``, less the timings and the folder (the same run
    writes the same bytes, wherever it runs: the timings are in the returned metrics only).
    With ``checkpoint_every``, the training state (the denoiser's weights under its
    component's name, ``unet`` or ``transformer``) is saved to ``<folder>.ckpt`` every that
    many steps and a later call with the same arguments resumes from it (the result equals an
    uninterrupted run); ``stop_at`` ends the call after that many steps, leaving the
    checkpoint and not writing ``folder`` (for time-boxed jobs and tests).
    ``caption_features`` (:func:`lib.mini.text.encode_captions` of these captions, e.g.
    shared with the mini CLIP) skips encoding the captions here. ``num_threads``
    sets torch's CPU threads for the call (restored afterwards): on a machine whose cores
    other jobs also use, one thread can be many times faster than two that wait on each other.

    Returns the metrics: ``loss_start``/``final_loss`` (means over the first/last
    ``min(50, steps // 5)`` steps), ``steps``, ``steps_per_s``, ``train_seconds``,
    ``encode_seconds`` (loading MiniLM and, without ``caption_features``, encoding the
    captions), ``params``, ``unique_captions``, ``config`` (the denoiser's settings among the
    training's; a UNet's under the keys its records have always had) and ``folder``.
    """
    images = check_images(images, captions)
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}")
    config = {
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "warmup_steps": int(warmup_steps),
        "cond_dropout": float(cond_dropout),
        "seed": int(seed),
        "prediction_type": prediction_type,
        **denoiser.config(),
        "max_length": int(max_length),
        "n_images": len(images),
        "schedule": SCHEDULE,
    }
    with torch_threads(num_threads):
        return _train(images, captions, Path(folder), config, denoiser,
                      features=caption_features,
                      text_encoder_path=text_encoder_path, checkpoint_every=checkpoint_every,
                      stop_at=stop_at, progress=progress, device=torch.device(device))


def _train(
    images: np.ndarray,
    captions: Sequence[str],
    folder: Path,
    config: dict[str, Any],
    denoiser: DenoiserSpec,
    *,
    features: CaptionFeatures | None,
    text_encoder_path: str | os.PathLike | None,
    checkpoint_every: int | None,
    stop_at: int | None,
    progress: bool,
    device: torch.device,
) -> dict[str, Any]:
    """The body of :func:`train_denoiser` (arguments checked, threads set)."""
    dev = device
    max_length, prediction_type = config["max_length"], config["prediction_type"]

    t0 = time.perf_counter()
    text_encoder, tokenizer = load_minilm(text_encoder_path)
    text_encoder.to(dev)
    cond = caption_conditioning(text_encoder, tokenizer, captions, max_length, features,
                                progress=progress)
    encode_seconds = time.perf_counter() - t0
    text_encoder.to("cpu")

    with seeded(seed_for(config["seed"], "mini-t2i", "init")):
        model = denoiser.build(cross_attention_dim=text_encoder.config.hidden_size,
                               sample_size=images.shape[1])
    ckpt = folder.with_name(folder.name + ".ckpt")
    losses, start, end, train_seconds = optimise(
        model, images, cond, config, stream="mini-t2i", ckpt=ckpt,
        checkpoint_every=checkpoint_every, stop_at=stop_at, progress=progress, device=dev,
        desc=f"train mini t2i ({denoiser.name})", component=denoiser.component)
    metrics: dict[str, Any] = {
        **loss_summary(losses, end - start, train_seconds),
        "encode_seconds": encode_seconds,
        "params": sum(p.numel() for p in model.parameters()),
        "unique_captions": int(cond.states.shape[0]),
        "config": config,
        "folder": str(folder),
    }
    if end < config["steps"]:
        return metrics

    model.eval().requires_grad_(False)
    pipe = build_pipeline(model.to("cpu"), text_encoder, tokenizer, max_length, prediction_type)
    save_pipeline(pipe, folder, metrics, losses)
    ckpt.unlink(missing_ok=True)
    return metrics
