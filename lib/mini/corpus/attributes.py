"""What each corpus sample is: its glyph, style and context attributes and numeric draws.

Every random choice of sample ``i`` comes from ``numpy_rng(seed, "corpus", i)``, so any
chunking or process split of the ids gives identical samples.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from lib.mini.corpus.fonts import fonts_for
from lib.mini.corpus.glyphs import glyph_kind, pick_glyph
from lib.seeding import numpy_rng

#: position attribute -> where the glyph sits in the frame (x, y), 0..1.
POSITIONS = {
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

#: attribute -> (values, sampling probabilities)
_CHOICES: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {
    "font": (("sans", "serif", "monospace", "typewriter"), (0.35, 0.3, 0.2, 0.15)),
    "font_hand": (("sans", "serif", "monospace", "typewriter"), (0.55, 0.15, 0.2, 0.1)),
    "weight": (("thin", "regular", "bold", "heavy"), (0.2, 0.4, 0.25, 0.15)),
    "slant": (("upright", "italic", "slanted"), (0.6, 0.25, 0.15)),
    "aspect": (("wide", "normal", "tall"), (0.2, 0.45, 0.35)),
    "position": (tuple(POSITIONS), (0.5,) + (0.5 / 8,) * 8),
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


def sample_attrs(seed: int, i: int) -> dict[str, Any]:
    """All attributes of sample ``i`` (including the numeric draws used by the renderer)."""
    rng = numpy_rng(seed, "corpus", int(i))
    glyph = pick_glyph(rng)
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
    fonts = fonts_for(a["font"], glyph)
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
