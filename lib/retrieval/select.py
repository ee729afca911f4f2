"""Which corpus images each class retrieves: the queries, the embeddings, the assignment.

**Queries.** Each class's query is ``prompt_template`` filled with its ``name`` (and/or its
``prompt_name``): ``"the digit {name}"`` gives ``"the digit zero"``.

**Scores.** The CLIP scorer embeds every corpus image once, in batches of exactly
``batch_size`` (the last one padded by repeating its last image, as the retrieval captioner
does: kernels are chosen by shape, so an image's embedding does not depend on its batch
companions), and each query on its own. Scores are cosine similarities (unit-norm
embeddings).

**Assignment (no image carries two labels).** Every (image, class) pair is visited once in
descending similarity (ties: the lower corpus index first, then the class that comes first
by label); an image goes to the class of the first pair that finds it free
while that class still needs images. So an image goes to the class it is most similar to,
unless that class was already filled with images more similar to it; and each class's set
is its most similar images among those no class wanted more. No class is short unless the
corpus holds fewer images than all classes together need; then :class:`RetrievalShortfall`
names the classes with their counts, before any scoring (nothing is retrieved: a run never
trains on fewer images than it asked for; there is no partial set with a counted
shortfall). The images of a class are ranked in the order they were assigned: descending
similarity.

**Precision.** An image is *correct* for a class when the corpus's ``glyph`` column (what
its caption names) equals the class's glyph: the ``glyph`` column of the classes table if it
has one, else its ``class_id`` (the digit for the digits classes).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lib.retrieval.corpus import RetrievalCorpus

TEMPLATE_FIELDS = ("name", "prompt_name")


class Scorer(Protocol):
    """What retrieval needs of a CLIP scorer (:mod:`lib.backends.clip`)."""

    def encode_images(self, images: list[Any]) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...


class RetrievalShortfall(ValueError):
    """The corpus cannot give every class its images. ``wanted``: class_id -> images it
    wants; ``short``: class_id -> (images retrieved, wanted) of the short classes, when known
    (after an assignment; empty when the sizes alone rule it out)."""

    def __init__(self, wanted: Mapping[str, int], corpus_size: int,
                 short: Mapping[str, tuple[int, int]] | None = None):
        self.wanted, self.short = dict(wanted), dict(short or {})
        total = sum(self.wanted.values())
        if self.short:
            detail = "short classes (retrieved of wanted): " + ", ".join(
                f"{c}: {got} of {want}" for c, (got, want) in self.short.items())
        else:
            detail = "wanted per class: " + ", ".join(f"{c}: {n}" for c, n in self.wanted.items())
        super().__init__(
            f"the corpus holds {corpus_size} images but the classes need {total} (each image "
            f"goes to one class at most); {detail}. Lower the multiplier or use a larger "
            "corpus (zoo.corpus_size)")


def check_corpus_size(class_ids: Sequence[str], counts: Sequence[int], corpus_size: int) -> None:
    """Fail before any scoring when the classes need more images than the corpus holds: the
    assignment fills every class whenever the corpus is large enough, so this is the only
    way a class can be short."""
    if int(sum(counts)) > corpus_size:
        raise RetrievalShortfall(dict(zip(class_ids, map(int, counts))), corpus_size)


def class_queries(classes: pd.DataFrame, template: str) -> dict[str, str]:
    """class_id -> the query: ``template`` with ``{name}`` / ``{prompt_name}`` filled in."""
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if not fields or not fields <= set(TEMPLATE_FIELDS):
        raise ValueError(f"prompt_template={template!r} must name the class with {{name}} or "
                         f"{{prompt_name}} and nothing else (fields found: {sorted(fields)})")
    missing = sorted(fields - set(classes.columns))
    if missing:
        raise ValueError(f"prompt_template={template!r} uses {missing}, which the classes table "
                         f"lacks (columns: {', '.join(map(str, classes.columns))})")
    return {str(row["class_id"]): template.format(**{f: str(row[f]) for f in fields})
            for _, row in classes.iterrows()}


def embed_corpus(scorer: Scorer, corpus: RetrievalCorpus, batch_size: int,
                 progress: bool = True) -> np.ndarray:
    """Unit-norm embeddings [N, D] (float32) of every corpus image, in fixed-shape batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    for start in tqdm(range(0, len(corpus), batch_size), desc="embed corpus", unit="batch",
                      disable=not progress, mininterval=1.0, dynamic_ncols=True):
        batch = [corpus.pil(i) for i in range(start, min(start + batch_size, len(corpus)))]
        padded = batch + [batch[-1]] * (batch_size - len(batch))
        chunks.append(scorer.encode_images(padded).float().numpy()[: len(batch)])
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def embed_queries(scorer: Scorer, queries: Sequence[str]) -> np.ndarray:
    """Unit-norm embeddings [C, D] of the queries, each encoded on its own."""
    return np.concatenate([scorer.encode_texts([q]).float().numpy() for q in queries])


def assign(sims: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Per class (a column of ``sims`` [N, C]), the corpus indices it retrieves, most similar
    first: ``counts[c]`` each, every image to one class at most (the module docstring's
    rule). Classes the corpus cannot fill get fewer; :func:`check_filled` says so."""
    n, c = sims.shape
    need = np.asarray(counts, dtype=np.int64)
    if len(need) != c or (need < 0).any():
        raise ValueError(f"counts must be {c} non-negative integers, got {list(counts)}")
    if not np.isfinite(sims).all():
        raise ValueError("the similarity matrix holds NaN or infinite values")
    order = np.argsort(-sims.ravel(), kind="stable")  # ties: flat index = (image, class)
    taken = np.zeros(n, dtype=bool)
    chosen: list[list[int]] = [[] for _ in range(c)]
    left = int(need.sum())
    for flat in order:
        if left == 0:
            break
        i, k = divmod(int(flat), c)
        if taken[i] or len(chosen[k]) >= need[k]:
            continue
        taken[i] = True
        chosen[k].append(i)
        left -= 1
    return [np.asarray(ix, dtype=np.int64) for ix in chosen]


def check_filled(chosen: Sequence[np.ndarray], class_ids: Sequence[str], counts: Sequence[int],
                 corpus_size: int) -> None:
    """Raise :class:`RetrievalShortfall` naming every class that got fewer than it wanted."""
    short = {cid: (len(ix), int(want)) for cid, ix, want in zip(class_ids, chosen, counts)
             if len(ix) < want}
    if short:
        raise RetrievalShortfall(dict(zip(class_ids, map(int, counts))), corpus_size, short)


def class_glyphs(classes: pd.DataFrame) -> list[str]:
    """What a correct image's corpus ``glyph`` is, per class: the ``glyph`` column, else the
    class id."""
    column = "glyph" if "glyph" in classes.columns else "class_id"
    return classes[column].astype(str).tolist()


def names_class(glyphs: Sequence[str] | None, indices: np.ndarray, glyph: str) -> list[bool] | None:
    """Whether each of ``indices``' corpus captions names ``glyph`` (None: no glyph column)."""
    if glyphs is None:
        return None
    return [glyphs[int(i)] == glyph for i in indices]
