"""LLM answers parsed against their task's schema: one item per line, or a JSON array of
strings; an answer that does not satisfy the schema raises :class:`MalformedAnswer`."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

DEFAULT_MAX_CHARS = 80
# A leading bullet, or a list number followed by a space ("2. x", "3) x"; not "2.5 mm").
_BULLET = re.compile(r"^\s*(?:[-*\u2022]\s*|\d+[.)]\s+)")
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


class MalformedAnswer(ValueError):
    """An LLM answer that does not satisfy its task's schema; the message says why."""


def distinct_lines(text: str, k: int, max_chars: int = 80) -> list[str]:
    """Up to ``k`` distinct lines of an LLM answer (bullets, numbers and quotes stripped).

    Lines that are empty, too long or not printable text (including U+FFFD, which stands for
    bytes the tokenizer could not decode) are dropped, as are repeats (case-insensitive);
    the schema decides whether what is left is enough.
    """
    out: list[str] = []
    if k <= 0:
        return out
    for line in text.splitlines():
        cand = _BULLET.sub("", line).strip().strip('"').strip()
        printable = cand.isprintable() and "\ufffd" not in cand  # U+FFFD: undecodable bytes
        if cand and len(cand) <= max_chars and printable and cand.lower() not in {
            c.lower() for c in out
        }:
            out.append(cand)
        if len(out) == k:
            break
    return out


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
    return _enough(distinct_lines(text, k, max_chars), need, text)


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
    return _enough(distinct_lines("\n".join(single), k, max_chars), need, text)


PARSERS = {"lines": parse_lines, "json_list": parse_json_list}


def parse_answer(schema: dict, text: str, n: int) -> list[str]:
    """Items of ``text`` under ``schema``; :class:`MalformedAnswer` says why it fails."""
    return PARSERS[schema["type"]](text, schema, n)
