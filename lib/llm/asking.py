"""Asking an LLM for one request's items: render, send, parse, retry, log the failure.

:func:`ask` renders a task (:mod:`lib.llm.templates`), sends it to any chat object (normally
a :class:`~lib.llm.cache.CachedLLM`, so a rerun needs no LLM) and parses the answer
(:mod:`lib.llm.parsing`). A malformed answer is retried with ``seed + 1``, ``seed + 2``,
...: every attempt has its own cache key, so a replay walks through exactly the same
sequence. A replayed answer set that holds a malformed answer but not its retry
(:class:`~lib.llm.cache.NotRecorded` on a retry) makes that attempt fail, like a malformed
answer. After the last attempt the answer is written to a
:class:`~lib.llm.failures.FailureLog` (with every attempt's reason and where the answers
came from) and returned with ``failed=True`` and an empty value: never silently dropped,
always countable. :func:`record` runs a list of :class:`Request`
and writes exactly the calls they made, for the ``recorded`` backend to replay.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.llm.cache import CachedLLM, LLMCache, NotRecorded, export_jsonl, normalize_sampling
from lib.llm.failures import FailureLog
from lib.llm.parsing import MalformedAnswer, parse_answer
from lib.llm.templates import render, task_spec

DEFAULT_MAX_RETRIES = 2


@dataclass
class Answer:
    """One parsed answer. ``raw`` holds every attempt's response, in order."""

    value: list[str]
    attempts: int
    failed: bool
    raw: list[str] = field(default_factory=list)
    reason: str = ""


def _sampling(spec: dict, sampling: Mapping[str, Any], task: str) -> dict[str, Any]:
    merged = normalize_sampling({**(spec.get("sampling") or {}), **sampling})
    if "seed" not in sampling:
        raise ValueError(f"LLM task {task!r}: sampling needs an explicit seed (per item)")
    if not isinstance(merged["seed"], int) or merged["seed"] < 0:
        raise ValueError(
            f"LLM task {task!r}: seed must be a non-negative int, got {merged['seed']!r}"
        )
    return merged


def _failure(llm: Any, task: str, fields: Mapping[str, Any], n: int, sampling: dict,
             answer: Answer, source: str) -> dict[str, Any]:
    """The failure log's record of ``answer``: the request, every response, every reason."""
    return {
        "task": task,
        "fields": dict(fields),
        "n": n,
        "model": getattr(llm, "model_id", None),
        "source": source,
        "sampling": sampling,
        "attempts": answer.attempts,
        "raw": answer.raw,
        "reason": answer.reason,
    }


def ask(
    llm: Any,
    task: str,
    fields: Mapping[str, Any],
    *,
    n: int,
    sampling: Mapping[str, Any],
    max_retries: int,
    failures: FailureLog | None,
    templates: dict | None = None,
) -> Answer:
    """Ask ``llm`` (anything with ``chat(messages, **sampling) -> str``) for ``n`` items.

    ``sampling`` overrides the task's defaults and must hold the seed. Attempt ``i`` (from
    0) uses ``seed + i``; at temperature 0 a deterministic model would repeat itself, which
    is why the shipped tasks sample. Errors of the backend itself (no server, a request the
    recorded set never held) are not malformed answers and propagate; only a retry the
    recorded set lacks (:class:`~lib.llm.cache.NotRecorded` after the first attempt) counts
    as a failed attempt. ``templates`` defaults to the shipped request templates
    (:func:`~lib.llm.templates.load_templates`).
    """
    spec = task_spec(task, templates)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"LLM task {task!r}: n must be a positive int, got {n!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if "n" in fields:
        raise KeyError(f"LLM task {task!r}: pass n as ask(..., n=...), not as a field")
    base = _sampling(spec, sampling, task)
    messages = render(task, templates=templates, **fields, n=n)
    source = str(getattr(llm, "source", "live"))
    raw: list[str] = []
    reasons: list[str] = []
    for attempt in range(max_retries + 1):
        seed = base["seed"] + attempt
        try:
            text = llm.chat(messages, **{**base, "seed": seed})
        except NotRecorded:
            if attempt == 0:
                raise  # the recorded set does not hold this request at all
            reasons.append(f"attempt {attempt + 1}: no {source} answer for retry seed {seed} "
                           "(the set holds the malformed answer, not its retry)")
            continue
        raw.append(text)
        try:
            value = parse_answer(spec["schema"], text, n)
        except MalformedAnswer as e:
            reasons.append(f"attempt {attempt + 1}: {e}")
            continue
        return Answer(value=value, attempts=attempt + 1, failed=False, raw=raw)
    answer = Answer(value=[], attempts=max_retries + 1, failed=True, raw=raw,
                    reason="; ".join(reasons))
    if failures is not None:
        failures.record(_failure(llm, task, fields, n, base, answer, source))
    return answer


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
    templates: dict | None = None,
) -> list[Answer]:
    """Run ``requests`` through ``llm`` and write exactly the calls they made to ``out_jsonl``.

    The calls (retries included) go through a fresh :class:`CachedLLM` whose cache is then
    exported with :func:`~lib.llm.cache.export_jsonl`: the file is in the cache's
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
                    templates=templates,
                )
                for r in reqs
            ]
            export_jsonl(cache, out_jsonl)
        finally:
            cache.close()
    return answers
