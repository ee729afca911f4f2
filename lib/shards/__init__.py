"""WebDataset-layout tar shards with completion markers.

Generated images are stored as tar shards in the WebDataset layout: each sample is a pair of
adjacent members ``{id}.png`` (or ``{id}.jpg``) and ``{id}.json``, so ``webdataset``,
``open_clip_train`` and plain ``tarfile`` can all read them. A shard is written to a
temporary name, renamed to ``shard-{rank:05d}-{index:06d}.tar`` and only then marked complete
by an atomically written ``shard-....tar.done`` JSON (ids, count, sha256 of the tar, and the
ids dropped while the shard was written, with their prompts and flags). A tar
without its marker is an interrupted write: readers ignore it and :func:`clean_incomplete`
removes it before a rank resumes. Ranks only ever touch files carrying their own rank, so
several processes can share one output folder.

Tar members carry fixed metadata (mtime 0, uid/gid 0, mode 0644), and images are encoded
without any metadata chunks, so the same samples give the same bytes on every run.

    python -m lib.shards to-imagefolder outputs/generate /data/synthetic   # DEST/class/id.png
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from lib.io import atomic_path, read_json, write_json

SHARD_GLOB = "shard-*.tar"
MARKER_SUFFIX = ".done"
IMAGE_FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg"}
# WebDataset splits a member name at its first dot to find the sample key, so ids must not
# contain dots; slashes would create folders. The rest keeps ids safe as file names anywhere.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")
_SHARD_RE = re.compile(r"^shard-(\d{5})-(\d{6})\.tar$")


def image_ext(fmt: str) -> str:
    """The member extension for an image format name ('png', 'jpg' or 'jpeg')."""
    key = str(fmt).lower()
    if key not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; valid formats: png, jpg, jpeg")
    return IMAGE_FORMATS[key]


def check_id(sample_id: object) -> str:
    """Return ``sample_id`` if it is usable as a WebDataset key and file name, else raise."""
    if not isinstance(sample_id, str) or not _ID_RE.match(sample_id):
        raise ValueError(
            f"invalid sample id {sample_id!r}: ids must be strings of 1-200 characters from "
            "A-Z a-z 0-9 _ - starting with a letter or digit (no dots: WebDataset splits "
            "member names at the first dot)"
        )
    return sample_id


def shard_name(rank: int, index: int) -> str:
    """The file name of shard ``index`` written by ``rank``."""
    return f"shard-{rank:05d}-{index:06d}.tar"


def marker_path(shard: Path) -> Path:
    """The completion marker that belongs to ``shard``."""
    return shard.with_name(shard.name + MARKER_SUFFIX)


def encode_image(img: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode ``img`` as PNG or JPEG bytes, deterministically.

    Metadata (``img.info``: dpi, ICC profile, text) is dropped so the bytes depend on the
    pixels alone. Bytes are stable for a fixed Pillow/zlib/libjpeg build; compare decoded
    pixels, not hashes, across library versions.
    """
    ext = image_ext(fmt)
    img = img.copy()
    img.info = {}
    buf = io.BytesIO()
    if ext == "png":
        if img.mode not in ("1", "L", "LA", "RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    else:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"jpeg quality must be in 1..100, got {quality}")
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        img.save(buf, format="JPEG", quality=int(quality), optimize=False, progressive=False)
    return buf.getvalue()


def is_blank(img: Image.Image, threshold: float = 1.0) -> bool:
    """Whether ``img`` is (near-)constant: every channel's pixel std is below ``threshold``.

    Per channel, because a solid colour such as pure red varies across channels but is blank.
    """
    arr = np.asarray(img, dtype=np.float32)
    arr = arr.reshape(-1, 1) if arr.ndim == 2 else arr.reshape(-1, arr.shape[-1])
    return bool(arr.std(axis=0).max() < threshold)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Writes one shard: samples go to a temporary tar, ``close()`` publishes and marks it.

    ``abort()`` (the writer's owner calls it on any error) deletes the temporary tar and marks
    nothing complete, so a shard is either complete with its marker or absent.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        rank: int = 0,
        index: int = 0,
        image_format: str = "png",
    ):
        self.path = Path(out_dir) / shard_name(rank, index)
        if marker_path(self.path).exists():
            raise FileExistsError(f"shard {self.path} is already complete; use another index")
        self.ext = image_ext(image_format)
        self.ids: list[str] = []
        self.dropped: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        # Held open across add() calls; close() or abort() releases it.
        self._tar: tarfile.TarFile | None = tarfile.open(  # noqa: SIM115
            self._tmp, "w", format=tarfile.PAX_FORMAT
        )

    @property
    def count(self) -> int:
        return len(self.ids)

    def add(self, sample_id: str, image_bytes: bytes, meta: dict[str, Any]) -> None:
        """Append one sample: ``{id}.{ext}`` with ``image_bytes`` then ``{id}.json``."""
        if self._tar is None:
            raise RuntimeError(f"shard {self.path.name} is already closed")
        check_id(sample_id)
        text = json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False)
        for name, data in (
            (f"{sample_id}.{self.ext}", image_bytes),
            (f"{sample_id}.json", text.encode()),
        ):
            self._tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
        self.ids.append(sample_id)

    def drop(self, sample_id: str, record: dict[str, Any]) -> None:
        """Record that ``sample_id`` was attempted and dropped (no image); kept in the marker."""
        if self._tar is None:
            raise RuntimeError(f"shard {self.path.name} is already closed")
        check_id(sample_id)
        self.dropped.append({**record, "id": sample_id})

    def close(self) -> Path:
        """Finish the tar, rename it into place, then write its completion marker."""
        if self._tar is None:
            raise RuntimeError(f"shard {self.path.name} is already closed")
        self._tar.close()
        self._tar = None
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        marker = {"ids": self.ids, "count": self.count, "dropped": self.dropped,
                  "sha256": _sha256_file(self.path)}
        write_json(marker_path(self.path), marker)
        return self.path

    def abort(self) -> None:
        """Drop the shard being written; nothing is published."""
        try:
            if self._tar is not None:
                self._tar.close()
        finally:
            self._tar = None
            self._tmp.unlink(missing_ok=True)


def completed_shards(out_dir: str | os.PathLike) -> list[Path]:
    """Shards of ``out_dir`` that have a completion marker, sorted by (rank, index)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    shards = sorted(p for p in out_dir.glob(SHARD_GLOB) if _SHARD_RE.match(p.name))
    return [p for p in shards if marker_path(p).is_file()]


def done_ids(out_dir: str | os.PathLike) -> set[str]:
    """Ids finished in completed shards, stored or dropped; read from the markers (no tar)."""
    ids: set[str] = set()
    for shard in completed_shards(out_dir):
        marker = read_json(marker_path(shard))
        ids.update(marker["ids"])
        ids.update(d["id"] for d in marker.get("dropped", []))
    return ids


def dropped_records(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ids dropped in completed shards (prompt fields and flags)."""
    return [
        d
        for shard in completed_shards(out_dir)
        for d in read_json(marker_path(shard)).get("dropped", [])
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
    """The first shard index of ``rank`` not used by a completed shard."""
    used = [
        int(m.group(2))
        for p in completed_shards(out_dir)
        if (m := _SHARD_RE.match(p.name)) and int(m.group(1)) == rank
    ]
    return max(used, default=-1) + 1


def _iter_members(shard: Path, want: set[str] | None, json_only: bool) -> Iterator[dict[str, Any]]:
    """Yield {'id', 'meta', 'bytes', 'ext'} per sample of one shard, in tar order."""
    current: dict[str, Any] = {}
    with tarfile.open(shard, "r") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if want is not None and key not in want:
                continue
            if current and current["id"] != key:
                yield _finish(current, shard)
                current = {}
            current["id"] = key
            if ext == "json":
                current["meta"] = json.loads(tar.extractfile(member).read())
            elif not json_only:
                current["bytes"], current["ext"] = tar.extractfile(member).read(), ext
            else:
                current["ext"] = ext
    if current:
        yield _finish(current, shard)


def _finish(sample: dict[str, Any], shard: Path) -> dict[str, Any]:
    if "meta" not in sample or "ext" not in sample:
        raise ValueError(f"shard {shard} holds an incomplete sample {sample['id']!r}")
    return sample


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


def build_image_manifest(out_dir: str | os.PathLike, allow_empty: bool = False) -> pd.DataFrame:
    """The generated images' manifest: one row per sample from the .json members of
    completed shards, sorted by id.

    Adds a 'shard' column (tar file name). Fails on a duplicated id, and on a folder without
    any stored image unless ``allow_empty`` (then the table has only 'id' and 'shard').
    """
    rows = []
    for shard in completed_shards(out_dir):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.shards", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("to-imagefolder", help="copy the images to DEST/<class>/<id>.<ext>")
    conv.add_argument("out_dir", help="a generation output folder (completed shards)")
    conv.add_argument("dest", help="the ImageFolder root to write")
    conv.add_argument("--class-key", default="class_name",
                      help="the metadata field naming the folder (default: class_name)")
    args = parser.parse_args(argv)
    if not completed_shards(args.out_dir):
        print(f"error: no completed shards in {args.out_dir}", file=sys.stderr)
        return 2
    counts = to_imagefolder(args.out_dir, args.dest, class_key=args.class_key)
    print(f"{sum(counts.values())} images in {len(counts)} class folders under {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
