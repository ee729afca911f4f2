"""The caption grammar of the mini world's corpus: web-alt-text-like captions of glyph images.

A caption names the glyph (always, by one of its ``GLYPH_NAMES`` phrases) and, each with
some probability, its style (font family, weight, slant, outline, hand-drawn jitter, aspect)
and context (position, scale, rotation, background, clutter, contrast, inversion), as
adjectives in front of the name or phrases after it, inside a frame ("a photo of ...").
The vocabulary is exported (``GLYPH_NAMES``, ``STYLE_VOCAB``, ``CONTEXT_VOCAB``) so that
prompts can use the words the mini models were trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lib.mini.corpus.attributes import POSITIONS
from lib.mini.corpus.glyphs import article, glyph_cores

#: Attribute vocabulary: value -> (prenominal adjectives, postnominal phrases)
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
    "position": {name: _position_phrases(name) for name in POSITIONS},
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
    cores = glyph_cores(glyph)
    core = cores[rng.integers(len(cores))]
    noun = " ".join([w for _, w in pre] + [core])
    r = rng.random()
    det = "the " if r < 0.3 else f"{article(noun)} " if r < 0.85 else ""
    head = det + noun
    post = [post[i] for i in rng.permutation(len(post))]
    if post:
        seps = [", " if rng.random() < 0.6 else " " for _ in post]
        head += "".join(s + p for s, p in zip(seps, post, strict=True))
    frame = _FRAMES[rng.integers(len(_FRAMES))]
    text = frame.format(head)
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text
