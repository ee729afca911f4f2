"""Build a recorded LLM answer set from hand-written answers (see the YAML's header).

    python -m lib.recorded build lib/resources/recorded/digits.yaml

renders the study's LLM requests for the active profile
(:func:`lib.llm.requests.study_requests`, the very function the disambiguate stage uses, so
the cache keys match), answers each from the YAML, and writes the answers in the LLM cache
format to ``disambiguate.llm_recorded`` with source "recorded". The ``recorded`` backend
replays that file; a request it does not hold fails loudly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from lib import config, data
from lib.llm.asking import record
from lib.llm.requests import study_requests
from lib.llm.templates import render


class ScriptedChat:
    """Answers rendered requests from a table of texts (no model involved)."""

    source = "recorded"

    def __init__(self, model_id: str, answers: dict[str, str]):
        self.model_id = model_id
        self._answers = answers

    def chat(self, messages: list[dict], **sampling: Any) -> str:
        key = json.dumps(messages, sort_keys=True)
        if key not in self._answers:
            raise KeyError(f"no hand-written answer for: {messages[-1]['content'][:80]!r}")
        return self._answers[key]


def answer_text(spec: dict, task: str, fields: dict) -> str:
    """The hand-written answer to one request, one item per line."""
    name = fields.get("name", "")
    if task == "senses":
        items = spec["senses"][name]
    elif task == "contexts":
        items = spec["contexts"][fields["axis"]]
    elif task == "styles":
        items = spec["styles"]
    elif task == "word2sen":
        items = spec["sentences"]
    else:
        raise KeyError(f"no hand-written answers for task {task!r}")
    return "\n".join(item.format(name=name) for item in items)


def build(answers_yaml: Path, params: Path | None = None) -> Path:
    spec = yaml.safe_load(answers_yaml.read_text(encoding="utf-8"))
    dcfg = config.load("disambiguate", params)
    ccfg = config.load("classes", params)
    if spec["model"] != dcfg.llm_model:
        raise ValueError(f"{answers_yaml} answers as {spec['model']!r}, but "
                         f"disambiguate.llm_model is {dcfg.llm_model!r}")
    dataset = ccfg.path("data") / ccfg.dataset_dir
    ids = sorted(d.name for d in dataset.iterdir() if d.is_dir())
    classes = data.read_class_table(dataset, ids)
    reqs = [r for _, _, r in study_requests(dcfg, classes)]
    table = {}
    for r in reqs:
        messages = render(r.task, **r.fields, n=r.n)
        table[json.dumps(messages, sort_keys=True)] = answer_text(spec, r.task, dict(r.fields))
    out = dcfg.root / dcfg.llm_recorded
    answers = record(ScriptedChat(spec["model"], table), reqs, out)
    failed = [r for r, a in zip(reqs, answers) if a.failed]
    if failed:
        raise ValueError(f"{len(failed)} hand-written answers do not parse, e.g. {failed[0]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.recorded")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the recorded answer set for the active profile")
    b.add_argument("answers", type=Path)
    args = parser.parse_args(argv)
    print(f"wrote {build(args.answers)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
