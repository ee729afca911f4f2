"""The shard format: sample ids, file names, completion markers, image bytes, the writer.

A shard is a tar in the WebDataset layout: each sample is a pair of adjacent members
``{id}.png`` (or ``{id}.jpg``) and ``{id}.json``. :class:`ShardWriter` writes it to a
temporary name, renames it to ``shard-{rank:05d}-{index:06d}.tar`` and only then marks it
complete with an atomically written ``shard-....tar.done`` JSON (ids, count, sha256 of the
tar, and the ids dropped while the shard was written, with their prompts and flags). Tar
members carry fixed metadata (mtime 0, uid/gid 0, mode 0644), and images are encoded without
any metadata chunks, so the same samples give the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lib.io import read_json, write_json

SHARD_GLOB = "shard-*.tar"
MARKER_SUFFIX = ".done"
IMAGE_FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg"}
# WebDataset splits a member name at its first dot to find the sample key, so ids must not
# contain dots; slashes would create folders. The rest keeps ids safe as file names anywhere.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")
SHARD_RE = re.compile(r"^shard-(\d{5})-(\d{6})\.tar$")
# Any file of a shard: the tar, its marker, a temporary or a set-aside copy.
SHARD_FILE_RE = re.compile(r"^shard-(\d{5})-(\d{6})\.tar(\..+)?$")
READ_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)


class ShardError(ValueError):
    """A completed shard that does not read as its marker describes: unreadable, truncated or
    changed. Names the shard and the ids that cannot be read, and says how to repair it."""

    def __init__(self, shard: str | os.PathLike, problem: str, ids: Iterable[str] = ()):
        self.shard, self.problem, self.ids = Path(shard), problem, sorted(ids)
        held = f"; {len(self.ids)} ids cannot be read: {preview(self.ids)}" if self.ids else ""
        super().__init__(
            f"shard {self.shard} is damaged: {problem}{held}. Check the folder with "
            f"`python -m lib.shards verify {self.shard.parent}`; rerun the generate stage to "
            "repair it (a damaged shard is set aside and its ids are generated again)"
        )


def preview(ids: Iterable[str], n: int = 5) -> str:
    """The first ``n`` of ``ids`` and how many more: for messages that name ids."""
    ids = list(ids)
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more


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


def shard_rank(shard: str | os.PathLike) -> int:
    """The rank that wrote ``shard`` (any of its files: tar, marker, set-aside copy)."""
    m = SHARD_FILE_RE.match(Path(shard).name)
    if not m:
        raise ValueError(f"{shard} is not a shard file (shard-RRRRR-IIIIII.tar...)")
    return int(m.group(1))


def owns(shard: str | os.PathLike, rank: int | None, world_size: int = 1) -> bool:
    """Whether ``rank`` of ``world_size`` owns ``shard``: it was written by a rank ``r`` with
    ``r % world_size == rank`` (None: every rank). Each file has one owner however the
    world size changed, and a rank writes only files it owns."""
    return rank is None or shard_rank(shard) % world_size == rank


def read_marker(shard: Path) -> dict[str, Any]:
    """The completion marker of ``shard``; :class:`ShardError` if it is unreadable."""
    path = marker_path(shard)
    try:
        marker = read_json(path)
        if not isinstance(marker.get("ids"), list) or not isinstance(marker.get("sha256"), str):
            raise ValueError("no 'ids' list or 'sha256'")
        [d["id"] for d in marker.get("dropped", [])]  # noqa: B018 (validates the records)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ShardError(shard, f"unreadable completion marker {path.name} "
                         f"({type(e).__name__}: {e})") from e
    return marker


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

def tar_samples(
    tar: tarfile.TarFile, shard: Path, want: set[str] | None, json_only: bool
) -> Iterator[dict[str, Any]]:
    """Group an open shard's members into samples {'id', 'meta', 'bytes', 'ext'}, in order
    (random-access or stream mode); ``want`` restricts them to those ids."""
    current: dict[str, Any] = {}
    for member in tar:
        key, _, ext = member.name.partition(".")
        if want is not None and key not in want:
            continue
        if current and current["id"] != key:
            yield _finish(current, shard)
            current = {}
        current["id"] = key
        f = tar.extractfile(member)
        if f is None:
            raise ValueError(f"member {member.name!r} is not a regular file")
        if ext == "json":
            current["meta"] = json.loads(f.read())
        elif not json_only:
            current["bytes"], current["ext"] = f.read(), ext
        else:
            current["ext"] = ext
    if current:
        yield _finish(current, shard)


def _finish(sample: dict[str, Any], shard: Path) -> dict[str, Any]:
    if "meta" not in sample or "ext" not in sample:
        raise ValueError(f"shard {shard} holds an incomplete sample {sample['id']!r}")
    return sample
