"""The image-caption corpus that retrieval draws from, read as plain files.

A corpus folder holds ``images.npy`` (uint8 ``[N, H, W]`` grey levels ``0..levels``) and
``captions.parquet`` (one row per image, in the same order, with a ``caption`` column and,
optionally, a ``glyph`` column: what the caption names). That is the layout the ``zoo``
stage writes for the mini world (``outputs/zoo/corpus``; levels 0..16, the real digits'
scale, and every caption names its ``glyph``). It is read here from the files, not through
:mod:`lib.mini`, which only the zoo stage and the mini backends may import.

An image becomes a PIL ``'L'`` image with pixel ``rint(v * 255 / levels)``: the mapping the
mini text-to-image model uses for its outputs, so a retrieved image and a generated one are
the same kind of file (PNG, mode L, the corpus's size).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

IMAGES_FILE = "images.npy"
CAPTIONS_FILE = "captions.parquet"
#: Grey levels of the mini corpus (and of the real digits): values 0..16.
DEFAULT_LEVELS = 16


@dataclass(frozen=True)
class RetrievalCorpus:
    """The corpus: ``images`` uint8 [N, H, W] (levels), ``captions`` and, when the corpus
    has them, ``glyphs`` (what each caption names; None otherwise); ``sha256``: the
    files' identity (recorded in ``run.json``)."""

    images: np.ndarray
    captions: list[str]
    glyphs: list[str] | None
    levels: int
    sha256: dict[str, str]

    def __len__(self) -> int:
        return len(self.captions)

    def pil(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL 'L' image, pixel ``rint(v * 255 / levels)``."""
        pixels = np.rint(self.images[index].astype(np.float64) * 255 / self.levels)
        return Image.fromarray(pixels.astype(np.uint8), mode="L")


def load_retrieval_corpus(
    folder: str | os.PathLike, levels: int = DEFAULT_LEVELS
) -> RetrievalCorpus:
    """Read the corpus folder (see the module docstring); fails naming the folder and the
    problem when a file is missing, unreadable or inconsistent."""
    folder = Path(folder)
    img_path, cap_path = folder / IMAGES_FILE, folder / CAPTIONS_FILE
    missing = [p.name for p in (img_path, cap_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"corpus folder {folder} lacks {', '.join(missing)}: it needs {IMAGES_FILE} and "
            f"{CAPTIONS_FILE} (the zoo stage writes them to outputs/zoo/corpus)")
    try:
        images = np.load(img_path, allow_pickle=False)
        table = pd.read_parquet(cap_path)
    except Exception as e:  # any numpy/arrow error, re-raised with the folder named
        raise ValueError(f"corpus folder {folder}: unreadable ({type(e).__name__}: {e})") from e
    _check(folder, images, table, levels)
    glyphs = table["glyph"].astype(str).tolist() if "glyph" in table.columns else None
    sha = {name: _sha256(folder / name) for name in (IMAGES_FILE, CAPTIONS_FILE)}
    return RetrievalCorpus(images, table["caption"].astype(str).tolist(), glyphs, levels, sha)


def _check(folder: Path, images: np.ndarray, table: pd.DataFrame, levels: int) -> None:
    problems = []
    if images.dtype != np.uint8 or images.ndim != 3:
        problems.append(f"{IMAGES_FILE} is {images.dtype} {images.shape}, expected uint8 "
                        "[N, H, W]")
    elif len(images) and int(images.max()) > levels:
        problems.append(f"{IMAGES_FILE} holds values up to {int(images.max())}, above the "
                        f"{levels} grey levels expected")
    if "caption" not in table.columns:
        problems.append(f"{CAPTIONS_FILE} has no 'caption' column (columns: "
                        f"{', '.join(map(str, table.columns))})")
    if len(images) != len(table):
        problems.append(f"{len(images)} images but {len(table)} caption rows")
    if problems:
        raise ValueError(f"corpus folder {folder} is not usable: " + "; ".join(problems))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
