"""Classifier backend: any timm architecture by name, optionally with auxiliary norms.

The auxiliary norm (real vs synthetic images, see :mod:`lib.nn.aux_norm`) is added by
converting the built model rather than by passing a ``norm_layer``: conversion works the
same way for every architecture (ResNets, EfficientNets with ``BatchNormAct2d``, ViTs with
``aux_layernorm="aux"``), whereas ``norm_layer`` is honoured differently, or not at all, by
different timm families.
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

import lib.nn.mini_cnn  # noqa: F401  (registers the small 8x8 architectures with timm)
import lib.nn.mini_vit  # noqa: F401  (registers the small 8x8 ViT with timm)
from lib.backends.classifier import CLASSIFIER
from lib.nn.aux_norm import convert_to_aux_norm


def _unknown_arch_message(arch: str) -> str:
    """An error message listing timm names close to ``arch`` (same prefix first)."""
    stem = arch.split("_")[0].split(".")[0]
    pool = timm.list_models(f"*{stem}*") or timm.list_models()
    close = timm.list_models(f"{arch}*") + difflib.get_close_matches(arch, pool, n=8, cutoff=0.5)
    close = list(dict.fromkeys(close))[:8]
    if not close:
        return f"unknown timm architecture {arch!r}; timm.list_models() lists the valid names"
    return f"unknown timm architecture {arch!r}; close names: {', '.join(close)}"


@CLASSIFIER.register("timm")
def create_timm_classifier(
    arch: str,
    num_classes: int,
    in_chans: int = 3,
    aux_norm: bool = False,
    pretrained: bool = False,
    aux_layernorm: str = "shared",
    **kwargs: Any,
) -> nn.Module:
    """Build ``timm.create_model(arch, ...)``; with ``aux_norm`` give it auxiliary norms.

    ``aux_layernorm`` ("shared" or "aux") decides what happens to LayerNorms, as documented
    in :func:`lib.nn.aux_norm.convert_to_aux_norm`; with "shared", a model without
    BatchNorm (a ViT) refuses ``aux_norm=True``. ``kwargs`` go to ``timm.create_model``
    (e.g. ``img_size`` for ViTs, ``drop_rate``).
    """
    if not timm.is_model(arch):
        raise ValueError(_unknown_arch_message(arch))
    model = timm.create_model(
        arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    if aux_norm:
        model = convert_to_aux_norm(model, layernorm=aux_layernorm)
    return model
