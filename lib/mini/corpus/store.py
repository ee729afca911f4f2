"""The corpus on disk: ``images.npy`` and ``captions.parquet`` (attributes, checksummed)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lib.io import atomic_path
from lib.mini.corpus.render import Corpus, render

_META_KEY = b"synthscale.corpus"


def write_corpus(
    folder: str | os.PathLike[str], n: int, seed: int, size: int = 8, progress: bool = False
) -> Path:
    """Render ids ``[0, n)`` into ``folder/images.npy`` and ``folder/captions.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chunk = 2000
    starts = range(0, n, chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="corpus", unit="chunk")
    parts = [render(range(s, min(s + chunk, n)), seed, size) for s in starts]
    images = (
        np.concatenate([p.images for p in parts]) if parts else np.zeros((0, size, size), np.uint8)
    )
    attrs = (
        pd.concat([p.attrs for p in parts], ignore_index=True) if parts else render([], seed).attrs
    )
    meta = {
        "n": int(n),
        "seed": int(seed),
        "size": int(size),
        "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
    }
    table = pa.Table.from_pandas(attrs, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    with atomic_path(folder / "images.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, images)  # a file object: np.save would add ".npy" to a path
    with atomic_path(folder / "captions.parquet") as tmp:
        pq.write_table(table, tmp)
    return folder


def load_corpus(folder: str | os.PathLike[str]) -> Corpus:
    """Read a corpus written by ``write_corpus``; ``ValueError`` naming ``folder`` if it is
    missing, incomplete or inconsistent."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    img_path, cap_path = folder / "images.npy", folder / "captions.parquet"
    missing = [p.name for p in (img_path, cap_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"corpus folder {folder} lacks {', '.join(missing)}")
    try:
        images = np.load(img_path, allow_pickle=False)
        table = pq.read_table(cap_path)
    except Exception as e:  # noqa: BLE001 - re-raised with the folder named
        raise ValueError(f"corpus folder {folder}: unreadable ({e})") from e
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"corpus folder {folder}: captions.parquet has no corpus metadata")
    meta = json.loads(raw)
    attrs = table.to_pandas()
    problems = []
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (meta["size"],) * 2:
        problems.append(f"images are {images.dtype} {images.shape}, expected uint8 [N, size, size]")
    if len(images) != len(attrs) or len(attrs) != meta["n"]:
        problems.append(f"{len(images)} images, {len(attrs)} captions, metadata says {meta['n']}")
    elif hashlib.sha256(images.tobytes()).hexdigest() != meta["images_sha256"]:
        problems.append("images.npy does not match captions.parquet (checksum)")
    if problems:
        raise ValueError(f"corpus folder {folder} is inconsistent: " + "; ".join(problems))
    return Corpus(images, attrs["caption"].tolist(), attrs)
