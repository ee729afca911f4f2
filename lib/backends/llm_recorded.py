"""An LLM that replays stored responses instead of running a model.

The mini profile has no LLM to run, so it replays a committed JSONL file (the format of
:func:`lib.llm.cache.export_jsonl`) or an sqlite cache. Responses are found by the
same key as the cache, so a prompt that was never recorded fails loudly
(:class:`~lib.llm.cache.NotRecorded`) instead of silently getting some other answer. Only a
retry's miss is softer: :func:`lib.llm.asking.ask` counts it as a failed attempt, so a
malformed recorded answer ends in the failure log instead of a crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lib.backends.llm import LLM
from lib.llm.cache import LLMCache, NotRecorded, cache_key, normalize_sampling, read_jsonl

JSONL_SUFFIXES = (".jsonl", ".json")


@LLM.register("recorded")
class RecordedChat:
    """Replays the responses recorded for ``model``; records it yields say source="recorded"."""

    source = "recorded"

    def __init__(self, path: str | os.PathLike, model: str):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"recorded LLM responses {str(self.path)!r} do not exist")
        self.model_id = model
        if self.path.suffix in JSONL_SUFFIXES:
            self._records: dict[str, dict] | LLMCache = read_jsonl(self.path)
        else:
            self._records = LLMCache(self.path)

    def lookup(self, messages: list[dict], **sampling: Any) -> dict:
        """The stored record for this call, labelled source="recorded".

        A miss raises :class:`~lib.llm.cache.NotRecorded` (a KeyError) naming the file, the
        model, the last message and the sampling (seed included).
        """
        sampling = normalize_sampling(sampling)
        key = cache_key(self.model_id, messages, sampling)
        record = self._records.get(key)
        if record is None:
            last = str(messages[-1].get("content", "")) if messages else ""
            raise NotRecorded(
                f"no recorded response in {str(self.path)!r} for model {self.model_id!r}, "
                f"last message {last[:80]!r} and sampling {sampling}"
            )
        return {**record, "source": self.source}

    def chat(self, messages: list[dict], **sampling: Any) -> str:
        return self.lookup(messages, **sampling)["response"]
