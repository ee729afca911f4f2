"""The study's LLM requests as templates (``lib/resources/llm_prompts.yaml``), validated
and rendered into chat messages.

Each task of the file has a system and a user message (``str.format`` templates), optional
fragments, lookup tables, an answer schema and default sampling (the file's header says
what each key means). :func:`load_templates` checks a file, :func:`render` fills one task's
fields in.
"""

from __future__ import annotations

import functools
import os
import string
from pathlib import Path
from typing import Any

import yaml

from lib.llm.cache import normalize_sampling

TEMPLATES_PATH = Path(__file__).parents[1] / "resources" / "llm_prompts.yaml"
SCHEMA_TYPES = ("lines", "json_list")
SCHEMA_KEYS = {"type", "min_items", "max_items", "max_chars"}
TASK_KEYS = {"system", "user", "schema", "sampling", "optional", "lookups"}
RESERVED_FIELDS = {"templates"}  # render()'s own keyword


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


def load_templates(path: str | os.PathLike | None = None) -> dict:
    """The LLM request templates (default: the file shipped in ``lib/resources``), validated.

    Every task needs system, user and schema; schema types, schema keys, sampling options
    and lookup tables must be known. A problem fails naming the task and what is wrong.
    """
    path = Path(path) if path is not None else TEMPLATES_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise ValueError(f"{path}: needs a non-empty 'tasks' mapping")
    tables = {k: v for k, v in data.items() if k != "tasks"}
    for name, spec in data["tasks"].items():
        _check_task(name, spec, tables)
    return data


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    return load_templates()


def _templates(templates: dict | None) -> dict:
    return _shipped() if templates is None else templates


def task_spec(task: str, templates: dict | None = None) -> dict:
    """The spec of ``task`` (system, user, schema, ...) in ``templates`` (default: shipped)."""
    tasks = _templates(templates)["tasks"]
    if task not in tasks:
        raise KeyError(f"unknown LLM task {task!r}; valid: {sorted(tasks)}")
    return tasks[task]


def template_fields(task: str, templates: dict | None = None) -> dict[str, list[str]]:
    """{"required": [...], "optional": [...]}: the fields ``render(task, ...)`` takes."""
    spec = task_spec(task, templates)
    fragments = spec.get("optional") or {}
    main = _fields(spec["system"], task) | _fields(spec["user"], task)
    optional = set().union(*(_fields(t, task) for t in fragments.values())) if fragments else set()
    required = main - set(fragments)
    return {"required": sorted(required), "optional": sorted(optional - required)}


def render(task: str, /, templates: dict | None = None, **fields: Any) -> list[dict]:
    """The chat messages of ``task`` with ``fields`` filled in (system, then user).

    A missing field or one the task does not take fails with a KeyError naming the task and
    the field; a field that is None or "" counts as not given.
    """
    spec = task_spec(task, templates)
    names = template_fields(task, templates)
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
            table = _templates(templates)[table_name]
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
