"""The rendered "web" corpus of the mini world: captioned glyph images (the LAION analogue).

# API READY

Each sample is one glyph (a digit, a letter or a symbol) drawn from a font that ships with
matplotlib, in the image format of scikit-learn's handwritten digits: a 32x32 binary bitmap
block-counted into ``size`` x ``size`` cells with values 0..16 (``size=8``: 4x4 blocks, exactly
the real data). Every image carries a web-alt-text-like caption produced by a small grammar
that names the glyph (always) and, each with some probability, its style (font family, weight,
slant, outline, hand-drawn jitter, aspect) and context (position, scale, rotation, background,
clutter, contrast, inversion).

Rendering: each (font file, glyph) is rasterised once with PIL at 64 px and turned into a
signed distance field (cached). An image samples that field through an affine map (aspect,
scale, shear, rotation, translation) plus, for hand-drawn samples, a smooth random displacement
field; thresholding the field at a per-image (and for hand-drawn samples, spatially varying)
offset sets the stroke weight, and a band around the threshold gives the outlined variant.

Determinism: every random choice of sample ``i`` comes from ``numpy_rng(seed, "corpus", i)``,
so any chunking or process split of the ids gives identical bytes.

Speed: about 2,400 images per CPU second on one core at ``size=8`` (``render`` with warm font
caches, measured with ``python -m lib.mini.corpus --bench`` on the 2-core dev machine; wall-clock
there was 850-1,700/s only because other jobs shared the cores, load average 4-6). The first use of each (font, glyph) costs
about 1 ms for its distance field; ``write_corpus`` of 100k samples takes about a minute.

The vocabulary the captions use is exported (``GLYPH_NAMES``, ``STYLE_VOCAB``,
``CONTEXT_VOCAB``) so that other modules can write prompts the mini models understand;
``parse_caption`` maps a caption back to the attribute values it mentions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tempfile
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from lib.seeding import numpy_rng

# --------------------------------------------------------------------------------------
# Glyphs and their names
# --------------------------------------------------------------------------------------

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

DIGITS = "0123456789"
#: Letters that look like digits (or like each other); sampled often.
LOOKALIKE_LETTERS = "lIOoSsZzBbgqGAELTDUuCcJjiYyt"
OTHER_LETTERS = "".join(
    c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in LOOKALIKE_LETTERS
)
LETTERS = LOOKALIKE_LETTERS + OTHER_LETTERS

_SYMBOL_NAMES: dict[str, tuple[str, ...]] = {
    "+": ("plus sign", "plus symbol", "plus"),
    "-": ("minus sign", "dash", "hyphen"),
    "=": ("equals sign", "equal sign", "equals symbol"),
    "#": ("hash sign", "hash symbol", "hashtag symbol"),
    "%": ("percent sign", "percent symbol", "percentage sign"),
    "?": ("question mark",),
    "!": ("exclamation mark", "exclamation point"),
    "&": ("ampersand", "and sign"),
    "@": ("at sign", "at symbol"),
    "*": ("asterisk", "star symbol"),
    "$": ("dollar sign", "dollar symbol"),
    "/": ("slash", "forward slash"),
    "<": ("less-than sign", "left angle bracket"),
    ">": ("greater-than sign", "right angle bracket"),
    "(": ("opening parenthesis", "left parenthesis"),
    ")": ("closing parenthesis", "right parenthesis"),
}
SYMBOLS = "".join(_SYMBOL_NAMES)

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


def _glyph_cores(ch: str) -> tuple[str, ...]:
    """Name phrases of one glyph without a determiner (adjectives can go in front)."""
    if ch in DIGITS:
        w = _NUMBER_WORDS[int(ch)]
        return (f"digit {ch}", f"number {w}", ch, f"numeral {w}", f"number {ch}", w, f"digit {w}")
    if ch.isalpha() and ch.islower():
        return (
            f"lowercase letter {ch}",
            f"small {ch}",
            f"lowercase {ch}",
            f"small letter {ch}",
            f"letter {ch} in lower case",
        )
    if ch.isalpha():
        return (
            f"capital letter {ch}",
            f"uppercase {ch}",
            f"capital {ch}",
            f"uppercase letter {ch}",
            f"letter {ch}",
        )
    return _SYMBOL_NAMES[ch]


def _article(word: str) -> str:
    """'a' or 'an' in front of ``word``."""
    w = word.lower()
    if w.startswith(("one", "uni", "use")):
        return "a"
    if w.startswith(("8", "11", "18")) or w[:1] in "aeiou":
        return "an"
    return "a"


def _with_determiners(core: str) -> tuple[str, ...]:
    return (f"the {core}", f"{_article(core)} {core}")


#: glyph char -> name paraphrases (with determiners, as they appear in captions).
GLYPH_NAMES: dict[str, tuple[str, ...]] = {
    ch: tuple(p for core in _glyph_cores(ch) for p in _with_determiners(core))
    for ch in DIGITS + LETTERS + SYMBOLS
}


def glyph_kind(ch: str) -> str:
    """'digit', 'letter' or 'symbol'."""
    return "digit" if ch in DIGITS else "letter" if ch.isalpha() else "symbol"


def glyph_weights() -> dict[str, float]:
    """Sampling probability of each glyph: digits ~45 %, look-alike letters ~30 %, rest rarer."""
    groups = ((DIGITS, 0.45), (LOOKALIKE_LETTERS, 0.30), (OTHER_LETTERS, 0.15), (SYMBOLS, 0.10))
    return {c: share / len(chars) for chars, share in groups for c in chars}


_GLYPHS = tuple(glyph_weights())
_GLYPH_P = np.array([glyph_weights()[c] for c in _GLYPHS])
_GLYPH_P = _GLYPH_P / _GLYPH_P.sum()
_GLYPH_CUM = np.cumsum(_GLYPH_P)

# --------------------------------------------------------------------------------------
# Attribute vocabulary: value -> (prenominal adjectives, postnominal phrases)
# --------------------------------------------------------------------------------------

_P = tuple[tuple[str, ...], tuple[str, ...]]

_STYLE: dict[str, dict[Any, _P]] = {
    "font": {
        "sans": (("sans-serif", "sans"), ("in a sans-serif font", "in a plain sans font")),
        "serif": (("serif",), ("in a serif font", "in a serif typeface")),
        "monospace": (("monospace", "monospaced", "fixed-width"), ("in a monospace font",)),
        "typewriter": (("typewriter", "typewritten"), ("in a typewriter font",)),
    },
    "weight": {
        "thin": (("thin", "light", "thin-stroked"), ("drawn with a thin pen", "with thin strokes")),
        "regular": (("regular", "normal-weight"), ("of regular weight",)),
        "bold": (("bold", "thick", "boldface"), ("drawn with a thick pen", "with thick strokes")),
        "heavy": (("heavy", "fat", "chunky"), ("with very heavy strokes",)),
    },
    "slant": {
        "upright": (("upright", "roman"), ()),
        "italic": (("italic", "italicised"), ("in italics",)),
        "slanted": (("slanted", "sloping", "oblique"), ("slanted to the right",)),
    },
    "outline": {
        "filled": (("solid", "filled"), ()),
        "outlined": (("outlined", "hollow"), ("in outline", "drawn as an outline")),
    },
    "handwritten": {
        True: (
            ("handwritten", "hand-drawn", "scribbled", "sketched"),
            ("written by hand", "drawn by hand"),
        ),
        False: (("printed", "typeset", "typed"), ()),
    },
    "aspect": {
        "wide": (("wide", "squat", "stretched"), ("stretched wide", "wide and squat")),
        "normal": ((), ("with normal proportions",)),
        "tall": (("tall narrow", "narrow", "condensed"), ("tall and narrow",)),
    },
}

_POSITIONS = {
    "centred": (0.5, 0.5),
    "top left": (0.0, 0.0),
    "top": (0.5, 0.0),
    "top right": (1.0, 0.0),
    "left": (0.0, 0.5),
    "right": (1.0, 0.5),
    "bottom left": (0.0, 1.0),
    "bottom": (0.5, 1.0),
    "bottom right": (1.0, 1.0),
}


def _position_phrases(name: str) -> _P:
    if name == "centred":
        return ((), ("centred", "centered", "in the centre", "in the middle"))
    if " " in name:
        v, h = name.split()
        upper = {"top": "upper", "bottom": "lower"}[v]
        return ((), (f"in the {name}", f"in the {name} corner", f"at the {upper} {h}"))
    if name in ("top", "bottom"):
        return ((), (f"at the {name}", f"near the {name} edge"))
    return ((), (f"on the {name}", f"at the {name} side"))


_CONTEXT: dict[str, dict[Any, _P]] = {
    "position": {name: _position_phrases(name) for name in _POSITIONS},
    "scale": {
        "small": (("tiny", "little"), ("at a tiny size",)),
        "medium": (("medium-sized", "mid-sized"), ("of medium size",)),
        "large": (("large", "big"), ("filling the frame", "filling the whole image")),
    },
    "rotation": {
        "none": (("straight",), ("not rotated",)),
        "left": (("left-tilted",), ("tilted to the left", "rotated to the left", "leaning left")),
        "right": (
            ("right-tilted",),
            ("tilted to the right", "rotated to the right", "leaning right"),
        ),
    },
    "background": {
        "plain": ((), ("on a plain background", "on a blank background")),
        "dotted": ((), ("on a dotted background", "on dotted paper")),
        "lined": ((), ("on lined paper", "on ruled paper", "with horizontal lines behind it")),
        "grid": ((), ("on grid paper", "on squared paper", "on graph paper")),
        "noisy": ((), ("on a speckled background", "on a noisy background", "with speckle noise")),
    },
    "clutter": {
        "none": (("clean",), ("with nothing else around",)),
        "dot": ((), ("with a stray dot", "with an extra dot nearby")),
        "line": ((), ("with a stray line", "with a short stray stroke")),
        "fragment": ((), ("with part of another character", "next to a partial character")),
    },
    "contrast": {
        "high": (("crisp", "high-contrast"), ("in high contrast",)),
        "low": (("faint", "faded", "low-contrast"), ("in low contrast", "barely visible")),
    },
    "inverted": {
        True: (("inverted",), ("in negative", "with inverted colours")),
        False: ((), ("with normal colours",)),
    },
}


def _flatten(v: dict[str, dict[Any, _P]]) -> dict[str, dict[Any, tuple[str, ...]]]:
    return {a: {k: pre + post for k, (pre, post) in vals.items()} for a, vals in v.items()}


#: attribute -> value -> paraphrases (values are exactly those of the ``attrs`` columns).
STYLE_VOCAB: dict[str, dict[Any, tuple[str, ...]]] = _flatten(_STYLE)
#: attribute -> value -> paraphrases for the context attributes.
CONTEXT_VOCAB: dict[str, dict[Any, tuple[str, ...]]] = _flatten(_CONTEXT)
_ALL_VOCAB: dict[str, dict[Any, _P]] = {**_STYLE, **_CONTEXT}

#: P(an attribute is named in the caption | its value is / is not the "default" value).
_DEFAULTS: dict[str, Any] = {
    "font": None,
    "weight": "regular",
    "slant": "upright",
    "outline": "filled",
    "handwritten": False,
    "aspect": "normal",
    "position": "centred",
    "scale": None,
    "rotation": "none",
    "background": "plain",
    "clutter": "none",
    "contrast": "high",
    "inverted": False,
}
_MENTION_P: dict[str, tuple[float, float]] = {  # (non-default, default)
    "font": (0.45, 0.45),
    "weight": (0.6, 0.1),
    "slant": (0.6, 0.1),
    "outline": (0.75, 0.08),
    "handwritten": (0.85, 0.15),
    "aspect": (0.6, 0.08),
    "position": (0.6, 0.25),
    "scale": (0.45, 0.45),
    "rotation": (0.55, 0.08),
    "background": (0.6, 0.12),
    "clutter": (0.55, 0.08),
    "contrast": (0.6, 0.08),
    "inverted": (0.75, 0.04),
}
ATTRIBUTES: tuple[str, ...] = tuple(_MENTION_P)
# canonical order of prenominal adjectives (English adjective order, roughly)
_PRE_ORDER = (
    "scale", "contrast", "inverted", "clutter", "rotation", "handwritten", "weight", "slant",
    "outline", "aspect", "font",
)  # fmt: skip
_FRAMES = (
    "{}", "{}", "{}", "{}", "an image of {}", "a picture of {}", "a drawing of {}",
    "a photo of {}", "a close-up of {}", "{}, alt text", "clip art of {}",
)  # fmt: skip


def make_caption(glyph: str, attrs: Mapping[str, Any], rng: np.random.Generator) -> str:
    """A caption naming ``glyph`` and, each with some probability, the attributes in ``attrs``.

    ``attrs`` maps attribute names (``ATTRIBUTES``) to values (keys of ``STYLE_VOCAB`` /
    ``CONTEXT_VOCAB``); missing attributes are not mentioned.
    """
    pre: list[tuple[str, str]] = []
    post: list[str] = []
    for attr in ATTRIBUTES:
        if attr not in attrs:
            continue
        value = attrs[attr]
        p_non, p_def = _MENTION_P[attr]
        p = p_def if value == _DEFAULTS[attr] else p_non
        if attr == "font" and attrs.get("handwritten"):
            p *= 0.4
        if rng.random() >= p:
            continue
        adjs, phrases = _ALL_VOCAB[attr][value]
        if adjs and (not phrases or rng.random() < 0.6):
            pre.append((attr, adjs[rng.integers(len(adjs))]))
        else:
            post.append(phrases[rng.integers(len(phrases))])
    if len(pre) > 1 and rng.random() < 0.85:
        pre.sort(key=lambda t: _PRE_ORDER.index(t[0]))
    elif len(pre) > 1:
        pre = [pre[i] for i in rng.permutation(len(pre))]
    cores = _glyph_cores(glyph)
    core = cores[rng.integers(len(cores))]
    noun = " ".join([w for _, w in pre] + [core])
    r = rng.random()
    det = "the " if r < 0.3 else f"{_article(noun)} " if r < 0.85 else ""
    head = det + noun
    post = [post[i] for i in rng.permutation(len(post))]
    if post:
        seps = [", " if rng.random() < 0.6 else " " for _ in post]
        head += "".join(s + p for s, p in zip(seps, post, strict=True))
    frame = _FRAMES[rng.integers(len(_FRAMES))]
    text = frame.format(head)
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


@lru_cache(maxsize=1)
def _phrase_index() -> tuple[re.Pattern[str], dict[str, list[tuple[str, Any, str]]]]:
    owners: dict[str, list[tuple[str, Any, str]]] = {}
    for attr, vals in _ALL_VOCAB.items():
        for value, (pre, post) in vals.items():
            for ph in pre + post:
                owners.setdefault(ph.lower(), []).append((attr, value, ph))
    for ch in GLYPH_NAMES:
        for core in _glyph_cores(ch):
            owners.setdefault(core.lower(), []).append(("glyph", ch, core))
    phrases = sorted(owners, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p in phrases) + r")(?![\w-])")
    return pattern, owners


def parse_caption(caption: str) -> dict[str, set[Any]]:
    """Attribute values (and ``"glyph"``) named in ``caption``, matching the longest vocabulary
    phrase first. Glyph names are matched case-sensitively (``capital letter I`` is not
    ``lowercase letter l``; ``letter O`` is not ``letter o``), the rest case-insensitively."""
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


# --------------------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------------------

#: family -> fonts, each a mapping face -> file name (under matplotlib's fonts/ttf).
FONT_FILES: dict[str, tuple[dict[str, str], ...]] = {
    "sans": (
        {
            "regular": "DejaVuSans.ttf",
            "bold": "DejaVuSans-Bold.ttf",
            "italic": "DejaVuSans-Oblique.ttf",
            "bolditalic": "DejaVuSans-BoldOblique.ttf",
        },
        {"regular": "cmss10.ttf"},
    ),
    "serif": (
        {
            "regular": "DejaVuSerif.ttf",
            "bold": "DejaVuSerif-Bold.ttf",
            "italic": "DejaVuSerif-Italic.ttf",
            "bolditalic": "DejaVuSerif-BoldItalic.ttf",
        },
        {
            "regular": "STIXGeneral.ttf",
            "bold": "STIXGeneralBol.ttf",
            "italic": "STIXGeneralItalic.ttf",
            "bolditalic": "STIXGeneralBolIta.ttf",
        },
        {"regular": "cmr10.ttf", "bold": "cmb10.ttf", "italic": "cmti10.ttf"},
    ),
    "monospace": (
        {
            "regular": "DejaVuSansMono.ttf",
            "bold": "DejaVuSansMono-Bold.ttf",
            "italic": "DejaVuSansMono-Oblique.ttf",
            "bolditalic": "DejaVuSansMono-BoldOblique.ttf",
        },
    ),
    "typewriter": ({"regular": "cmtt10.ttf"},),
}
# TeX text fonts (OT1 encoding) draw these code points as other glyphs ('<' is an inverted '!')
_OT1_FONTS = ("cmr10.ttf", "cmss10.ttf", "cmb10.ttf", "cmti10.ttf")
_OT1_BAD = {"<", ">", "|", "$", "\\", "_", "{", "}", '"'}

_RASTER_PX = 64  # font size of the cached rasterisation
_PAD = 12


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=64)
def _font(file: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_font_dir() / file), _RASTER_PX)


@lru_cache(maxsize=64)
def _cap_height(file: str) -> float:
    """Ink height of 'H' in raster pixels: the unit glyph heights are measured in."""
    box = _font(file).getbbox("H")
    return float(box[3] - box[1])


@dataclass(frozen=True)
class _GlyphField:
    sdf: np.ndarray  # float32 [H, W], raster px, negative inside
    cx: float  # ink box centre (column, row) in sdf coordinates
    cy: float
    w: float  # ink box size, raster px
    h: float


@lru_cache(maxsize=4096)
def _glyph_field(file: str, ch: str) -> _GlyphField:
    """Signed distance field of ``ch`` drawn in ``file`` (cached)."""
    from scipy.ndimage import distance_transform_edt

    font = _font(file)
    x0, y0, x1, y1 = font.getbbox(ch)
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    img = Image.new("L", (w + 2 * _PAD, h + 2 * _PAD), 0)
    ImageDraw.Draw(img).text((_PAD - x0, _PAD - y0), ch, font=font, fill=255)
    ink = np.asarray(img) >= 128
    if not ink.any():
        raise ValueError(f"{file} draws nothing for {ch!r}")
    rows, cols = np.nonzero(ink)
    sdf = distance_transform_edt(~ink) - distance_transform_edt(ink)
    # half-pixel correction so the zero level sits on the edge between pixels
    sdf = np.where(ink, sdf + 0.5, sdf - 0.5).astype(np.float32)
    return _GlyphField(
        sdf=sdf,
        cx=(cols.min() + cols.max() + 1) / 2,
        cy=(rows.min() + rows.max() + 1) / 2,
        w=float(cols.max() + 1 - cols.min()),
        h=float(rows.max() + 1 - rows.min()),
    )


def _draws_correctly(faces: Mapping[str, str], ch: str) -> bool:
    return not (ch in _OT1_BAD and any(f in _OT1_FONTS for f in faces.values()))


def _fonts_for(family: str, ch: str) -> tuple[dict[str, str], ...]:
    """The fonts of ``family`` that draw ``ch`` as itself (all faces)."""
    ok = tuple(f for f in FONT_FILES[family] if _draws_correctly(f, ch))
    if not ok:
        raise ValueError(f"no {family} font draws {ch!r}")
    return ok


# --------------------------------------------------------------------------------------
# Attribute sampling
# --------------------------------------------------------------------------------------

_CHOICES: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {
    "font": (("sans", "serif", "monospace", "typewriter"), (0.35, 0.3, 0.2, 0.15)),
    "font_hand": (("sans", "serif", "monospace", "typewriter"), (0.55, 0.15, 0.2, 0.1)),
    "weight": (("thin", "regular", "bold", "heavy"), (0.2, 0.4, 0.25, 0.15)),
    "slant": (("upright", "italic", "slanted"), (0.6, 0.25, 0.15)),
    "aspect": (("wide", "normal", "tall"), (0.2, 0.45, 0.35)),
    "position": (tuple(_POSITIONS), (0.5,) + (0.5 / 8,) * 8),
    "scale": (("small", "medium", "large"), (0.2, 0.35, 0.45)),
    "rotation": (("none", "left", "right"), (0.55, 0.225, 0.225)),
    "background": (("plain", "dotted", "lined", "grid", "noisy"), (0.55, 0.1, 0.12, 0.1, 0.13)),
    "clutter": (("none", "dot", "line", "fragment"), (0.7, 0.1, 0.1, 0.1)),
    "contrast": (("high", "low"), (0.8, 0.2)),
}
P_HANDWRITTEN = 0.35
P_OUTLINED = 0.12
P_INVERTED = 0.07

_HEIGHT_RANGE = {"small": (10.0, 14.0), "medium": (16.0, 21.0), "large": (25.0, 30.0)}
_ASPECT_RANGE = {"wide": (1.35, 1.7), "normal": (0.95, 1.1), "tall": (0.68, 0.85)}
_WEIGHT_OFFSET = {"thin": -0.45, "regular": 0.0, "bold": 0.35, "heavy": 0.8}  # at 24 px height
_THIN_HAIRLINE = -0.2  # "thin" offset for fonts with hairlines (serif), which would break up
_HAIRLINE_FONTS = ("DejaVuSerif", "STIX", "cmr", "cmb", "cmti")


@cache
def _cumulative(key: str) -> np.ndarray:
    c = np.cumsum(_CHOICES[key][1])
    return c / c[-1]


def _pick(rng: np.random.Generator, key: str) -> Any:
    """One value of ``_CHOICES[key]`` (inverse CDF: much faster than ``rng.choice(p=...)``)."""
    values = _CHOICES[key][0]
    return values[
        min(int(np.searchsorted(_cumulative(key), rng.random(), "right")), len(values) - 1)
    ]


def _pick_glyph(rng: np.random.Generator) -> str:
    k = int(np.searchsorted(_GLYPH_CUM, rng.random(), "right"))
    return _GLYPHS[min(k, len(_GLYPHS) - 1)]


def sample_attrs(seed: int, i: int) -> dict[str, Any]:
    """All attributes of sample ``i`` (including the numeric draws used by the renderer)."""
    rng = numpy_rng(seed, "corpus", int(i))
    glyph = _pick_glyph(rng)
    hand = bool(rng.random() < P_HANDWRITTEN)
    a: dict[str, Any] = {"id": int(i), "glyph": glyph, "glyph_kind": glyph_kind(glyph)}
    a["font"] = _pick(rng, "font_hand" if hand else "font")
    a["weight"] = _pick(rng, "weight")
    a["slant"] = _pick(rng, "slant")
    a["outline"] = "outlined" if rng.random() < P_OUTLINED * (0.3 if hand else 1.0) else "filled"
    if a["outline"] == "outlined" and a["weight"] == "thin":
        a["weight"] = "regular"
    a["handwritten"] = hand
    a["aspect"] = _pick(rng, "aspect")
    a["position"] = _pick(rng, "position")
    a["scale"] = _pick(rng, "scale")
    if a["scale"] == "large":
        a["position"] = "centred"
    a["rotation"] = _pick(rng, "rotation")
    a["background"] = _pick(rng, "background")
    a["clutter"] = _pick(rng, "clutter")
    a["contrast"] = _pick(rng, "contrast")
    a["inverted"] = bool(rng.random() < P_INVERTED)
    # numeric draws
    fonts = _fonts_for(a["font"], glyph)
    faces = fonts[rng.integers(len(fonts))]
    bold = a["weight"] in ("bold", "heavy")
    face = ("bold" if bold else "") + ("italic" if a["slant"] == "italic" else "")
    face = face or "regular"
    shear = 0.0
    if face not in faces:
        if "italic" in face:
            shear = rng.uniform(0.18, 0.28)
        face = "bold" if bold and "bold" in faces else "regular"
    a["font_file"] = faces[face]
    a["face_bold"] = "bold" in face
    if a["slant"] == "slanted":
        shear = rng.uniform(0.3, 0.45)
    a["shear"] = shear
    angle = rng.uniform(6.0, 25.0)
    a["angle"] = {"none": 0.0, "left": -angle, "right": angle}[a["rotation"]]
    lo, hi = _HEIGHT_RANGE[a["scale"]]
    a["height"] = rng.uniform(lo, hi)
    lo, hi = _ASPECT_RANGE[a["aspect"]]
    a["aspect_ratio"] = rng.uniform(lo, hi)
    a["caption_seed"] = int(rng.integers(2**62))
    a["render_seed"] = int(rng.integers(2**62))
    return a


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

BITMAP = 32  # side of the binary bitmap (as in the UCI optdigits preprocessing)
_SS = 2  # supersampling per bitmap pixel
_N = BITMAP * _SS
_GRID = (np.arange(_N, dtype=np.float32) + 0.5) / _SS


@lru_cache(maxsize=8)
def _upsample_matrix(k: int) -> np.ndarray:
    """[_N, k] linear interpolation from a k-point coarse grid spanning the frame."""
    pos = _GRID / BITMAP * (k - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, k - 2)
    t = pos - lo
    m = np.zeros((_N, k), np.float32)
    m[np.arange(_N), lo] = 1 - t
    m[np.arange(_N), lo + 1] = t
    return m


def _smooth_field(rng: np.random.Generator, k: int, amp: float) -> np.ndarray:
    m = _upsample_matrix(k)
    return (m @ (rng.standard_normal((k, k)).astype(np.float32) * amp) @ m.T).astype(np.float32)


def _bilinear(f: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``f`` sampled at pixel coordinates (x, y) (pixel centres at +0.5), clamped at the edge."""
    h, w = f.shape
    x = np.clip(x - 0.5, 0, w - 1.001)
    y = np.clip(y - 0.5, 0, h - 1.001)
    x0 = x.astype(np.intp)
    y0 = y.astype(np.intp)
    tx = x - x0
    ty = y - y0
    flat = f.ravel()
    i = y0 * w + x0
    top = flat.take(i)
    top += (flat.take(i + 1) - top) * tx
    bot = flat.take(i + w)
    bot += (flat.take(i + w + 1) - bot) * tx
    return top + (bot - top) * ty


def _glyph_bitmap(
    a: Mapping[str, Any], rng: np.random.Generator, *, jitter: bool
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The glyph of ``a`` as a [32, 32] bool bitmap and its ink box (x0, y0, x1, y1)."""
    g = _glyph_field(a["font_file"], a["glyph"])
    unit = a["height"] / _cap_height(a["font_file"])  # output px per raster px
    sy = unit
    sx = unit * a["aspect_ratio"]
    th = np.deg2rad(a["angle"])
    c, s = float(np.cos(th)), float(np.sin(th))
    k = -a["shear"] + ((rng.uniform(-0.12, 0.12)) if jitter else 0.0)  # x += k * y
    # A = rotation @ shear @ diag(sx, sy), as plain floats (2x2 numpy ops are slow)
    a00, a01 = c * sx, (c * k - s) * sy
    a10, a11 = s * sx, (s * k + c) * sy
    # fit into the frame, then place
    ex = (abs(a00) * g.w + abs(a01) * g.h) / 2
    ey = (abs(a10) * g.w + abs(a11) * g.h) / 2
    margin = 0.5 + (1.0 if jitter else 0.0)
    fit = min(1.0, (BITMAP / 2 - margin) / max(ex, 1e-6), (BITMAP / 2 - margin) / max(ey, 1e-6))
    a00, a01, a10, a11 = a00 * fit, a01 * fit, a10 * fit, a11 * fit
    ex, ey = ex * fit, ey * fit
    fx, fy = _POSITIONS[a["position"]]
    jx, jy = rng.uniform(-0.06, 0.06, 2)
    fx = float(np.clip(fx + jx if fx == 0.5 else abs(fx - rng.uniform(0, 0.15)), 0, 1))
    fy = float(np.clip(fy + jy if fy == 0.5 else abs(fy - rng.uniform(0, 0.15)), 0, 1))
    tx = ex + margin + fx * (BITMAP - 2 * (ex + margin))
    ty = ey + margin + fy * (BITMAP - 2 * (ey + margin))
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    scale_px = a["height"] * fit / 24.0  # stroke offsets are defined at 24 px glyphs
    offset = _WEIGHT_OFFSET[a["weight"]] * scale_px
    if a["weight"] == "thin" and a["font_file"].startswith(_HAIRLINE_FONTS):
        offset = _THIN_HAIRLINE * scale_px
    if a["weight"] in ("bold", "heavy") and not a["face_bold"]:
        offset += 0.6 * scale_px
    # sample only a window around the glyph (plus room for the stroke offset and jitter)
    pad = 1.0 + max(offset, 0.0)
    if jitter:
        amp = 0.075 * a["height"] * fit
        pad += 3.0 * amp + 1.3 * scale_px
    c0 = max(int((tx - ex - pad) * _SS) // _SS * _SS, 0)
    c1 = min(-(-int((tx + ex + pad) * _SS + 1) // _SS) * _SS, _N)
    r0 = max(int((ty - ey - pad) * _SS) // _SS * _SS, 0)
    r1 = min(-(-int((ty + ey + pad) * _SS + 1) // _SS) * _SS, _N)
    px = _GRID[None, c0:c1]
    py = _GRID[r0:r1, None]
    if jitter:
        px = px + _smooth_field(rng, 5, amp)[r0:r1, c0:c1]
        py = py + _smooth_field(rng, 5, amp)[r0:r1, c0:c1]
        thick = _smooth_field(rng, 4, 0.3 * scale_px)[r0:r1, c0:c1]
        extra = rng.uniform(0.2, 0.8) if a["weight"] in ("bold", "heavy") else rng.uniform(0.6, 1.5)
        offset = min(offset + extra * scale_px, 1.6 * scale_px) + thick
        offset = np.maximum(offset, -0.2 * scale_px)
    dx = px - np.float32(tx)
    dy = py - np.float32(ty)
    gx = np.float32(i00) * dx + np.float32(i01) * dy + np.float32(g.cx)
    gy = np.float32(i10) * dx + np.float32(i11) * dy + np.float32(g.cy)
    d = _bilinear(g.sdf, gx, gy) * np.float32(unit * fit * np.sqrt(a["aspect_ratio"]))
    ink = d < offset
    if a["outline"] == "outlined":
        ink &= d > offset - 1.1 * max(scale_px, 0.8)
    cover = ink.reshape((r1 - r0) // _SS, _SS, (c1 - c0) // _SS, _SS).sum((1, 3))
    bitmap = np.zeros((BITMAP, BITMAP), bool)
    bitmap[r0 // _SS : r1 // _SS, c0 // _SS : c1 // _SS] = cover * 2 >= _SS * _SS
    box = (tx - ex, ty - ey, tx + ex, ty + ey)
    return bitmap, box


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    bg = np.zeros((BITMAP, BITMAP), bool)
    if kind == "dotted":
        step = int(rng.integers(4, 7))
        ox, oy = rng.integers(0, step, 2)
        bg[oy::step, ox::step] = True
    elif kind in ("lined", "grid"):
        step = int(rng.integers(5, 9))
        bg[int(rng.integers(0, step)) :: step, :] = True
        if kind == "grid":
            bg[:, int(rng.integers(0, step)) :: step] = True
        bg &= rng.random(bg.shape) < rng.uniform(0.4, 0.85)
    elif kind == "noisy":
        bg = rng.random(bg.shape) < rng.uniform(0.02, 0.06)
    return bg


def _free_spot(rng: np.random.Generator, box: tuple[float, ...], pad: float) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    for _ in range(12):
        x, y = rng.uniform(1, BITMAP - 1, 2)
        if not (x0 - pad < x < x1 + pad and y0 - pad < y < y1 + pad):
            return float(x), float(y)
    return float(x), float(y)


def _clutter(kind: str, box: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """A stray dot, a short stray line or a fragment of a second glyph cut by the frame edge."""
    out = np.zeros((BITMAP, BITMAP), bool)
    if kind == "dot":
        x, y = _free_spot(rng, box, 1.5)
        r = rng.uniform(0.8, 1.6)
        yy, xx = np.mgrid[0:BITMAP, 0:BITMAP] + 0.5
        out = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    elif kind == "line":
        x, y = _free_spot(rng, box, 1.0)
        length = rng.uniform(4, 10)
        th = rng.uniform(0, np.pi)
        t = np.linspace(-length / 2, length / 2, 24)
        xs = np.clip((x + t * np.cos(th)).astype(int), 0, BITMAP - 1)
        ys = np.clip((y + t * np.sin(th)).astype(int), 0, BITMAP - 1)
        out[ys, xs] = True
    elif kind == "fragment":
        other = _pick_glyph(rng)
        x, y = _free_spot(rng, box, 2.0)
        # a second small glyph centred on a free spot near an edge, cut by the frame edge
        side = int(rng.integers(4))
        if side == 0:
            x = rng.uniform(-2, 2)
        elif side == 1:
            x = BITMAP + rng.uniform(-2, 2)
        elif side == 2:
            y = rng.uniform(-2, 2)
        else:
            y = BITMAP + rng.uniform(-2, 2)
        g = _glyph_field("DejaVuSans.ttf", other)
        unit = rng.uniform(9, 14) / _cap_height("DejaVuSans.ttf")
        yy, xx = np.mgrid[0:BITMAP, 0:BITMAP] + 0.5
        d = _bilinear(g.sdf, (xx - x) / unit + g.cx, (yy - y) / unit + g.cy) * unit
        out = d < 0.3
    return out


def _blocks(bitmap: np.ndarray, size: int) -> np.ndarray:
    """Block-count a [..., 32, 32] binary bitmap into [..., size, size] values 0..16."""
    if BITMAP % size:
        raise ValueError(f"size must divide {BITMAP}, got {size}")
    b = BITMAP // size
    shape = bitmap.shape[:-2] + (size, b, size, b)
    counts = bitmap.reshape(shape).sum(axis=(-3, -1), dtype=np.int32)
    return np.rint(counts * (16.0 / (b * b))).astype(np.uint8)


block_counts = _blocks


def render_bitmap(a: Mapping[str, Any], *, jitter: bool | None = None) -> np.ndarray:
    """The [32, 32] bool bitmap of one sample from its attributes (``sample_attrs``).

    ``jitter`` overrides the hand-drawn displacement (``None``: as in ``a["handwritten"]``);
    everything else is drawn from ``a["render_seed"]``, so ``jitter=False`` gives the clean
    render of the same sample.
    """
    rng = np.random.default_rng(a["render_seed"])
    jitter = a["handwritten"] if jitter is None else jitter
    glyph, box = _glyph_bitmap(a, np.random.default_rng(rng.integers(2**62)), jitter=jitter)
    if a["contrast"] == "low":
        glyph &= rng.random(glyph.shape) >= rng.uniform(0.3, 0.5)
    bitmap = glyph | _background(a["background"], rng) | _clutter(a["clutter"], box, rng)
    if a["inverted"]:
        bitmap = ~bitmap
    return bitmap


_ATTR_COLUMNS = (
    "id", "glyph", "glyph_kind", "font", "weight", "slant", "outline", "handwritten", "aspect",
    "position", "scale", "rotation", "background", "clutter", "contrast", "inverted", "caption",
    "font_file", "angle", "shear", "height", "aspect_ratio",
)  # fmt: skip


@dataclass(frozen=True)
class Corpus:
    """Rendered samples: ``images`` uint8 [N, size, size] in 0..16, one caption and one
    ``attrs`` row (columns ``_ATTR_COLUMNS``, including ``caption``) per sample."""

    images: np.ndarray
    captions: list[str]
    attrs: pd.DataFrame

    def __len__(self) -> int:
        return len(self.captions)


def render(ids: Sequence[int] | Iterable[int], seed: int, size: int = 8) -> Corpus:
    """Render samples ``ids`` of the corpus with ``seed`` at ``size`` x ``size``."""
    rows = []
    ids = [int(i) for i in ids]
    bitmaps = np.empty((len(ids), BITMAP, BITMAP), bool)
    for k, i in enumerate(ids):
        a = sample_attrs(seed, i)
        bitmaps[k] = render_bitmap(a)
        a["caption"] = make_caption(a["glyph"], a, np.random.default_rng(a["caption_seed"]))
        rows.append(a)
    attrs = pd.DataFrame(rows, columns=list(_ATTR_COLUMNS))
    if not rows:
        attrs = attrs.astype({"id": np.int64, "handwritten": bool, "inverted": bool})
    return Corpus(_blocks(bitmaps, size), attrs["caption"].tolist(), attrs)


# --------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------

_META_KEY = b"synthscale.corpus"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_corpus(
    folder: str | os.PathLike[str], n: int, seed: int, size: int = 8, progress: bool = False
) -> Path:
    """Render ids ``[0, n)`` into ``folder/images.npy`` and ``folder/captions.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chunk = 2000
    starts = range(0, n, chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="corpus", unit="chunk")
    parts = [render(range(s, min(s + chunk, n)), seed, size) for s in starts]
    images = (
        np.concatenate([p.images for p in parts]) if parts else np.zeros((0, size, size), np.uint8)
    )
    attrs = (
        pd.concat([p.attrs for p in parts], ignore_index=True) if parts else render([], seed).attrs
    )
    meta = {
        "n": int(n),
        "seed": int(seed),
        "size": int(size),
        "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
    }
    table = pa.Table.from_pandas(attrs, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    _atomic_write(folder / "images.npy", lambda t: np.save(open(t, "wb"), images))
    _atomic_write(folder / "captions.parquet", lambda t: pq.write_table(table, t))
    return folder


def load_corpus(folder: str | os.PathLike[str]) -> Corpus:
    """Read a corpus written by ``write_corpus``; ``ValueError`` naming ``folder`` if it is
    missing, incomplete or inconsistent."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    img_path, cap_path = folder / "images.npy", folder / "captions.parquet"
    missing = [p.name for p in (img_path, cap_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"corpus folder {folder} lacks {', '.join(missing)}")
    try:
        images = np.load(img_path, allow_pickle=False)
        table = pq.read_table(cap_path)
    except Exception as e:  # noqa: BLE001 - re-raised with the folder named
        raise ValueError(f"corpus folder {folder}: unreadable ({e})") from e
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"corpus folder {folder}: captions.parquet has no corpus metadata")
    meta = json.loads(raw)
    attrs = table.to_pandas()
    problems = []
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (meta["size"],) * 2:
        problems.append(f"images are {images.dtype} {images.shape}, expected uint8 [N, size, size]")
    if len(images) != len(attrs) or len(attrs) != meta["n"]:
        problems.append(f"{len(images)} images, {len(attrs)} captions, metadata says {meta['n']}")
    elif hashlib.sha256(images.tobytes()).hexdigest() != meta["images_sha256"]:
        problems.append("images.npy does not match captions.parquet (checksum)")
    if problems:
        raise ValueError(f"corpus folder {folder} is inconsistent: " + "; ".join(problems))
    return Corpus(images, attrs["caption"].tolist(), attrs)


# --------------------------------------------------------------------------------------
# Viewing
# --------------------------------------------------------------------------------------


def to_pil(image: np.ndarray) -> Image.Image:
    """An 'L' image of one 0..16 sample, scaled like the real data (``rint(v * 255 / 16)``)."""
    arr = np.rint(np.asarray(image, dtype=np.float32) * (255.0 / 16.0)).astype(np.uint8)
    return Image.fromarray(arr, mode="L")


def preview_figure(corpus: Corpus, n: int = 32, cols: int = 8, width: int = 22):
    """A matplotlib figure of the first ``n`` samples with their captions."""
    import matplotlib.pyplot as plt

    n = min(n, len(corpus))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.6), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(corpus.images[k], cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
            ax.set_title("\n".join(textwrap.wrap(corpus.captions[k], width)), fontsize=6.5)
    fig.tight_layout()
    return fig


def benchmark(n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(images per CPU second, images per wall second) of ``render`` with warm font caches."""
    render(range(n, n + 1000), seed)
    for family in FONT_FILES:  # warm every (font, glyph) distance field
        for ch in GLYPH_NAMES:
            for faces in _fonts_for(family, ch):
                for file in faces.values():
                    _glyph_field(file, ch)
    wall, cpu = time.perf_counter(), time.process_time()
    render(range(n), seed)
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m lib.mini.corpus --out DIR --n N --seed S [--size 8]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--preview", type=Path, help="also save a preview PNG of 32 samples here")
    ap.add_argument("--bench", action="store_true", help="print images/s and exit")
    args = ap.parse_args(argv)
    if args.bench:
        cpu, wall = benchmark(seed=args.seed)
        print(f"{cpu:.0f} images per CPU second ({wall:.0f} per wall-clock second)")
        return
    if args.preview:
        preview_figure(render(range(32), args.seed, args.size)).savefig(args.preview, dpi=120)
    if args.out is None:
        if not args.preview:
            ap.error("--out is required")
        return
    folder = write_corpus(args.out, args.n, args.seed, args.size, progress=True)
    print(f"wrote {args.n} samples to {folder}")


if __name__ == "__main__":
    main()
