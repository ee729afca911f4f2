"""Fine-tuning the mini text-to-image model on captioned images: the Diversify study's baseline.

"Diversify, Don't Fine-Tune" (Yu et al.) compares diversified prompts to an off-the-shelf
generator with a generator fine-tuned on the real training images. :func:`finetune_mini_t2i`
is that baseline in the mini world: it continues the UNet of a saved
:class:`lib.mini.t2i.MiniT2IPipeline` (the ``zoo`` stage's, pretrained on the glyph corpus)
on other captioned images, e.g. the real training digits captioned "the digit three", with
the pretraining loop (:func:`lib.mini.t2i_training.optimise`: the same objective and
prediction type, caption dropout for guidance, AdamW with warm-up then cosine decay) and a
random stream of its own. The frozen MiniLM text encoder, the tokenizer and the sampling
scheduler are the base folder's, unchanged; only the UNet trains. The result is a complete
pipeline folder that the text-to-image backend ``mini`` serves like the base.

Deterministic given ``seed`` (and resumable from its checkpoint, bit for bit on CPU) like
pretraining; the checkpoint and ``training.json`` name the base UNet and the data by their
sha256, never by a path.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from lib.mini.t2i import SCHEDULE, MiniT2IPipeline
from lib.mini.t2i_training import (
    caption_conditioning,
    check_images,
    loss_summary,
    optimise,
    save_pipeline,
)
from lib.seeding import seeded, torch_threads

#: The random stream of the fine-tuning steps (pretraining's is "mini-t2i").
STREAM = "mini-t2i-finetune"


def unet_digest(unet: torch.nn.Module) -> str:
    """sha256 of a UNet's weights (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\x1f{t.dtype}\x1f{tuple(t.shape)}\x1f".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_digest(images: np.ndarray, captions: Sequence[str]) -> str:
    """sha256 of the training images (shape and bytes) and their captions, in order."""
    h = hashlib.sha256(f"{images.shape}\x1f{images.dtype}\x1f".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update("\x1e".join(captions).encode())
    return h.hexdigest()


def load_base(base: str | os.PathLike) -> MiniT2IPipeline:
    """The mini pipeline in folder ``base`` (a UNet's: a transformer's is refused), rebuilt
    from its components so that the folder it saves names no path: diffusers records where a
    pipeline and its UNet were loaded from (``_name_or_path``), which would put this
    machine's path into the outputs."""
    pipe = MiniT2IPipeline.from_pretrained(str(base))
    if pipe.unet is None:
        raise ValueError(f"{base} is a mini pipeline with a {type(pipe.denoiser).__name__} "
                         "denoiser; the mini fine-tuner fine-tunes a UNet: give the folder of "
                         "the zoo's UNet pipeline (zoo.t2i_archs 'unet': outputs/zoo/t2i)")
    settings = {k: v for k, v in pipe.unet.config.items() if not k.startswith("_")}
    with seeded(0):  # initial weights, replaced at once: leave torch's global RNG as it was
        unet = UNet2DConditionModel.from_config(settings)
    unet.load_state_dict(pipe.unet.state_dict())
    return MiniT2IPipeline(unet=unet, scheduler=pipe.scheduler, text_encoder=pipe.text_encoder,
                           tokenizer=pipe.tokenizer, max_length=pipe.config.max_length)


def finetune_mini_t2i(
    base: str | os.PathLike,
    images: np.ndarray,
    captions: Sequence[str],
    folder: str | os.PathLike,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 5e-4,
    weight_decay: float = 0.01,
    warmup_steps: int = 30,
    cond_dropout: float = 0.1,
    seed: int = 0,
    checkpoint_every: int | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    device: str = "cpu",
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Fine-tune the mini pipeline in folder ``base`` on ``images`` (uint8 ``[N, H, W]``,
    levels 0..16, the UNet's size) captioned by ``captions``; save the pipeline to ``folder``.

    The settings are pretraining's (:func:`lib.mini.t2i_pretraining.train_mini_t2i`), the
    defaults sized for a few hundred images: a smaller ``lr`` than pretraining's 2e-3, since
    the UNet starts trained. ``checkpoint_every``/``stop_at``/``num_threads`` as there (the
    checkpoint is ``<folder>.ckpt``; a call with other settings, base or data refuses it).

    Returns the metrics: ``loss_start``/``final_loss``, ``steps``, ``steps_per_s``,
    ``train_seconds``, ``encode_seconds``, ``params``, ``unique_captions``, ``config`` and
    ``folder``; ``training.json`` in the folder holds them less the timings and the folder,
    with every step's loss.
    """
    images = check_images(images, captions)
    folder = Path(folder)
    with torch_threads(num_threads):
        pipe = load_base(base)
        size = pipe.unet.config.sample_size
        if images.shape[1] != size:
            raise ValueError(f"the images are {images.shape[1]}x{images.shape[2]} but the mini "
                             f"model in {base} makes {size}x{size} images: resize them first")
        config = {
            "steps": int(steps),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "warmup_steps": int(warmup_steps),
            "cond_dropout": float(cond_dropout),
            "seed": int(seed),
            "prediction_type": pipe.scheduler.config.prediction_type,
            "max_length": int(pipe.config.max_length),
            "n_images": len(images),
            "schedule": SCHEDULE,
            "base_unet_sha256": unet_digest(pipe.unet),
            "data_sha256": data_digest(images, captions),
        }
        return _finetune(pipe, images, captions, folder, config, checkpoint_every=checkpoint_every,
                         stop_at=stop_at, progress=progress, device=torch.device(device))


def _finetune(
    pipe: MiniT2IPipeline,
    images: np.ndarray,
    captions: Sequence[str],
    folder: Path,
    config: dict[str, Any],
    *,
    checkpoint_every: int | None,
    stop_at: int | None,
    progress: bool,
    device: torch.device,
) -> dict[str, Any]:
    """The body of :func:`finetune_mini_t2i` (arguments checked, base loaded, threads set)."""
    t0 = time.perf_counter()
    text_encoder, tokenizer, unet = pipe.text_encoder, pipe.tokenizer, pipe.unet
    text_encoder.to(device)
    # A copy: a fast tokenizer keeps its last padding in the tokenizer.json it saves.
    cond = caption_conditioning(text_encoder, copy.deepcopy(tokenizer), captions,
                                config["max_length"], progress=progress)
    encode_seconds = time.perf_counter() - t0
    text_encoder.to("cpu")

    unet.requires_grad_(True)
    ckpt = folder.with_name(folder.name + ".ckpt")
    losses, start, end, train_seconds = optimise(
        unet, images, cond, config, stream=STREAM, ckpt=ckpt,
        checkpoint_every=checkpoint_every, stop_at=stop_at, progress=progress, device=device,
        desc="fine-tune mini t2i")
    metrics: dict[str, Any] = {
        **loss_summary(losses, end - start, train_seconds),
        "encode_seconds": encode_seconds,
        "params": sum(p.numel() for p in unet.parameters()),
        "unique_captions": int(cond.states.shape[0]),
        "config": config,
        "folder": str(folder),
    }
    if end < config["steps"]:
        return metrics

    unet.eval().requires_grad_(False)
    save_pipeline(pipe.to("cpu"), folder, metrics, losses)
    ckpt.unlink(missing_ok=True)
    return metrics
