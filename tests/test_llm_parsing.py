"""Answer parsing of the LLM layer (lib.llm.parsing): one item per line or a JSON list,
cleaned of bullets, numbering, repeats and unprintable text."""

from __future__ import annotations

import pytest

from lib.llm.parsing import MalformedAnswer, distinct_lines, parse_answer

LINES = {"type": "lines", "min_items": 2, "max_chars": 30}
JSON = {"type": "json_list", "min_items": 2, "max_chars": 30}


# ---------------------------------------------------------------- distinct lines

ANSWER = """Here are some descriptions:
- a crane bird
* A Crane Bird
\u2022 construction crane
1. "origami crane"
2) paper crane

   \t
3.   crane fly
"""


def test_parse_strips_bullets_numbers_quotes_and_duplicates() -> None:
    assert distinct_lines(ANSWER, k=10) == [
        "Here are some descriptions:",
        "a crane bird",
        "construction crane",
        "origami crane",
        "paper crane",
        "crane fly",
    ]


def test_parse_at_most_k() -> None:
    assert distinct_lines(ANSWER, k=3) == [
        "Here are some descriptions:",
        "a crane bird",
        "construction crane",
    ]
    assert distinct_lines(ANSWER, k=1) == ["Here are some descriptions:"]
    assert distinct_lines("", k=3) == []


def test_parse_drops_overlong_and_unprintable() -> None:
    text = "\n".join(["- " + "x" * 80, "- " + "y" * 81, "bell\x07 ringer", "tab\tbed", "ok"])
    assert distinct_lines(text, k=5) == ["x" * 80, "ok"]
    assert distinct_lines(text, k=5, max_chars=10) == ["ok"]
    assert distinct_lines('-\n*\n1. \n""\nlast', k=5) == ["last"]


def test_parse_k_zero_gives_nothing() -> None:
    assert distinct_lines("a\nb\nc", k=0) == []
    assert distinct_lines("a\nb\nc", k=-1) == []


def test_parse_keeps_leading_decimal() -> None:
    text = "2.5 inch floppy disk\n3. 3.5 inch floppy disk\n4) 35mm film"
    assert distinct_lines(text, k=3) == [
        "2.5 inch floppy disk",
        "3.5 inch floppy disk",
        "35mm film",
    ]


def test_parse_drops_undecodable_bytes() -> None:
    assert distinct_lines("ok line\nbad \ufffd line\n", 5) == ["ok line"]


# ---------------------------------------------------------------- schemas
def test_lines_schema():
    text = "1. a pencil sketch\n- An oil painting\n\n* a pencil sketch\n2) a watercolour\n"
    assert parse_answer(LINES, text, 5) == [
        "a pencil sketch",
        "An oil painting",
        "a watercolour",
    ]
    assert parse_answer(LINES, text, 2) == ["a pencil sketch", "An oil painting"]
    assert parse_answer({**LINES, "max_items": 1, "min_items": 1}, text, 5) == [
        "a pencil sketch"
    ]
    # Too long, unprintable and undecodable lines do not count.
    with pytest.raises(MalformedAnswer, match="1 usable item.*at least 2"):
        parse_answer(LINES, "a sketch\n" + "x" * 31 + "\nbad\x07\nbad \ufffd\n", 5)
    with pytest.raises(MalformedAnswer, match="empty answer"):
        parse_answer(LINES, "  \n", 5)


@pytest.mark.parametrize(
    "text",
    [
        '["a sketch", "a painting"]',
        '```json\n["a sketch", "a painting"]\n```',
        'Here you are:\n```\n["a sketch", "a painting", "a sketch"]\n```\nEnjoy!',
        'Sure! ["a sketch", "a painting"]',
        '```json\n["a sketch", "a painting"]',  # fence cut off by max_new_tokens
    ],
)
def test_json_list_schema_tolerates_fences(text):
    assert parse_answer(JSON, text, 5) == ["a sketch", "a painting"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a sketch\na painting", "not a JSON array"),
        ('{"styles": ["a sketch"]}', "JSON dict, not an array"),
        ('["a sketch", 3]', "non-strings"),
        ('["a sketch", "two\\nlines"]', "1 usable item"),
    ],
)
def test_json_list_schema_refuses_malformed(text, message):
    with pytest.raises(MalformedAnswer, match=message):
        parse_answer(JSON, text, 5)
