"""The mini text-to-image model's second denoiser, a transformer (DiT): trained by the same code
as the UNet, served unchanged by the ``mini`` backend, and the UNet's path left as it was.

Tiny models and a few dozen steps on a small rendered corpus keep this fast; the text encoder
is the real pretrained MiniLM (installed as a package, no download).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib.backends.t2i import create_t2i
from lib.mini.corpus.render import render
from lib.mini.denoisers import DiTSpec, UNetSpec, build_dit, build_unet
from lib.mini.t2i import LEVELS, MiniT2IPipeline, generator_samples
from lib.mini.t2i_pretraining import train_denoiser, train_mini_t2i

TINY_DIT = DiTSpec(width=32, layers=2, heads=2, patch_size=2)
TINY_UNET = {"block_out_channels": (16, 32), "attention_heads": 2}
PIXELS = {int(np.rint(k * 255 / LEVELS)) for k in range(LEVELS + 1)}
GEN = {"steps": 4, "guidance_scale": 3.0, "height": 8, "width": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus():
    return render(range(48), seed=0)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("mini_dit") / "model"
    metrics = train_denoiser(corpus.images, corpus.captions, folder, TINY_DIT, steps=60,
                             batch_size=32, seed=0, progress=False)
    return folder, metrics


def _weights(folder: Path, component: str) -> dict[str, torch.Tensor]:
    return load_file(folder / component / "diffusion_pytorch_model.safetensors")


def _same(a: Path, b: Path, component: str = "transformer") -> bool:
    wa, wb = _weights(a, component), _weights(b, component)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_transformer_trains_and_is_saved_as_the_pipelines_transformer(trained):
    folder, metrics = trained
    # Mean loss of the last 12 steps against the first 12: about 0.5 of it when training
    # works, about 1.0 with lr=0.
    assert metrics["final_loss"] < 0.8 * metrics["loss_start"], metrics
    assert metrics["steps"] == 60 and metrics["params"] == sum(
        p.numel() for p in build_dit(width=32, layers=2, heads=2).parameters())
    assert {p.name for p in folder.iterdir()} == {"transformer", "scheduler",
                                                  "model_index.json", "training.json"}
    index = json.loads((folder / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "PixArtTransformer2DModel"]
    assert index["unet"] == [None, None]
    record = json.loads((folder / "training.json").read_text())
    assert record["config"]["denoiser"] == "dit" and record["config"]["patch_size"] == 2
    assert record["config"]["prediction_type"] == "v_prediction"


def test_the_backend_serves_the_transformer_in_the_real_data_format(trained):
    folder, _ = trained
    t2i = create_t2i("mini", model=str(folder))
    assert type(t2i.pipe).__name__ == "MiniT2IPipeline" and t2i.pipe.unet is None
    assert type(t2i.pipe.transformer).__name__ == "PixArtTransformer2DModel"
    assert t2i.pipe.denoiser is t2i.pipe.transformer
    images, nsfw = t2i.generate(["the digit 3", "the capital letter S", "a dollar sign"], None,
                                [1, 2, 3], **GEN)
    assert nsfw == [False] * 3
    for im in images:
        assert im.mode == "L" and im.size == (8, 8)
        assert set(np.unique(np.asarray(im)).tolist()) <= PIXELS


def test_transformer_images_depend_on_seed_only(trained):
    folder, _ = trained
    t2i = create_t2i("mini", model=str(folder))
    prompts = ["the digit 3", "a handwritten 3, tall and narrow", "the digit 5 on lined paper"]
    batch, _ = t2i.generate(prompts, ["blurry"] * 3, [11, 12, 13], **GEN)
    alone, _ = t2i.generate(prompts[1:2], ["blurry"], [12], **GEN)
    again, _ = t2i.generate(prompts[1:2], ["blurry"], [12], **GEN)
    assert alone[0].tobytes() == batch[1].tobytes() == again[0].tobytes()
    other, _ = t2i.generate(prompts[1:2], ["blurry"], [14], **GEN)
    assert other[0].tobytes() != alone[0].tobytes()
    swapped = create_t2i("mini", model=str(folder), scheduler="EulerAncestralDiscreteScheduler")
    batch, _ = swapped.generate(["the digit 1", "the digit 2"], None, [7, 8], **GEN)
    alone, _ = swapped.generate(["the digit 2"], None, [8], **GEN)
    assert batch[1].tobytes() == alone[0].tobytes()


def test_the_transformer_folder_round_trips(trained, tmp_path):
    folder, _ = trained
    pipe = MiniT2IPipeline.from_pretrained(folder)
    pipe.save_pretrained(tmp_path / "again")
    again = MiniT2IPipeline.from_pretrained(tmp_path / "again")
    kw = {"num_inference_steps": 3, "guidance_scale": 2.0, "output_type": "np"}
    a = pipe(["the digit 7"], generator=[torch.Generator().manual_seed(0)], **kw).images
    b = again(["the digit 7"], generator=[torch.Generator().manual_seed(0)], **kw).images
    assert np.array_equal(a, b) and _same(folder, tmp_path / "again")


def test_transformer_training_is_deterministic_and_resumable(corpus, tmp_path):
    images, captions = corpus.images[:24], corpus.captions[:24]
    kw = {"steps": 6, "batch_size": 8, "progress": False}
    train_denoiser(images, captions, tmp_path / "a", TINY_DIT, seed=3, **kw)
    train_denoiser(images, captions, tmp_path / "b", TINY_DIT, seed=3, **kw)
    assert _same(tmp_path / "a", tmp_path / "b")
    # (in a folder that does not exist yet: the checkpoint is written next to the model)
    r = tmp_path / "new" / "r"
    partial = train_denoiser(images, captions, r, TINY_DIT, seed=3, checkpoint_every=3,
                             stop_at=3, **kw)
    assert partial["steps"] == 3 and not r.exists()
    assert "transformer" in torch.load(r.with_name("r.ckpt"), weights_only=False)
    resumed = train_denoiser(images, captions, r, TINY_DIT, seed=3, checkpoint_every=3, **kw)
    assert resumed["steps"] == 6 and not r.with_name("r.ckpt").exists()
    assert _same(tmp_path / "a", r)
    train_denoiser(images, captions, tmp_path / "c", TINY_DIT, seed=4, **kw)
    assert not _same(tmp_path / "a", tmp_path / "c")
    # A checkpoint of another denoiser is refused, not loaded into the wrong model.
    train_mini_t2i(images, captions, tmp_path / "u", seed=3, checkpoint_every=3, stop_at=3,
                   **TINY_UNET, **kw)
    with pytest.raises(ValueError, match="other settings; remove it"):
        train_denoiser(images, captions, tmp_path / "u", TINY_DIT, seed=3, checkpoint_every=3,
                       **kw)


def test_the_unet_path_is_unchanged(corpus, tmp_path):
    """train_mini_t2i is train_denoiser with a UNetSpec, bit for bit; its record keeps the
    UNet's keys (no ``denoiser``), its checkpoint the key ``unet``; and a folder saved before
    the transformer existed (no ``transformer`` entry) loads and samples as before."""
    images, captions = corpus.images[:24], corpus.captions[:24]
    kw = {"steps": 4, "batch_size": 8, "seed": 1, "progress": False}
    train_mini_t2i(images, captions, tmp_path / "a", **TINY_UNET, **kw)
    train_denoiser(images, captions, tmp_path / "b", UNetSpec(**TINY_UNET), **kw)
    assert _same(tmp_path / "a", tmp_path / "b", "unet")
    assert (tmp_path / "a" / "training.json").read_bytes() == (
        tmp_path / "b" / "training.json").read_bytes()
    config = json.loads((tmp_path / "a" / "training.json").read_text())["config"]
    assert list(config) == ["steps", "batch_size", "lr", "weight_decay", "warmup_steps",
                            "cond_dropout", "seed", "prediction_type", "block_out_channels",
                            "layers_per_block", "attention_heads", "norm_num_groups",
                            "pooled_text", "max_length", "n_images", "schedule"]
    train_mini_t2i(images, captions, tmp_path / "r", checkpoint_every=2, stop_at=2,
                   **TINY_UNET, **kw)
    assert "unet" in torch.load(tmp_path / "r.ckpt", weights_only=False)

    index_file = tmp_path / "a" / "model_index.json"
    index = json.loads(index_file.read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert "transformer" not in index  # a UNet's folder is written as before the transformer
    gens = [torch.Generator().manual_seed(2)]
    kw = {"num_inference_steps": 3, "output_type": "np"}
    now = MiniT2IPipeline.from_pretrained(tmp_path / "a")(["the digit 2"], generator=gens,
                                                          **kw).images
    index_file.write_text(json.dumps(index))  # as written before the transformer existed
    before = create_t2i("mini", model=str(tmp_path / "a")).pipe
    assert before.transformer is None and before.denoiser is before.unet
    gens = [torch.Generator().manual_seed(2)]
    assert np.array_equal(before(["the digit 2"], generator=gens, **kw).images, now)


def test_the_pipeline_takes_exactly_one_denoiser(trained):
    pipe = MiniT2IPipeline.from_pretrained(trained[0])
    parts = {"scheduler": pipe.scheduler, "text_encoder": pipe.text_encoder,
             "tokenizer": pipe.tokenizer}
    with pytest.raises(ValueError, match="one denoiser: a unet or a transformer"):
        MiniT2IPipeline(unet=None, **parts)
    with pytest.raises(ValueError, match="one denoiser"):
        MiniT2IPipeline(unet=build_unet(block_out_channels=(16, 32), attention_heads=2,
                                        norm_num_groups=8),
                        transformer=pipe.transformer, **parts)
    with pytest.raises(TypeError, match="a UNet goes in as unet="):
        MiniT2IPipeline(unet=None, transformer=build_unet(), **parts)


def test_bad_transformer_shapes_are_refused():
    with pytest.raises(ValueError, match="width 30 is not a multiple of heads 4"):
        build_dit(width=30, heads=4)
    with pytest.raises(ValueError, match="patch_size 3 does not divide the image size 8"):
        build_dit(patch_size=3)


def test_generator_samples_share_prompts_and_noise(trained, corpus, tmp_path):
    import matplotlib.pyplot as plt

    from lib.plots.images import generator_grid_figure

    unet = tmp_path / "unet"
    train_mini_t2i(corpus.images[:24], corpus.captions[:24], unet, steps=2, batch_size=8,
                   progress=False, **TINY_UNET)
    prompts = ["the digit zero", "the digit one"]
    samples = generator_samples({"unet": unet, "dit": trained[0]}, prompts, guidance_scale=2.0,
                                seeds=(0, 1, 2), steps=2)
    assert list(samples) == ["unet", "dit"]
    dit = samples["dit"]
    assert dit.images.shape == (2, 1, 3, 8, 8) and dit.guidance_scales == [2.0]
    pipe = MiniT2IPipeline.from_pretrained(trained[0])
    alone = pipe("the digit one", num_inference_steps=2, guidance_scale=2.0, output_type="np",
                 generator=[torch.Generator("cpu").manual_seed(2)]).images[0]
    np.testing.assert_array_equal(dit.images[1, 0, 2], alone)
    fig = generator_grid_figure(samples)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["unet", "dit"]
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == prompts
    assert fig.get_suptitle() == "mini generators: 3 seeds per cell, guidance 2, 2 steps"
    plt.close(fig)
    other = generator_samples({"dit": trained[0]}, prompts[:1], seeds=(0, 1, 2), steps=2)
    with pytest.raises(ValueError, match="'dit' was sampled with other prompts or seeds"):
        generator_grid_figure({"unet": samples["unet"], **other})


def test_the_zoo_trains_each_denoiser_with_its_own_settings(corpus, tmp_path):
    """zoo.train_t2i: ``dit`` takes the dit_* settings, ``unet`` the t2i_* ones; both the
    shared batch size, caption dropout and seed."""
    from lib import config
    from lib.mini.text import encode_corpus_captions
    from lib.stages import zoo

    root = Path(__file__).resolve().parents[1]
    values = config.stage_section(config.load_params(root / "params.yaml"), "zoo")
    assert values["t2i_archs"] == ["unet", "dit"]  # the default: the study's two generators
    values.update(progress=False, t2i_batch_size=8, t2i_cond_dropout=0.2, t2i_steps=2,
                  dit_steps=3, dit_lr=0.001, dit_width=32, dit_layers=1, dit_heads=2)
    cfg = config.build("zoo", values)
    # what the stage reads of a lib.mini.corpus.store corpus
    data = SimpleNamespace(images=corpus.images[:24], captions=corpus.captions[:24])
    features = encode_corpus_captions(data.captions)
    dit = zoo.train_t2i(cfg, "dit", data, features, tmp_path / "t2i-dit")["config"]
    assert {k: dit[k] for k in ("steps", "lr", "batch_size", "cond_dropout", "seed")} == {
        "steps": 3, "lr": 0.001, "batch_size": 8, "cond_dropout": 0.2, "seed": 0}
    assert {k: dit[k] for k in ("denoiser", "width", "layers", "heads", "patch_size")} == {
        "denoiser": "dit", "width": 32, "layers": 1, "heads": 2, "patch_size": 2}
    unet = zoo.train_t2i(cfg, "unet", data, features, tmp_path / "t2i")["config"]
    assert unet["steps"] == 2 and unet["lr"] == 0.002 and unet["batch_size"] == 8
    assert "denoiser" not in unet
    assert (tmp_path / "t2i-dit" / "transformer").is_dir() and (tmp_path / "t2i" / "unet").is_dir()
