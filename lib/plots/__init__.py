"""Every figure of the study, in one style, and one save helper (PNG for notebooks and READMEs,
PDF for papers).

This module holds what all figures share: :func:`style`, :func:`palette`, :func:`save_figure`
and :func:`image_grid`. The figures themselves live in submodules by subject; each function
takes data (tables, histories, images) and returns a matplotlib figure, which stages save and
notebooks show:

* :mod:`lib.plots.ablation`: the ablation grid (real + synthetic vs real only; synthetic-only
  training against its size);
* :mod:`lib.plots.evaluation`: recognizability of the synthetic images, per-class accuracy,
  CLIP zero-shot accuracy;
* :mod:`lib.plots.training`: training curves of the classifier and of CLIP;
* :mod:`lib.plots.images`: grids of images (OOD corruptions, generated samples, the mini
  text-to-image model's guidance grid);
* :mod:`lib.plots.prompts`: prompt diversity per strategy;
* :mod:`lib.plots.tables`: the small display tables the notebooks show.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from lib.io import atomic_path


def style() -> None:
    """The one theme of every figure (called by each figure function before it draws)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def save_figure(fig: plt.Figure, path_stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically; return both paths."""
    out = []
    for ext in ("png", "pdf"):
        path = Path(f"{path_stem}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight", metadata=_metadata(ext))
        out.append(path)
    return out


def _metadata(ext: str) -> dict:
    # No creation dates in the files, so a re-run writes identical bytes.
    return {"CreationDate": None} if ext == "pdf" else {"Software": None}


def image_grid(images: list, titles: list[str] | None = None, ncols: int = 8, size: float = 1.2):
    """A grid of PIL images or arrays, ``ncols`` per row, each titled by ``titles``; grey
    images (PIL ``'L'``, 2-D arrays) in grey."""
    style()
    n = max(len(images), 1)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray" if _is_grey(img) else None)
        if titles:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def _is_grey(img) -> bool:
    """A PIL ``'L'`` image or a 2-D array: drawn in grey, not in a false-colour map."""
    return img.mode == "L" if hasattr(img, "mode") else np.ndim(img) == 2


def palette(n: int) -> list:
    """``n`` colours of the figures' colour-blind palette."""
    return sns.color_palette("colorblind", n)
