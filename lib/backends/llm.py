"""Chat LLMs by name: the ``LLM`` registry and :func:`create_llm`.

A chat backend answers ``chat(messages, *, temperature, top_p, max_new_tokens, seed)`` with
the reply's text and carries ``model_id``; the study wraps it in the persistent answer cache.
The modules imported at the bottom register themselves.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

LLM = Registry("LLM")


def create_llm(name: str, **kwargs: Any) -> Any:
    """The chat backend registered as ``name``, built from ``kwargs``.

    Options left ``None`` keep the backend's defaults; an unknown name lists the valid ones.
    """
    return LLM.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import llm_openai, llm_recorded, llm_transformers  # noqa: E402,F401
