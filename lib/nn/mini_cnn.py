"""Small timm classifiers for 8x8 images (the mini world's digits), registered with timm.

``timm.create_model("mini_cnn", num_classes=10, in_chans=1)`` works once this module is
imported (the classifier backend and :func:`lib.training.checkpoints.load_plain_timm` import
it), so checkpoints load into a plain ``timm.create_model`` like any timm architecture, and
:func:`lib.nn.aux_norm.convert_to_aux_norm` finds their BatchNorm layers. The ImageNet
architectures (ResNet-50 and friends) start with a stride-4 stem that would leave 2x2 pixels
of an 8x8 digit; these keep full resolution for two conv layers, then pool once.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class MiniCNN(nn.Module):
    """conv-BN-ReLU x2 at 8x8, max-pool, x2 at 4x4, global average pool, dropout, linear."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32,
                 drop_rate: float = 0.1, **kwargs: Any):
        super().__init__()
        if kwargs:
            raise TypeError(f"mini_cnn: unexpected arguments {sorted(kwargs)}")
        self.num_classes = num_classes
        self.num_features = 2 * width
        self.features = nn.Sequential(
            *_conv_bn(in_chans, width), *_conv_bn(width, width), nn.MaxPool2d(2),
            *_conv_bn(width, 2 * width), *_conv_bn(2 * width, 2 * width),
        )
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head


def _drop_pretrained(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs


@register_model
def mini_cnn(pretrained: bool = False, **kwargs: Any) -> MiniCNN:
    """32/64-channel CNN for 8x8 inputs (~65 k parameters)."""
    if pretrained:
        raise ValueError("mini_cnn has no pretrained weights")
    return MiniCNN(width=32, **_drop_pretrained(kwargs))


@register_model
def mini_cnn_small(pretrained: bool = False, **kwargs: Any) -> MiniCNN:
    """16/32-channel CNN for 8x8 inputs (~16 k parameters)."""
    if pretrained:
        raise ValueError("mini_cnn_small has no pretrained weights")
    return MiniCNN(width=16, **_drop_pretrained(kwargs))
