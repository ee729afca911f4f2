"""The failure log: an append-only JSONL of LLM answers that stayed malformed after every
retry, shared safely by several processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

try:  # POSIX: an exclusive lock around each append; elsewhere O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class FailureLog:
    """Append-only JSONL of answers that stayed malformed after every retry.

    Each record is one ``write`` to a file opened with O_APPEND, under an exclusive
    ``flock``, so several processes can share the file and no line is ever interleaved. A
    writer that died mid-line leaves a fragment; the next record starts on a new line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def record(self, entry: dict) -> None:
        data = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode("ascii")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock

    def clear(self) -> None:
        """Start an empty log (call once, before any worker writes)."""
        self.path.unlink(missing_ok=True)

    def count(self) -> int:
        return count_failures(self.path)


def count_failures(log_path: str | os.PathLike) -> int:
    """Number of failure records (non-empty lines); 0 when there is no log."""
    path = Path(log_path)
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
