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

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

from lib.io import replace_dir
from lib.mini.denoisers import DenoiserSpec, UNetSpec, denoise
from lib.mini.t2i import LEVELS, SCHEDULE, build_pipeline, images_to_model
from lib.mini.text import (
    MAX_LENGTH,
    CaptionFeatures,
    encode_captions,
    encode_text,
    load_minilm,
)
from lib.nn.schedule import warmup_cosine_lr
from lib.seeding import seed_for, seeded, torch_threads

PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")
# Returned metrics left out of training.json: wall-clock timings and this machine's path.
_NOT_RECORDED = ("steps_per_s", "train_seconds", "encode_seconds", "folder")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    warm-up, then cosine decay to a tenth of ``lr``. The model initialisation and each step's
    batch (drawn with replacement), timesteps, noise and dropout come from generators seeded
    by ``seed_for(seed, ...)``: the same seed gives the same weights bit for bit on CPU, and
    two denoisers trained with one seed see the same batches, noise, timesteps and dropout.

    The pipeline (the denoiser and the DDIM scheduler; MiniLM and its tokenizer are named, not
    copied) is saved to ``folder`` atomically (written next to it, then renamed), with the
    losses and the metrics in ``training.json``, less the timings and the folder (the same run
    writes the same bytes, wherever it runs: the timings are in the returned metrics only).
    With ``checkpoint_every``, the training state is saved to ``<folder>.ckpt`` every that
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
    images = np.asarray(images)
    if images.ndim != 3 or len(images) != len(captions) or len(images) == 0:
        raise ValueError(
            f"need images [N, H, W] and N captions, got {images.shape} and {len(captions)}"
        )
    if images.min() < 0 or images.max() > LEVELS:
        raise ValueError(f"image values must lie in 0..{LEVELS}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square, got {images.shape[1:]}")
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
    from tqdm.auto import tqdm

    dev = device
    steps, batch_size, lr = config["steps"], config["batch_size"], config["lr"]
    seed, prediction_type = config["seed"], config["prediction_type"]
    cond_dropout, warmup_steps = config["cond_dropout"], config["warmup_steps"]
    max_length = config["max_length"]

    t0 = time.perf_counter()
    text_encoder, tokenizer = load_minilm(text_encoder_path)
    text_encoder.to(dev)
    if features is None:
        features = encode_captions(
            text_encoder, tokenizer, captions, max_length, progress=progress
        )
        rows = features.index
    elif features.max_length != max_length:
        raise ValueError(f"caption features were encoded with max_length "
                         f"{features.max_length}, training uses {max_length}")
    else:
        rows = features.rows(captions)
    states, masks = features.states, features.mask
    null_states, null_mask = encode_text(text_encoder, tokenizer, [""], states.shape[1])
    encode_seconds = time.perf_counter() - t0
    text_encoder.to("cpu")

    with seeded(seed_for(seed, "mini-t2i", "init")):
        model = denoiser.build(cross_attention_dim=text_encoder.config.hidden_size,
                               sample_size=images.shape[1])
    model.to(dev).train()
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr,
                                  weight_decay=config["weight_decay"])

    x_all = images_to_model(images)
    rows_t = torch.as_tensor(rows)
    null_states = null_states[0].to(states.dtype)
    null_mask = null_mask[0]
    losses: list[float] = []
    start = 0
    ckpt = folder.with_name(folder.name + ".ckpt")
    if checkpoint_every and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        if state["config"] != config:
            raise ValueError(f"checkpoint {ckpt} was made with other settings; remove it")
        model.load_state_dict(state[denoiser.component])
        optimizer.load_state_dict(state["optimizer"])
        losses, start = list(state["losses"]), int(state["step"])

    end = steps if stop_at is None else min(steps, int(stop_at))
    t1 = time.perf_counter()
    bar = tqdm(range(start, end), desc=f"train mini t2i ({denoiser.name})",
               disable=not progress)
    for step in bar:
        g = torch.Generator("cpu").manual_seed(seed_for(seed, "mini-t2i", "step", step))
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=g)
        noise = torch.randn((batch_size, *x_all.shape[1:]), generator=g)
        drop = torch.rand(batch_size, generator=g) < cond_dropout
        r = rows_t[idx]
        cond = torch.where(drop[:, None, None], null_states, states[r]).float()
        cond_mask = torch.where(drop[:, None], null_mask, masks[r])

        x0, noise, t = x_all[idx].to(dev), noise.to(dev), t.to(dev)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
        else:
            target = x0
        pred = denoise(model, xt, t, cond.to(dev), cond_mask.to(dev))
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(step, steps, lr, warmup_steps, final_frac=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 10 == 0 or step + 1 == end:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            _save_checkpoint(
                ckpt,
                {
                    "config": config,
                    "step": step + 1,
                    denoiser.component: model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "losses": losses,
                },
            )
    bar.close()
    train_seconds = time.perf_counter() - t1
    done = end - start
    window = max(1, min(50, len(losses) // 5))
    metrics: dict[str, Any] = {
        "loss_start": float(np.mean(losses[:window])) if losses else float("nan"),
        "final_loss": float(np.mean(losses[-window:])) if losses else float("nan"),
        "steps": len(losses),
        "steps_per_s": done / train_seconds if done else float("nan"),
        "train_seconds": train_seconds,
        "encode_seconds": encode_seconds,
        "params": sum(p.numel() for p in model.parameters()),
        "unique_captions": int(states.shape[0]),
        "config": config,
        "folder": str(folder),
    }
    if end < steps:
        return metrics

    model.eval().requires_grad_(False)
    pipe = build_pipeline(model.to("cpu"), text_encoder, tokenizer, max_length, prediction_type)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp)
    record = {**{k: v for k, v in metrics.items() if k not in _NOT_RECORDED}, "losses": losses}
    (tmp / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    replace_dir(tmp, folder)
    ckpt.unlink(missing_ok=True)
    return metrics
