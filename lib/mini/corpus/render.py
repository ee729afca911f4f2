"""Rendering corpus samples: bitmaps from attributes; :func:`render` of ids into a ``Corpus``.

The image format is that of scikit-learn's handwritten digits: a 32x32 binary bitmap
block-counted into ``size`` x ``size`` cells with values 0..16 (``size=8``: 4x4 blocks,
exactly the real data). An image samples its glyph's signed distance field
(:mod:`lib.mini.corpus.fonts`) through an affine map (aspect, scale, shear, rotation,
translation) plus, for hand-drawn samples, a smooth random displacement field; thresholding
the field at a per-image (and for hand-drawn samples, spatially varying) offset sets the
stroke weight, and a band around the threshold gives the outlined variant. Background,
clutter, low contrast and inversion follow.

Speed: about 2,400 images per CPU second on one core at ``size=8`` (``render`` with warm
font caches, measured with ``python -m lib.mini.corpus --bench`` on the 2-core dev machine;
wall-clock there was 850-1,700/s only because other jobs shared the cores, load average 4-6).
The first use of each (font, glyph) costs about 1 ms for its distance field; ``write_corpus``
of 100k samples takes about a minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from lib.mini.corpus.attributes import POSITIONS, sample_attrs
from lib.mini.corpus.captions import make_caption
from lib.mini.corpus.fonts import cap_height, glyph_field
from lib.mini.corpus.glyphs import pick_glyph

_WEIGHT_OFFSET = {"thin": -0.45, "regular": 0.0, "bold": 0.35, "heavy": 0.8}  # at 24 px height
_THIN_HAIRLINE = -0.2  # "thin" offset for fonts with hairlines (serif), which would break up
_HAIRLINE_FONTS = ("DejaVuSerif", "STIX", "cmr", "cmb", "cmti")

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
    g = glyph_field(a["font_file"], a["glyph"])
    unit = a["height"] / cap_height(a["font_file"])  # output px per raster px
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
    fx, fy = POSITIONS[a["position"]]
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
        other = pick_glyph(rng)
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
        g = glyph_field("DejaVuSans.ttf", other)
        unit = rng.uniform(9, 14) / cap_height("DejaVuSans.ttf")
        yy, xx = np.mgrid[0:BITMAP, 0:BITMAP] + 0.5
        d = _bilinear(g.sdf, (xx - x) / unit + g.cx, (yy - y) / unit + g.cy) * unit
        out = d < 0.3
    return out


def block_counts(bitmap: np.ndarray, size: int) -> np.ndarray:
    """Block-count a [..., 32, 32] binary bitmap into [..., size, size] values 0..16."""
    if BITMAP % size:
        raise ValueError(f"size must divide {BITMAP}, got {size}")
    b = BITMAP // size
    shape = bitmap.shape[:-2] + (size, b, size, b)
    counts = bitmap.reshape(shape).sum(axis=(-3, -1), dtype=np.int32)
    return np.rint(counts * (16.0 / (b * b))).astype(np.uint8)


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
    return Corpus(block_counts(bitmaps, size), attrs["caption"].tolist(), attrs)


def to_pil(image: np.ndarray) -> Image.Image:
    """An 'L' image of one 0..16 sample, scaled like the real data (``rint(v * 255 / 16)``)."""
    arr = np.rint(np.asarray(image, dtype=np.float32) * (255.0 / 16.0)).astype(np.uint8)
    return Image.fromarray(arr, mode="L")
