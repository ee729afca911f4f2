"""The small display tables the notebooks show, built from what a stage returns (so the
notebooks hold calls, not loops over data)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lib.io import folder_size


def _by_name(records: Mapping[str, Mapping[str, Any]], fields: Mapping[str, str]) -> pd.DataFrame:
    """One row per record name; column ``col`` = the record's ``fields[col]`` (None if absent)."""
    return pd.DataFrame({name: {col: rec.get(field) for col, field in fields.items()}
                         for name, rec in records.items()}).T


def zero_shot_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """CLIP zero-shot top-1 and the number of training pairs, one row per source of pairs (the
    clip stage's ``results``; ``before`` = as loaded, no pairs)."""
    return _by_name(results, {"top1": "top1", "pairs": "num_pairs"})


def evaluation_table(evals: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """top-1, top-5, loss and image count, one row per evaluation set (the train stage's
    ``evals``)."""
    return _by_name(evals, {m: m for m in ("top1", "top5", "loss", "n")})


def closest_candidates(candidates: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The disambiguation candidates of the ``n`` classes whose best two candidates score
    closest (the most ambiguous names), each class's candidates best first; a class with a
    single candidate has an infinite margin."""
    ranked = candidates.sort_values(["class_id", "score"], ascending=[True, False])
    margin = ranked.groupby("class_id")["score"].apply(_margin)
    return ranked[ranked["class_id"].isin(margin.nsmallest(n).index)]


def _margin(scores: pd.Series) -> float:
    """Best minus second-best of scores sorted best first (inf with fewer than two)."""
    return scores.iloc[0] - scores.iloc[1] if len(scores) > 1 else float("inf")


def model_sizes(models: Mapping[str, str], root: str | os.PathLike) -> pd.DataFrame:
    """Files and megabytes of each model folder (``models``: name -> folder under ``root``)."""
    return pd.DataFrame([{"model": name, **folder_size(Path(root) / folder)}
                         for name, folder in models.items()])


def value_counts(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """How often each value occurs in each of ``columns`` (values as strings, 0 where a value
    does not occur in a column)."""
    return frame[list(columns)].astype(str).apply(pd.Series.value_counts).fillna(0).astype(int)


def lookalike_table(candidates: pd.DataFrame) -> pd.DataFrame:
    """The disambiguation candidates of every class with their scores, winner marked."""
    cols = ["name", "source", "text", "own", "other", "score", "winner"]
    return candidates[[c for c in cols if c in candidates.columns]].round(4)
