"""CLIP (open_clip) trained on image-text pairs, and zero-shot evaluation.

The scaling paper trains CLIP on synthetic image-text pairs and compares with real pairs and
with both combined. Here a model is loaded through the production open_clip path (an
architecture name, ``local-dir:`` folder or pretrained tag), trained with open_clip's own
contrastive :class:`open_clip.ClipLoss`, and evaluated zero-shot with
:func:`open_clip.build_zero_shot_classifier`.

When the text tower is locked (``lock_text_tower``), its frozen part is run once per distinct
text, in eval mode (no dropout), instead of at every step; each step runs only what still
trains (an HF text tower's projection, else nothing). For the mini CLIP this turns a
~1 s step (MiniLM over 128 captions) into milliseconds. ``cache_frozen_text=False`` runs the
whole text tower at every step in train mode, as open_clip's own training loop does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
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


def trained_checkpoint(net: torch.nn.Module, model: str, pretrained: str | None
                       ) -> dict[str, Any]:
    """What a training run changed, and the name of what it started from: the weights of
    every module with a trainable parameter, the names of the frozen parameters (left out:
    they are the base model's), and the base (``model``, ``pretrained``). A locked text
    tower is not copied into each checkpoint."""
    frozen = sorted(k for k, p in net.named_parameters() if not p.requires_grad)
    frozen_modules = _frozen_modules(net)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()
             if k not in frozen and k.rsplit(".", 1)[0] not in frozen_modules}
    return {"base": {"model": model, "pretrained": pretrained}, "frozen": frozen,
            "frozen_modules": sorted(frozen_modules), "state_dict": state}


def _frozen_modules(net: torch.nn.Module) -> set[str]:
    """Modules whose parameters (own and nested) are all frozen: their buffers stay too."""
    out = set()
    for name, module in net.named_modules():
        params = list(module.parameters())
        if name and params and not any(p.requires_grad for p in params):
            out.add(name)
    return out


def load_trained(checkpoint: dict[str, Any], device: str = "cpu") -> tuple[Any, Any, Any, Any]:
    """The model of a :func:`trained_checkpoint`: its base loaded, the trained weights over
    it; a weight the checkpoint lacks must be one it names as frozen (or of a frozen
    module)."""
    net, train_tf, eval_tf, tok = load(checkpoint["base"]["model"],
                                       checkpoint["base"]["pretrained"], device)
    result = net.load_state_dict(checkpoint["state_dict"], strict=False)
    frozen, modules = set(checkpoint["frozen"]), set(checkpoint["frozen_modules"])
    missing = [k for k in result.missing_keys
               if k not in frozen and k.rsplit(".", 1)[0] not in modules]
    if missing or result.unexpected_keys:
        raise ValueError(f"the checkpoint does not fit its base {checkpoint['base']}: missing "
                         f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    return net, train_tf, eval_tf, tok


def _per_distinct_text(
    module: Any, texts: Sequence[str], encode: Callable[[list[str]], torch.Tensor],
    batch_size: int, progress: bool,
) -> torch.Tensor:
    """``encode`` of each distinct text once (``module`` in eval mode, no grad), one row per
    text of ``texts``."""
    unique, index = np.unique(np.asarray(list(texts), dtype=object), return_inverse=True)
    was_training = module.training
    module.eval()
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, len(unique), batch_size), desc="text tower",
                      disable=not progress):
            chunks.append(encode([str(t) for t in unique[i : i + batch_size]]).float())
    module.train(was_training)
    return torch.cat(chunks)[torch.from_numpy(index.astype(np.int64).reshape(-1))]


def pooled_text_features(
    net: Any,
    tokenizer: Any,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """An HF text tower's pooled transformer output (before its projection) per text.

    ``net.text.proj`` of it is ``encode_text`` (unnormalised) up to float rounding. Each
    distinct text is encoded once, in eval mode, in batches of ``batch_size``.
    """
    text = net.text

    def encode(batch: list[str]) -> torch.Tensor:
        tokens = tokenizer(batch).to(device)
        mask = (tokens != text.config.pad_token_id).long()
        return text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)

    return _per_distinct_text(text, texts, encode, batch_size, progress)


def frozen_text_features(
    net: Any,
    tokenizer: Any,
    texts: Sequence[str],
    device: str = "cpu",
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The frozen part of the text tower applied once to each of ``texts``, and the head.

    Returns ``(features [N, D], head)`` such that ``head(features[i])`` is text ``i``'s
    normalised embedding, with only ``head`` still trainable: for an HF text tower whose
    transformer is frozen, :func:`pooled_text_features` and ``normalize(text.proj(.))``; for
    any other tower with no trainable parameter, ``encode_text`` and the identity. ``None``
    when the text tower trains. Runs in eval mode under ``torch.no_grad``.
    """
    from open_clip.hf_model import HFTextEncoder

    text = getattr(net, "text", None)
    if isinstance(text, HFTextEncoder):
        if any(p.requires_grad for p in text.transformer.parameters()):
            return None
        features = pooled_text_features(net, tokenizer, texts, device, batch_size, progress)
        return features, lambda f: F.normalize(text.proj(f), dim=-1)
    text_params = [p for name, p in net.named_parameters()
                   if not name.startswith(("visual.", "logit_scale", "logit_bias"))]
    if any(p.requires_grad for p in text_params):
        return None
    features = _per_distinct_text(
        net, texts, lambda batch: net.encode_text(tokenizer(batch).to(device), normalize=True),
        batch_size, progress)
    return features, lambda f: f


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
    cache_frozen_text: bool = True,
) -> list[dict[str, float]]:
    """Contrastive training on (image, text) pairs; batches drawn per step from the seed.

    With ``cache_frozen_text`` a locked text tower's frozen part runs once per distinct text
    (:func:`frozen_text_features`) instead of at every step.
    """
    if len(images) != len(texts) or not images:
        raise ValueError(f"need as many texts as images (and at least one); got {len(images)}/{len(texts)}")
    cached = (frozen_text_features(net, tokenizer, texts, device, progress=progress)
              if cache_frozen_text else None)
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
        start = time.perf_counter()
        img_f = net.encode_image(x, normalize=True)
        if cached is None:
            txt_f = net.encode_text(tokenizer([texts[i] for i in idx]).to(device), normalize=True)
        else:
            features, head = cached
            txt_f = head(features[torch.from_numpy(idx)])
        loss = loss_fn(img_f, txt_f, net.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start})
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
