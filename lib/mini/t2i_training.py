"""The training loop of the mini text-to-image denoiser, shared by pretraining and fine-tuning.

:mod:`lib.mini.t2i_pretraining` trains a denoiser (the UNet or the transformer of
:mod:`lib.mini.denoisers`) from scratch on the glyph corpus and :mod:`lib.mini.t2i_finetuning`
continues a trained UNet on other captioned images; both run the same objective through
:func:`optimise`: DDPM with the model's prediction type (v by
default) under the :data:`lib.mini.t2i.SCHEDULE` noise schedule, images scaled to [-1, 1],
each caption replaced by the empty caption with probability ``cond_dropout`` (for
classifier-free guidance), AdamW with linear warm-up then cosine decay to a tenth of ``lr``.
Each step's batch (drawn with replacement), timesteps, noise and dropout come from a
generator seeded by ``seed_for(seed, stream, "step", step)``, so a CPU run reproduces bit for
bit and a run resumed from its checkpoint equals an uninterrupted one. The frozen MiniLM
reads each distinct caption once (:func:`caption_conditioning`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

from lib.io import replace_dir
from lib.mini.denoisers import denoise
from lib.mini.t2i import LEVELS, SCHEDULE, images_to_model
from lib.mini.text import CaptionFeatures, encode_captions, encode_text
from lib.nn.schedule import warmup_cosine_lr
from lib.seeding import seed_for

PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")
# Returned metrics left out of training.json: wall-clock timings and this machine's path.
NOT_RECORDED = ("steps_per_s", "train_seconds", "encode_seconds", "folder")


def check_images(images: np.ndarray, captions: Sequence[str]) -> np.ndarray:
    """``images`` as an array, checked: ``[N, H, W]`` square, levels 0..16, one caption each."""
    images = np.asarray(images)
    if images.ndim != 3 or len(images) != len(captions) or len(images) == 0:
        raise ValueError(
            f"need images [N, H, W] and N captions, got {images.shape} and {len(captions)}"
        )
    if images.min() < 0 or images.max() > LEVELS:
        raise ValueError(f"image values must lie in 0..{LEVELS}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square, got {images.shape[1:]}")
    return images


@dataclass(frozen=True)
class Conditioning:
    """MiniLM conditioning of a training set: ``rows`` ``[N]`` (each image's caption row),
    ``states`` ``[U, L, 384]`` and ``masks`` ``[U, L]`` of the distinct captions, and the
    empty caption's ``null_states`` ``[L, 384]`` (in the states' dtype) and ``null_mask``."""

    rows: torch.Tensor
    states: torch.Tensor
    masks: torch.Tensor
    null_states: torch.Tensor
    null_mask: torch.Tensor


def caption_conditioning(
    text_encoder: Any,
    tokenizer: Any,
    captions: Sequence[str],
    max_length: int,
    features: CaptionFeatures | None = None,
    progress: bool = False,
) -> Conditioning:
    """Encode the distinct ``captions`` (or take them from ``features``) and the empty one."""
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
    return Conditioning(rows=torch.as_tensor(rows), states=states, masks=masks,
                        null_states=null_states[0].to(states.dtype), null_mask=null_mask[0])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def optimise(
    model: torch.nn.Module,
    images: np.ndarray,
    cond: Conditioning,
    config: dict[str, Any],
    *,
    stream: str,
    ckpt: Path,
    checkpoint_every: int | None,
    stop_at: int | None,
    progress: bool,
    device: torch.device,
    desc: str,
    component: str = "unet",
) -> tuple[list[float], int, int, float]:
    """Train the denoiser ``model`` (a UNet or a transformer) in place on ``images`` (levels
    0..16) for ``config["steps"]`` steps.

    ``config`` holds ``steps``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup_steps``,
    ``cond_dropout``, ``seed`` and ``prediction_type``; it is stored in the checkpoint
    ``ckpt`` (every ``checkpoint_every`` steps) and a checkpoint of other settings is refused.
    ``stream`` names the random stream of the steps (``seed_for(seed, stream, "step", i)``);
    ``stop_at`` ends the call after that many steps. Returns (the losses of all steps so far,
    the first step of this call, the step after its last, its training seconds).
    ``component`` is the key of the model's weights in the checkpoint (its pipeline
    component's name: ``unet`` or ``transformer``).
    """
    from tqdm.auto import tqdm

    dev = device
    steps, batch_size, lr = config["steps"], config["batch_size"], config["lr"]
    seed, prediction_type = config["seed"], config["prediction_type"]
    cond_dropout, warmup_steps = config["cond_dropout"], config["warmup_steps"]
    model.to(dev).train()
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr,
                                  weight_decay=config["weight_decay"])

    x_all = images_to_model(images)
    rows_t, states, masks = cond.rows, cond.states, cond.masks
    null_states, null_mask = cond.null_states, cond.null_mask
    losses: list[float] = []
    start = 0
    if checkpoint_every and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        if state["config"] != config:
            raise ValueError(f"checkpoint {ckpt} was made with other settings; remove it")
        model.load_state_dict(state[component])
        optimizer.load_state_dict(state["optimizer"])
        losses, start = list(state["losses"]), int(state["step"])

    end = steps if stop_at is None else min(steps, int(stop_at))
    t1 = time.perf_counter()
    bar = tqdm(range(start, end), desc=desc, disable=not progress)
    for step in bar:
        g = torch.Generator("cpu").manual_seed(seed_for(seed, stream, "step", step))
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=g)
        noise = torch.randn((batch_size, *x_all.shape[1:]), generator=g)
        drop = torch.rand(batch_size, generator=g) < cond_dropout
        r = rows_t[idx]
        c = torch.where(drop[:, None, None], null_states, states[r]).float()
        c_mask = torch.where(drop[:, None], null_mask, masks[r])

        x0, noise, t = x_all[idx].to(dev), noise.to(dev), t.to(dev)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
        else:
            target = x0
        pred = denoise(model, xt, t, c.to(dev), c_mask.to(dev))
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
                    component: model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "losses": losses,
                },
            )
    bar.close()
    return losses, start, end, time.perf_counter() - t1


def loss_summary(losses: Sequence[float], done: int, seconds: float) -> dict[str, Any]:
    """``loss_start``/``final_loss`` (means over the first/last ``min(50, steps // 5)``
    steps), ``steps``, ``steps_per_s`` (of the ``done`` steps of this call) and
    ``train_seconds``."""
    window = max(1, min(50, len(losses) // 5))
    return {
        "loss_start": float(np.mean(losses[:window])) if losses else float("nan"),
        "final_loss": float(np.mean(losses[-window:])) if losses else float("nan"),
        "steps": len(losses),
        "steps_per_s": done / seconds if done else float("nan"),
        "train_seconds": seconds,
    }


def save_pipeline(pipe: Any, folder: Path, metrics: dict[str, Any],
                  losses: Sequence[float]) -> None:
    """Write ``pipe`` to ``folder`` atomically (next to it, then renamed) with
    ``training.json``: ``metrics`` less :data:`NOT_RECORDED`, and the losses."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp)
    record = {**{k: v for k, v in metrics.items() if k not in NOT_RECORDED},
              "losses": list(losses)}
    (tmp / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    replace_dir(tmp, folder)
