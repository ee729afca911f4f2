"""Atomic file writes and small JSON/parquet helpers.

Finished work is never lost and never half-written: every file is written to a temporary
name in the same folder and renamed into place, so a crash leaves either the old file or
the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing any ``dst`` (two renames in the
    same parent; if the second fails, the previous ``dst`` is put back)."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.replace(dst, old / dst.name)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old / dst.name, dst)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (stable bytes for DVC)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a parquet table atomically, without the pandas index."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` atomically, with the same bytes for the same ``obj``.

    Saved to a path, torch names the archive's inner folder after the file, here a random
    temporary name, so the same tensors would give other bytes each time (and DVC would see a
    changed output); saved through a file object, the folder is always ``archive``.
    """
    import torch  # only the writers of checkpoints pay for it

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def folder_size(path: str | os.PathLike) -> dict[str, Any]:
    """Number of files and megabytes under ``path``."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return {"files": len(files), "MB": round(sum(p.stat().st_size for p in files) / 1e6, 3)}
