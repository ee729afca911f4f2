"""The rendered glyph corpus of the mini world (lib.mini.corpus)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.mini import corpus as C


@pytest.fixture(scope="module")
def sample() -> C.Corpus:
    """400 samples of seed 7 (shared by the statistical tests)."""
    return C.render(range(400), seed=7)


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
    c = C.render(range(60), seed=0)
    assert c.images.dtype == np.uint8 and c.images.shape == (60, 8, 8)
    assert c.images.max() <= 16 and c.images.max() == 16
    assert len(c.captions) == len(c.attrs) == len(c) == 60
    assert c.attrs["id"].tolist() == list(range(60))
    assert c.attrs["caption"].tolist() == c.captions
    for col in ("glyph", "glyph_kind", "font", "weight", "slant", "outline", "handwritten"):
        assert col in c.attrs.columns
    assert set(c.attrs["glyph_kind"]) <= {"digit", "letter", "symbol"}
    c16 = C.render(range(10), seed=0, size=16)
    assert c16.images.shape == (10, 16, 16) and c16.images.max() <= 16
    assert not (c16.images % 4).any()  # 2x2 blocks: counts 0..4 scaled by 4


def test_block_counts_on_synthetic_bitmaps() -> None:
    full = np.ones((32, 32), bool)
    empty = np.zeros((32, 32), bool)
    assert (C.block_counts(full, 8) == 16).all() and (C.block_counts(empty, 8) == 0).all()
    assert (C.block_counts(full, 16) == 16).all()
    one = empty.copy()
    one[4:8, 8:12] = True  # exactly block (1, 2)
    one[0, 0] = True  # one pixel of block (0, 0)
    out = C.block_counts(one, 8)
    assert out[1, 2] == 16 and out[0, 0] == 1 and out.sum() == 17
    rng = np.random.default_rng(0)
    bm = rng.random((3, 32, 32)) < 0.4
    ref = np.array([[[b[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].sum() for j in range(8)]
                     for i in range(8)] for b in bm])  # fmt: skip
    np.testing.assert_array_equal(C.block_counts(bm, 8), ref)
    with pytest.raises(ValueError):
        C.block_counts(full, 7)


def test_to_pil_scales_like_real_data() -> None:
    img = C.to_pil(np.array([[0, 8], [16, 4]], np.uint8))
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), [[0, 128], [255, 64]])


# --- determinism --------------------------------------------------------------------


def test_deterministic_by_id() -> None:
    whole = C.render(range(40), seed=3)
    a, b = C.render(range(20), seed=3), C.render(range(20, 40), seed=3)
    assert whole.images.tobytes() == np.concatenate([a.images, b.images]).tobytes()
    assert whole.captions == a.captions + b.captions
    pd.testing.assert_frame_equal(
        whole.attrs, pd.concat([a.attrs, b.attrs], ignore_index=True), check_dtype=False
    )
    shuffled = C.render([33, 5, 17], seed=3)
    assert shuffled.images.tobytes() == whole.images[[33, 5, 17]].tobytes()
    again = C.render(range(40), seed=3)
    assert again.images.tobytes() == whole.images.tobytes() and again.captions == whole.captions
    other = C.render(range(40), seed=4)
    assert other.images.tobytes() != whole.images.tobytes()
    assert other.captions != whole.captions


# --- vocabulary and captions -----------------------------------------------------------


def test_every_glyph_name_parses_to_its_glyph() -> None:
    assert set(C.GLYPH_NAMES) == set(C.DIGITS + C.LETTERS + C.SYMBOLS)
    for ch, names in C.GLYPH_NAMES.items():
        assert len(names) >= 2
        for name in names:
            assert C.parse_caption(name) == {"glyph": {ch}}, name


def test_lookalikes_have_distinct_names() -> None:
    for lookalike in "lIOoSsZzBbgqGAELT":
        assert lookalike in C.GLYPH_NAMES
    for group in C.LOOKALIKES:
        names = [set(C.GLYPH_NAMES[ch]) for ch in group if ch in C.GLYPH_NAMES]
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
        assert C.parse_caption(text)["glyph"] == {ch}, text


def test_vocab_phrases_are_unambiguous() -> None:
    for vocab in (C.STYLE_VOCAB, C.CONTEXT_VOCAB):
        for attr, values in vocab.items():
            assert attr in C.ATTRIBUTES
            for value, phrases in values.items():
                assert phrases, (attr, value)
                for ph in phrases:
                    assert C.parse_caption(ph) == {attr: {value}}, ph
                    assert len(ph.split()) <= 6 and ph == ph.lower()


def test_parse_caption_detects_a_wrong_caption() -> None:
    parsed = C.parse_caption("a bold italic serif 7, small in the top left, on lined paper")
    assert parsed["glyph"] == {"7"}
    assert parsed["weight"] == {"bold"} and parsed["slant"] == {"italic"}
    assert parsed["font"] == {"serif"} and parsed["position"] == {"top left"}
    assert parsed["background"] == {"lined"} and "scale" not in parsed  # "small" is not a scale
    parsed = C.parse_caption("handwritten number seven, tall and narrow, tilted to the right")
    assert parsed == {
        "glyph": {"7"},
        "handwritten": {True},
        "aspect": {"tall"},
        "rotation": {"right"},
    }
    assert C.parse_caption("a printed 7")["handwritten"] == {False}


def test_captions_agree_with_attrs(sample: C.Corpus) -> None:
    mentioned = {a: 0 for a in C.ATTRIBUTES}
    for row in sample.attrs.to_dict("records"):
        parsed = C.parse_caption(row["caption"])
        assert parsed.pop("glyph") == {row["glyph"]}, row["caption"]
        for attr, values in parsed.items():
            assert values == {row[attr]}, (attr, row[attr], row["caption"])
            mentioned[attr] += 1
    assert all(k > 0 for k in mentioned.values()), mentioned  # every attribute gets named
    assert len(set(sample.captions)) > 0.9 * len(sample)


def test_handwritten_is_common_and_named(sample: C.Corpus) -> None:
    df = sample.attrs
    share = df["handwritten"].mean()
    assert 0.25 < share < 0.45
    hand = df[df["handwritten"]]
    named = [True in C.parse_caption(c).get("handwritten", set()) for c in hand["caption"]]
    assert np.mean(named) > 0.7
    printed = df[~df["handwritten"]]
    assert not any(True in C.parse_caption(c).get("handwritten", set()) for c in printed["caption"])


def test_glyph_weights_and_frequencies(sample: C.Corpus) -> None:
    w = C.glyph_weights()
    assert abs(sum(w.values()) - 1) < 1e-9 and set(w) == set(C.GLYPH_NAMES)
    assert abs(sum(w[c] for c in C.DIGITS) - 0.45) < 1e-9
    assert min(w[c] for c in "lIOoSsZzBbgqGAELT") > max(w[c] for c in C.OTHER_LETTERS)
    kinds = sample.attrs["glyph_kind"].value_counts(normalize=True)
    assert 0.35 < kinds["digit"] < 0.55 and kinds["symbol"] < 0.2


# --- rendering ------------------------------------------------------------------------


def test_all_fonts_draw_all_glyphs() -> None:
    for family in C.FONT_FILES:
        for ch in C.GLYPH_NAMES:
            for faces in C._fonts_for(family, ch):
                g = C._glyph_field(faces["regular"], ch)
                assert (g.sdf < 0).any() and g.w >= 1 and g.h >= 1


def test_aspect_tall_is_narrower_than_wide() -> None:
    ratios: dict[str, list[float]] = {"tall": [], "wide": []}
    i = 0
    while min(len(v) for v in ratios.values()) < 100:
        a = C.sample_attrs(11, i)
        i += 1
        if a["aspect"] not in ratios or a["rotation"] != "none" or a["glyph"] in "-=.":
            continue
        w, h = _ink_box(C.render_bitmap(_clean(a)))
        ratios[a["aspect"]].append(w / h)
    tall, wide = np.mean(ratios["tall"]), np.mean(ratios["wide"])
    assert tall < 0.7 * wide, (tall, wide)


def test_large_digits_fill_the_frame_vertically() -> None:
    heights = []
    for i in range(400):
        a = C.sample_attrs(5, i)
        if a["scale"] == "large" and a["glyph_kind"] == "digit" and a["rotation"] == "none":
            heights.append(_ink_box(C.render_bitmap(_clean(a)))[1])
    assert len(heights) > 20 and np.median(heights) >= 24


def test_handwritten_jitter_changes_the_glyph() -> None:
    changed, n_hand, n_print = 0, 0, 0
    for i in range(120):
        a = _clean(C.sample_attrs(2, i))
        jittered = C.render_bitmap(a, jitter=True)
        clean = C.render_bitmap(a, jitter=False)
        if a["handwritten"]:
            n_hand += 1
            np.testing.assert_array_equal(C.render_bitmap(a), jittered)
            changed += (jittered != clean).sum() >= 8
        else:
            n_print += 1
            np.testing.assert_array_equal(C.render_bitmap(a), clean)
    assert n_hand > 20 and n_print > 20 and changed == n_hand


def test_context_attributes_change_pixels() -> None:
    a = _clean(C.sample_attrs(0, 1))
    base = C.render_bitmap(a)
    inverted = C.render_bitmap({**a, "inverted": True})
    np.testing.assert_array_equal(inverted, ~base)
    for attr, value in [("background", "grid"), ("clutter", "line"), ("contrast", "low")]:
        assert (C.render_bitmap({**a, attr: value}) != base).any(), attr
    faint = C.render_bitmap({**a, "contrast": "low"})
    assert faint.sum() < base.sum()


# --- storage --------------------------------------------------------------------------


def test_write_load_round_trip(tmp_path) -> None:
    folder = C.write_corpus(tmp_path / "corpus", n=30, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == ["captions.parquet", "images.npy"]
    loaded = C.load_corpus(folder)
    ref = C.render(range(30), seed=1)
    assert loaded.images.tobytes() == ref.images.tobytes()
    assert loaded.images.dtype == np.uint8 and loaded.images.shape == (30, 8, 8)
    assert loaded.captions == ref.captions
    pd.testing.assert_frame_equal(loaded.attrs, ref.attrs, check_dtype=False)


def test_load_errors_name_the_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        C.load_corpus(tmp_path / "nowhere")
    folder = C.write_corpus(tmp_path / "c", n=12, seed=0)
    images = np.load(folder / "images.npy")
    np.save(folder / "images.npy", images[:-1])
    with pytest.raises(ValueError, match=str(folder.name)):
        C.load_corpus(folder)
    changed = images.copy()
    changed[0, 0, 0] = 16 - changed[0, 0, 0]
    np.save(folder / "images.npy", changed)
    with pytest.raises(ValueError, match="checksum"):
        C.load_corpus(folder)
    (folder / "captions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="captions.parquet"):
        C.load_corpus(folder)


def test_cli_and_preview(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C.main(["--out", str(tmp_path / "cli"), "--n", "9", "--seed", "2", "--size", "16"])
    corpus = C.load_corpus(tmp_path / "cli")
    assert corpus.images.shape == (9, 16, 16)
    fig = C.preview_figure(corpus, n=9)
    assert len([ax for ax in fig.axes if ax.images]) == 9
    plt.close(fig)
