"""The retrieval baseline (lib.retrieval): corpus images chosen by CLIP similarity to each
class's query, each image to one class at most, written as a generation run.

A stub scorer with known embeddings (patched in where the set builds its CLIP) pins which
images each class must get; the tiny open_clip model runs the real scorer end to end. The
tiny corpus is written here: image i is filled with grey level ``LEVEL[i]`` so the stub can
tell the images apart, with a caption and the glyph it names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib import shards
from lib.retrieval import sets
from lib.retrieval.__main__ import run as cli_run
from lib.retrieval.select import RetrievalShortfall, assign, check_filled
from tests.generation_fakes import MANIFEST_COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = pd.DataFrame({"label": [0, 1], "class_id": ["0", "1"], "name": ["zero", "one"],
                        "prompt_name": ["the digit 0", "the digit 1"]})
# Corpus image i: (similarity to "the digit zero", to "the digit one"), its glyph.
# Image 2 is the best match of both classes but closer to "one"; image 5 ties images 1
# for class 0 (the lower corpus index wins the tie).
SIMS = [(0.50, 0.10), (0.80, 0.20), (0.85, 0.95), (0.10, 0.70), (0.30, 0.60), (0.80, 0.05),
        (0.20, 0.20), (0.05, 0.40)]
GLYPHS = ["0", "0", "1", "l", "1", "O", "x", "1"]


class StubClip:
    """Texts ``the digit zero`` / ``the digit one`` are e0 / e1; an image of grey level
    ``v`` (levels 0..16) is the unit vector whose first two coordinates are ``SIMS[v]``.
    Counts the images it embeds and records each call's batch size."""

    def __init__(self, **kwargs):
        self.kwargs, self.batches = kwargs, []

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        axes = {"the digit zero": 0, "the digit one": 1}
        return torch.stack([torch.eye(3)[axes[t]] for t in texts])

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        self.batches.append(len(images))
        rows = []
        for im in images:
            level = round(float(np.asarray(im).mean()) * 16 / 255)
            a, b = SIMS[level]
            rows.append(torch.tensor([a, b, np.sqrt(max(0.0, 1 - a * a - b * b))]))
        return torch.stack(rows).float()


def write_corpus(folder: Path, n: int = len(SIMS), glyphs: bool = True) -> Path:
    """A corpus of ``n`` constant 8x8 images, image i at level i (0..16)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.full((8, 8), i, np.uint8) for i in range(n)])
    np.save(folder / "images.npy", images)
    table = {"caption": [f"a photo of glyph {g}" for g in GLYPHS[:n]]}
    if glyphs:
        table["glyph"] = GLYPHS[:n]
    pd.DataFrame(table).to_parquet(folder / "captions.parquet")
    return folder


@pytest.fixture
def stub(monkeypatch) -> list[StubClip]:
    made: list[StubClip] = []

    def fake_create_clip(name: str, **kwargs) -> StubClip:
        assert name == "open_clip"
        made.append(StubClip(**kwargs))
        return made[-1]

    monkeypatch.setattr(sets, "create_clip", fake_create_clip)
    return made


def retrieve(tmp_path: Path, out: str = "out", counts=(3, 2), model: str = "./clip",
             **kwargs) -> dict:
    """``retrieve_set`` of the test corpus (written on first use) into ``tmp_path/out``."""
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        write_corpus(corpus)
    kwargs = {"batch_size": 3, "shard_size": 2, "progress": False, **kwargs}
    return sets.retrieve_set(corpus, model, CLASSES, pd.Series(counts, index=["0", "1"]),
                             tmp_path / out, **kwargs)


def manifest(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "manifest.parquet")


def test_each_class_gets_its_most_similar_free_images_in_rank_order(stub, tmp_path) -> None:
    summary = retrieve(tmp_path)
    m = manifest(tmp_path / "out").set_index("id")
    # Class 1 ("one") takes image 2 (0.95 > its 0.85 for "zero"), then 3 (0.70).
    # Class 0 takes 1 and 5 (0.80, tie: index 1 first), then 0 (0.50): not 2, taken by "one"
    # at a higher similarity.
    assert m.loc[["0-retrieval-000000", "0-retrieval-000001", "0-retrieval-000002"],
                 "corpus_index"].tolist() == [1, 5, 0]
    assert m.loc[["1-retrieval-000000", "1-retrieval-000001"], "corpus_index"].tolist() == [2, 3]
    assert m["rank"].tolist() == [0, 1, 2, 0, 1]
    assert m["similarity"].round(5).tolist() == [0.8, 0.8, 0.5, 0.95, 0.7]
    assert m["prompt"].tolist() == ["the digit zero"] * 3 + ["the digit one"] * 2
    assert set(m["strategy"]) == {"retrieval"} and set(m["model"]) == {"./clip"}
    assert m["corpus_index"].is_unique
    assert summary["images"] == 5 and summary["contested"] == 0 and not summary["resumed"]
    assert stub[0].batches == [3, 3, 3]  # 8 images in fixed-shape batches, the last padded


def test_an_image_goes_to_the_class_it_is_closer_to_even_when_it_tops_both(stub, tmp_path):
    # Image 2 tops both classes; with class 1 wanting nothing it goes to class 0 instead.
    retrieve(tmp_path, counts=(2, 0))
    m = manifest(tmp_path / "out")
    assert m["corpus_index"].tolist() == [2, 1]
    assert m["class_id"].tolist() == ["0", "0"]


def test_assignment_is_disjoint_full_and_stable_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    sims = rng.random((200, 5)).astype(np.float32)
    sims[rng.random(sims.shape) < 0.1] = 0.5  # many exact ties
    counts = [30, 10, 0, 50, 25]
    chosen = assign(sims, counts)
    assert [len(ix) for ix in chosen] == counts
    owner = {int(i): c for c, ix in enumerate(chosen) for i in ix}
    assert len(owner) == sum(counts)  # no image in two classes
    for c, ix in enumerate(chosen):
        s = sims[ix, c]
        assert (np.diff(s) <= 0).all()  # rank order: descending similarity
        if not len(ix):
            continue
        # Stability: an image more similar to c than c's least similar pick is c's, or
        # belongs to a class it is at least as similar to.
        for j in np.flatnonzero(sims[:, c] > s.min()):
            assert owner.get(int(j)) is not None
            assert sims[j, owner[int(j)]] >= sims[j, c]


def test_assignment_takes_the_top_and_not_the_bottom() -> None:
    sims = np.array([[0.1], [0.9], [0.5], [0.7]], np.float32)
    assert assign(sims, [2])[0].tolist() == [1, 3]


def test_folder_is_a_generation_run_that_verifies_and_trains(stub, tmp_path) -> None:
    from lib.shards.__main__ import main as shards_main
    from lib.training.inputs import load_inputs

    retrieve(tmp_path)
    out = tmp_path / "out"
    assert shards_main(["verify", str(out)]) == 0
    assert shards.verify(out).ok
    m = manifest(out)
    assert MANIFEST_COLUMNS <= set(m.columns)
    assert set(m.columns) - MANIFEST_COLUMNS == {"rank", "corpus_index", "similarity",
                                                 "corpus_caption", "caption_names_class"}
    assert len(pd.read_parquet(out / "dropped.parquet")) == 0
    assert sorted(p.name for p in out.glob("shard-*.tar")) == [
        "shard-00000-000000.tar", "shard-00000-000001.tar", "shard-00000-000002.tar"]
    for s in shards.iter_samples(out):  # PNG, mode L, the corpus image's pixels
        assert s["image"].format == "PNG" and s["image"].mode == "L"
        level = s["meta"]["corpus_index"]
        assert (np.asarray(s["image"]) == round(level * 255 / 16)).all()
        assert hashlib.sha256(s["bytes"]).hexdigest() == s["meta"]["sha256"]
    # The training code reads it as generated images (synthetic-only: the retrieved images
    # are the training set): multiplier 1 of 2 real train images per class -> 2 per class.
    real = tmp_path / "real"
    rows = []
    for label in (0, 1):
        for split in ("train", "train", "val"):
            path = real / f"{label}-{len(rows)}.png"
            path.parent.mkdir(exist_ok=True)
            Image.new("L", (8, 8), 100).save(path)
            rows.append({"path": path.name, "split": split, "label": label,
                         "image_id": path.stem, "class_id": str(label)})
    inputs = load_inputs(
        CLASSES, pd.DataFrame(rows), root=real, generate_dir=out, data_dir=tmp_path,
        image_size=8, channels=1, seed=0, real_fraction=0.0, real_per_class=None,
        use_synthetic=True, synthetic_fraction=1.0, synthetic_strategy="retrieval",
        synthetic_multiplier=1.0, eval_sets=[], max_bad_fraction=0.0)
    assert len(inputs.real) == 4 and inputs.synthetic_missing == 0


def test_ids_are_deterministic_and_a_rerun_is_bit_identical(stub, tmp_path) -> None:
    retrieve(tmp_path, out="a")
    retrieve(tmp_path, out="b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        if name.startswith("shard-") or name in ("run.json", "retrieval.json"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    pd.testing.assert_frame_equal(manifest(tmp_path / "a"), manifest(tmp_path / "b"))
    assert manifest(tmp_path / "a")["id"].tolist() == [
        "0-retrieval-000000", "0-retrieval-000001", "0-retrieval-000002",
        "1-retrieval-000000", "1-retrieval-000001"]


def test_a_complete_set_is_left_alone_and_other_settings_are_refused(stub, tmp_path) -> None:
    retrieve(tmp_path)
    out = tmp_path / "out"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = retrieve(tmp_path)
    assert again["resumed"] and len(stub) == 1  # no CLIP built, nothing scored
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(ValueError, match="other settings.*prompt_template"):
        retrieve(tmp_path, prompt_template="{name}")


def test_an_unfinished_or_damaged_set_is_written_again(stub, tmp_path) -> None:
    retrieve(tmp_path, out="ref")
    retrieve(tmp_path)
    out = tmp_path / "out"
    (out / "retrieval.json").unlink()  # interrupted before the summary
    assert not retrieve(tmp_path)["resumed"]
    tar = out / "shard-00000-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-700])  # a truncated shard
    assert not retrieve(tmp_path)["resumed"]
    assert shards.verify(out).ok
    for p in (tmp_path / "ref").glob("shard-*"):
        assert (out / p.name).read_bytes() == p.read_bytes()


def test_a_too_small_corpus_fails_naming_the_classes(stub, tmp_path) -> None:
    with pytest.raises(RetrievalShortfall, match=r"holds 8 images but the classes need 9.*"
                                                 r"0: 5, 1: 4"):
        retrieve(tmp_path, counts=(5, 4))
    assert not stub  # refused before any scoring
    chosen = assign(np.ones((3, 2), np.float32), [2, 2])
    with pytest.raises(RetrievalShortfall, match="1: 1 of 2"):
        check_filled(chosen, ["0", "1"], [2, 2], 3)


def test_precision_counts_the_captions_that_name_the_class(stub, tmp_path) -> None:
    summary = retrieve(tmp_path)
    # Class 0 got images 1, 5, 0: glyphs 0, O, 0 -> 2/3; class 1 got 2, 3: glyphs 1, l -> 1/2.
    assert summary["per_class"]["0"]["precision"] == round(2 / 3, 6)
    assert summary["per_class"]["1"]["precision"] == 0.5
    assert summary["precision"] == 0.6
    assert manifest(tmp_path / "out")["caption_names_class"].tolist() == [
        True, False, True, True, False]
    # A glyph column in the classes table names what a correct image shows.
    glyph = CLASSES.assign(glyph=["O", "l"])
    other = sets.retrieve_set(tmp_path / "corpus", "./clip", glyph, pd.Series([3, 2], ["0", "1"]),
                              tmp_path / "g", batch_size=3, progress=False)
    assert other["per_class"]["0"]["precision"] == round(1 / 3, 6)
    assert other["per_class"]["1"]["precision"] == 0.5
    # Without a glyph column in the corpus there is no precision, and it says why.
    none = sets.retrieve_set(write_corpus(tmp_path / "c2", glyphs=False), "./clip", CLASSES,
                             pd.Series([3, 2], ["0", "1"]), tmp_path / "n", progress=False)
    assert none["precision"] is None and "no glyph column" in none["precision_basis"]


def test_bad_inputs_fail_naming_the_problem(stub, tmp_path) -> None:
    with pytest.raises(ValueError, match="classes without a count.*'1'"):
        sets.retrieve_set(write_corpus(tmp_path / "corpus"), "./clip", CLASSES,
                          pd.Series([1], ["0"]), tmp_path / "x")
    with pytest.raises(ValueError, match="must name the class"):
        retrieve(tmp_path, prompt_template="the digit {label}")
    with pytest.raises(FileNotFoundError, match="lacks images.npy"):
        sets.retrieve_set(tmp_path, "./clip", CLASSES, pd.Series([1, 1], ["0", "1"]),
                          tmp_path / "y")


def test_the_real_open_clip_scorer_end_to_end(tmp_path) -> None:
    from lib.zoo import build_tiny_open_clip

    clip = str(build_tiny_open_clip(tmp_path / "clip"))
    a = retrieve(tmp_path, out="a", model=clip, batch_size=4)
    retrieve(tmp_path, out="b", model=clip, batch_size=4)
    assert a["images"] == 5 and shards.verify(tmp_path / "a").ok
    pd.testing.assert_frame_equal(manifest(tmp_path / "a"), manifest(tmp_path / "b"))
    for p in (tmp_path / "a").glob("shard-*"):
        assert (tmp_path / "b" / p.name).read_bytes() == p.read_bytes()


def test_cli_uses_the_profile_inputs(stub, tiny_project) -> None:
    root = tiny_project
    write_corpus(root / "outputs/zoo/corpus")
    (root / "outputs/zoo/clip").mkdir()
    (root / "outputs/disambiguate").mkdir(parents=True)
    CLASSES.to_parquet(root / "outputs/disambiguate/prompt_names.parquet")
    images = pd.DataFrame({"class_id": ["0", "0", "1", "1", "1", "0"],
                           "split": ["train"] * 5 + ["val"]})
    (root / "outputs/classes").mkdir(parents=True)
    images.to_parquet(root / "outputs/classes/images.parquet")
    summary = cli_run("outputs/retrieval/x1", 1.0)
    out = root / "outputs/retrieval/x1"
    assert summary["per_class"]["0"]["images"] == 2 and summary["per_class"]["1"]["images"] == 3
    assert summary["prompt_template"] == "the digit {name}"  # finetune.caption_template
    assert shards.verify(out).ok and set(manifest(out)["model"]) == {"./outputs/zoo/clip"}
    assert str(root) not in (out / "run.json").read_text()  # no machine paths
    assert cli_run("outputs/retrieval/x1", 1.0)["resumed"]
