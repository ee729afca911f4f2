"""Image classifiers by name: the ``CLASSIFIER`` registry and :func:`create_classifier`.

A classifier factory returns a ``torch.nn.Module`` mapping images to class logits. The
modules imported at the bottom register themselves.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

CLASSIFIER = Registry("classifier")


def create_classifier(name: str, **kwargs: Any) -> Any:
    """The classifier built by the factory registered as ``name`` from ``kwargs``.

    Options left ``None`` keep the factory's defaults; an unknown name lists the valid ones.
    """
    return CLASSIFIER.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import classifier_timm  # noqa: E402,F401
