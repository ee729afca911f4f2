"""MiniLM caption features computed once and shared by the mini text-to-image model and CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib.backends.clip_open_clip import TRAINED_NAME
from lib.clip_train import pooled_text_features
from lib.mini import clip as mc
from lib.mini import clip_pretraining as mcp
from lib.mini import text as mt
from lib.mini.corpus.render import render
from lib.mini.t2i_pretraining import train_mini_t2i

pytestmark = pytest.mark.usefixtures("one_thread")

CAPTIONS = [
    "the digit 7",
    "a bold capital letter S in the top left corner, inverted",
    "the digit 7",  # repeated: encoded once
    "a thin handwritten-looking small letter l on a noisy background",
    "x",
    "a wide digit 0 drawn with an outline, rotated slightly to the left",
]


@pytest.fixture(scope="module")
def minilm():
    return mt.load_minilm()


@pytest.fixture(scope="module")
def features(minilm) -> mt.CaptionFeatures:
    encoder, tokenizer = minilm
    # Batches of 2 sorted by length: the captions are padded to different lengths.
    return mt.encode_captions(encoder, tokenizer, CAPTIONS, max_length=16, batch_size=2)


def test_one_row_per_distinct_caption(features):
    assert features.texts == tuple(sorted(set(CAPTIONS)))
    assert [features.texts[i] for i in features.index] == CAPTIONS
    assert features.states.shape[:2] == features.mask.shape
    assert features.states.shape[1] == 16  # the longest caption, truncated to max_length
    assert features.pooled.shape == (len(features.texts), 384)
    assert features.pooled.dtype == torch.float32 and features.states.dtype == torch.float16
    assert list(features.rows(["x", "the digit 7"])) == [
        features.texts.index("x"), features.texts.index("the digit 7")]
    with pytest.raises(ValueError, match="no MiniLM features.*'the digit 8'"):
        features.rows(["the digit 7", "the digit 8"])


def test_states_do_not_depend_on_batching(minilm, features):
    encoder, tokenizer = minilm
    for i, text in enumerate(features.texts):
        states, mask = mt.encode_text(encoder, tokenizer, [text], max_length=16, pad_to_max=False)
        n = int(mask.sum())
        assert torch.equal(features.mask[i, :n], mask[0]) and features.mask[i, n:].sum() == 0
        assert torch.allclose(features.states[i, :n].float(), states[0].float(), atol=2e-3)
        assert torch.allclose(features.pooled[i], states[0].mean(0), atol=1e-5)


def test_pooled_features_are_the_mini_clip_text_tower(features):
    """The shared pooled features equal what the mini CLIP computes itself (its text tower
    before the projection: the same MiniLM, tokeniser and mean pooling)."""
    cfg = mc.mini_clip_config(embed_dim=32, width=32, layers=1, head_width=16, context_length=16)
    model = mc.build_mini_clip(cfg, seed=0)
    own = pooled_text_features(model, mc.tokenizer_for(cfg), list(features.texts))
    assert torch.allclose(own, features.pooled, atol=1e-5)


def test_mini_clip_trains_on_shared_features(features, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, (len(CAPTIONS), 8, 8)).astype(np.uint8)
    cfg = mc.mini_clip_config(embed_dim=32, width=32, layers=1, head_width=16, context_length=16)
    kwargs = {"steps": 5, "batch_size": 4, "seed": 0, "progress": False, "model_cfg": cfg}
    shared = mcp.train_mini_clip(images, CAPTIONS, tmp_path / "a", text_features=features,
                                 **kwargs)
    own = mcp.train_mini_clip(images, CAPTIONS, tmp_path / "b", **kwargs)
    assert shared["loss_first"] == pytest.approx(own["loss_first"], abs=1e-4)
    wa = load_file(tmp_path / "a" / TRAINED_NAME)
    wb = load_file(tmp_path / "b" / TRAINED_NAME)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    # Features of another context length, or lacking a caption, are refused by name.
    short = mt.encode_captions(*mt.load_minilm(), CAPTIONS, max_length=8)
    with pytest.raises(ValueError, match="max_length 8.*context_length 16"):
        mcp.train_mini_clip(images, CAPTIONS, tmp_path / "c", text_features=short, **kwargs)
    partial = mt.encode_captions(*mt.load_minilm(), CAPTIONS[:4], max_length=16)
    with pytest.raises(ValueError, match="no MiniLM features"):
        mcp.train_mini_clip(images, CAPTIONS, tmp_path / "d", text_features=partial, **kwargs)


def test_mini_t2i_with_shared_features_is_bit_identical(minilm, tmp_path):
    corpus = render(range(24), seed=0)
    kwargs = {"steps": 6, "seed": 0, "block_out_channels": (16, 32), "attention_heads": 2,
              "batch_size": 8, "progress": False}
    feats = mt.encode_captions(*minilm, corpus.captions)
    a = train_mini_t2i(corpus.images, corpus.captions, tmp_path / "a", caption_features=feats,
                       **kwargs)
    b = train_mini_t2i(corpus.images, corpus.captions, tmp_path / "b", **kwargs)
    assert a["final_loss"] == b["final_loss"]
    wa = load_file(tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors")
    wb = load_file(tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="max_length 32, training uses 16"):
        train_mini_t2i(corpus.images, corpus.captions, tmp_path / "c", caption_features=feats,
                       max_length=16, **kwargs)
