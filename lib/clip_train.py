"""CLIP (open_clip) trained on image-text pairs, and zero-shot evaluation.

The scaling paper trains CLIP on synthetic image-text pairs and compares with real pairs and
with both combined. Here a model is loaded through the production open_clip path (an
architecture name, ``local-dir:`` folder or pretrained tag), trained with open_clip's own
contrastive :class:`open_clip.ClipLoss`, and evaluated zero-shot with
:func:`open_clip.build_zero_shot_classifier`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image
from tqdm.auto import tqdm

from lib.backends.clip_open_clip import load_open_clip
from lib.seeding import numpy_rng

ZERO_SHOT_TEMPLATES = ("a photo of {}.", "{}", "an image of {}.")


def load(model: str, pretrained: str | None, device: str) -> tuple[Any, Any, Any, Any]:
    """(model, train transform, eval transform, tokenizer) through open_clip's loader
    (:func:`lib.backends.clip_open_clip.load_open_clip`: also the mini CLIP, whose packaged
    text tower is resolved at run time)."""
    return load_open_clip(model, pretrained, device)


def train_clip(
    net: Any,
    transform: Any,
    tokenizer: Any,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    tag: str,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Contrastive training on (image, text) pairs; batches drawn per step from the seed."""
    if len(images) != len(texts) or not images:
        raise ValueError(f"need as many texts as images (and at least one); got {len(images)}/{len(texts)}")
    torch.manual_seed(numpy_rng(seed, "clip-init", tag).integers(2**31))
    loss_fn = open_clip.ClipLoss()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    net.train()
    history = []
    for step in tqdm(range(steps), desc=f"CLIP {tag}", disable=not progress):
        idx = numpy_rng(seed, "clip-batch", tag, step).choice(
            len(images), size=min(batch_size, len(images)), replace=False
        )
        x = torch.stack([transform(images[i]) for i in idx]).to(device)
        t = tokenizer([texts[i] for i in idx]).to(device)
        start = time.perf_counter()
        img_f = net.encode_image(x, normalize=True)
        txt_f = net.encode_text(t, normalize=True)
        loss = loss_fn(img_f, txt_f, net.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": float(loss), "seconds": time.perf_counter() - start})
    net.eval()
    return history


@torch.no_grad()
def zero_shot(
    net: Any,
    transform: Any,
    tokenizer: Any,
    images: Sequence[Image.Image],
    labels: np.ndarray,
    classnames: Sequence[str],
    device: str = "cpu",
) -> dict[str, Any]:
    """Top-1 zero-shot accuracy (overall and per class) with ``ZERO_SHOT_TEMPLATES``."""
    net.eval()
    templates = [t.format for t in ZERO_SHOT_TEMPLATES]
    classifier = open_clip.build_zero_shot_classifier(
        net, tokenizer, classnames, templates, num_classes_per_batch=None, device=device
    )
    feats = []
    for i in range(0, len(images), 256):
        x = torch.stack([transform(im) for im in images[i : i + 256]]).to(device)
        feats.append(net.encode_image(x, normalize=True))
    pred = (torch.cat(feats) @ classifier).argmax(dim=1).cpu().numpy()
    correct = pred == labels
    per_class = [float(correct[labels == c].mean()) if (labels == c).any() else float("nan")
                 for c in range(len(classnames))]
    return {"top1": float(correct.mean()), "per_class": per_class}
