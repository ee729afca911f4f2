"""Class-name disambiguation: LLM-proposed candidates scored by CLIP against real images.

For each class the LLM proposes up to K short descriptions of what the name refers to; the
class name itself is always candidate 0. CLIP embeds N real training images per class and
every candidate. The rule (a parameter, ``distinct_weight`` = w):

    score(c, t) = mean_i cos(image_i of c, t) - w * max_{c' != c} mean_i cos(image_i of c', t)

rewards a text that matches its own class's images and penalises one that matches another
class's images as well. Winners are assigned greedily by score across all classes so that two
classes never end with the same text.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# The request sent to the LLM: data, not code scattered around.
SYSTEM = "You are a careful lexicographer. Answer with one short description per line."
USER = (
    "Class name: {name}\n"
    "List {k} short, distinct descriptions (at most 8 words each) of what this name can refer "
    "to in a photo."
)

# A leading bullet, or a list number followed by a space ("2. x", "3) x"; not "2.5 mm").
_BULLET = re.compile(r"^\s*(?:[-*\u2022]\s*|\d+[.)]\s+)")


def request(name: str, k: int) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(name=name, k=k)}]


def parse_candidates(text: str, k: int, max_chars: int = 80) -> list[str]:
    """Up to ``k`` distinct candidate lines from an LLM answer (bullets/numbers stripped).

    Lines that are empty, too long or not printable text (including U+FFFD, which stands for
    bytes the tokenizer could not decode) are dropped; the caller counts how
    many candidates each class got.
    """
    out: list[str] = []
    if k <= 0:
        return out
    for line in text.splitlines():
        cand = _BULLET.sub("", line).strip().strip('"').strip()
        printable = cand.isprintable() and "\ufffd" not in cand  # U+FFFD: undecodable bytes
        if cand and len(cand) <= max_chars and printable and cand.lower() not in {
            c.lower() for c in out
        }:
            out.append(cand)
        if len(out) == k:
            break
    return out


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
    """One text per class, best score first, never the same text for two classes."""
    taken: set[str] = set()
    winners: dict[str, str] = {}
    for row in scored.sort_values(["score", "class_id"], ascending=[False, True]).itertuples():
        key = row.text.strip().lower()
        if row.class_id in winners or key in taken:
            continue
        winners[row.class_id] = row.text
        taken.add(key)
    missing = sorted(set(scored["class_id"]) - set(winners))
    if missing:
        raise ValueError(f"no distinct prompt name left for class(es) {', '.join(missing)}")
    out = scored.copy()
    out["winner"] = [winners[c] == t for c, t in zip(out["class_id"], out["text"])]
    return out
