"""Fine-tuning the mini text-to-image model (the Diversify study's baseline) and its fine-tuner
backend ("mini"): deterministic, resumable, only the UNet changes, the folder is served by the
text-to-image backend "mini".

A tiny UNet pretrained for a few steps on a small rendered corpus is the base; the text
encoder is the real pretrained MiniLM (installed as a package, no download).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib.backends.finetune import create_finetuner
from lib.backends.t2i import create_t2i
from lib.mini.corpus.render import render
from lib.mini.t2i import LEVELS, MiniT2IPipeline, levels_to_pil, pixels_to_levels
from lib.mini.t2i_finetuning import finetune_mini_t2i, unet_digest
from lib.mini.t2i_pretraining import train_mini_t2i

TINY = {"block_out_channels": (16, 32), "attention_heads": 2, "progress": False}
KW = {"steps": 6, "batch_size": 8, "warmup_steps": 2, "progress": False}
PIXELS = {int(np.rint(k * 255 / LEVELS)) for k in range(LEVELS + 1)}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    corpus = render(range(32), seed=0)
    folder = tmp_path_factory.mktemp("mini_base") / "t2i"
    train_mini_t2i(corpus.images, corpus.captions, folder, steps=4, batch_size=16, seed=0,
                   **TINY)
    return folder


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, list[str]]:
    """Twelve 8x8 glyphs of levels 0..16 captioned by class name, as the stage captions."""
    corpus = render(range(100, 112), seed=1)
    names = ["zero", "one", "two"]
    return corpus.images, [f"the digit {names[i % 3]}" for i in range(12)]


def _unet(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetuning_is_deterministic_resumable_and_trains_the_unet_only(base, digits,
                                                                       tmp_path):
    images, captions = digits
    first = finetune_mini_t2i(base, images, captions, tmp_path / "a", seed=0, **KW)
    finetune_mini_t2i(base, images, captions, tmp_path / "b", seed=0, **KW)
    assert first["steps"] == 6 and first["unique_captions"] == 3
    assert _same(_unet(tmp_path / "a"), _unet(tmp_path / "b"))
    assert not _same(_unet(tmp_path / "a"), _unet(base))  # the UNet moved...
    assert not (tmp_path / "a" / "text_encoder").exists()  # the frozen MiniLM is named only
    for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        # ...and nothing else: the same bytes as the base (DVC stores them once)
        assert (tmp_path / "a" / name).read_bytes() == (base / name).read_bytes(), name
    # Interrupted after 3 steps, then resumed: the weights of the uninterrupted run.
    partial = finetune_mini_t2i(base, images, captions, tmp_path / "r", seed=0,
                                checkpoint_every=3, stop_at=3, **KW)
    assert partial["steps"] == 3 and not (tmp_path / "r").exists()
    resumed = finetune_mini_t2i(base, images, captions, tmp_path / "r", seed=0,
                                checkpoint_every=3, **KW)
    assert resumed["steps"] == 6 and not (tmp_path / "r.ckpt").exists()
    assert _same(_unet(tmp_path / "a"), _unet(tmp_path / "r"))
    finetune_mini_t2i(base, images, captions, tmp_path / "c", seed=1, **KW)
    assert not _same(_unet(tmp_path / "a"), _unet(tmp_path / "c"))


def test_the_record_names_base_and_data_by_digest_never_by_path(base, digits, tmp_path):
    images, captions = digits
    finetune_mini_t2i(base, images, captions, tmp_path / "m", seed=0, **KW)
    text = "".join(p.read_text(errors="ignore") for p in (tmp_path / "m").rglob("*.json"))
    assert str(tmp_path) not in text and str(base.parent) not in text
    record = json.loads((tmp_path / "m" / "training.json").read_text())
    assert record["config"]["base_unet_sha256"] == unet_digest(
        MiniT2IPipeline.from_pretrained(base).unet)
    assert len(record["losses"]) == 6 and "train_seconds" not in record
    # A checkpoint of other data is refused rather than resumed.
    finetune_mini_t2i(base, images, captions, tmp_path / "x", seed=0, checkpoint_every=3,
                      stop_at=3, **KW)
    with pytest.raises(ValueError, match="made with other settings"):
        finetune_mini_t2i(base, images, captions[::-1], tmp_path / "x", seed=0,
                          checkpoint_every=3, **KW)


def test_the_finetuner_backend_converts_pixels_and_the_folder_is_served(base, digits,
                                                                        tmp_path):
    images, captions = digits
    pixels = np.stack([np.asarray(levels_to_pil(im)) for im in images])  # as the PNGs hold them
    tuner = create_finetuner("mini", base=str(base), progress=False)
    assert (tuner.image_mode, tuner.t2i_backend) == ("L", "mini")
    metrics = tuner.finetune(pixels, captions, tmp_path / "ft", seed=0, steps=6, batch_size=8)
    assert metrics["off_grid_images"] == 0 and metrics["steps"] == 6
    # The same weights as fine-tuning on the levels themselves: the conversion is exact.
    finetune_mini_t2i(base, images, captions, tmp_path / "direct", seed=0, steps=6,
                      batch_size=8, progress=False)
    assert _same(_unet(tmp_path / "ft"), _unet(tmp_path / "direct"))

    t2i = create_t2i("mini", model=str(tmp_path / "ft"))
    out, nsfw = t2i.generate(["the digit one", "the digit two"], None, [0, 1], steps=3,
                             guidance_scale=2.0, height=8, width=8)
    assert nsfw == [False, False]
    for im in out:
        assert im.mode == "L" and im.size == (8, 8)
        assert set(np.unique(np.asarray(im)).tolist()) <= PIXELS


def test_pixels_to_levels_inverts_the_png_scaling_and_counts_what_is_off_grid():
    levels = np.arange(LEVELS + 1, dtype=np.uint8).reshape(1, 1, -1).repeat(3, axis=0)
    pixels = np.stack([np.asarray(levels_to_pil(im)) for im in levels])
    back, off = pixels_to_levels(pixels)
    assert np.array_equal(back, levels) and off == 0
    pixels[1, 0, 3] += 3  # 48 -> 51: not one of the 17 values, rounded to level 3
    back, off = pixels_to_levels(pixels)
    assert off == 1 and np.array_equal(back, levels)


def test_bad_inputs_name_the_problem(base, digits, tmp_path):
    images, captions = digits
    with pytest.raises(ValueError, match="makes 8x8 images"):
        finetune_mini_t2i(base, np.zeros((2, 4, 4), np.uint8), ["a", "b"], tmp_path / "m",
                          **KW)
    with pytest.raises(ValueError, match="0..16"):
        finetune_mini_t2i(base, images * 0 + 17, captions, tmp_path / "m", **KW)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_finetuner("mini", base=str(tmp_path / "missing" / "t2i"))
    with pytest.raises(KeyError, match="valid names: mini"):
        create_finetuner("dreambooth", base=str(base))


def test_a_transformer_base_is_refused_naming_the_unet_folder(digits, tmp_path):
    """The fine-tuned generator stays a UNet: the transformer's pipeline as the base fails
    before any training, saying which folder to give instead."""
    from lib.mini.denoisers import DiTSpec
    from lib.mini.t2i_pretraining import train_denoiser

    corpus = render(range(16), seed=0)
    dit = tmp_path / "t2i-dit"
    train_denoiser(corpus.images, corpus.captions, dit,
                   DiTSpec(width=16, layers=1, heads=2), steps=1, batch_size=4, progress=False)
    images, captions = digits
    with pytest.raises(ValueError, match="PixArtTransformer2DModel denoiser; the mini "
                                         "fine-tuner fine-tunes a UNet.*outputs/zoo/t2i"):
        finetune_mini_t2i(dit, images, captions, tmp_path / "ft", **KW)
    assert not (tmp_path / "ft").exists()
