"""The LLM layer: request templates, retries, the failure log, asking through the cache,
recording and replay (answer parsing: tests/test_llm_parsing.py; the cache itself:
tests/test_llm_cache.py)."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest
import yaml

from lib.backends.llm import create_llm
from lib.llm.asking import Answer, Request, ask, record
from lib.llm.cache import CachedLLM, LLMCache, NotRecorded, read_jsonl
from lib.llm.failures import FailureLog, count_failures
from lib.llm.templates import load_templates, render, template_fields


def example_fields(task: str, templates: dict | None = None) -> dict:
    """A value for every field ``task`` takes (a valid key where the field is looked up)."""
    templates = templates or load_templates()
    names = template_fields(task, templates)
    fields = {f: f"<{f}>" for f in names["required"] + names["optional"] if f != "n"}
    for f in templates["tasks"][task].get("lookups") or {}:
        fields[f] = next(iter(templates["cd_axes"]))
    return fields


def read_log(path: str | Path) -> list[dict]:
    """The records of a failure log, one JSON object per non-empty line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class ScriptedChat:
    """A chat backend that returns canned answers in order and records every call."""

    model_id = "scripted"

    def __init__(self, answers: list[str]):
        self.answers = list(answers)
        self.calls: list[dict] = []

    def chat(self, messages, **sampling):
        self.calls.append({"messages": messages, **sampling})
        return self.answers[len(self.calls) - 1]


# ---------------------------------------------------------------- request templates
def test_every_task_loads_and_renders():
    templates = load_templates()
    assert {"senses", "contexts", "styles", "word2sen"} <= set(templates["tasks"])
    assert {"foreground", "background", "lighting", "viewpoint"} <= set(templates["cd_axes"])
    for task in templates["tasks"]:
        fields = example_fields(task)
        system, user = render(task, n=7, **fields)
        assert system["role"] == "system" and user["role"] == "user"
        assert system["content"] and "7" in user["content"]
        assert "{" not in system["content"] + user["content"]


def test_senses_request_is_pinned():
    """Changing this text changes every cache key: make it a deliberate edit."""
    messages = render(
        "senses", name="crane", gloss="a large wading bird", hypernym="wading bird", n=3
    )
    assert messages[1]["content"] == (
        "Class name: crane\nWordNet definition: a large wading bird\nWordNet hypernym: wading "
        "bird\nList 3 short, distinct descriptions (at most 8 words each) of what this class "
        "name can refer to in a photo, most likely meaning first. Each description should name "
        'the thing unambiguously, e.g. "bat, the flying mammal" rather than just "bat". Write '
        "one description per line, without numbering."
    )
    # No WordNet entry (the mini digits): the optional lines vanish instead of reading "None".
    bare = render("senses", name="one", n=3, gloss=None, hypernym="")[1]["content"]
    assert bare.startswith("Class name: one\nList 3 short")


def test_optional_fragments_and_lookups():
    per_class = render("styles", n=4, name="cat")[1]["content"]
    assert "a picture of a cat could" in per_class
    assert "a picture could" in render("styles", n=4)[1]["content"]
    lighting = render("contexts", n=4, name="cat", axis="lighting")[1]["content"]
    assert load_templates()["cd_axes"]["lighting"] in lighting
    with pytest.raises(KeyError, match=r"unknown axis 'smell'.*foreground"):
        render("contexts", n=4, name="cat", axis="smell")


def test_missing_unknown_fields_and_tasks_are_clear():
    with pytest.raises(KeyError, match=r"task 'word2sen' needs field 'name'"):
        render("word2sen", n=3)
    with pytest.raises(KeyError, match=r"'contexts' needs field 'axis'"):
        render("contexts", n=3, name="cat")
    with pytest.raises(KeyError, match=r"'word2sen' takes no field\(s\) \['nmae'\]"):
        render("word2sen", n=3, name="cat", nmae="cat")
    with pytest.raises(KeyError, match=r"unknown LLM task 'sense'.*'senses'"):
        render("sense", n=3)


def _write(tmp_path, data) -> str:
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("system"), r"'senses': missing \['system'\]"),
        (lambda t: t.update(schema={"type": "xml"}), r"unknown schema 'xml'.*json_list"),
        (lambda t: t["schema"].update(min_item=2), r"unknown schema key\(s\) \['min_item'\]"),
        (lambda t: t["sampling"].update(seed=0), r"must not set a seed"),
        (lambda t: t["sampling"].update(temp=0.5), r"temp"),
        (lambda t: t.update(lookups={"axis": "nope"}), r"names no table 'nope'"),
        (lambda t: t.update(user="{0} and {x.y}"), r"plain names"),
    ],
)
def test_bad_template_files_are_refused(tmp_path, edit, message):
    data = load_templates()
    edit(data["tasks"]["senses"])
    with pytest.raises((ValueError, KeyError), match=message):
        load_templates(_write(tmp_path, data))


# ---------------------------------------------------------------- retries and failures
def test_malformed_answer_is_retried_with_next_seed():
    chat = ScriptedChat(["", "only one", "a sketch\na painting\nan etching"])
    answer = ask(chat, "styles", {}, n=3, sampling={"seed": 40}, max_retries=2, failures=None)
    assert answer == Answer(
        value=["a sketch", "a painting", "an etching"],
        attempts=3,
        failed=False,
        raw=["", "only one", "a sketch\na painting\nan etching"],
    )
    assert [c["seed"] for c in chat.calls] == [40, 41, 42]
    # The task's default sampling, with the caller's overrides, on every attempt.
    defaults = load_templates()["tasks"]["styles"]["sampling"]
    assert all(c["temperature"] == defaults["temperature"] for c in chat.calls)
    assert all(c["messages"] == chat.calls[0]["messages"] for c in chat.calls)


def test_failure_is_recorded_counted_and_returned_empty(tmp_path):
    log = FailureLog(tmp_path / "logs" / "llm_failures.jsonl")
    assert count_failures(log.path) == 0
    chat = ScriptedChat(["nope", "", "still one"])
    fields = {"name": "crane", "axis": "viewpoint"}
    answer = ask(
        chat,
        "contexts",
        fields,
        n=4,
        sampling={"seed": 7, "temperature": 0.5},
        max_retries=2,
        failures=log,
    )
    assert answer.failed and answer.value == [] and answer.attempts == 3
    assert answer.raw == ["nope", "", "still one"]
    assert answer.reason.startswith("attempt 1: 1 usable item(s), need at least 2")
    assert "attempt 2: empty answer" in answer.reason
    [entry] = read_log(log.path)
    assert count_failures(log.path) == log.count() == 1
    assert entry["task"] == "contexts" and entry["fields"] == fields and entry["n"] == 4
    assert entry["raw"] == answer.raw and entry["reason"] == answer.reason
    assert entry["model"] == "scripted" and entry["sampling"]["temperature"] == 0.5
    ask(chat.__class__(["x"]), "styles", {}, n=2, sampling={"seed": 0}, max_retries=0, failures=log)
    assert count_failures(log.path) == 2


def test_ask_checks_its_arguments():
    chat = ScriptedChat(["a\nb"])
    with pytest.raises(ValueError, match="explicit seed"):
        ask(chat, "styles", {}, n=2, sampling={}, max_retries=0, failures=None)
    with pytest.raises(KeyError, match="temprature"):
        ask(
            chat,
            "styles",
            {},
            n=2,
            sampling={"seed": 0, "temprature": 1},
            max_retries=0,
            failures=None,
        )
    with pytest.raises(ValueError, match="n must be a positive int"):
        ask(chat, "styles", {}, n=0, sampling={"seed": 0}, max_retries=0, failures=None)
    with pytest.raises(KeyError, match="pass n as"):
        ask(chat, "styles", {"n": 2}, n=2, sampling={"seed": 0}, max_retries=0, failures=None)
    assert chat.calls == []


def test_torn_line_does_not_swallow_the_next_record(tmp_path):
    log = FailureLog(tmp_path / "f.jsonl")
    log.path.write_text('{"task": "sen')  # a writer died mid-line
    log.record({"task": "styles"})
    assert log.path.read_text().splitlines()[1] == '{"task": "styles"}'
    assert count_failures(log.path) == 2


def _append_many(path: str, worker: int, n: int) -> None:
    log = FailureLog(path)
    for i in range(n):
        # Larger than PIPE_BUF (4 KiB), where a plain unlocked write could interleave.
        log.record({"worker": worker, "i": i, "raw": [f"{worker}" * 6000]})


def test_failure_log_from_two_processes_keeps_every_line(tmp_path):
    path = str(tmp_path / "shared.jsonl")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 100)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    records = read_log(path)
    assert count_failures(path) == len(records) == 200
    assert sorted((r["worker"], r["i"]) for r in records) == [
        (w, i) for w in range(2) for i in range(100)
    ]
    assert all(r["raw"] == [str(r["worker"]) * 6000] for r in records)


# ---------------------------------------------------------------- cache and replay
def test_second_identical_ask_is_served_by_the_cache(tmp_path):
    chat = ScriptedChat(["bad", "a sketch\na painting"])
    cached = CachedLLM(chat, LLMCache(tmp_path / "c.sqlite"))
    kw = {"n": 2, "sampling": {"seed": 3}, "max_retries": 2, "failures": None}
    first = ask(cached, "styles", {"name": "cat"}, **kw)
    assert first.attempts == 2 and len(chat.calls) == 2
    again = ask(cached, "styles", {"name": "cat"}, **kw)
    assert again == first and len(chat.calls) == 2 and cached.hits == 2
    assert len(dict(cached.cache.items())) == 2  # one record per attempt: seeds 3 and 4


def test_record_then_replay_gives_the_same_answers(tmp_path):
    chat = ScriptedChat(["a sketch\na painting", "junk", "", "also junk"])
    unrelated = CachedLLM(ScriptedChat(["x"] * 9), LLMCache(tmp_path / "big.sqlite"))
    unrelated.chat([{"role": "user", "content": "not part of the recording"}])
    requests = [
        Request("styles", {}, 2, {"seed": 1}),
        {
            "task": "word2sen",
            "fields": {"name": "cat"},
            "n": 3,
            "sampling": {"seed": 5},
            "max_retries": 2,
        },
    ]
    out = tmp_path / "recorded.jsonl"
    log = FailureLog(tmp_path / "failures.jsonl")
    recorded = record(chat, requests, out, failures=log)
    assert [a.failed for a in recorded] == [False, True] and log.count() == 1
    assert len(read_jsonl(out)) == 4  # every attempt, nothing else

    replay = create_llm("recorded", path=str(out), model="scripted")
    again = [
        ask(
            replay,
            r.task,
            r.fields,
            n=r.n,
            sampling=r.sampling,
            max_retries=r.max_retries,
            failures=None,
        )
        for r in [requests[0], Request(**requests[1])]
    ]
    assert again == recorded
    # Through a cache, replayed records are labelled as such.
    cached = CachedLLM(replay, LLMCache(tmp_path / "replayed.sqlite"))
    ask(cached, "styles", {}, n=2, sampling={"seed": 1}, max_retries=2, failures=None)
    assert [r["source"] for _, r in cached.cache.items()] == ["recorded"]
    # A request that was never recorded fails loudly instead of counting as malformed.
    with pytest.raises(KeyError, match="no recorded response"):
        ask(replay, "styles", {}, n=2, sampling={"seed": 2}, max_retries=2, failures=log)
    assert log.count() == 1


def test_malformed_recorded_answer_without_its_retry_is_logged_not_raised(tmp_path):
    """Issue 12 case 3: a recorded set holds a blank answer but not its retry (seed + 1).
    The retry used to end in KeyError "no recorded response"; now the attempt fails like a
    malformed answer and the item is logged, saying what was wrong, and returned failed."""
    out = tmp_path / "recorded.jsonl"
    record(ScriptedChat(["", "a sketch\na painting"]),
           [Request("styles", {}, 2, {"seed": 8}, max_retries=0),
            Request("styles", {"name": "cat"}, 2, {"seed": 9}, max_retries=0)], out)
    log = FailureLog(tmp_path / "failures.jsonl")
    replay = CachedLLM(create_llm("recorded", path=str(out), model="scripted"),
                       LLMCache(tmp_path / "cache.sqlite"))
    answer = ask(replay, "styles", {}, n=2, sampling={"seed": 8}, max_retries=2, failures=log)
    assert answer.failed and answer.value == [] and answer.raw == [""] and answer.attempts == 3
    assert answer.reason == (
        "attempt 1: empty answer, need at least 2; "
        "attempt 2: no recorded answer for retry seed 9 (the set holds the malformed answer, "
        "not its retry); "
        "attempt 3: no recorded answer for retry seed 10 (the set holds the malformed answer, "
        "not its retry)"
    )
    [entry] = read_log(log.path)
    assert entry["source"] == "recorded" and entry["raw"] == [""]
    assert entry["reason"] == answer.reason and entry["sampling"]["seed"] == 8
    # The good answer is unaffected; a request never recorded still fails loudly.
    good = ask(replay, "styles", {"name": "cat"}, n=2, sampling={"seed": 9}, max_retries=2,
               failures=log)
    assert good.value == ["a sketch", "a painting"] and log.count() == 1
    with pytest.raises(NotRecorded, match="no recorded response"):
        ask(replay, "styles", {}, n=2, sampling={"seed": 100}, max_retries=2, failures=log)
    assert log.count() == 1


# ---------------------------------------------------------------- the tiny real LLM
def test_tiny_transformers_llm_end_to_end(tiny_zoo, tmp_path):
    """Random weights write random text: only the plumbing is asserted, not the content."""
    chat = create_llm("transformers", model=tiny_zoo["llm"])
    cached = CachedLLM(chat, LLMCache(tmp_path / "c.sqlite"))
    log = FailureLog(tmp_path / "failures.jsonl")
    sampling = {"seed": 0, "max_new_tokens": 16}
    answer = ask(
        cached,
        "senses",
        {"name": "crane", "gloss": "a wading bird"},
        n=3,
        sampling=sampling,
        max_retries=1,
        failures=log,
    )
    assert isinstance(answer, Answer) and all(isinstance(v, str) for v in answer.value)
    assert len(answer.raw) == answer.attempts == cached.misses and 1 <= answer.attempts <= 2
    assert answer.failed == (answer.value == []) == (log.count() == 1)

    # A JSON answer from random weights is malformed: every attempt is made and logged.
    templates = load_templates()
    templates["tasks"]["styles"]["schema"] = {"type": "json_list"}
    answer = ask(
        cached, "styles", {}, n=3, sampling=sampling, max_retries=2, failures=log,
        templates=templates,
    )
    assert answer.failed and answer.value == [] and answer.attempts == 3
    assert json.loads(log.path.read_text().splitlines()[-1])["raw"] == answer.raw
    assert count_failures(log.path) >= 1
