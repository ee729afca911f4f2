"""The sweep's runs as data: one table of every run, its aggregate over seeds, and the
headline numbers a researcher compares between experiments.

Each run of the sweep (dvc.yaml ``sweep``, one stage per source) leaves
``<sweep dir>/<source>/<run>/metrics.json``. They are aggregated into one row per (source,
regime, multiplier, aux norm): mean, standard deviation (ddof=1; empty for a single seed) and
count over seeds of each set's top-1 (``ood_mean`` = the mean over the OOD corruptions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.choices import REAL_SOURCES
from lib.io import read_json

GRID_KEYS = ["source", "regime", "multiplier", "aux_norm"]


def grid_runs(folder: Path, sources: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per sweep run (``<folder>/<source>/<run>/metrics.json``; with ``sources`` only
    those sources' folders, so folders left by another profile's sweep are not mixed in),
    sorted by the grid keys and seed; ``ood_mean.top1`` = the mean top-1 over the run's
    ``ood_*`` sets."""
    files = sorted(Path(folder).glob("*/*/metrics.json"))
    if sources is not None:
        files = [f for f in files if f.relative_to(folder).parts[0] in sources]
    rows = [read_json(f) for f in files]
    if not rows:
        return pd.DataFrame(columns=[*GRID_KEYS, "seed"])
    runs = pd.DataFrame(rows)
    ood = [c for c in runs.columns if c.startswith("ood_") and c.endswith(".top1")]
    if ood:
        runs["ood_mean.top1"] = runs[ood].mean(axis=1)
    return runs.sort_values([*GRID_KEYS, "seed"]).reset_index(drop=True)


def grid_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of every ``*.top1`` column, per grid point."""
    cols = [c for c in runs.columns if c.endswith(".top1")]
    if runs.empty or not cols:
        return pd.DataFrame(columns=GRID_KEYS)
    agg = runs.groupby(GRID_KEYS)[cols].agg(["mean", "std", "count"])
    agg.columns = [f"{c}.{stat}" for c, stat in agg.columns]
    return agg.reset_index()


def summary_table(table: pd.DataFrame, metric: str = "val.top1") -> pd.DataFrame:
    """``metric`` as "mean ± std (n)" strings: rows (regime, source, aux norm), columns the
    multipliers (real-only rows: column "-")."""
    if table.empty:
        return pd.DataFrame()
    t = table.copy()
    std = t[f"{metric}.std"].fillna(0.0)
    t["cell"] = [f"{m:.3f} ± {s:.3f} ({int(n)})" for m, s, n in
                 zip(t[f"{metric}.mean"], std, t[f"{metric}.count"])]
    t["aux"] = np.where(t["source"].isin(REAL_SOURCES), "-",
                        np.where(t["aux_norm"], "on", "off"))
    t["mult"] = np.where(t["source"].isin(REAL_SOURCES), "-", t["multiplier"].map("{:g}x".format))
    return t.pivot_table(index=["regime", "source", "aux"], columns="mult", values="cell",
                         aggfunc="first").fillna("")


def _best(table: pd.DataFrame, metric: str) -> float | None:
    """The highest mean of ``metric`` over the rows of ``table`` (None if there are none)."""
    col = f"{metric}.mean"
    if table.empty or col not in table.columns or table[col].isna().all():
        return None
    return float(table[col].max())


def headline(table: pd.DataFrame, runs: int) -> dict[str, Any]:
    """The sweep's headline numbers (means over seeds): per regime with real data, the
    real-only baseline (augmented) and the best real + synthetic point, on val and on the mean
    of the OOD sets; the best synthetic-only point; the number of runs."""
    found: dict[str, Any] = {"sweep_runs": runs}
    if table.empty:
        return found
    for metric, name in (("val.top1", "val"), ("ood_mean.top1", "ood_mean")):
        for regime in ("full", "limited"):
            rows = table[table["regime"] == regime]
            found[f"{regime}.real_only.{name}"] = _best(rows[rows["source"] == "real"], metric)
            found[f"{regime}.best_with_synthetic.{name}"] = _best(
                rows[~rows["source"].isin(REAL_SOURCES)], metric)
        found[f"synthetic_only.best.{name}"] = _best(table[table["regime"] == "none"], metric)
    return {k: v for k, v in found.items() if v is not None}
