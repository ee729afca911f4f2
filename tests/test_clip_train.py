"""CLIP training on image-text pairs: a locked text tower runs once per text, not per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib import clip_train
from lib.mini import clip as mc
from lib.mini import clip_pretraining as mcp

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"embed_dim": 32, "width": 32, "layers": 1, "head_width": 16, "context_length": 16}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny mini CLIP (open_clip CustomTextCLIP with the MiniLM text tower) on disk."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, (16, 8, 8)).astype(np.uint8)
    captions = [f"glyph {i}" for i in range(16)]
    path = tmp_path_factory.mktemp("clip") / "clip"
    mcp.train_mini_clip(images, captions, path, steps=1, batch_size=16, progress=False,
                        model_cfg=mc.mini_clip_config(**TINY))
    return path


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(1)
    ims = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).convert("RGB")
           for _ in range(12)]
    texts = [f"a picture of the digit {i % 5}" for i in range(12)]  # repeated texts
    return ims, texts


def _train(folder, pairs, lock: bool, cache: bool, no_dropout: bool = False):
    net, train_tf, _, tok = clip_train.load(str(folder), None, "cpu")
    if lock:
        net.lock_text_tower()
    if no_dropout:
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history = clip_train.train_clip(
        net, train_tf, tok, *pairs, steps=4, batch_size=6, lr=1e-3, seed=0, tag="t",
        progress=False, cache_frozen_text=cache)
    return net, before, history


def test_cached_frozen_text_equals_running_it_each_step(folder, pairs):
    # Without dropout, the text tower gives the same features in train and eval mode, so
    # caching its frozen part must not change the training.
    cached, _, h1 = _train(folder, pairs, lock=True, cache=True, no_dropout=True)
    plain, _, h2 = _train(folder, pairs, lock=True, cache=False, no_dropout=True)
    assert [h["loss"] for h in h1] == pytest.approx([h["loss"] for h in h2], abs=1e-5)
    a, b = cached.state_dict(), plain.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_locked_tower_keeps_weights_and_trains_projection(folder, pairs):
    net, before, _ = _train(folder, pairs, lock=True, cache=True)
    after = net.state_dict()
    transformer = [k for k in after if k.startswith("text.transformer.")]
    assert transformer and all(torch.equal(after[k], before[k]) for k in transformer)
    for prefix in ("text.proj.", "visual."):
        assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith(prefix))


def test_unlocked_tower_is_not_cached(folder, pairs):
    net, _, _, tok = clip_train.load(str(folder), None, "cpu")
    assert clip_train.frozen_text_features(net, tok, pairs[1]) is None
    net.lock_text_tower()
    features, head = clip_train.frozen_text_features(net, tok, pairs[1])
    assert features.shape == (12, 384)
    assert torch.equal(features[0], features[5])  # the same text
    net.eval()  # encode_text runs the tower in train mode otherwise (dropout)
    with torch.no_grad():
        direct = net.encode_text(tok(pairs[1][:3]), normalize=True)
        assert torch.allclose(head(features[:3]), direct, atol=1e-5)
    trained, before, _ = _train(folder, pairs, lock=False, cache=True)
    after = trained.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in after
               if k.startswith("text.transformer."))


def test_a_checkpoint_holds_what_was_trained_and_names_what_was_frozen(folder):
    import io

    net, *_ = clip_train.load(str(folder), None, "cpu")
    net.lock_text_tower()
    with torch.no_grad():
        net.text.proj.weight.add_(0.5)  # "training" the part that trains
    ckpt = clip_train.trained_checkpoint(net, str(folder), None)
    assert ckpt["frozen"] and all(k.startswith("text.transformer.") for k in ckpt["frozen"])
    assert not any(k.startswith("text.transformer.") for k in ckpt["state_dict"])
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    full = io.BytesIO()
    torch.save(net.state_dict(), full)
    assert buf.tell() < full.tell() / 10  # the frozen MiniLM is most of the model
    loaded, *_ = clip_train.load_trained(ckpt)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    broken = {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items()
                                     if not k.startswith("text.proj")}}
    with pytest.raises(ValueError, match="does not fit its base"):
        clip_train.load_trained(broken)
