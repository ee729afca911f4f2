"""Text-to-image backends by name: the ``T2I`` registry and :func:`create_t2i`.

A backend makes one image per (prompt, seed): ``generate(prompts, negative_prompts, seeds, *,
steps, guidance_scale, height, width)`` returns the PIL images and whether each was flagged
NSFW, and the backend carries ``model_id``, ``scheduler_name`` and ``settings`` (what changes
its pixels beyond the model), which a generation run pins. The profile names the backend
(``generate.backend``, ``disambiguate.gen_backend``); the modules imported at the bottom
register themselves.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

T2I = Registry("text-to-image")


def create_t2i(name: str, **kwargs: Any) -> Any:
    """The text-to-image backend registered as ``name``, built from ``kwargs``.

    Options left ``None`` keep the backend's defaults; an unknown name lists the valid ones.
    """
    return T2I.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import t2i_diffusers, t2i_mini  # noqa: E402,F401
