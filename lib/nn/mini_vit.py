"""A small Vision Transformer for 8x8 images (the mini world's digits), registered with timm.

The Diversify study's second architecture: ``timm.create_model("mini_vit", num_classes=10,
in_chans=1)`` works once this module is imported (the classifier backend and
:func:`lib.training.checkpoints.load_plain_timm` import it, as they import
:mod:`lib.nn.mini_cnn`), so the training code selects it with ``train.arch: mini_vit`` and its
checkpoints load into a plain ``timm.create_model``. It is timm's own
:class:`~timm.models.vision_transformer.VisionTransformer` (class token, the class token's
output as the pooled feature, learned position embeddings, pre-norm blocks, LayerNorm), cut
to the size of the digits: 2x2 patches give 16 tokens (+ the class token), 64-wide
embeddings, 4 blocks of 4 heads with an MLP twice as wide (~136 k parameters with 10 classes).

A ViT has no BatchNorm: with the auxiliary norm (:mod:`lib.nn.aux_norm`) it needs
``aux_layernorm="aux"`` (every LayerNorm gets per-domain affine parameters), the
``train.aux_layernorm`` parameter; with ``"shared"`` the converter refuses it.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

MINI_VIT_ARGS: dict[str, Any] = {"img_size": 8, "patch_size": 2, "embed_dim": 64, "depth": 4,
                                 "num_heads": 4, "mlp_ratio": 2.0, "class_token": True,
                                 "global_pool": "token"}

# Passed by ``timm.create_model`` to every registered function; there is no pretrained
# configuration to honour (nothing pretrained exists offline), so they are dropped.
_PRETRAINED_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@register_model
def mini_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT for 8x8 inputs: patch 2, width 64, depth 4, 4 heads, MLP ratio 2, class token.

    ``kwargs`` (``num_classes``, ``in_chans`` -- default 1, ``drop_rate``, ...) go to
    :class:`VisionTransformer` and override :data:`MINI_VIT_ARGS`.
    """
    if pretrained:
        raise ValueError("mini_vit has no pretrained weights: train it (pretrained=False)")
    for key in _PRETRAINED_KEYS:
        kwargs.pop(key, None)
    return VisionTransformer(**{**MINI_VIT_ARGS, "in_chans": 1, **kwargs})
