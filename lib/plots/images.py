"""Grids of images: the OOD corruptions of real images, generated samples per class and
strategy, captioned images (the mini world's corpus), the mini text-to-image models'
samples per prompt and guidance scale or per generator (the UNet and the transformer), and
several models' samples per prompt (the off-the-shelf and the fine-tuned generator)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import matplotlib.pyplot as plt
import numpy as np

from lib.plots import image_grid, style

if TYPE_CHECKING:
    from lib.finetuning import ModelSamples


class GuidanceSamples(Protocol):
    """Samples of prompts x guidance scales x seeds of one text-to-image model, as a
    text-to-image backend's sampler returns them (e.g. the mini world's
    ``guidance_samples``): ``images`` levels 0..``levels``, ``[prompts, guidance scales,
    seeds, H, W]``."""

    images: np.ndarray
    prompts: list[str]
    guidance_scales: list[float]
    seeds: list[int]
    steps: int
    levels: int


def corruption_figure(examples: dict[str, np.ndarray]) -> plt.Figure:
    """One row per entry of ``examples`` (``val`` then each corruption, as returned by
    :func:`lib.data.corruption_examples`), the same images in every row, titled by the row."""
    ncols = len(next(iter(examples.values())))
    images = [im for row in examples.values() for im in row]
    titles = [name for name in examples for _ in range(ncols)]
    return image_grid(images, titles=titles, ncols=ncols)


def sample_grid_figure(grid: dict[str, Any], size: float = 0.9) -> plt.Figure:
    """Generated samples, rows labelled on the left (e.g. classes), columns titled above (e.g.
    prompt strategies): ``grid`` as returned by ``lib.generation.samples.sample_grid``
    (images, titles, ncols, row_labels)."""
    fig = image_grid(grid["images"], titles=grid["titles"], ncols=grid["ncols"], size=size)
    for ax, name in zip(fig.axes[:: grid["ncols"]], grid["row_labels"]):
        ax.text(-0.1, 0.5, name, transform=ax.transAxes, ha="right", va="center", fontsize=8)
    return fig


def captioned_grid_figure(images: np.ndarray, captions: Sequence[str], n: int = 32,
                          cols: int = 8, width: int = 22, levels: int = 16) -> plt.Figure:
    """The first ``n`` images (grey levels ``0..levels``) with their captions wrapped to
    ``width`` characters, ``cols`` per row."""
    style()
    n = min(n, len(images))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.6), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=levels, interpolation="nearest")
            ax.set_title("\n".join(textwrap.wrap(captions[k], width)), fontsize=6.5)
    fig.tight_layout()
    return fig


def guidance_grid_figure(samples: GuidanceSamples, title: str | None = None) -> plt.Figure:
    """Rows = prompts, columns = guidance scales; each cell a strip of one image per seed
    (separated by a blue gap)."""
    n_seeds = samples.images.shape[2]
    return _strip_grid(
        samples.images, samples.prompts, [f"guidance {g:g}" for g in samples.guidance_scales],
        samples.levels,
        title or f"mini text-to-image: {n_seeds} seeds per cell, {samples.steps} steps")


def generator_grid_figure(samples: Mapping[str, GuidanceSamples],
                          title: str | None = None) -> plt.Figure:
    """Rows = prompts, columns = generators (one per guidance scale each): the same prompts and
    seeds from each, so a row compares the generators on the same noise."""
    first = next(iter(samples.values()))
    for name, s in samples.items():
        if s.prompts != first.prompts or s.seeds != first.seeds:
            raise ValueError(f"generator {name!r} was sampled with other prompts or seeds than "
                             f"{next(iter(samples))!r}: sample all with the same ones")
    columns = [(name, j) for name, s in samples.items() for j in range(len(s.guidance_scales))]
    several = any(len(s.guidance_scales) > 1 for s in samples.values())
    titles = [f"{name}, guidance {samples[name].guidance_scales[j]:g}" if several else name
              for name, j in columns]
    images = np.stack([np.stack([samples[name].images[i, j] for name, j in columns])
                       for i in range(len(first.prompts))])
    scales = sorted({g for s in samples.values() for g in s.guidance_scales})
    return _strip_grid(images, first.prompts, titles, first.levels,
                       title or f"mini generators: {len(first.seeds)} seeds per cell, guidance "
                                f"{', '.join(f'{g:g}' for g in scales)}, {first.steps} steps")


def model_grid_figure(samples: ModelSamples, title: str | None = None) -> plt.Figure:
    """Rows = prompts, columns = models (e.g. off-the-shelf and fine-tuned); each cell a strip
    of one image per seed, the k-th from the same noise in every cell (blue gaps), from
    :func:`lib.finetuning.sample_models`."""
    n_seeds = samples.images.shape[2]
    return _strip_grid(
        samples.images, samples.prompts, samples.models, 255,
        title or f"{n_seeds} seeds per cell, {samples.steps} steps, "
                 f"guidance {samples.guidance:g}")


def _strip_grid(images: np.ndarray, rows: Sequence[str], columns: Sequence[str], vmax: float,
                title: str) -> plt.Figure:
    """``images`` ``[rows, columns, seeds, H, W]`` (grey, 0..``vmax``): a strip of the seeds'
    images per cell, rows labelled on the left, columns titled above."""
    style()
    n_rows, n_cols, n_seeds, height, width = images.shape
    gap = 1
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(0.45 * n_seeds * n_cols + 2.8, 0.62 * n_rows + 0.7),
        squeeze=False,
    )
    cmap = plt.get_cmap("gray").with_extremes(bad="tab:blue")
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            strip = np.full((height, n_seeds * (width + gap) - gap), np.nan)
            for k in range(n_seeds):
                strip[:, k * (width + gap) : k * (width + gap) + width] = images[i, j, k]
            ax = axes[i][j]
            ax.imshow(strip, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column, fontsize=9)
            if j == 0:
                ax.set_ylabel(row, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
