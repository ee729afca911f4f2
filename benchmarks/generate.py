"""Throughput of the generate stage for one configuration: images/s, seconds per image and
peak memory, and (with ``--compare-loop``) the same prompts through a plain loop of
``pipe(prompt)`` calls, with the ratio of the two.

    python benchmarks/generate.py                          # params.yaml's generate config
    python benchmarks/generate.py --n 128 --compare-loop   # + the plain-loop baseline
    python benchmarks/generate.py --arch sd15 --device cuda --dtype float16 \\
        --height 512 --width 512 --steps 25 --batch-size 16 --n 256
    python benchmarks/generate.py --arch sdxl --device cuda --dtype float16 \\
        --height 1024 --width 1024 --steps 25 --batch-size 8 --n 64
    python benchmarks/generate.py --arch sdxl --count-params   # check the architecture only

``--arch sd15`` / ``--arch sdxl`` build Stable Diffusion 1.5 / SDXL-base architectures with
random weights from the published component configs written below (no download; the
tokenizers are byte-level stand-ins, which changes token counts, not the model's cost).
Otherwise the model is ``--model`` or the configured ``generate.model``.

"The stage" is :func:`lib.generation.core.generate` as the stage runs it: fixed-shape batches
with one CPU generator per image, PNG encoding and tar shard writing, blank checks;
``max_retries`` is 0 here so every image costs one pipeline image. Each measurement follows
one warm-up batch (one-time costs: kernel selection, ``torch.compile``) and is repeated
``--repeat`` times: images/s and seconds per image are from the best run, the median is
shown beside it. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS on CPU (``ru_maxrss``:
a running maximum over the whole process, model loading included).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib import config  # noqa: E402
from lib.backends.loading import torch_dtype  # noqa: E402
from lib.backends.t2i_diffusers import DiffusersT2I  # noqa: E402
from lib.generation.core import generate  # noqa: E402

# Published component configs (diffusers format) of the two architectures.
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": 8,
    "cross_attention_dim": 768, "norm_num_groups": 32,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"),
}  # fmt: skip
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
}  # fmt: skip
VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}  # fmt: skip
CLIP_L_TEXT = {  # openai/clip-vit-large-patch14 text tower (SD 1.5; SDXL's first encoder)
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "projection_dim": 768,
}  # fmt: skip
CLIP_BIGG_TEXT = {  # OpenCLIP ViT-bigG/14 text tower with projection (SDXL's second encoder)
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120,
    "num_hidden_layers": 32, "num_attention_heads": 20, "max_position_embeddings": 77,
    "hidden_act": "gelu", "projection_dim": 1280,
}  # fmt: skip
BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
         "steps_offset": 1}  # fmt: skip


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    from lib.zoo import write_clip_bpe_vocab

    write_clip_bpe_vocab(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def build_random(arch: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A Stable Diffusion 1.5 or SDXL-base pipeline with random weights, built on ``device``
    directly in ``dtype`` (SDXL in float32 would need 14 GB just to be built)."""
    import diffusers

    if arch not in ("sd15", "sdxl"):
        raise ValueError(f"unknown arch {arch!r}; valid: sd15, sdxl")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    if arch == "sd15":  # schedulers hold CPU tensors: built outside the device context
        scheduler = diffusers.PNDMScheduler(**BETAS, skip_prk_steps=True)
    else:
        scheduler = diffusers.EulerDiscreteScheduler(**BETAS, timestep_spacing="leading")
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return _assemble(arch, tokenizer, scheduler)
    finally:
        torch.set_default_dtype(default)


def _assemble(arch: str, tokenizer: Any, scheduler: Any) -> Any:
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT))
    if arch == "sd15":
        return diffusers.StableDiffusionPipeline(
            vae=diffusers.AutoencoderKL(**VAE, sample_size=512, scaling_factor=0.18215),
            text_encoder=text_encoder, tokenizer=tokenizer,
            unet=diffusers.UNet2DConditionModel(**SD15_UNET), scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    return diffusers.StableDiffusionXLPipeline(
        vae=diffusers.AutoencoderKL(**VAE, sample_size=1024, scaling_factor=0.13025,
                                    force_upcast=True),
        text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG_TEXT)),
        tokenizer_2=tokenizer, unet=diffusers.UNet2DConditionModel(**SDXL_UNET),
        scheduler=scheduler, add_watermarker=False,
    )  # fmt: skip


def count_params(arch: str) -> dict[str, float]:
    """Parameters (millions) per component, built on the meta device (no memory, seconds)."""
    pipe = build_random(arch, device="meta")
    return {
        name: round(sum(p.numel() for p in module.parameters()) / 1e6, 1)
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def make_prompts(n: int) -> pd.DataFrame:
    """``n`` distinct prompts over ten classes, as the prompts stage would write them."""
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return pd.DataFrame({
        "id": [f"bench-{i:06d}" for i in range(n)],
        "class_id": [i % 10 for i in range(n)],
        "class_name": [names[i % 10] for i in range(n)],
        "strategy": ["templates"] * n,
        "prompt": [f"a photo of the digit {names[i % 10]}, variant {i}" for i in range(n)],
        "negative_prompt": [""] * n,
    })  # fmt: skip


class Meter:
    """Wall time and peak memory of one measured phase."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self) -> Meter:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:  # Linux reports KiB
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_stage(t2i: DiffusersT2I, args: argparse.Namespace) -> dict[str, Any]:
    """Time :func:`~lib.generation.core.generate` on ``args.n`` prompts (after a warm-up
    batch)."""
    kw = dict(seed=0, steps=args.steps, guidance_scale=args.guidance, height=args.height,
              width=args.width, batch_size=args.batch_size, shard_size=256, max_retries=0,
              progress=False)  # fmt: skip
    meters, dropped = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(make_prompts(args.batch_size), Path(tmp) / "warmup", t2i, **kw)
        for r in range(args.repeat):
            with Meter(args.device) as m:
                summary = generate(make_prompts(args.n), Path(tmp) / f"run{r}", t2i, **kw)
            meters.append(m)
            dropped = summary["dropped"]
    return _row("stage (batched generate)", args.n, meters) | {"dropped_blank": dropped}


def bench_loop(t2i: DiffusersT2I, args: argparse.Namespace) -> dict[str, Any]:
    """Time a plain loop of ``pipe(prompt)`` calls over the same prompts."""
    prompts = list(make_prompts(args.n)["prompt"])
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance,
              height=args.height, width=args.width)  # fmt: skip
    t2i.pipe(prompts[0], **kw)  # warm-up
    meters = []
    for _ in range(args.repeat):
        with Meter(args.device) as m:
            for p in prompts:
                t2i.pipe(p, **kw)
        meters.append(m)
    return _row("plain loop of pipe(prompt)", args.n, meters) | {"dropped_blank": 0}


def _row(name: str, images: int, meters: list[Meter]) -> dict[str, Any]:
    """Best and median time over the repeats: on a shared machine the best of several runs
    is the closest to the uncontended speed, the median shows how noisy it was."""
    times = sorted(m.seconds for m in meters)
    best, median = times[0], times[len(times) // 2]
    return {"what": name, "images": images, "best_s": round(best, 3),
            "median_s": round(median, 3), "images_per_s": round(images / best, 2),
            "median_images_per_s": round(images / median, 2),
            "seconds_per_image": round(best / images, 4),
            "peak_memory_MB": round(max(m.peak_mb for m in meters))}  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    cfg = config.load("generate")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=cfg.model, help="hub id or folder (default: generate.model)")
    p.add_argument("--arch", choices=("sd15", "sdxl"), help="random-weight architecture instead")
    p.add_argument("--count-params", action="store_true", help="print --arch's sizes and exit")
    p.add_argument("--device", default=cfg.common.device)
    p.add_argument("--dtype", default=cfg.dtype, choices=("float32", "float16", "bfloat16"))
    p.add_argument("--scheduler", default=cfg.scheduler)
    p.add_argument("--steps", type=int, default=cfg.steps)
    p.add_argument("--guidance", type=float, default=cfg.guidance_scale)
    p.add_argument("--height", type=int, default=cfg.height)
    p.add_argument("--width", type=int, default=cfg.width)
    p.add_argument("--batch-size", type=int, default=cfg.batch_size)
    p.add_argument("--n", type=int, default=64, help="images per measurement")
    p.add_argument("--repeat", type=int, default=3, help="measurements (best and median shown)")
    p.add_argument("--compile", action="store_true", default=cfg.compile)
    p.add_argument("--cpu-offload", action="store_true", default=cfg.cpu_offload)
    p.add_argument("--compare-loop", action="store_true", help="also time a plain pipe() loop")
    p.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.count_params and not args.arch:
        p.error("--count-params needs --arch")
    args.model_ref = f"random:{args.arch}" if args.arch else args.model
    if not args.arch:
        args.model = cfg.resolve_model(args.model)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.count_params:
        sizes = count_params(args.arch)
        print(json.dumps({"arch": args.arch, "params_M": sizes}, indent=1))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = dict(device=args.device, dtype=args.dtype, scheduler=args.scheduler,
                compile=args.compile, cpu_offload=args.cpu_offload)  # fmt: skip
    start = time.perf_counter()
    if args.arch:
        build_on = "cuda" if args.device.startswith("cuda") else "cpu"
        pipe = build_random(args.arch, build_on, torch_dtype(args.dtype))
        t2i = DiffusersT2I.from_pipe(pipe, args.model_ref, **opts)
    else:
        t2i = DiffusersT2I(args.model, **opts)
    setup = time.perf_counter() - start
    rows = [bench_stage(t2i, args)]
    if args.compare_loop:
        rows.append(bench_loop(t2i, args))
        rows[0]["speedup_vs_loop"] = round(rows[0]["images_per_s"] / rows[1]["images_per_s"], 2)
    info = {
        "model": args.model_ref, "device": args.device, "dtype": args.dtype,
        "scheduler": t2i.scheduler_name, "steps": args.steps, "size": f"{args.width}x{args.height}",
        "batch_size": args.batch_size, "compile": args.compile, "threads": torch.get_num_threads(), "repeat": args.repeat,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "setup_seconds": round(setup, 1), "torch": torch.__version__,
    }  # fmt: skip
    print(json.dumps(info))
    print(pd.DataFrame(rows).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": info, "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
