"""The fonts the corpus draws glyphs in, and each (font, glyph)'s signed distance field.

The fonts ship with matplotlib. Each (font file, glyph) is rasterised once with PIL at 64 px
and turned into a signed distance field (cached): the renderer samples it at any scale,
slant and stroke weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
def cap_height(file: str) -> float:
    """Ink height of 'H' in raster pixels: the unit glyph heights are measured in."""
    box = _font(file).getbbox("H")
    return float(box[3] - box[1])


@dataclass(frozen=True)
class GlyphField:
    sdf: np.ndarray  # float32 [H, W], raster px, negative inside
    cx: float  # ink box centre (column, row) in sdf coordinates
    cy: float
    w: float  # ink box size, raster px
    h: float


@lru_cache(maxsize=4096)
def glyph_field(file: str, ch: str) -> GlyphField:
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
    return GlyphField(
        sdf=sdf,
        cx=(cols.min() + cols.max() + 1) / 2,
        cy=(rows.min() + rows.max() + 1) / 2,
        w=float(cols.max() + 1 - cols.min()),
        h=float(rows.max() + 1 - rows.min()),
    )


def _draws_correctly(faces: Mapping[str, str], ch: str) -> bool:
    return not (ch in _OT1_BAD and any(f in _OT1_FONTS for f in faces.values()))


def fonts_for(family: str, ch: str) -> tuple[dict[str, str], ...]:
    """The fonts of ``family`` that draw ``ch`` as itself (all faces)."""
    ok = tuple(f for f in FONT_FILES[family] if _draws_correctly(f, ch))
    if not ok:
        raise ValueError(f"no {family} font draws {ch!r}")
    return ok
