"""The transformers captioner backend, on a tiny VisionEncoderDecoderModel built locally."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lib.backends.captioner import CAPTIONER, create_captioner
from lib.zoo import build_tiny_captioner


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_captioner(tmp_path_factory.mktemp("captioner"), seed=0))


@pytest.fixture(scope="module")
def captioner(captioner_dir):
    return create_captioner("transformers", model=captioner_dir)


def _images() -> list[Image.Image]:
    """Three images of different modes and sizes, as real data would have."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L"),
        Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8), mode="RGB"),
        Image.new("RGBA", (32, 32), (255, 0, 0, 128)),
    ]


def test_loads_through_the_production_auto_classes(captioner, captioner_dir):
    from transformers import VisionEncoderDecoderModel

    assert isinstance(captioner.model, VisionEncoderDecoderModel)
    assert not captioner.model.training
    assert captioner.model_id == captioner_dir
    assert "transformers" in CAPTIONER.names()


def test_caption_returns_one_string_per_image(captioner):
    captions = captioner.caption(_images(), seed=0)
    assert isinstance(captions, list) and len(captions) == 3
    assert all(isinstance(c, str) for c in captions)
    assert captioner.caption([], seed=0) == []


def test_caption_is_deterministic_and_independent_of_batching(captioner, captioner_dir):
    images = _images()
    first = captioner.caption(images, seed=0)
    assert captioner.caption(images, seed=0) == first
    assert captioner.caption(images, seed=123) == first  # greedy: the seed changes nothing
    one_by_one = create_captioner("transformers", model=captioner_dir, batch_size=1)
    assert one_by_one.caption(images, seed=0) == first
    assert captioner.caption(images[1:2], seed=0) == first[1:2]


def test_caption_leaves_global_rng_alone(captioner):
    state = torch.random.get_rng_state()
    captioner.caption(_images(), seed=7)
    assert torch.equal(state, torch.random.get_rng_state())


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_builder_is_deterministic(tmp_path):
    state = torch.random.get_rng_state()
    a = _digest(build_tiny_captioner(tmp_path / "a", seed=1))
    assert a == _digest(build_tiny_captioner(tmp_path / "b", seed=1))
    assert a != _digest(build_tiny_captioner(tmp_path / "c", seed=2))
    assert torch.equal(state, torch.random.get_rng_state())


def test_missing_folder_fails_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-captioner")
    with pytest.raises(FileNotFoundError, match="captioner folder .*no-such-captioner"):
        create_captioner("transformers", model=missing)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(KeyError, match="valid names: retrieval, transformers"):
        create_captioner("blip-server", model="x")


def test_bad_options_fail(captioner_dir):
    with pytest.raises(ValueError, match="max_new_tokens"):
        create_captioner("transformers", model=captioner_dir, max_new_tokens=0)
