"""Which classes the LLM left without usable text, and the threshold past which the
``disambiguate`` stage fails instead of handing the next stage classes it cannot serve.

An answer that stays malformed after every retry is logged and counted
(:mod:`lib.llm.failures`); this module asks what that leaves per class. A class has usable
text for a task when at least one of its requests for that task gave items (one CD axis of
four is enough: the ``cd`` prompt strategy draws from the axes it has). The SD styles are
asked once for all classes: when they failed, every class is without them.

The rule (parameter ``disambiguate.max_missing_fraction`` = f): the stage fails when, for some
task whose texts the prompts are built from (:data:`PROMPT_TASKS`: CD contexts, SD styles,
word2sen sentences), (classes without usable text) / (classes) > f. The default 0.0
tolerates none. Senses are reported but never fail the stage: a class without them keeps its
own name as its only candidate, which the next stage can use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd

# The LLM tasks of the study (lib.llm.requests), in the order they are reported.
LLM_TASKS = ("senses", "contexts", "word2sen", "styles")
# The tasks whose texts the prompt strategies need (cd, sd and cdsd, word2sen).
PROMPT_TASKS = ("contexts", "word2sen", "styles")
SHOWN = 20  # classes named per task in the error message; the rest are counted


class MissingTexts(ValueError):
    """More classes than ``max_missing_fraction`` allows have no usable text for a task."""


def classes_without_text(answers: pd.DataFrame, class_ids: Sequence[str]) -> dict[str, list[str]]:
    """Per task in ``answers``, the classes (in ``class_ids`` order) with no usable answer.

    ``answers`` has one row per item (task, class_id, failed, ...), as the stage's ``ask_all``
    writes them; a task asked once for all classes has class_id "".
    """
    usable = answers[~answers["failed"].astype(bool)]
    out: dict[str, list[str]] = {}
    for task in answers["task"].drop_duplicates():
        asked = answers[answers["task"] == task]
        have = set(usable.loc[usable["task"] == task, "class_id"])
        if (asked["class_id"] == "").all():
            out[task] = [] if "" in have else list(class_ids)
        else:
            out[task] = [c for c in class_ids if c not in have]
    return out


def _line(task: str, ids: Sequence[str], names: Mapping[str, str]) -> str:
    total = len(names)
    shown = ", ".join(f"{c} ({names.get(c, '?')})" for c in ids[:SHOWN])
    more = f", and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return f"  {task}: {len(ids)} of {total} classes ({len(ids) / total:.0%}): {shown}{more}"


def check_missing(
    missing: Mapping[str, Sequence[str]],
    names: Mapping[str, str],
    max_fraction: float,
    failures_path: str | os.PathLike,
) -> None:
    """Raise :class:`MissingTexts` when, for some task of :data:`PROMPT_TASKS`, the share of
    classes in ``missing`` exceeds ``max_fraction``; the message names the tasks and classes
    and points at the failure log.

    ``names`` maps every class_id of the class set to its name (its length is the share's
    denominator).
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(
            f"disambiguate.max_missing_fraction must be in [0, 1], got {max_fraction}"
        )
    total = max(len(names), 1)
    over = {t: list(ids) for t, ids in missing.items()
            if t in PROMPT_TASKS and len(ids) / total > max_fraction}
    if not over:
        return
    lines = "\n".join(_line(task, ids, names) for task, ids in over.items())
    raise MissingTexts(
        f"the LLM left classes without usable text for {', '.join(over)}, more than "
        f"disambiguate.max_missing_fraction={max_fraction} allows (a task fails when its "
        f"share of classes without text exceeds it):\n{lines}\n"
        f"Every refused answer is in {failures_path} (request, raw responses, reason). The "
        "answers stay cached, so nothing is asked twice: fix the model or server, raise "
        "disambiguate.max_retries (later seeds are then asked), or raise "
        "max_missing_fraction to go on without these texts."
    )
