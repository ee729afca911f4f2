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

- :mod:`~lib.shards.format`: ids, file names, markers, deterministic image bytes, the writer;
- :mod:`~lib.shards.reading`: the completed shards of a folder read back (samples, ids done,
  the image manifest, an ImageFolder copy). Each shard is checked against its marker as it
  is read: an unreadable or truncated tar raises :class:`ShardError` naming the shard and
  the ids it should hold, never a silently shorter stream;
- :mod:`~lib.shards.integrity`: :func:`verify`, the end-to-end check of a generation folder
  (markers, each tar's sha256, every member, the manifest's ids and image hashes) that the
  ``generate`` and ``train`` stages run before trusting one, and :func:`set_aside`, which
  renames a damaged shard out of the readers' way (nothing is deleted);
- ``python -m lib.shards`` (:mod:`~lib.shards.__main__`), the command line::

    python -m lib.shards verify outputs/generate     # a report; exit 1 if anything is damaged
    python -m lib.shards to-imagefolder outputs/generate /data/synthetic   # DEST/class/id.png
"""

from lib.shards.format import (
    IMAGE_FORMATS,
    MARKER_SUFFIX,
    SHARD_GLOB,
    ShardError,
    ShardWriter,
    check_id,
    encode_image,
    image_ext,
    is_blank,
    marker_path,
    owns,
    preview,
    read_marker,
    shard_name,
    shard_rank,
)
from lib.shards.integrity import MANIFEST, VerifyReport, set_aside, verify
from lib.shards.reading import (
    build_image_manifest,
    clean_incomplete,
    completed_shards,
    done_ids,
    dropped_records,
    iter_samples,
    next_shard_index,
    to_imagefolder,
)

__all__ = [
    "IMAGE_FORMATS", "MARKER_SUFFIX", "SHARD_GLOB", "ShardError", "ShardWriter", "check_id",
    "encode_image", "image_ext", "is_blank", "marker_path", "owns", "preview", "read_marker",
    "shard_name", "shard_rank", "build_image_manifest", "clean_incomplete", "completed_shards",
    "done_ids", "dropped_records", "iter_samples", "next_shard_index", "to_imagefolder",
    "MANIFEST", "VerifyReport", "set_aside", "verify",
]  # fmt: skip
