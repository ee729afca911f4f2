"""CLIP scorers by name: the ``CLIP`` registry and :func:`create_clip`.

A scorer embeds images and texts into one space (``encode_images``, ``encode_texts``: unit
norm, on the CPU, so the dot product of two embeddings is their cosine similarity). The modules imported at the bottom
register themselves.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

CLIP = Registry("CLIP scorer")


def create_clip(name: str, **kwargs: Any) -> Any:
    """The CLIP scorer registered as ``name``, built from ``kwargs``.

    Options left ``None`` keep the backend's defaults; an unknown name lists the valid ones.
    """
    return CLIP.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import clip_open_clip  # noqa: E402,F401
