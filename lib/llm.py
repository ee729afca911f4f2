"""The LLM layer: every request of the study as data, answers parsed against a schema.

The requests (system message, user template, answer schema, default sampling) live in
``lib/resources/llm_prompts.yaml``. :func:`ask` renders one, sends it to any chat object
(normally a :class:`~lib.backends.llm_cache.CachedLLM`, so a rerun needs no LLM) and parses
the answer. A malformed answer is retried with ``seed + 1``, ``seed + 2``, ...: every attempt
has its own cache key, so a replay walks through exactly the same sequence. After the last
attempt the answer is written to a :class:`FailureLog` and returned with ``failed=True`` and
an empty value: never silently dropped, always countable.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import string
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lib.backends.llm_cache import CachedLLM, LLMCache, export_jsonl, normalize_sampling
from lib.disambiguate import parse_candidates

try:  # POSIX: an exclusive lock around each append; elsewhere O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

PROMPTS_PATH = Path(__file__).parent / "resources" / "llm_prompts.yaml"
SCHEMA_TYPES = ("lines", "json_list")
SCHEMA_KEYS = {"type", "min_items", "max_items", "max_chars"}
TASK_KEYS = {"system", "user", "schema", "sampling", "optional", "lookups"}
RESERVED_FIELDS = {"prompts"}  # render()'s own keyword
DEFAULT_MAX_CHARS = 80
DEFAULT_MAX_RETRIES = 2


class MalformedAnswer(ValueError):
    """An LLM answer that does not satisfy its task's schema; the message says why."""


@dataclass
class Answer:
    """One parsed answer. ``raw`` holds every attempt's response, in order."""

    value: list[str]
    attempts: int
    failed: bool
    raw: list[str] = field(default_factory=list)
    reason: str = ""


# ---------------------------------------------------------------- prompts as data
def _fields(template: str, where: str) -> set[str]:
    """Names of the ``{field}`` placeholders; only plain names are allowed."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{where}: bad template ({e})") from e
    bad = sorted(n for n in names if not n.isidentifier())
    if bad:
        raise ValueError(f"{where}: placeholders must be plain names, got {bad}")
    return names


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict) or "type" not in schema:
        raise ValueError(f"{where}: schema must be a mapping with a type")
    if schema["type"] not in SCHEMA_TYPES:
        raise ValueError(f"{where}: unknown schema {schema['type']!r}; valid: {list(SCHEMA_TYPES)}")
    unknown = sorted(set(schema) - SCHEMA_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown schema key(s) {unknown}; valid: {sorted(SCHEMA_KEYS)}")
    for key in ("min_items", "max_items", "max_chars"):
        value = schema.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: schema {key} must be a positive integer, got {value!r}")


def _check_task(name: str, spec: Any, tables: dict[str, Any]) -> None:
    where = f"LLM task {name!r}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: must be a mapping")
    missing = [k for k in ("system", "user", "schema") if k not in spec]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    unknown = sorted(set(spec) - TASK_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {sorted(TASK_KEYS)}")
    for key in ("system", "user"):
        if not isinstance(spec[key], str):
            raise ValueError(f"{where}: {key} must be a string")
    _check_schema(spec["schema"], where)
    sampling = spec.get("sampling") or {}
    if "seed" in sampling:
        raise ValueError(f"{where}: sampling must not set a seed (the caller gives it per item)")
    normalize_sampling(sampling)  # unknown option -> KeyError naming the valid ones
    for fragment, text in (spec.get("optional") or {}).items():
        if not isinstance(text, str):
            raise ValueError(f"{where}: optional fragment {fragment!r} must be a string")
    for fld, table in (spec.get("lookups") or {}).items():
        if not isinstance(tables.get(table), dict):
            raise ValueError(f"{where}: lookup of {fld!r} names no table {table!r}")
    names = _fields(spec["system"], where) | _fields(spec["user"], where)
    for fragment, text in (spec.get("optional") or {}).items():
        names |= _fields(text, f"{where} optional {fragment!r}")
    if names & RESERVED_FIELDS:
        raise ValueError(f"{where}: field name(s) {sorted(names & RESERVED_FIELDS)} are reserved")


def load_prompts(path: str | os.PathLike | None = None) -> dict:
    """The prompts file (default: the one shipped in ``lib/resources``), validated.

    Every task needs system, user and schema; schema types, schema keys, sampling options
    and lookup tables must be known. A problem fails naming the task and what is wrong.
    """
    path = Path(path) if path is not None else PROMPTS_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise ValueError(f"{path}: needs a non-empty 'tasks' mapping")
    tables = {k: v for k, v in data.items() if k != "tasks"}
    for name, spec in data["tasks"].items():
        _check_task(name, spec, tables)
    return data


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    return load_prompts()


def _prompts(prompts: dict | None) -> dict:
    return _shipped() if prompts is None else prompts


def _task(prompts: dict | None, task: str) -> dict:
    tasks = _prompts(prompts)["tasks"]
    if task not in tasks:
        raise KeyError(f"unknown LLM task {task!r}; valid: {sorted(tasks)}")
    return tasks[task]


def cd_axes(prompts: dict | None = None) -> dict[str, str]:
    """The CD axes (key -> the aspect the LLM writes contexts for), in file order."""
    return dict(_prompts(prompts)["cd_axes"])


def template_fields(task: str, prompts: dict | None = None) -> dict[str, list[str]]:
    """{"required": [...], "optional": [...]}: the fields ``render(task, ...)`` takes."""
    spec = _task(prompts, task)
    fragments = spec.get("optional") or {}
    main = _fields(spec["system"], task) | _fields(spec["user"], task)
    optional = set().union(*(_fields(t, task) for t in fragments.values())) if fragments else set()
    required = main - set(fragments)
    return {"required": sorted(required), "optional": sorted(optional - required)}


def render(task: str, /, prompts: dict | None = None, **fields: Any) -> list[dict]:
    """The chat messages of ``task`` with ``fields`` filled in (system, then user).

    A missing field or one the task does not take fails with a KeyError naming the task and
    the field; a field that is None or "" counts as not given.
    """
    spec = _task(prompts, task)
    names = template_fields(task, prompts)
    given = {k: v for k, v in fields.items() if v is not None and v != ""}
    unknown = sorted(set(fields) - set(names["required"]) - set(names["optional"]))
    if unknown:
        raise KeyError(
            f"LLM task {task!r} takes no field(s) {unknown}; "
            f"required: {names['required']}, optional: {names['optional']}"
        )
    missing = [f for f in names["required"] if f not in given]
    if missing:
        raise KeyError(f"LLM task {task!r} needs field {missing[0]!r} (missing: {missing})")
    values = {k: str(v) for k, v in given.items()}
    for fld, table_name in (spec.get("lookups") or {}).items():
        if fld in values:
            table = _prompts(prompts)[table_name]
            if values[fld] not in table:
                raise KeyError(
                    f"LLM task {task!r}: unknown {fld} {values[fld]!r}; valid: {list(table)}"
                )
            values[fld] = table[values[fld]]
    for fragment, text in (spec.get("optional") or {}).items():
        needs = _fields(text, task)
        values[fragment] = text.format(**values) if needs <= set(values) else ""
    return [
        {"role": "system", "content": spec["system"].format(**values)},
        {"role": "user", "content": spec["user"].format(**values)},
    ]


# ---------------------------------------------------------------- schemas
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


def _limits(schema: dict, n: int) -> tuple[int, int, int]:
    k = min(n, schema.get("max_items") or n)
    return k, min(schema.get("min_items", 1), k), schema.get("max_chars", DEFAULT_MAX_CHARS)


def _enough(items: list[str], need: int, text: str) -> list[str]:
    if len(items) < need:
        what = "empty answer" if not text.strip() else f"{len(items)} usable item(s)"
        raise MalformedAnswer(f"{what}, need at least {need}")
    return items


def parse_lines(text: str, schema: dict, n: int) -> list[str]:
    """Distinct, printable, non-empty lines without U+FFFD (bullets/numbering stripped).

    At most ``min(n, max_items)`` are kept; lines longer than max_chars are dropped.
    """
    k, need, max_chars = _limits(schema, n)
    return _enough(parse_candidates(text, k, max_chars), need, text)


def _json_array(text: str) -> Any:
    """The JSON of ``text``, of its first code fence, or of its outermost [...] span."""
    match = _FENCE.search(text)
    body = match.group(1) if match else text
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("["), body.rfind("]")
        if 0 <= start < end:
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(body[start : end + 1])
    raise MalformedAnswer(f"not a JSON array: {text.strip()[:60]!r}")


def parse_json_list(text: str, schema: dict, n: int) -> list[str]:
    """A JSON array of strings (a code fence or a sentence around it is tolerated).

    Items are cleaned like lines (see :func:`parse_lines`); an item that spans several
    lines is dropped, and an array holding anything but strings is malformed.
    """
    k, need, max_chars = _limits(schema, n)
    data = _json_array(text)
    if not isinstance(data, list):
        raise MalformedAnswer(f"JSON {type(data).__name__}, not an array")
    bad = [x for x in data if not isinstance(x, str)]
    if bad:
        raise MalformedAnswer(f"JSON array holds non-strings, e.g. {bad[0]!r:.40}")
    single = [x for x in data if len(x.splitlines()) <= 1]
    return _enough(parse_candidates("\n".join(single), k, max_chars), need, text)


PARSERS = {"lines": parse_lines, "json_list": parse_json_list}


def parse_answer(schema: dict, text: str, n: int) -> list[str]:
    """Items of ``text`` under ``schema``; :class:`MalformedAnswer` says why it fails."""
    return PARSERS[schema["type"]](text, schema, n)


# ---------------------------------------------------------------- failures
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

    def read(self) -> list[dict]:
        return read_failures(self.path)


def count_failures(log_path: str | os.PathLike) -> int:
    """Number of failure records (non-empty lines); 0 when there is no log."""
    path = Path(log_path)
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def read_failures(log_path: str | os.PathLike) -> list[dict]:
    """Every failure record; a line that is not JSON fails naming its number."""
    path = Path(log_path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not a failure record ({e})") from e
    return out


# ---------------------------------------------------------------- asking
def _sampling(spec: dict, sampling: Mapping[str, Any], task: str) -> dict[str, Any]:
    merged = normalize_sampling({**(spec.get("sampling") or {}), **sampling})
    if "seed" not in sampling:
        raise ValueError(f"LLM task {task!r}: sampling needs an explicit seed (per item)")
    if not isinstance(merged["seed"], int) or merged["seed"] < 0:
        raise ValueError(
            f"LLM task {task!r}: seed must be a non-negative int, got {merged['seed']!r}"
        )
    return merged


def ask(
    llm: Any,
    task: str,
    fields: Mapping[str, Any],
    *,
    n: int,
    sampling: Mapping[str, Any],
    max_retries: int,
    failures: FailureLog | None,
    prompts: dict | None = None,
) -> Answer:
    """Ask ``llm`` (anything with ``chat(messages, **sampling) -> str``) for ``n`` items.

    ``sampling`` overrides the task's defaults and must hold the seed. Attempt ``i`` (from
    0) uses ``seed + i``; at temperature 0 a deterministic model would repeat itself, which
    is why the shipped tasks sample. Errors of the backend itself (no server, no recorded
    answer) are not malformed answers and propagate.
    """
    spec = _task(prompts, task)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"LLM task {task!r}: n must be a positive int, got {n!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if "n" in fields:
        raise KeyError(f"LLM task {task!r}: pass n as ask(..., n=...), not as a field")
    base = _sampling(spec, sampling, task)
    messages = render(task, prompts=prompts, **fields, n=n)
    raw: list[str] = []
    reasons: list[str] = []
    for attempt in range(max_retries + 1):
        text = llm.chat(messages, **{**base, "seed": base["seed"] + attempt})
        raw.append(text)
        try:
            value = parse_answer(spec["schema"], text, n)
        except MalformedAnswer as e:
            reasons.append(f"attempt {attempt + 1}: {e}")
            continue
        return Answer(value=value, attempts=attempt + 1, failed=False, raw=raw)
    answer = Answer(value=[], attempts=len(raw), failed=True, raw=raw, reason="; ".join(reasons))
    if failures is not None:
        failures.record(
            {
                "task": task,
                "fields": dict(fields),
                "n": n,
                "model": getattr(llm, "model_id", None),
                "sampling": base,
                "attempts": answer.attempts,
                "raw": raw,
                "reason": answer.reason,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    return answer


# ---------------------------------------------------------------- recording
@dataclass(frozen=True)
class Request:
    """One :func:`ask` call, as data (for :func:`record`)."""

    task: str
    fields: Mapping[str, Any]
    n: int
    sampling: Mapping[str, Any]
    max_retries: int = DEFAULT_MAX_RETRIES


def record(
    llm: Any,
    requests: Iterable[Request | Mapping[str, Any]],
    out_jsonl: str | os.PathLike,
    *,
    failures: FailureLog | None = None,
    prompts: dict | None = None,
) -> list[Answer]:
    """Run ``requests`` through ``llm`` and write exactly the calls they made to ``out_jsonl``.

    The calls (retries included) go through a fresh :class:`CachedLLM` whose cache is then
    exported with :func:`~lib.backends.llm_cache.export_jsonl`: the file is in the cache's
    format, and the ``recorded`` backend replays it (labelling its records
    source="recorded"), giving the same answers with the same requests. ``llm`` may itself
    be a CachedLLM; only this run's calls are exported, not the rest of its cache.
    """
    reqs = [r if isinstance(r, Request) else Request(**r) for r in requests]
    with tempfile.TemporaryDirectory(prefix="llm-record-") as tmp:
        cache = LLMCache(Path(tmp) / "record.sqlite")
        try:
            cached = CachedLLM(llm, cache)
            answers = [
                ask(
                    cached,
                    r.task,
                    dict(r.fields),
                    n=r.n,
                    sampling=dict(r.sampling),
                    max_retries=r.max_retries,
                    failures=failures,
                    prompts=prompts,
                )
                for r in reqs
            ]
            export_jsonl(cache, out_jsonl)
        finally:
            cache.close()
    return answers
