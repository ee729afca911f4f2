"""Render the mini world's captioned glyph corpus to a folder (``python -m lib.mini.corpus``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from lib.mini.corpus.fonts import FONT_FILES, fonts_for, glyph_field
from lib.mini.corpus.glyphs import GLYPH_NAMES
from lib.mini.corpus.render import render
from lib.mini.corpus.store import write_corpus


def benchmark(n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(images per CPU second, images per wall second) of ``render`` with warm font caches."""
    render(range(n, n + 1000), seed)
    for family in FONT_FILES:  # warm every (font, glyph) distance field
        for ch in GLYPH_NAMES:
            for faces in fonts_for(family, ch):
                for file in faces.values():
                    glyph_field(file, ch)
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
        from lib.plots.images import captioned_grid_figure

        sample = render(range(32), args.seed, args.size)
        captioned_grid_figure(sample.images, sample.captions).savefig(args.preview, dpi=120)
    if args.out is None:
        if not args.preview:
            ap.error("--out is required")
        return
    folder = write_corpus(args.out, args.n, args.seed, args.size, progress=True)
    print(f"wrote {args.n} samples to {folder}")
