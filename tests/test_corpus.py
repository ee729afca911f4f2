"""The rendered glyph corpus of the mini world (the lib.mini.corpus package)."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lib.mini.corpus.attributes import sample_attrs
from lib.mini.corpus.captions import ATTRIBUTES, CONTEXT_VOCAB, STYLE_VOCAB
from lib.mini.corpus.cli import main
from lib.mini.corpus.fonts import FONT_FILES, fonts_for, glyph_field
from lib.mini.corpus.glyphs import (
    DIGITS,
    GLYPH_NAMES,
    LETTERS,
    OTHER_LETTERS,
    SYMBOLS,
    glyph_cores,
    glyph_weights,
)
from lib.mini.corpus.render import Corpus, block_counts, render, render_bitmap, to_pil
from lib.mini.corpus.store import load_corpus, write_corpus
from lib.plots.images import captioned_grid_figure

#: Look-alike groups: glyphs that are easy to confuse at 8x8 (each keeps its own name).
LOOKALIKES: tuple[str, ...] = (
    "1lIi|7LTJj",
    "0OoDQUuCc",
    "5Ss",
    "2Zz",
    "8B&",
    "6bG",
    "9gqa",
    "4AYy+t",
    "3E",
)


@lru_cache(maxsize=1)
def _phrase_index() -> tuple[re.Pattern[str], dict[str, list[tuple[str, Any, str]]]]:
    owners: dict[str, list[tuple[str, Any, str]]] = {}
    for vocab in (STYLE_VOCAB, CONTEXT_VOCAB):
        for attr, vals in vocab.items():
            for value, phrases in vals.items():
                for ph in phrases:
                    owners.setdefault(ph.lower(), []).append((attr, value, ph))
    for ch in GLYPH_NAMES:
        for core in glyph_cores(ch):
            owners.setdefault(core.lower(), []).append(("glyph", ch, core))
    phrases = sorted(owners, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p in phrases) + r")(?![\w-])")
    return pattern, owners


def parse_caption(caption: str) -> dict[str, set[Any]]:
    """Attribute values (and ``"glyph"``) named in ``caption``, matching the longest vocabulary
    phrase first: the inverse of the caption grammar, to check captions against attributes.
    Glyph names are matched case-sensitively (``capital letter I`` is not ``lowercase letter
    l``; ``letter O`` is not ``letter o``), the rest case-insensitively."""
    pattern, owners = _phrase_index()
    text = caption[:1].lower() + caption[1:]
    found: dict[str, set[Any]] = {}
    for m in pattern.finditer(text.lower()):
        span = text[m.start() : m.end()]
        for attr, value, phrase in owners[m.group(1)]:
            if attr == "glyph" and span != phrase:
                continue
            found.setdefault(attr, set()).add(value)
    return found


@pytest.fixture(scope="module")
def sample() -> Corpus:
    """400 samples of seed 7 (shared by the statistical tests)."""
    return render(range(400), seed=7)


def _ink_box(bitmap: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(bitmap)
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


def _clean(a: dict) -> dict:
    """The same sample with nothing but the glyph in the frame."""
    return {
        **a,
        "background": "plain",
        "clutter": "none",
        "contrast": "high",
        "inverted": False,
        "outline": "filled",
    }


# --- format -------------------------------------------------------------------------


def test_images_dtype_range_and_shape() -> None:
    c = render(range(60), seed=0)
    assert c.images.dtype == np.uint8 and c.images.shape == (60, 8, 8)
    assert c.images.max() <= 16 and c.images.max() == 16
    assert len(c.captions) == len(c.attrs) == len(c) == 60
    assert c.attrs["id"].tolist() == list(range(60))
    assert c.attrs["caption"].tolist() == c.captions
    for col in ("glyph", "glyph_kind", "font", "weight", "slant", "outline", "handwritten"):
        assert col in c.attrs.columns
    assert set(c.attrs["glyph_kind"]) <= {"digit", "letter", "symbol"}
    c16 = render(range(10), seed=0, size=16)
    assert c16.images.shape == (10, 16, 16) and c16.images.max() <= 16
    assert not (c16.images % 4).any()  # 2x2 blocks: counts 0..4 scaled by 4


def test_block_counts_on_synthetic_bitmaps() -> None:
    full = np.ones((32, 32), bool)
    empty = np.zeros((32, 32), bool)
    assert (block_counts(full, 8) == 16).all() and (block_counts(empty, 8) == 0).all()
    assert (block_counts(full, 16) == 16).all()
    one = empty.copy()
    one[4:8, 8:12] = True  # exactly block (1, 2)
    one[0, 0] = True  # one pixel of block (0, 0)
    out = block_counts(one, 8)
    assert out[1, 2] == 16 and out[0, 0] == 1 and out.sum() == 17
    rng = np.random.default_rng(0)
    bm = rng.random((3, 32, 32)) < 0.4
    ref = np.array([[[b[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].sum() for j in range(8)]
                     for i in range(8)] for b in bm])  # fmt: skip
    np.testing.assert_array_equal(block_counts(bm, 8), ref)
    with pytest.raises(ValueError):
        block_counts(full, 7)


def test_to_pil_scales_like_real_data() -> None:
    img = to_pil(np.array([[0, 8], [16, 4]], np.uint8))
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), [[0, 128], [255, 64]])


# --- determinism --------------------------------------------------------------------


def test_deterministic_by_id() -> None:
    whole = render(range(40), seed=3)
    a, b = render(range(20), seed=3), render(range(20, 40), seed=3)
    assert whole.images.tobytes() == np.concatenate([a.images, b.images]).tobytes()
    assert whole.captions == a.captions + b.captions
    pd.testing.assert_frame_equal(
        whole.attrs, pd.concat([a.attrs, b.attrs], ignore_index=True), check_dtype=False
    )
    shuffled = render([33, 5, 17], seed=3)
    assert shuffled.images.tobytes() == whole.images[[33, 5, 17]].tobytes()
    again = render(range(40), seed=3)
    assert again.images.tobytes() == whole.images.tobytes() and again.captions == whole.captions
    other = render(range(40), seed=4)
    assert other.images.tobytes() != whole.images.tobytes()
    assert other.captions != whole.captions


def test_golden_bytes() -> None:
    """The same ids and seed give the same images and captions as when the study was run
    (the hashes of lib/mini/corpus.py before it became a package)."""
    c = render(range(300), seed=0)
    digest = hashlib.sha256(c.images.tobytes())
    digest.update("\n".join(c.captions).encode())
    assert digest.hexdigest() == "aeaf473cfb4350cc5301ba0b425932a93f46a5a560b264c2cedb9aa59e6719e8"
    big = render(range(300), seed=0, size=16).images.tobytes()
    assert hashlib.sha256(big).hexdigest() == (
        "cc8a897547b639db41621d3a83ce5e583a60f39530e0ec8500a596c1b0e2fcd4"
    )


# --- vocabulary and captions -----------------------------------------------------------


def test_every_glyph_name_parses_to_its_glyph() -> None:
    assert set(GLYPH_NAMES) == set(DIGITS + LETTERS + SYMBOLS)
    for ch, names in GLYPH_NAMES.items():
        assert len(names) >= 2
        for name in names:
            assert parse_caption(name) == {"glyph": {ch}}, name


def test_lookalikes_have_distinct_names() -> None:
    for lookalike in "lIOoSsZzBbgqGAELT":
        assert lookalike in GLYPH_NAMES
    for group in LOOKALIKES:
        names = [set(GLYPH_NAMES[ch]) for ch in group if ch in GLYPH_NAMES]
        assert sum(len(n) for n in names) == len(set().union(*names)), group
    expect = {
        "the digit 1": "1",
        "the number one": "1",
        "a 1": "1",
        "the numeral one": "1",
        "the lowercase letter l": "l",
        "a small l": "l",
        "the capital letter I": "I",
        "an uppercase I": "I",
        "the letter O": "O",
        "a small o": "o",
        "the digit 0": "0",
        "the capital letter S": "S",
    }
    for text, ch in expect.items():
        assert parse_caption(text)["glyph"] == {ch}, text


def test_vocab_phrases_are_unambiguous() -> None:
    for vocab in (STYLE_VOCAB, CONTEXT_VOCAB):
        for attr, values in vocab.items():
            assert attr in ATTRIBUTES
            for value, phrases in values.items():
                assert phrases, (attr, value)
                for ph in phrases:
                    assert parse_caption(ph) == {attr: {value}}, ph
                    assert len(ph.split()) <= 6 and ph == ph.lower()


def test_parse_caption_detects_a_wrong_caption() -> None:
    parsed = parse_caption("a bold italic serif 7, small in the top left, on lined paper")
    assert parsed["glyph"] == {"7"}
    assert parsed["weight"] == {"bold"} and parsed["slant"] == {"italic"}
    assert parsed["font"] == {"serif"} and parsed["position"] == {"top left"}
    assert parsed["background"] == {"lined"} and "scale" not in parsed  # "small" is not a scale
    parsed = parse_caption("handwritten number seven, tall and narrow, tilted to the right")
    assert parsed == {
        "glyph": {"7"},
        "handwritten": {True},
        "aspect": {"tall"},
        "rotation": {"right"},
    }
    assert parse_caption("a printed 7")["handwritten"] == {False}


def test_captions_agree_with_attrs(sample: Corpus) -> None:
    mentioned = {a: 0 for a in ATTRIBUTES}
    for row in sample.attrs.to_dict("records"):
        parsed = parse_caption(row["caption"])
        assert parsed.pop("glyph") == {row["glyph"]}, row["caption"]
        for attr, values in parsed.items():
            assert values == {row[attr]}, (attr, row[attr], row["caption"])
            mentioned[attr] += 1
    assert all(k > 0 for k in mentioned.values()), mentioned  # every attribute gets named
    assert len(set(sample.captions)) > 0.9 * len(sample)


def test_handwritten_is_common_and_named(sample: Corpus) -> None:
    df = sample.attrs
    share = df["handwritten"].mean()
    assert 0.25 < share < 0.45
    hand = df[df["handwritten"]]
    named = [True in parse_caption(c).get("handwritten", set()) for c in hand["caption"]]
    assert np.mean(named) > 0.7
    printed = df[~df["handwritten"]]
    assert not any(True in parse_caption(c).get("handwritten", set()) for c in printed["caption"])


def test_glyph_weights_and_frequencies(sample: Corpus) -> None:
    w = glyph_weights()
    assert abs(sum(w.values()) - 1) < 1e-9 and set(w) == set(GLYPH_NAMES)
    assert abs(sum(w[c] for c in DIGITS) - 0.45) < 1e-9
    assert min(w[c] for c in "lIOoSsZzBbgqGAELT") > max(w[c] for c in OTHER_LETTERS)
    kinds = sample.attrs["glyph_kind"].value_counts(normalize=True)
    assert 0.35 < kinds["digit"] < 0.55 and kinds["symbol"] < 0.2


# --- rendering ------------------------------------------------------------------------


def test_all_fonts_draw_all_glyphs() -> None:
    for family in FONT_FILES:
        for ch in GLYPH_NAMES:
            for faces in fonts_for(family, ch):
                g = glyph_field(faces["regular"], ch)
                assert (g.sdf < 0).any() and g.w >= 1 and g.h >= 1


def test_aspect_tall_is_narrower_than_wide() -> None:
    ratios: dict[str, list[float]] = {"tall": [], "wide": []}
    i = 0
    while min(len(v) for v in ratios.values()) < 100:
        a = sample_attrs(11, i)
        i += 1
        if a["aspect"] not in ratios or a["rotation"] != "none" or a["glyph"] in "-=.":
            continue
        w, h = _ink_box(render_bitmap(_clean(a)))
        ratios[a["aspect"]].append(w / h)
    tall, wide = np.mean(ratios["tall"]), np.mean(ratios["wide"])
    assert tall < 0.7 * wide, (tall, wide)


def test_large_digits_fill_the_frame_vertically() -> None:
    heights = []
    for i in range(400):
        a = sample_attrs(5, i)
        if a["scale"] == "large" and a["glyph_kind"] == "digit" and a["rotation"] == "none":
            heights.append(_ink_box(render_bitmap(_clean(a)))[1])
    assert len(heights) > 20 and np.median(heights) >= 24


def test_handwritten_jitter_changes_the_glyph() -> None:
    changed, n_hand, n_print = 0, 0, 0
    for i in range(120):
        a = _clean(sample_attrs(2, i))
        jittered = render_bitmap(a, jitter=True)
        clean = render_bitmap(a, jitter=False)
        if a["handwritten"]:
            n_hand += 1
            np.testing.assert_array_equal(render_bitmap(a), jittered)
            changed += (jittered != clean).sum() >= 8
        else:
            n_print += 1
            np.testing.assert_array_equal(render_bitmap(a), clean)
    assert n_hand > 20 and n_print > 20 and changed == n_hand


def test_context_attributes_change_pixels() -> None:
    a = _clean(sample_attrs(0, 1))
    base = render_bitmap(a)
    inverted = render_bitmap({**a, "inverted": True})
    np.testing.assert_array_equal(inverted, ~base)
    for attr, value in [("background", "grid"), ("clutter", "line"), ("contrast", "low")]:
        assert (render_bitmap({**a, attr: value}) != base).any(), attr
    faint = render_bitmap({**a, "contrast": "low"})
    assert faint.sum() < base.sum()


# --- storage --------------------------------------------------------------------------


def test_write_load_round_trip(tmp_path) -> None:
    folder = write_corpus(tmp_path / "corpus", n=30, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == ["captions.parquet", "images.npy"]
    loaded = load_corpus(folder)
    ref = render(range(30), seed=1)
    assert loaded.images.tobytes() == ref.images.tobytes()
    assert loaded.images.dtype == np.uint8 and loaded.images.shape == (30, 8, 8)
    assert loaded.captions == ref.captions
    pd.testing.assert_frame_equal(loaded.attrs, ref.attrs, check_dtype=False)


def test_load_errors_name_the_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_corpus(tmp_path / "nowhere")
    folder = write_corpus(tmp_path / "c", n=12, seed=0)
    images = np.load(folder / "images.npy")
    np.save(folder / "images.npy", images[:-1])
    with pytest.raises(ValueError, match=str(folder.name)):
        load_corpus(folder)
    changed = images.copy()
    changed[0, 0, 0] = 16 - changed[0, 0, 0]
    np.save(folder / "images.npy", changed)
    with pytest.raises(ValueError, match="checksum"):
        load_corpus(folder)
    (folder / "captions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="captions.parquet"):
        load_corpus(folder)


def test_cli_and_preview(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main(["--out", str(tmp_path / "cli"), "--n", "9", "--seed", "2", "--size", "16"])
    corpus = load_corpus(tmp_path / "cli")
    assert corpus.images.shape == (9, 16, 16)
    fig = captioned_grid_figure(corpus.images, corpus.captions, n=9)
    assert len([ax for ax in fig.axes if ax.images]) == 9
    plt.close(fig)
