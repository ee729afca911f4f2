"""Image captioners by name: the ``CAPTIONER`` registry and :func:`create_captioner`.

A captioner answers ``caption(images, seed)`` with one caption per image, in order:
``transformers`` writes one (an image-to-text model such as BLIP), ``retrieval`` picks the
collection caption a CLIP model finds closest (not generative; the mini world's captioner).
The modules imported at the bottom register themselves.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

CAPTIONER = Registry("captioner")


def create_captioner(name: str, **kwargs: Any) -> Any:
    """The captioner registered as ``name``, built from ``kwargs``.

    Options left ``None`` keep the backend's defaults; an unknown name lists the valid ones.
    """
    return CAPTIONER.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import captioner_retrieval, captioner_transformers  # noqa: E402,F401
