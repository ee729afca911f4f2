"""Text-to-image fine-tuners by name: the ``FINETUNERS`` registry and :func:`create_finetuner`.

A fine-tuner continues a text-to-image model on captioned images and saves the result as a
folder that a text-to-image backend (:mod:`lib.backends.t2i`) serves. ``create_finetuner(name,
base=MODEL, device=..., progress=...)`` returns an object with

* ``image_mode``: the PIL mode the images are decoded in (``"L"``, ``"RGB"``);
* ``t2i_backend``: the text-to-image backend that loads the saved folder (and the base);
* ``finetune(pixels, captions, folder, *, steps, batch_size, lr, cond_dropout, seed,
  checkpoint_every)``: train on ``pixels`` (uint8 ``[N, H, W(, C)]``, 0..255, in
  ``image_mode``) with one caption each, write the model to ``folder``; returns its metrics
  (``loss_start``, ``final_loss``, ``steps``, ``steps_per_s``, ``train_seconds``, ...).

The ``finetune`` stage names the fine-tuner (``finetune.backend``; ``none`` fine-tunes
nothing). The modules imported at the bottom register themselves.
"""

from __future__ import annotations

from typing import Any

from lib.registry import Registry

FINETUNERS = Registry("text-to-image fine-tuner")


def create_finetuner(name: str, **kwargs: Any) -> Any:
    """The fine-tuner registered as ``name``, built from ``kwargs``.

    Options left ``None`` keep the backend's defaults; an unknown name lists the valid ones.
    """
    return FINETUNERS.create(name, **kwargs)


# Registration side effects: each module registers its backend(s).
from lib.backends import finetune_mini  # noqa: E402,F401
