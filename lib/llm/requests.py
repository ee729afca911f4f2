"""The study's LLM requests, as data: what the disambiguate stage asks, and what the
recorded answer sets are built for (:mod:`lib.recorded`), so both render the same messages
and hit the same cache keys."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from lib.config import DisambiguateConfig
from lib.llm.asking import Request
from lib.seeding import seed_for


def study_requests(
    cfg: DisambiguateConfig, classes: pd.DataFrame
) -> Iterator[tuple[str, str, Request]]:
    """Every LLM request of the study as ``(class_id or "", axis or "", Request)``.

    Per class: its senses, its CD contexts per axis and its word2sen sentences; then the
    (global) SD styles. Seeds derive from (llm_seed, task, class, axis), so an answer never
    depends on order.
    """
    def req(task: str, fields: dict, n: int, *key: str) -> Request:
        seed = seed_for(cfg.llm_seed, task, *key) % 2**31
        return Request(task, fields, n, {"seed": seed}, cfg.max_retries)

    for c in classes.itertuples():
        hypernym = c.hypernyms.split(";")[0] if c.hypernyms else ""
        yield c.class_id, "", req("senses", {"name": c.name, "gloss": c.gloss,
                                             "hypernym": hypernym}, cfg.num_candidates, c.class_id)
        for axis in cfg.cd_axes:
            yield c.class_id, axis, req("contexts", {"name": c.name, "axis": axis},
                                        cfg.contexts_per_axis, c.class_id, axis)
        yield c.class_id, "", req("word2sen", {"name": c.name}, cfg.sentences_per_class,
                                  c.class_id)
    yield "", "", req("styles", {}, cfg.num_styles)
