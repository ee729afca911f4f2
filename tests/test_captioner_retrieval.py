"""The retrieval captioner: each image gets the collection caption its CLIP finds closest.

A stub scorer with known embeddings (patched in where the backend builds its CLIP) pins the
answer, the tie rule and the fixed-shape image batches; the tiny open_clip model of the test
zoo runs the real scorer end to end (determinism, batch independence, the loaders).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib.backends import captioner_retrieval as retrieval
from lib.backends.captioner import CAPTIONER, create_captioner
from lib.backends.clip import create_clip

pytestmark = pytest.mark.usefixtures("one_thread")


class StubClip:
    """Known embeddings: the text ``"axis k ..."`` is the unit vector e_k (so texts that differ
    after the axis tie exactly); an image of grey level 10 k is e_k tilted towards e_0.
    Records the size of every image batch it embeds and every text it encodes."""

    dim = 4

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.model_id = kwargs["model"]
        self.image_batches: list[int] = []
        self.texts_encoded: list[str] = []

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        self.texts_encoded += texts
        return torch.stack([self._axis(int(t.split()[1])) for t in texts])

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        self.image_batches.append(len(images))
        rows = []
        for im in images:
            k = round(np.asarray(im.convert("L")).mean() / 10)
            v = self._axis(k) + 0.1 * self._axis(0)
            rows.append(v / v.norm())
        return torch.stack(rows)

    def _axis(self, k: int) -> torch.Tensor:
        return torch.eye(self.dim)[k]


def _grey(level: int, size: int = 8) -> Image.Image:
    return Image.new("L", (size, size), level)


def _write_parquet(path, captions: list[str | None]) -> str:
    pd.DataFrame({"id": range(len(captions)), "caption": captions}).to_parquet(path)
    return str(path)


@pytest.fixture
def stub(monkeypatch) -> list[StubClip]:
    made: list[StubClip] = []

    def fake_create_clip(name: str, **kwargs) -> StubClip:
        assert name == "open_clip"
        made.append(StubClip(**kwargs))
        return made[-1]

    monkeypatch.setattr(retrieval, "create_clip", fake_create_clip)
    return made


def test_registered_by_name() -> None:
    assert "retrieval" in CAPTIONER.names()


def test_each_image_gets_the_caption_closest_to_it(stub, tmp_path) -> None:
    captions = _write_parquet(tmp_path / "c.parquet",
                              ["axis 0 a blank", "axis 1 one", "axis 2 two", "axis 3 three"])
    cap = create_captioner("retrieval", model="stub", captions=captions, image_batch_size=3)
    images = [_grey(20), _grey(30), _grey(10), _grey(0), _grey(20)]
    assert cap.caption(images, seed=0) == ["axis 2 two", "axis 3 three", "axis 1 one",
                                           "axis 0 a blank", "axis 2 two"]
    best, sims = cap.retrieve(images)
    assert best.tolist() == [2, 3, 1, 0, 2]
    assert np.allclose(sims[:3], 1 / np.sqrt(1.01)) and np.isclose(sims[3], 1.0)
    # Images go to the scorer in batches of exactly image_batch_size (the last one padded).
    assert stub[0].image_batches == [3, 3, 3, 3]
    assert cap.caption([], seed=0) == []


def test_ties_go_to_the_first_caption_and_each_distinct_caption_is_embedded_once(
        stub, tmp_path) -> None:
    captions = ["axis 2 later", "axis 1 first", "axis 1 second", "axis 2 later", "axis 1 first"]
    cap = create_captioner("retrieval", model="stub",
                           captions=_write_parquet(tmp_path / "c.parquet", captions))
    assert cap.texts == ["axis 2 later", "axis 1 first", "axis 1 second"]
    assert cap.num_captions == 5
    assert stub[0].texts_encoded == cap.texts  # once, at construction
    # "axis 1 first" and "axis 1 second" have the same embedding: the earlier one wins.
    assert cap.caption([_grey(10)] * 3) == ["axis 1 first"] * 3
    cap.caption([_grey(20)])
    assert stub[0].texts_encoded == cap.texts  # captioning embeds no text again


def test_the_scorer_gets_the_model_and_options(stub, tmp_path) -> None:
    (tmp_path / "c.txt").write_text("axis 1 a\n\n  axis 2 b  \n")
    cap = create_captioner("retrieval", model="some-clip", captions=str(tmp_path / "c.txt"),
                           pretrained="openai", device="cpu", batch_size=7)
    assert cap.texts == ["axis 1 a", "axis 2 b"]
    assert stub[0].kwargs == {"model": "some-clip", "pretrained": "openai", "device": "cpu",
                              "batch_size": 7}
    assert cap.model_id == "some-clip"


def test_collections_read_from_a_folder_a_parquet_file_or_text(tmp_path) -> None:
    _write_parquet(tmp_path / "captions.parquet", ["a b", " c d ", "a b"])
    assert retrieval.read_captions(tmp_path) == ["a b", "c d", "a b"]
    assert retrieval.read_captions(tmp_path / "captions.parquet") == ["a b", "c d", "a b"]
    (tmp_path / "list.txt").write_text("first caption\n\nsecond caption\n")
    assert retrieval.read_captions(tmp_path / "list.txt") == ["first caption", "second caption"]


def test_a_missing_or_unusable_collection_fails_naming_the_file(tmp_path) -> None:
    missing = tmp_path / "no-such-corpus"
    with pytest.raises(FileNotFoundError, match=r"caption collection '.*no-such-corpus' does "
                       r"not exist: give a parquet file .*captioner_captions"):
        create_captioner("retrieval", model="never-loaded", captions=str(missing))
    with pytest.raises(FileNotFoundError, match="captions.txt' does not exist"):
        retrieval.read_captions(tmp_path / "captions.txt")
    pd.DataFrame({"text": ["a"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match=r"other\.parquet' has no 'caption' column \(columns: "
                                         r"text\)"):
        retrieval.read_captions(tmp_path / "other.parquet")
    _write_parquet(tmp_path / "holes.parquet", ["a", None, "  ", "b"])
    with pytest.raises(ValueError, match=r"holes\.parquet': 2 of 4 captions are missing or "
                                         r"empty \(rows \[1, 2\]"):
        retrieval.read_captions(tmp_path / "holes.parquet")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match=r"blank\.txt' holds no caption"):
        retrieval.read_captions(tmp_path / "blank.txt")


def test_bad_options_fail(stub, tmp_path) -> None:
    captions = _write_parquet(tmp_path / "c.parquet", ["axis 1"])
    with pytest.raises(ValueError, match="image_batch_size must be >= 1"):
        create_captioner("retrieval", model="stub", captions=captions, image_batch_size=0)


# ------------------------------------------------------ the real open_clip scorer, tiny model
CAPTIONS = [f"the {size} {what}" for size in ("small", "large", "thin", "bold", "tilted")
            for what in ("digit zero", "digit one", "letter O", "letter l", "capital I")]


def _images() -> list[Image.Image]:
    """Noise and solid colours, of other sizes and modes than the model's input."""
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L")
             for _ in range(6)]
    solid = [Image.new("RGB", (12, 12), c) for c in [(0, 0, 0), (255, 255, 255), (255, 0, 0),
                                                      (0, 255, 0), (0, 0, 255)]]
    return noise + solid


@pytest.fixture(scope="module")
def captions_file(tmp_path_factory) -> str:
    return _write_parquet(tmp_path_factory.mktemp("captions") / "c.parquet", CAPTIONS)


def test_with_a_real_open_clip_model_the_answer_is_the_best_cosine(tiny_zoo,
                                                                    captions_file) -> None:
    cap = create_captioner("retrieval", model=tiny_zoo["clip"], captions=captions_file)
    images = _images()
    clip = create_clip("open_clip", model=tiny_zoo["clip"])
    sims = clip.encode_images(images).numpy() @ clip.encode_texts(CAPTIONS).numpy().T
    best, got = cap.retrieve(images)
    assert np.allclose(got, sims.max(axis=1), atol=1e-5)
    assert np.allclose(sims[np.arange(len(images)), best], sims.max(axis=1), atol=1e-5)
    assert cap.caption(images) == [CAPTIONS[i] for i in best]
    assert len(set(best.tolist())) > 1  # the images do not all collapse onto one caption


def test_with_a_real_open_clip_model_captions_are_deterministic_and_batch_independent(
        tiny_zoo, captions_file) -> None:
    images = _images()
    cap = create_captioner("retrieval", model=tiny_zoo["clip"], captions=captions_file)
    first = cap.caption(images, seed=0)
    assert cap.caption(images, seed=123) == first  # retrieval draws no random numbers
    assert [cap.caption([im])[0] for im in images] == first  # alone vs in a batch
    assert cap.caption(images[3:7]) == first[3:7]  # other batch companions
    for size in (1, 4):
        other = create_captioner("retrieval", model=tiny_zoo["clip"], captions=captions_file,
                                 image_batch_size=size)
        assert other.caption(images) == first
    small = create_captioner("retrieval", model=tiny_zoo["clip"], captions=captions_file,
                             batch_size=3)
    assert np.allclose(small.text_embeddings, cap.text_embeddings, atol=1e-6)
