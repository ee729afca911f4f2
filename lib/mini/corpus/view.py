"""A figure of corpus samples with their captions (the zoo notebook shows it)."""

from __future__ import annotations

import textwrap

from lib.mini.corpus.render import Corpus


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
