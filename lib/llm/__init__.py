"""The LLM layer: every request of the study as data, answers parsed against a schema.

- :mod:`~lib.llm.templates`: the request templates (``lib/resources/llm_prompts.yaml``),
  validated and rendered into chat messages.
- :mod:`~lib.llm.parsing`: answers parsed against a task's schema (lines, JSON list).
- :mod:`~lib.llm.asking`: :func:`~lib.llm.asking.ask` (render, send, parse, retry with the
  next seed) and :func:`~lib.llm.asking.record` (write a replayable answer set).
- :mod:`~lib.llm.failures`: the log of answers that stayed malformed after every retry.
- :mod:`~lib.llm.cache`: the persistent answer cache every call goes through, and its
  JSONL export that the ``recorded`` backend replays.
- :mod:`~lib.llm.requests`: the study's requests (senses, contexts, word2sen, styles).
- :mod:`~lib.llm.coverage`: which classes the failed answers left without usable text, and
  the ``disambiguate.max_missing_fraction`` rule that fails the stage past a share of them.

The chat backends themselves (transformers, OpenAI-compatible HTTP, recorded) are in
:mod:`lib.backends`.
"""
