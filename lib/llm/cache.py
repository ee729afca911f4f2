"""A persistent cache of LLM responses keyed by (model, messages, sampling).

Every LLM call of the study goes through :class:`CachedLLM`, so a rerun needs no LLM. The
cache is an sqlite file in WAL mode: several processes may read and write it at once, and a
crash never leaves a half-written record. ``export_jsonl`` turns it into a readable,
diff-friendly JSONL file (sorted by key, stable bytes) that can be committed and replayed by
the ``recorded`` backend, which reads it with ``read_jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from lib.io import atomic_path

# The sampling options every chat backend takes, with their defaults. Keys are built from
# the full set so that leaving an option out and passing its default hit the same record.
DEFAULT_SAMPLING: dict[str, Any] = {
    "temperature": 0.0,
    "top_p": 1.0,
    "max_new_tokens": 64,
    "seed": 0,
}


class ChatBackend(Protocol):
    model_id: str

    def chat(self, messages: list[dict], **sampling: Any) -> str: ...


def normalize_sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    """``sampling`` over the defaults; unknown options fail naming them and the valid ones."""
    unknown = sorted(set(sampling) - set(DEFAULT_SAMPLING))
    if unknown:
        raise KeyError(f"unknown sampling option(s) {unknown}; valid: {list(DEFAULT_SAMPLING)}")
    return {**DEFAULT_SAMPLING, **sampling}


def _canonical(value: Any) -> Any:
    """Integral floats become ints so ``0`` and ``0.0`` give the same key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def cache_key(model: str, messages: list[dict], sampling: dict) -> str:
    """sha256 hex digest of the canonical JSON of (model, messages, sampling)."""
    payload = {"model": model, "messages": messages, "sampling": sampling}
    text = json.dumps(
        _canonical(payload),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class NotRecorded(KeyError):
    """A replayed answer set holds no answer for a request (model, messages, sampling).

    :func:`lib.llm.asking.ask` lets it propagate on a request's first attempt (the set does
    not match the study's requests: a configuration error to fix) and counts it as a failed
    attempt on a retry (the set holds a malformed answer but no retry of it).
    """

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr
        return str(self.args[0]) if self.args else ""


class LLMCache:
    """Records by key in an sqlite file; one connection per process, opened lazily."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()  # create the file and table now, so errors surface here

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross fork(): reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS llm_cache (key TEXT PRIMARY KEY, record TEXT NOT NULL)"
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, key: str) -> dict | None:
        row = (
            self._connect().execute("SELECT record FROM llm_cache WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else json.loads(row[0])

    def put(self, key: str, record: dict) -> None:
        """Store ``record`` under ``key`` (one committed transaction; replaces an old one)."""
        text = json.dumps(record, sort_keys=True, ensure_ascii=False, allow_nan=False)
        self._connect().execute(
            "INSERT INTO llm_cache (key, record) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET record = excluded.record",
            (key, text),
        )

    def items(self) -> Iterator[tuple[str, dict]]:
        """(key, record) pairs sorted by key."""
        rows = self._connect().execute("SELECT key, record FROM llm_cache ORDER BY key")
        for key, text in rows.fetchall():
            yield key, json.loads(text)

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


class CachedLLM:
    """A chat backend whose responses are looked up in, and stored to, an :class:`LLMCache`."""

    def __init__(self, backend: ChatBackend, cache: LLMCache):
        self.backend = backend
        self.cache = cache
        self.model_id = backend.model_id
        self.hits = 0
        self.misses = 0

    @property
    def source(self) -> str:
        """Where responses come from ("live", "recorded"), so a CachedLLM can be stacked."""
        return getattr(self.backend, "source", "live")

    def chat(self, messages: list[dict], **sampling: Any) -> str:
        sampling = normalize_sampling(sampling)
        key = cache_key(self.model_id, messages, sampling)
        record = self.cache.get(key)
        if record is not None:
            self.hits += 1
            return record["response"]
        self.misses += 1
        response = self.backend.chat(messages, **sampling)
        self.cache.put(
            key,
            make_record(
                self.model_id, messages, sampling, response, getattr(self.backend, "source", "live")
            ),
        )
        return response


def make_record(
    model: str, messages: list[dict], sampling: dict, response: str, source: str
) -> dict:
    return {
        "model": model,
        "messages": messages,
        "sampling": sampling,
        "response": response,
        "source": source,
    }


def export_jsonl(cache: LLMCache, path: str | os.PathLike) -> Path:
    """Write every record as one JSON line (with its key), sorted by key; atomic."""
    lines = [
        json.dumps({"key": key, **record}, sort_keys=True, ensure_ascii=False) + "\n"
        for key, record in cache.items()
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return Path(path)


def read_jsonl(path: str | os.PathLike) -> dict[str, dict]:
    """Records of an exported JSONL file by key; a bad line fails naming its number."""
    records: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                key, record = _parse_line(line, f"{path}:{lineno}")
                records[key] = record
    return records


def _parse_line(line: str, where: str) -> tuple[str, dict]:
    try:
        obj = json.loads(line)
        missing = [f for f in ("key", "model", "messages", "sampling", "response") if f not in obj]
        if missing:
            raise KeyError(f"missing field(s) {missing}")
        key = obj.pop("key")
        expected = cache_key(obj["model"], obj["messages"], obj["sampling"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: not an LLM cache record ({type(e).__name__}: {e})") from e
    if key != expected:
        raise ValueError(
            f"{where}: key {key[:12]}... does not match its model/messages/"
            f"sampling (expected {expected[:12]}...)"
        )
    return key, obj
