"""Reading a folder of shards back: the completed shards, the ids done, the samples, the
manifest, an ImageFolder copy; and the bookkeeping of a rank that resumes.

Every reader checks each shard against its marker (:func:`_iter_members`): a tar that cannot
be read, or that holds fewer or other samples than its marker lists (a truncated copy),
raises :class:`~lib.shards.format.ShardError` naming the shard and the ids, never a silently
shorter stream.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from lib.io import atomic_path
from lib.shards.format import (
    READ_ERRORS,
    SHARD_FILE_RE,
    SHARD_GLOB,
    SHARD_RE,
    ShardError,
    marker_path,
    owns,
    preview,
    read_marker,
    tar_samples,
)


def completed_shards(
    out_dir: str | os.PathLike, rank: int | None = None, world_size: int = 1
) -> list[Path]:
    """Shards of ``out_dir`` that have a completion marker, sorted by (rank, index); with
    ``rank``, those it owns (:func:`~lib.shards.format.owns`)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    shards = sorted(p for p in out_dir.glob(SHARD_GLOB) if SHARD_RE.match(p.name))
    return [p for p in shards if marker_path(p).is_file() and owns(p, rank, world_size)]


def done_ids(out_dir: str | os.PathLike) -> set[str]:
    """Ids finished in completed shards, stored or dropped; read from the markers (no tar)."""
    ids: set[str] = set()
    for shard in completed_shards(out_dir):
        marker = read_marker(shard)
        ids.update(marker["ids"])
        ids.update(d["id"] for d in marker.get("dropped", []))
    return ids


def dropped_records(
    out_dir: str | os.PathLike, rank: int | None = None, world_size: int = 1
) -> list[dict[str, Any]]:
    """The records of ids dropped in completed shards (prompt fields and flags); with
    ``rank``, in the shards it owns."""
    return [
        d
        for shard in completed_shards(out_dir, rank, world_size)
        for d in read_marker(shard).get("dropped", [])
    ]


def clean_incomplete(out_dir: str | os.PathLike, rank: int) -> list[Path]:
    """Remove ``rank``'s interrupted writes (temporary tars, tars without a marker).

    Only this rank's files: another rank may be between renaming its tar and marking it.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    prefix = f"shard-{rank:05d}-"
    stale = [p for p in out_dir.glob(prefix + "*.tar.tmp")]
    stale += [p for p in out_dir.glob(prefix + "*.tar") if not marker_path(p).is_file()]
    stale += [p for p in out_dir.glob(f".{prefix}*.tmp")]  # atomic_path leftovers of markers
    for p in stale:
        p.unlink(missing_ok=True)
    return sorted(stale)


def next_shard_index(out_dir: str | os.PathLike, rank: int) -> int:
    """The first shard index of ``rank`` after every marker and set-aside copy of it.

    A repaired shard never takes a damaged one's name, so a name in an older manifest keeps
    meaning the same ids.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    used = [
        int(m.group(2))
        for p in out_dir.glob(f"shard-{rank:05d}-*")
        if (m := SHARD_FILE_RE.match(p.name)) and m.group(3) not in (None, ".tmp")
    ]
    return max(used, default=-1) + 1


def _iter_members(shard: Path, want: set[str] | None, json_only: bool) -> Iterator[dict[str, Any]]:
    """Yield {'id', 'meta', 'bytes', 'ext'} per sample of one shard, in tar order.

    The samples read must be the ones its marker lists (those of ``want``): an unreadable or
    truncated tar raises :class:`ShardError` naming the shard and the ids missing.
    """
    listed = set(read_marker(shard)["ids"])
    expected = listed if want is None else listed & want
    seen: set[str] = set()
    try:
        with tarfile.open(shard, "r") as tar:
            for sample in tar_samples(tar, shard, want, json_only):
                seen.add(sample["id"])
                yield sample
    except ShardError:
        raise
    except READ_ERRORS as e:
        raise ShardError(shard, f"unreadable tar ({type(e).__name__}: {e})",
                         expected - seen) from e
    if expected - seen:
        raise ShardError(shard, f"{len(expected - seen)} of the samples its marker lists are "
                         "not in the tar (truncated?)", expected - seen)
    if want is None and seen - listed:
        raise ShardError(shard, f"the tar holds ids its marker does not list: "
                         f"{preview(sorted(seen - listed))}")


def iter_samples(
    out_dir: str | os.PathLike, ids: Iterable[str] | None = None, decode: bool = True
) -> Iterator[dict[str, Any]]:
    """Stream samples {'id', 'image', 'meta', 'bytes'} from the completed shards.

    Order is stable: shards by (rank, index), samples in tar order. ``ids`` restricts the
    stream to those ids; ``decode=False`` leaves 'image' as None (bytes only).
    """
    want = None if ids is None else set(ids)
    for shard in completed_shards(out_dir):
        for s in _iter_members(shard, want, json_only=False):
            image = _decode(s["bytes"], shard, s["id"]) if decode else None
            yield {"id": s["id"], "image": image, "meta": s["meta"], "bytes": s["bytes"]}


def _decode(data: bytes, shard: Path, sample_id: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # re-raised with the location of the bad image
        raise ValueError(f"corrupt image {sample_id!r} in shard {shard}: {e}") from e
    return img


def build_image_manifest(
    out_dir: str | os.PathLike,
    allow_empty: bool = False,
    rank: int | None = None,
    world_size: int = 1,
) -> pd.DataFrame:
    """The generated images' manifest: one row per sample from the .json members of
    completed shards (with ``rank``, the shards it owns), sorted by id.

    Adds a 'shard' column (tar file name). Fails on a duplicated id, on a damaged shard
    (:class:`~lib.shards.format.ShardError`), and on a folder without any stored image
    unless ``allow_empty`` (then the table has only 'id' and 'shard').
    """
    rows = []
    for shard in completed_shards(out_dir, rank, world_size):
        for s in _iter_members(shard, None, json_only=True):
            rows.append({**s["meta"], "id": s["id"], "shard": shard.name})
    if not rows:
        if allow_empty:
            return pd.DataFrame(columns=["id", "shard"])
        dropped = len(dropped_records(out_dir))
        raise ValueError(
            f"no images in completed shards of {out_dir}: the manifest would be empty"
            + (f" ({dropped} ids were dropped as blank or NSFW)" if dropped else "")
        )
    df = pd.DataFrame(rows).sort_values("id", kind="stable").reset_index(drop=True)
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise ValueError(f"{out_dir} holds {len(dup)} duplicated ids, e.g. {dup.iloc[0]!r}")
    return df


def _folder_name(value: object) -> str:
    name = str(value)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"class value {value!r} cannot be used as a folder name")
    return name


def to_imagefolder(
    out_dir: str | os.PathLike, dest: str | os.PathLike, class_key: str = "class_name"
) -> dict[str, int]:
    """Copy the images of completed shards to ``dest/{meta[class_key]}/{id}.{ext}``.

    The encoded bytes are copied as they are (no re-encoding). Returns images per class.
    """
    dest = Path(dest)
    counts: dict[str, int] = {}
    for shard in completed_shards(out_dir):
        for s in _iter_members(shard, None, json_only=False):
            if class_key not in s["meta"]:
                raise KeyError(
                    f"sample {s['id']!r} has no {class_key!r}; keys: {sorted(s['meta'])}"
                )
            folder = _folder_name(s["meta"][class_key])
            with atomic_path(dest / folder / f"{s['id']}.{s['ext']}") as tmp:
                tmp.write_bytes(s["bytes"])
            counts[folder] = counts.get(folder, 0) + 1
    return counts
