"""The data selection behind the generate notebook's sample grid (the figure is drawn by
:mod:`lib.plots`)."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from PIL import Image

from lib.shards import iter_samples


def sample_grid(
    out_dir: str | os.PathLike,
    manifest: pd.DataFrame,
    per_cell: int = 2,
    rows: str = "class_name",
    cols: str = "strategy",
) -> dict[str, Any]:
    """A grid of stored samples: one row per ``rows`` value, ``per_cell`` columns per
    ``cols`` value, the first ids of each cell (a stable sample).

    Returns images (row-major; a white image where a cell has fewer samples), titles (the
    column name above the first row), ncols and row_labels, for :func:`lib.plots.image_grid`.
    """
    row_names = sorted(manifest[rows].unique(), key=str)
    col_names = sorted(manifest[cols].unique(), key=str)
    first = manifest.sort_values("id", kind="stable").groupby([rows, cols]).head(per_cell)
    cells = first.groupby([rows, cols])["id"].apply(list).to_dict()
    ids = [
        (cells.get((r, c), []) + [None] * per_cell)[k]
        for r in row_names
        for c in col_names
        for k in range(per_cell)
    ]
    loaded = {s["id"]: s["image"] for s in iter_samples(out_dir, ids={i for i in ids if i})}
    size = next(iter(loaded.values())).size if loaded else (8, 8)
    images = [loaded[i] if i else Image.new("RGB", size, "white") for i in ids]
    ncols = per_cell * len(col_names)
    titles = [str(col_names[j // per_cell]) if j % per_cell == 0 else "" for j in range(ncols)]
    titles += [""] * (len(images) - ncols)
    return {"images": images, "titles": titles, "ncols": ncols,
            "row_labels": [str(r) for r in row_names]}
