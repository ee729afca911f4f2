"""Backends behind registries, one file each.

``T2I``, ``CLIP``, ``LLM``, ``CLASSIFIER`` and ``CAPTIONER`` map backend names to factories;
the modules imported at the bottom register themselves. Use ``create_*(name, **kw)``; an
unknown name fails with the list of valid ones.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

T2I = Registry("text-to-image")
CLIP = Registry("CLIP scorer")
LLM = Registry("LLM")
CLASSIFIER = Registry("classifier")
CAPTIONER = Registry("captioner")


def create_t2i(name: str, **kwargs: Any) -> Any:
    return T2I.create(name, **kwargs)


def create_clip(name: str, **kwargs: Any) -> Any:
    return CLIP.create(name, **kwargs)


def create_llm(name: str, **kwargs: Any) -> Any:
    return LLM.create(name, **kwargs)


def create_classifier(name: str, **kwargs: Any) -> Any:
    return CLASSIFIER.create(name, **kwargs)


def create_captioner(name: str, **kwargs: Any) -> Any:
    return CAPTIONER.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import (  # noqa: E402,F401
    captioner_transformers,
    classifier_timm,
    clip_open_clip,
    llm_openai,
    llm_recorded,
    llm_transformers,
    t2i_diffusers,
)
