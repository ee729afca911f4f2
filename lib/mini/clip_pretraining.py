"""Pretraining the mini CLIP: contrastive training from scratch on the rendered glyph corpus.

The mini world's stand-in for a CLIP pretrained on web data (the model itself:
:mod:`lib.mini.clip`; training CLIP on the study's image-text pairs is :mod:`lib.clip_train`).

Training (:func:`train_mini_clip`) uses ``open_clip.loss.ClipLoss`` with a learned logit scale
and AdamW (warm-up, cosine decay). The text transformer is frozen, so the pooled MiniLM output
of every distinct caption is computed once (:func:`lib.clip_train.pooled_text_features`, or
taken from the features the ``zoo`` stage computes once for both mini models,
:mod:`lib.mini.text`) and each step runs only the text projection; inference goes through the
normal ``encode_image`` / ``encode_text``. Images are preprocessed once by the very eval
transform the saved model uses (:func:`lib.mini.clip.preprocess_images`). Training runs on one
torch thread by default: on the 2 shared cores it is 4x faster than two threads for these small
matrices, and the bytes do not depend on the core count. Given ``seed`` the saved weights are
bit-for-bit reproducible (initial weights, batch order and shifts come from
:mod:`lib.seeding`).

Measured on 2 shared CPU cores (other jobs running, load 3-6), corpus ids 0..N-1 with seed 0,
defaults (batch 128, lr 5e-3, no shift augmentation), 2000 steps:

=====================  ==========  =========  =====================================
                       N = 10 000  N = 20 000
=====================  ==========  =========  =====================================
MiniLM caption feats   100 s       ~200 s     once per corpus (60-120 captions/s)
training               72 s        100 s      2000 steps, 20-28 steps/s
real digits, all 1797  60.3 %      58.5 %     zero-shot, 4 prompts per digit (*)
real digits, val 453   60.7 %      57.8 %     the pipeline's split (0.25, seed 0)
corpus held-out digits 58.6 %      63.9 %     digit glyphs of corpus seed 1 (n=872)
corpus i2t R@1 of 200  26 %        32 %       image -> its caption among 200
=====================  ==========  =========  =====================================

Per real class (N = 10 000): 0 100 %, 1 45 %, 2 69 %, 3 88 %, 4 46 %, 5 61 %, 6 44 %,
7 89 %, 8 51 %, 9 11 % (102 of 180 nines are taken for a 3, 30 for a 7; ones go to 4).
Tried and dropped: shifting images by up to a pixel (``max_shift=1``: real digits 44 % instead
of 54 % at lr 2e-3; the captions name the position), 4000 steps (60 %), batch 256 (53 %), an
MLP text projection (53 %), class-token pooling (56 %), patch size 1 (37 %, 3.7x slower), a
wider/deeper ViT (width 128, 3 layers; with shifts 44 % after 1000 steps, as the small one
after 2000, at a quarter of its steps/s). Figures for N = 20 000 unless said; one seed each,
so differences of a few points are noise. (*) Measured with a prompt-ensemble helper of the
mini CLIP's module since dropped for :func:`lib.clip_train.zero_shot`, which the ``clip`` stage reports.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lib.backends.clip_open_clip import CONFIG_NAME, TRAINED_NAME
from lib.clip_train import pooled_text_features
from lib.io import replace_dir
from lib.mini.clip import (
    FROZEN_TEXT,
    TEXT_TOWER,
    build_mini_clip,
    mini_clip_config,
    preprocess_config,
    preprocess_images,
    tokenizer_for,
)
from lib.mini.text import CaptionFeatures
from lib.nn.schedule import warmup_cosine_lr
from lib.seeding import torch_generator, torch_threads


def _text_features(
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    texts: list[str],
    features: CaptionFeatures | None,
    progress: bool,
) -> torch.Tensor:
    """Pooled MiniLM features of ``texts``: looked up in ``features`` or computed here."""
    if features is None:
        return pooled_text_features(model, tokenizer_for(model_cfg), texts, progress=progress)
    context = model_cfg["text_cfg"]["context_length"]
    hidden = model.text.config.hidden_size
    if features.max_length != context or features.pooled.shape[1] != hidden:
        raise ValueError(
            f"caption features ({features.pooled.shape[1]}-d, max_length {features.max_length}) "
            f"do not fit the text tower ({hidden}-d, context_length {context})"
        )
    return features.pooled[torch.from_numpy(features.rows(texts))]


def random_shift(x: torch.Tensor, max_shift: int, fill: torch.Tensor, gen: torch.Generator):
    """Shift each image of ``x`` [B, C, H, W] by up to ``max_shift`` pixels, ``fill`` behind."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    m = max_shift
    padded = fill.view(1, c, 1, 1).expand(b, c, h + 2 * m, w + 2 * m).clone()
    padded[:, :, m : m + h, m : m + w] = x
    dy, dx = torch.randint(0, 2 * m + 1, (2, b), generator=gen)
    out = torch.empty_like(x)
    for oy in range(2 * m + 1):
        for ox in range(2 * m + 1):
            sel = torch.nonzero((dy == oy) & (dx == ox)).flatten().to(x.device)
            if len(sel):
                out[sel] = padded[sel, :, oy : oy + h, ox : ox + w]
    return out


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no decay on gains, biases, embeddings and logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        flat = p.ndim < 2 or "embedding" in name or name == "logit_scale"
        (no_decay if flat else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def contrastive_loss(
    model: torch.nn.Module, images: torch.Tensor, text_features: torch.Tensor, loss_fn: Any
) -> torch.Tensor:
    """ClipLoss of a batch: ``images`` preprocessed, ``text_features`` pooled MiniLM outputs."""
    img = model.encode_image(images, normalize=True)
    txt = F.normalize(model.text.proj(text_features), dim=-1)
    return loss_fn(img, txt, model.logit_scale.exp())


def train_mini_clip(
    images: np.ndarray,
    captions: Sequence[str],
    folder: str | os.PathLike,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 5e-3,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
    model_cfg: dict[str, Any] | None = None,
    weight_decay: float = 0.1,
    warmup_fraction: float = 0.05,
    max_shift: int = 0,
    text_features: CaptionFeatures | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train the mini CLIP on ``images`` [N, 8, 8] (0..16) and ``captions``; save to ``folder``.

    ``folder`` gets open_clip's local-dir format (``open_clip_config.json`` with ``model_cfg``
    and ``preprocess_cfg``, weights in ``open_clip_model.safetensors``), written to a temporary
    folder beside it and renamed into place. ``max_shift`` is the shift augmentation in 8x8
    pixels; ``text_features`` the captions' MiniLM features computed beforehand
    (:func:`lib.mini.text.encode_captions`, e.g. shared with the mini text-to-image model;
    None: computed here);
    ``threads`` the torch CPU threads while training (one is fastest for these small matrices
    on a shared machine, and makes the bytes independent of the core count; None: unchanged).
    Returns metrics: timings, losses (mean of the first and of the last 10 steps), logit scale.
    """
    images = np.asarray(images)
    captions = list(captions)
    if images.ndim != 3 or len(images) != len(captions):
        raise ValueError(
            f"need images [N, H, W] and N captions; got {images.shape}, {len(captions)} captions"
        )
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} samples are fewer than one batch ({batch_size})")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    hyper = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
             "weight_decay": weight_decay, "warmup_fraction": warmup_fraction,
             "max_shift": max_shift}
    with torch_threads(threads):
        return _train(images, captions, Path(folder), hyper, model_cfg or mini_clip_config(),
                      device=device, progress=progress, text_features=text_features)


def _train(
    images: np.ndarray,
    captions: list[str],
    folder: Path,
    hyper: dict[str, Any],
    model_cfg: dict[str, Any],
    *,
    device: str,
    progress: bool,
    text_features: CaptionFeatures | None,
) -> dict[str, Any]:
    """The body of :func:`train_mini_clip` (arguments checked, threads set)."""
    import open_clip
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    steps, batch_size, seed = hyper["steps"], hyper["batch_size"], hyper["seed"]
    model_cfg = deepcopy(model_cfg)
    pp_cfg = preprocess_config(model_cfg, images)
    t0 = time.perf_counter()
    model = build_mini_clip(model_cfg, seed=seed)
    unique, cap_index = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    text_feats = _text_features(model, model_cfg, unique.tolist(), text_features, progress)
    text_feats = text_feats[torch.from_numpy(cap_index.astype(np.int64))]
    pixels = preprocess_images(images, pp_cfg)
    t_prep = time.perf_counter() - t0

    model = model.to(device).train()
    model.text.eval()  # frozen; only its projection runs during training
    pixels, text_feats = pixels.to(device), text_feats.to(device)
    scale = max(1, pp_cfg["size"] // images.shape[-1])
    fill = ((0.0 - torch.tensor(pp_cfg["mean"])) / torch.tensor(pp_cfg["std"])).to(device)
    loss_fn = open_clip.loss.ClipLoss()
    opt = _optimizer(model, hyper["lr"], hyper["weight_decay"])
    warmup = max(1, int(hyper["warmup_fraction"] * steps))
    per_epoch = len(images) // batch_size
    losses: list[float] = []
    t1 = time.perf_counter()
    bar = tqdm(range(steps), desc="mini CLIP", disable=not progress)
    perm = torch.empty(0, dtype=torch.long)
    for step in bar:
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            perm = torch.randperm(len(images), generator=torch_generator(seed, "mini-clip", epoch))
        idx = perm[k * batch_size : (k + 1) * batch_size].to(device)
        x = pixels[idx]
        if hyper["max_shift"]:
            gen = torch_generator(seed, "mini-clip-shift", step)
            x = random_shift(x, hyper["max_shift"] * scale, fill, gen)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, steps, hyper["lr"], warmup)
        loss = contrastive_loss(model, x, text_feats[idx], loss_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    t_train = time.perf_counter() - t1
    model = model.eval().cpu()

    head = min(10, len(losses))
    metrics = {
        "n_samples": len(images),
        "n_captions": len(unique),
        **hyper,
        "epochs": round(steps * batch_size / len(images), 2),
        "loss_first": float(np.mean(losses[:head])),
        "loss_last": float(np.mean(losses[-head:])),
        "logit_scale": model.logit_scale.exp().item(),
        "prepare_seconds": round(t_prep, 2),
        "train_seconds": round(t_train, 2),
        "steps_per_second": round(steps / t_train, 2),
        "threads": torch.get_num_threads(),
    }
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": pp_cfg,
        "mini_clip": {"n_samples": len(images), **hyper},  # provenance; open_clip ignores it
        # The locked text tower is MiniLM from its package: named, not copied (90 MB).
        "frozen": {FROZEN_TEXT: TEXT_TOWER},
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not k.startswith(FROZEN_TEXT)}
    def write_weights(tmp: Path) -> None:
        (tmp / TRAINED_NAME).parent.mkdir()
        save_file(state, tmp / TRAINED_NAME)

    _save_folder(folder, config, write_weights)
    return metrics


def _save_folder(folder: Path, config: dict[str, Any], write_weights: Callable[[Path], Any]):
    """Write config + weights into a temporary folder beside ``folder``, then swap it in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_weights(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; make it an ordinary folder
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
