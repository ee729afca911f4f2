"""Text-to-image with any diffusers ``AutoPipelineForText2Image`` model.

The model is a hub id or a local folder written by ``save_pretrained`` (SD 1.x/2.x, SDXL,
PixArt, the tiny test pipelines of :mod:`lib.zoo`, ...). Each image gets its own CPU
``torch.Generator`` so an image depends on its seed only, never on the batch it was made in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lib.backends.loading import check_local_model, torch_dtype
from lib.backends.t2i import T2I

if TYPE_CHECKING:
    from PIL import Image


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
    """A diffusers text-to-image pipeline with per-image seeds.

    Speed settings for GPUs: the weights in ``dtype`` (float16/bfloat16), PyTorch SDPA
    attention (diffusers' default processor), the UNet in ``channels_last`` memory format on
    CUDA, optional ``torch.compile`` of the denoiser, and no CPU offload unless asked.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        scheduler: str | None = None,
        compile: bool = False,
        cpu_offload: bool = False,
    ):
        from diffusers import AutoPipelineForText2Image

        _check_diffusers_pipeline(model)
        self._load(AutoPipelineForText2Image, model, device, dtype, scheduler, compile, cpu_offload)

    @classmethod
    def from_pretrained(
        cls,
        pipeline_class: type,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        scheduler: str | None = None,
        compile: bool = False,
        cpu_offload: bool = False,
    ) -> DiffusersT2I:
        """Load ``model`` with ``pipeline_class.from_pretrained`` instead of the auto class.

        For pipelines that ``AutoPipelineForText2Image`` does not know (a backend of its own
        registers each, e.g. :mod:`lib.backends.t2i_mini`); the rest is as in ``__init__``.
        """
        self = cls.__new__(cls)
        self._load(pipeline_class, model, device, dtype, scheduler, compile, cpu_offload)
        return self

    def _load(
        self,
        pipeline_class: Any,
        model: str,
        device: str,
        dtype: str,
        scheduler: str | None,
        compile: bool,
        cpu_offload: bool,
    ) -> None:
        check_local_model(model, "text-to-image model")
        scheduler_class(scheduler) if scheduler else None  # fail before the slow load
        # diffusers 0.42 renamed torch_dtype= to dtype= (the old name warns).
        pipe = pipeline_class.from_pretrained(model, dtype=torch_dtype(dtype))
        self._setup(pipe, model, device, dtype, scheduler, compile, cpu_offload)

    @classmethod
    def from_pipe(
        cls,
        pipe: Any,
        model_id: str,
        device: str = "cpu",
        dtype: str = "float32",
        scheduler: str | None = None,
        compile: bool = False,
        cpu_offload: bool = False,
    ) -> DiffusersT2I:
        """Wrap a pipeline built in memory (e.g. random weights for benchmarks)."""
        self = cls.__new__(cls)
        if getattr(_denoiser(pipe), "dtype", None) != torch_dtype(dtype):
            pipe = pipe.to(dtype=torch_dtype(dtype))
        self._setup(pipe, model_id, device, dtype, scheduler, compile, cpu_offload)
        return self

    def _setup(
        self,
        pipe: Any,
        model_id: str,
        device: str,
        dtype: str,
        scheduler: str | None,
        compile: bool,
        cpu_offload: bool,
    ) -> None:
        dev = torch.device(device)
        if cpu_offload and dev.type != "cuda":
            raise ValueError(f"cpu_offload needs a cuda device, got {device!r}")
        if scheduler:
            pipe.scheduler = scheduler_class(scheduler).from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        denoiser = _denoiser(pipe)
        if dev.type == "cuda" and denoiser is not None and hasattr(denoiser, "conv_in"):
            # Convolutional UNets run faster in NHWC on tensor cores.
            denoiser.to(memory_format=torch.channels_last)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=dev)
        else:
            pipe = pipe.to(dev)
        if compile:
            if denoiser is None:
                raise ValueError(f"compile: {type(pipe).__name__} has no unet or transformer")
            name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
            setattr(pipe, name, torch.compile(getattr(pipe, name)))
        self.pipe = pipe
        self.device = device
        self.model_id = model_id
        self.scheduler_name = type(pipe.scheduler).__name__
        # Settings that change pixels beyond the model and scheduler: a run pins them.
        self.settings = {"dtype": dtype, "device": dev.type, "compile": bool(compile)}

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


def _check_diffusers_pipeline(model: str) -> None:
    """Fail clearly when a local folder holds a pipeline class that diffusers does not define.

    Such a pipeline (e.g. the mini world's) is loaded by a backend registered for it.
    """
    import diffusers

    index = Path(model).expanduser() / "model_index.json"
    if not index.is_file():
        return  # a hub id, or a missing folder (reported by the load)
    name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    if name and not hasattr(diffusers, name):
        raise ValueError(
            f"text-to-image model {model!r} is a {name}, which diffusers does not define; "
            f"select the backend that loads it (valid text-to-image backends: "
            f"{', '.join(T2I.names())})"
        )


def _denoiser(pipe: Any) -> Any:
    """The pipeline's UNet or transformer (None if it has neither)."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    return None


def _nsfw_flags(out: Any, n: int) -> list[bool]:
    flags = getattr(out, "nsfw_content_detected", None)
    return [False] * n if flags is None else [bool(f) for f in flags]
