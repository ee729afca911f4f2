"""Text-to-image with any diffusers ``AutoPipelineForText2Image`` model.

The model is a hub id or a local folder written by ``save_pretrained`` (SD 1.x/2.x, SDXL,
PixArt, the tiny test pipelines of :mod:`lib.zoo`, ...). Each image gets its own CPU
``torch.Generator`` so an image depends on its seed only, never on the batch it was made in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lib.backends import T2I

if TYPE_CHECKING:
    from PIL import Image

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name``; an unknown name lists the valid ones."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def looks_like_path(model: str) -> bool:
    """True for absolute paths, ``.``/``~`` prefixes or more than one ``/``.

    Hub ids (``org/name``) and architecture names are none of these.
    """
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1


def check_local_model(model: str, what: str) -> None:
    """Fail clearly when ``model`` names a local folder that does not exist."""
    if looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(f"{what} folder {model!r} does not exist")


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class called ``name``; an unknown name lists valid ones."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        valid = sorted(
            n
            for n in dir(diffusers)
            if n.endswith("Scheduler") and isinstance(getattr(diffusers, n), type)
        )
        raise KeyError(
            f"unknown diffusers scheduler {name!r}; valid names include: {', '.join(valid)}"
        )
    return cls


@T2I.register("diffusers")
class DiffusersT2I:
    """A diffusers text-to-image pipeline with per-image seeds."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        scheduler: str | None = None,
    ):
        from diffusers import AutoPipelineForText2Image

        check_local_model(model, "text-to-image model")
        new_scheduler = scheduler_class(scheduler) if scheduler else None
        # diffusers 0.42 renamed torch_dtype= to dtype= (the old name warns).
        pipe = AutoPipelineForText2Image.from_pretrained(model, dtype=torch_dtype(dtype))
        if new_scheduler is not None:
            pipe.scheduler = new_scheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.device = device
        self.model_id = model
        self.scheduler_name = type(pipe.scheduler).__name__

    def generate(
        self,
        prompts: list[str],
        negative_prompts: list[str] | None,
        seeds: list[int],
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
    ) -> tuple[list[Image.Image], list[bool]]:
        """Images for ``prompts`` (one seed each) and whether the pipeline flagged them NSFW.

        Pipelines without a safety checker flag nothing.
        """
        n = len(prompts)
        if len(seeds) != n or (negative_prompts is not None and len(negative_prompts) != n):
            raise ValueError(
                f"prompts ({n}), seeds ({len(seeds)}) and negative_prompts "
                f"({'None' if negative_prompts is None else len(negative_prompts)}) "
                "must have the same length"
            )
        if n == 0:
            return [], []
        # CPU generators: the same noise on any device, one stream per image.
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        out = self.pipe(
            prompt=list(prompts),
            negative_prompt=None if negative_prompts is None else list(negative_prompts),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            generator=generators,
            output_type="pil",
        )
        return list(out.images), _nsfw_flags(out, n)


def _nsfw_flags(out: Any, n: int) -> list[bool]:
    flags = getattr(out, "nsfw_content_detected", None)
    return [False] * n if flags is None else [bool(f) for f in flags]
