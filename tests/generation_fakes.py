"""A text-to-image stand-in and a small prompt table for the generation tests
(tests/test_generation.py, tests/test_generation_repair.py).

The model's image is a function of the seed alone: these tests are about ids, seeds, shards,
markers, retries, resumption and repair, not about diffusion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lib.generation.core import generate
from lib.shards import iter_samples

SIZE = 16
PARAMS = {"seed": 7, "steps": 2, "guidance_scale": 3.0, "height": SIZE, "width": SIZE}
PARAMS |= {"batch_size": 3, "shard_size": 4}
MANIFEST_COLUMNS = {
    "id", "class_id", "class_name", "strategy", "prompt", "negative_prompt", "seed",
    "guidance_scale", "steps", "scheduler", "model", "height", "width", "image_height",
    "image_width", "format", "sha256", "retries", "flags", "shard",
}  # fmt: skip
KEPT = [f"img-{i:04d}" for i in range(10) if i not in (3, 5)]  # 3 blank, 5 nsfw: dropped


class SeedImages:
    """Image = uniform noise from ``default_rng(seed)``. Prompts starting 'blank' always give
    a solid colour, prompts containing 'nsfw' a black image flagged nsfw (as a safety checker
    does), prompts starting 'flaky' a solid colour the first time this instance sees them.
    ``fail_after`` raises on the call after that many, to simulate a crash mid-run. Records
    the guidance scale and batch size of every call."""

    model_id = "test/seed-noise"
    scheduler_name = "none"

    def __init__(self, fail_after: int | None = None, model_id: str | None = None):
        self.fail_after, self.calls, self.seen = fail_after, [], set()
        if model_id:
            self.model_id = model_id

    def generate(self, prompts, negative_prompts, seeds, *, steps, guidance_scale, height, width):
        self.calls.append((guidance_scale, len(prompts)))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise RuntimeError("simulated crash")
        assert len(negative_prompts) == len(prompts) == len(seeds)
        images = [self._image(p, s, height, width) for p, s in zip(prompts, seeds)]
        self.seen.update(prompts)
        return images, ["nsfw" in p for p in prompts]

    def _image(self, prompt: str, seed: int, height: int, width: int) -> Image.Image:
        if prompt.startswith("blank") or (prompt.startswith("flaky") and prompt not in self.seen):
            return Image.new("RGB", (width, height), (200, 30, 30))
        if "nsfw" in prompt:
            return Image.new("RGB", (width, height), (0, 0, 0))
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels)


def make_prompts(n: int = 10) -> pd.DataFrame:
    """``n`` prompts over three classes and two strategies, deliberately not in id order;
    id 3 is always blank, 5 always nsfw, 7 blank on its first attempt only."""
    rows = []
    for i in reversed(range(n)):
        text = {3: "blank canvas", 5: "an nsfw thing", 7: "flaky 7"}.get(i, f"a photo of {i}")
        negative = None if i % 2 else "blurry"
        rows.append(
            {"id": f"img-{i:04d}", "class_id": i % 3, "class_name": f"class{i % 3}"}
            | {"strategy": "templates" if i % 4 == 1 else "classname", "prompt": text}
            | {"negative_prompt": negative}
        )
    return pd.DataFrame(rows)


def run(out: Path, prompts: pd.DataFrame | None = None, t2i=None, **kw) -> dict:
    args = {**PARAMS, "progress": False, **kw}
    return generate(
        make_prompts() if prompts is None else prompts, out, t2i or SeedImages(), **args
    )


def image_bytes(out: Path) -> dict[str, bytes]:
    return {s["id"]: s["bytes"] for s in iter_samples(out, decode=False)}
