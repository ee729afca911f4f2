"""The end-to-end check of a generation folder, and setting damaged shards aside.

:func:`verify` reads every shard of a folder once and checks, per shard: its completion
marker (readable, lists ids and the tar's sha256), the tar's sha256 against the marker, every
member (readable, paired ``{id}.{ext}`` + ``{id}.json``, the ids the marker lists, each
image's sha256 against its JSON record); then the folder's ``manifest.parquet`` against the
shards: ids it lists that no intact shard holds (missing), ids the shards hold that it does
not list (extra), ids held twice (duplicate), and each image's sha256 against its row. A
marker without its tar, or a tar without its marker that the manifest names (a lost marker),
is damage too; a tar without marker that nothing names is an interrupted write (listed, not
damage: the rank that wrote it removes it when it resumes).

The ``generate`` stage calls it before resuming (a damaged shard is set aside with
:func:`set_aside` and its ids are generated again, byte for byte) and the ``train`` stage
before reading any synthetic image (damage fails the run naming the shards and ids).

    python -m lib.shards verify outputs/generate          # report; exit 1 on damage
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lib.shards.format import (
    READ_ERRORS,
    SHARD_FILE_RE,
    SHARD_RE,
    ShardError,
    marker_path,
    owns,
    preview,
    read_marker,
    tar_samples,
)

MANIFEST = "manifest.parquet"
SET_ASIDE_SUFFIX = ".damaged"
REPAIR_HINT = (
    "rerun the generate stage (python -m lib.runner generate): it sets damaged shards aside "
    "(renamed *.damaged, not deleted) and generates their ids again, byte for byte"
)


@dataclass
class ShardDamage:
    """A shard that cannot be trusted: why, and the ids it held (stored and dropped)."""

    shard: str  # the tar's file name
    reason: str
    ids: list[str] = field(default_factory=list)  # stored images (marker, else manifest)
    dropped: list[str] = field(default_factory=list)  # ids its marker records as dropped


@dataclass
class ManifestProblem:
    """A disagreement between ``manifest.parquet`` and the intact shards."""

    kind: str  # absent, unreadable, shard, missing, extra, duplicate, sha256
    detail: str
    ids: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    """What :func:`verify` found; ``ok`` when nothing is damaged and the manifest agrees."""

    folder: str
    shards: int = 0  # completed shards checked
    images: int = 0  # images in intact shards
    damaged: list[ShardDamage] = field(default_factory=list)
    manifest: list[ManifestProblem] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # interrupted writes (no marker)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.manifest

    @property
    def damaged_ids(self) -> list[str]:
        """Every id of a damaged shard or of a manifest problem (the data not usable)."""
        ids = {i for d in self.damaged for i in d.ids}
        ids |= {i for p in self.manifest for i in p.ids}
        return sorted(ids)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def describe(self) -> str:
        """The report as text: a summary line, then one line per problem."""
        state = "OK" if self.ok else "DAMAGED"
        lines = [f"{self.folder}: {self.shards} completed shards, {self.images} images in "
                 f"intact shards: {state}"]
        for d in self.damaged:
            held = f"{len(d.ids)} images" + (f" and {len(d.dropped)} dropped ids"
                                              if d.dropped else "")
            lines.append(f"  {d.shard}: {d.reason}; held {held}: {preview(d.ids + d.dropped)}")
        for p in self.manifest:
            ids = f" ({len(p.ids)} ids: {preview(p.ids)})" if p.ids else ""
            lines.append(f"  {MANIFEST}: {p.kind}: {p.detail}{ids}")
        if self.incomplete:
            lines.append(f"  {len(self.incomplete)} tars without a marker (interrupted writes, "
                         f"removed when their rank resumes): {preview(self.incomplete)}")
        if not self.ok:
            lines.append(f"  To repair: {REPAIR_HINT}.")
        return "\n".join(lines)


def verify(
    out_dir: str | os.PathLike, rank: int | None = None, world_size: int = 1
) -> VerifyReport:
    """Check the generation folder ``out_dir`` end to end (see the module docstring).

    With ``rank``, only the shards that rank owns: those written by a rank ``r`` with
    ``r % world_size == rank`` (the manifest's rows of other shards are not compared), so the
    ranks of a resumed run each check their own share and never a file another rank writes.
    """
    out_dir = Path(out_dir)
    report = VerifyReport(str(out_dir))
    if not out_dir.is_dir():
        report.manifest.append(ManifestProblem("absent", f"no folder {out_dir}"))
        return report

    def owned(path: Path) -> bool:
        return owns(path, rank, world_size)

    tars, markers = _shard_files(out_dir, owned)
    manifest = _read_manifest(out_dir, report, owned if rank is not None else None)
    listed = _manifest_shards(manifest)
    stored: dict[str, list[tuple[str, str]]] = {}  # id -> [(shard, sha256 of its bytes)]
    for tar in sorted(tars | markers):
        if tar in tars and tar not in markers and tar not in listed:
            report.incomplete.append(tar)
            continue
        report.shards += tar in tars and tar in markers
        damage, samples = _check_files(out_dir / tar, tars, markers, listed)
        if damage is not None:
            report.damaged.append(damage)
            continue
        report.images += len(samples)
        for sample_id, sha in samples.items():
            stored.setdefault(sample_id, []).append((tar, sha))
    for tar in sorted(set(listed) - tars - markers):
        report.damaged.append(ShardDamage(tar, "the tar and its marker are missing (the "
                                          "manifest lists images in it)", sorted(listed[tar])))
    if manifest is not None:
        _compare_manifest(manifest, stored, report)
    return report


def _check_files(shard: Path, tars: set[str], markers: set[str], listed: dict[str, list[str]]
                 ) -> tuple[ShardDamage | None, dict[str, str]]:
    """Check a shard whose tar or marker exists: both (:func:`check_shard`), a marker alone
    (the tar is lost), or a tar alone that the manifest names (the marker is lost)."""
    name = shard.name
    if name in tars and name in markers:
        return check_shard(shard)
    if name in markers:
        return _marker_only(shard), {}
    return ShardDamage(name, "no completion marker (the manifest lists images in it)",
                       sorted(listed[name])), {}


def _shard_files(out_dir: Path, owned: Any) -> tuple[set[str], set[str]]:
    """The owned tars and markers of ``out_dir``, both as tar names."""
    tars, markers = set(), set()
    for p in out_dir.glob("shard-*"):
        m = SHARD_FILE_RE.match(p.name)
        if not m or not owned(p):
            continue
        if SHARD_RE.match(p.name):
            tars.add(p.name)
        elif m.group(3) == ".done":
            markers.add(p.name[: -len(".done")])
    return tars, markers


def _read_manifest(out_dir: Path, report: VerifyReport, owned: Any) -> pd.DataFrame | None:
    """``manifest.parquet`` (the rows of owned shards when ``owned``), or None, recording
    why in ``report``."""
    path = out_dir / MANIFEST
    if not path.is_file():
        report.manifest.append(ManifestProblem(
            "absent", "no manifest.parquet: the run is not finished (or it was deleted)"))
        return None
    try:
        manifest = pd.read_parquet(path, columns=["id", "sha256", "shard"])
    except Exception as e:  # any parquet/arrow error: reported, not raised
        report.manifest.append(ManifestProblem("unreadable", f"{type(e).__name__}: {e}"))
        return None
    named = manifest["shard"].map(lambda name: bool(SHARD_RE.match(str(name))))
    if not named.all():  # never act on a file the manifest names that is not a shard
        report.manifest.append(ManifestProblem(
            "shard", "rows that name no shard file (shard-RRRRR-IIIIII.tar)",
            sorted(manifest.loc[~named, "id"].astype(str))))
        manifest = manifest[named]
    if owned is not None:
        manifest = manifest[[owned(Path(s)) for s in manifest["shard"]]]
    return manifest


def _manifest_shards(manifest: pd.DataFrame | None) -> dict[str, list[str]]:
    """Shard name -> the ids the manifest lists in it."""
    if manifest is None:
        return {}
    return {str(k): list(v) for k, v in manifest.groupby("shard")["id"]}


def check_shard(shard: Path) -> tuple[ShardDamage | None, dict[str, str]]:
    """Check one completed shard in a single read: (its damage or None, id -> sha256 of
    each stored image's bytes)."""
    try:
        marker = read_marker(shard)
    except ShardError as e:
        return ShardDamage(shard.name, e.problem, _ids_in_tar(shard)), {}
    ids, dropped = list(marker["ids"]), [d["id"] for d in marker.get("dropped", [])]
    problems, samples, sha = _read_hashing(shard)
    if sha != marker["sha256"]:
        size = shard.stat().st_size
        problems.insert(0, f"the tar's sha256 differs from its marker's (changed or "
                        f"truncated; {size} bytes now)")
    missing = sorted(set(ids) - set(samples))
    if missing:
        problems.append(f"{len(missing)} of its {len(ids)} images are not in the tar")
    extra = sorted(set(samples) - set(ids))
    if extra:
        problems.append(f"it holds {len(extra)} ids its marker does not list: {preview(extra)}")
    if problems:
        return ShardDamage(shard.name, "; ".join(problems), ids, dropped), {}
    return None, samples


def _read_hashing(shard: Path) -> tuple[list[str], dict[str, str], str]:
    """Read ``shard`` once, in stream mode: (problems, id -> sha256 of its image bytes, sha256
    of the whole file). Every member is read; an image whose bytes differ from the sha256
    in its JSON record is a problem."""
    problems: list[str] = []
    samples: dict[str, str] = {}
    bad_hash: list[str] = []
    with open(shard, "rb") as f:
        reader = _HashingReader(f)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for s in tar_samples(tar, shard, None, json_only=False):
                    digest = hashlib.sha256(s["bytes"]).hexdigest()
                    if s["meta"].get("sha256") not in (None, digest):
                        bad_hash.append(s["id"])
                    samples[s["id"]] = digest
        except READ_ERRORS as e:
            problems.append(f"unreadable after {len(samples)} images ({type(e).__name__}: {e})")
        while reader.read(1 << 20):  # hash what tarfile did not need to read
            pass
    if bad_hash:
        problems.append(f"{len(bad_hash)} images differ from the sha256 of their record: "
                        f"{preview(bad_hash)}")
    return problems, samples, reader.sha.hexdigest()


class _HashingReader(io.RawIOBase):
    """A read-only file wrapper that hashes every byte read through it."""

    def __init__(self, f: io.BufferedReader):
        self._f, self.sha = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
        return n or 0


def _ids_in_tar(shard: Path) -> list[str]:
    """The ids a shard whose marker is unreadable still holds (as far as it reads)."""
    ids: list[str] = []
    try:
        with tarfile.open(shard, "r") as tar:
            ids.extend(s["id"] for s in tar_samples(tar, shard, None, json_only=True))
    except READ_ERRORS:
        pass
    return sorted(ids)


def _marker_only(shard: Path) -> ShardDamage:
    """A marker whose tar is gone: the ids it lists are lost."""
    try:
        marker = read_marker(shard)
    except ShardError as e:
        return ShardDamage(shard.name, f"the tar is missing; {e.problem}")
    return ShardDamage(shard.name, "the tar is missing (only its marker is left)",
                       list(marker["ids"]), [d["id"] for d in marker.get("dropped", [])])


def _compare_manifest(manifest: pd.DataFrame, stored: dict[str, list[tuple[str, str]]],
                      report: VerifyReport) -> None:
    """Record the manifest's missing, extra, duplicated ids and image hash mismatches.

    Ids of a damaged shard are reported with that shard, not again here.
    """
    lost = {i for d in report.damaged for i in d.ids}
    counts = Counter(manifest["id"])
    twice = sorted({i for i, n in counts.items() if n > 1}
                   | {i for i, where in stored.items() if len(where) > 1})
    listed = set(counts)
    missing = sorted(listed - set(stored) - lost)
    extra = sorted(set(stored) - listed)
    sha = dict(zip(manifest["id"], manifest["sha256"]))
    differ = sorted(i for i, where in stored.items()
                    if i in sha and any(h != sha[i] for _, h in where))
    for kind, ids, detail in (
        ("duplicate", twice, "ids listed or stored more than once"),
        ("missing", missing, "ids it lists that no intact shard holds"),
        ("extra", extra, "ids the shards hold that it does not list"),
        ("sha256", differ, "images whose bytes differ from the sha256 it records"),
    ):
        if ids:
            report.manifest.append(ManifestProblem(kind, detail, ids))


def set_aside(out_dir: str | os.PathLike, shard: str) -> list[Path]:
    """Rename the tar and the marker of ``shard`` (those that exist) to ``NAME.damaged``
    (``.damaged-2``, ... if taken), out of every reader's way; returns the new paths.

    The tar goes first: interrupted in between, a marker is left alone, which :func:`verify`
    reports and the next resume sets aside. Nothing is deleted.
    """
    moved = []
    for path in (Path(out_dir) / shard, marker_path(Path(out_dir) / shard)):
        if path.exists():
            target = _free_name(path)
            os.replace(path, target)
            moved.append(target)
    return moved


def _free_name(path: Path) -> Path:
    target, k = path.with_name(path.name + SET_ASIDE_SUFFIX), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{SET_ASIDE_SUFFIX}-{k}")
    return target
