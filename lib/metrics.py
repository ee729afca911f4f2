"""Metrics and curves: flat JSON per stage (``dvc metrics``), CSV curves (``dvc plots``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lib.io import atomic_path, write_json


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"val": {"top1": 0.9}}`` -> ``{"val.top1": 0.9}`` (DVC shows flat keys best)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def write_metrics(metrics_dir: Path, stage: str, metrics: Mapping[str, Any]) -> Path:
    return write_json(metrics_dir / f"{stage}.json", flatten(metrics))


def write_curve(metrics_dir: Path, name: str, rows: list[dict[str, Any]] | pd.DataFrame) -> Path:
    path = metrics_dir / f"{name}.csv"
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path
