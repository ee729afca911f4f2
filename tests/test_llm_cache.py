"""The persistent LLM answer cache (lib.llm.cache): keys, reopening, concurrent writers and
the JSONL export the ``recorded`` backend replays."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from lib.llm.cache import CachedLLM, LLMCache, cache_key, export_jsonl, read_jsonl

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a style for a photo of the digit one."},
]


class CountingChat:
    """A tiny live backend that answers deterministically and counts its calls."""

    model_id = "counting"

    def __init__(self):
        self.calls = 0

    def chat(self, messages, **sampling):
        self.calls += 1
        return f"echo {messages[-1]['content']} t={sampling['temperature']}"


def test_cache_hit_avoids_backend_and_survives_reopening(tmp_path):
    backend = CountingChat()
    cached = CachedLLM(backend, LLMCache(tmp_path / "c.sqlite"))
    first = cached.chat(MESSAGES)
    assert cached.chat(MESSAGES, temperature=0) == first  # defaults filled, 0 == 0.0
    assert backend.calls == 1
    cached.chat(MESSAGES, temperature=0.7)
    assert backend.calls == 2
    cached.cache.close()

    reopened = CachedLLM(backend, LLMCache(tmp_path / "c.sqlite"))
    assert reopened.chat(MESSAGES) == first and backend.calls == 2
    assert len(dict(reopened.cache.items())) == 2
    (key, record), _ = reopened.cache.items()
    assert key == cache_key("counting", record["messages"], record["sampling"])
    assert record["source"] == "live" and record["model"] == "counting"
    with pytest.raises(KeyError, match="temprature"):
        reopened.chat(MESSAGES, temprature=0.5)


def _write_many(path: str, worker: int, n: int) -> None:
    cache = LLMCache(path)
    for i in range(n):
        cache.put(f"{worker}-{i}", {"response": f"r{worker}-{i}"})


def test_cache_concurrent_writers_all_land(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    LLMCache(path).close()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(path, w, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cache = LLMCache(path)
    assert len(dict(cache.items())) == 100
    assert cache.get("1-49") == {"response": "r1-49"}


def test_jsonl_export_is_stable_through_a_round_trip(tmp_path):
    cached = CachedLLM(CountingChat(), LLMCache(tmp_path / "a.sqlite"))
    for t in (0.9, 0.0, 0.5):
        cached.chat(MESSAGES, temperature=t)
    out = export_jsonl(cached.cache, tmp_path / "a.jsonl")
    lines = out.read_text(encoding="utf-8").splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert keys == sorted(keys) and len(keys) == 3

    copy = LLMCache(tmp_path / "b.sqlite")
    records = read_jsonl(out)
    assert len(records) == 3
    for key, record in records.items():
        copy.put(key, record)
    assert export_jsonl(copy, tmp_path / "b.jsonl").read_bytes() == out.read_bytes()


def test_jsonl_read_names_bad_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x", "model": "m", "messages": [], "sampling": {}, "response": ""}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: key x\.\.\. does not match"):
        read_jsonl(bad)
    bad.write_text("\nnot json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not an LLM cache record"):
        read_jsonl(bad)
