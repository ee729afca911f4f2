"""Class-name disambiguation: LLM-proposed candidates scored by CLIP against real images.

For each class the LLM proposes up to K short descriptions of what the name refers to (task
``senses`` in lib/resources/llm_prompts.yaml); the class name itself is always candidate 0.
CLIP embeds N real training images per class, and each candidate t is embedded either as text
(mode ``clip``) or as the mean embedding of a few images generated from t (mode
``generate``). The rule (a parameter, ``distinct_weight`` = w):

    score(c, t) = mean_i cos(image_i of c, e(t)) - w * max_{c' != c} mean_i cos(image_i of c', e(t))

rewards a text that matches its own class's images and penalises one that matches another
class's images as well. Winners are assigned greedily by score across all classes so that two
classes never end with the same text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def score_candidates(
    image_emb: dict[str, np.ndarray],
    candidates: pd.DataFrame,
    text_emb: np.ndarray,
    distinct_weight: float,
) -> pd.DataFrame:
    """Add own/other/score columns to ``candidates`` (class_id, text), one row per text.

    ``image_emb`` maps class_id to L2-normalised image embeddings (n, D); ``text_emb`` holds
    the normalised embedding of each candidate row (m, D).
    """
    class_ids = list(image_emb)
    means = np.stack([image_emb[c].mean(axis=0) for c in class_ids])  # (C, D)
    sims = text_emb @ means.T  # (m, C): mean cosine of each text with each class's images
    col = {c: i for i, c in enumerate(class_ids)}
    own_idx = candidates["class_id"].map(col).to_numpy()
    own = sims[np.arange(len(candidates)), own_idx]
    masked = sims.copy()
    masked[np.arange(len(candidates)), own_idx] = -np.inf
    other = masked.max(axis=1) if len(class_ids) > 1 else np.zeros(len(candidates))
    out = candidates.copy()
    out["own"], out["other"] = own, other
    out["score"] = own - distinct_weight * other
    return out


def pick_winners(scored: pd.DataFrame) -> pd.DataFrame:
    """One text per class, best score first, never the same text for two classes.

    Exactly one row per class is marked ``winner`` (the first of equal rows, should a class
    list the same text twice).
    """
    scored = scored.reset_index(drop=True)
    taken: set[str] = set()
    chosen: dict[str, int] = {}
    order = scored.sort_values(["score", "class_id"], ascending=[False, True], kind="stable")
    for index, row in zip(order.index, order.itertuples(index=False)):
        key = row.text.strip().lower()
        if row.class_id in chosen or key in taken:
            continue
        chosen[row.class_id] = index
        taken.add(key)
    missing = sorted(set(scored["class_id"]) - set(chosen))
    if missing:
        raise ValueError(f"no distinct prompt name left for class(es) {', '.join(missing)}")
    out = scored.copy()
    out["winner"] = out.index.isin(list(chosen.values()))
    return out
