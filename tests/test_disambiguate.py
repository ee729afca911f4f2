"""Class-name disambiguation (lib.disambiguate): scoring candidates, picking winners.

The embeddings are hand-made 2-D unit vectors whose cosines are known, so every expected
score below is worked out by hand, not by the formula under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.disambiguate import pick_winners, score_candidates

# -- score_candidates --------------------------------------------------------------------

# Class A's images average to (0.8, 0.4); class B's to (0.4, 0.8).
IMAGES = {
    "A": np.array([[1.0, 0.0], [0.6, 0.8]]),
    "B": np.array([[0.0, 1.0], [0.8, 0.6]]),
}
S = 1 / np.sqrt(2)
TEXTS = pd.DataFrame(
    {
        "class_id": ["A", "A", "B", "B"],
        "text": ["a-only", "both", "b-only", "both"],
    }
)
TEXT_EMB = np.array([[1.0, 0.0], [S, S], [0.0, 1.0], [S, S]])
BOTH = 1.2 * S  # cos((S, S), (0.8, 0.4)) = cos((S, S), (0.4, 0.8)) = 0.8485...


def test_score_own_other_by_hand() -> None:
    scored = score_candidates(IMAGES, TEXTS, TEXT_EMB, distinct_weight=0.5)
    np.testing.assert_allclose(scored["own"], [0.8, BOTH, 0.8, BOTH])
    np.testing.assert_allclose(scored["other"], [0.4, BOTH, 0.4, BOTH])
    np.testing.assert_allclose(scored["score"], [0.6, 0.5 * BOTH, 0.6, 0.5 * BOTH])
    assert list(TEXTS.columns) == ["class_id", "text"]  # input left alone
    assert scored[["class_id", "text"]].equals(TEXTS)


def test_distinct_weight_penalises_shared_text() -> None:
    def best(weight: float) -> dict[str, str]:
        scored = score_candidates(IMAGES, TEXTS, TEXT_EMB, distinct_weight=weight)
        top = scored.sort_values("score", ascending=False).groupby("class_id").head(1)
        return dict(zip(top["class_id"], top["text"], strict=True))

    # Without the penalty the text between both classes matches each a little better ...
    assert best(0.0) == {"A": "both", "B": "both"}
    # ... with it, each class's own text wins.
    assert best(0.5) == {"A": "a-only", "B": "b-only"}


def test_other_is_the_closest_other_class() -> None:
    images = IMAGES | {"C": np.array([[-1.0, 0.0], [-1.0, 0.0]])}
    texts = pd.DataFrame({"class_id": ["A", "C"], "text": ["a-only", "c-only"]})
    emb = np.array([[1.0, 0.0], [-1.0, 0.0]])
    scored = score_candidates(images, texts, emb, distinct_weight=1.0)
    np.testing.assert_allclose(scored["own"], [0.8, 1.0])
    np.testing.assert_allclose(scored["other"], [0.4, -0.4])  # max over B and C, not a mean
    np.testing.assert_allclose(scored["score"], [0.4, 1.4])


def test_single_class_has_no_penalty() -> None:
    texts = pd.DataFrame({"class_id": ["A"], "text": ["a-only"]})
    scored = score_candidates({"A": IMAGES["A"]}, texts, np.array([[1.0, 0.0]]), 0.5)
    np.testing.assert_allclose(scored[["own", "other", "score"]].to_numpy(), [[0.8, 0.0, 0.8]])


# -- pick_winners ------------------------------------------------------------------------


def scored_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["class_id", "text", "score"])


def winners(picked: pd.DataFrame) -> dict[str, str]:
    rows = picked[picked["winner"]]
    return dict(zip(rows["class_id"], rows["text"], strict=True))


def test_same_best_text_goes_to_one_class() -> None:
    scored = scored_frame([
        ("A", "crane", 0.9), ("A", "crane bird", 0.5),
        ("B", "Crane ", 0.8), ("B", "construction crane", 0.3),
    ])  # fmt: skip
    picked = pick_winners(scored)
    assert winners(picked) == {"A": "crane", "B": "construction crane"}
    assert picked["winner"].tolist() == [True, False, False, True]
    assert picked.drop(columns="winner").equals(scored)


def test_winners_independent_of_row_order() -> None:
    scored = scored_frame([
        ("A", "x", 0.7), ("B", "x", 0.7), ("A", "a", 0.2), ("B", "b", 0.1), ("C", "c", 0.5),
    ])  # fmt: skip
    expected = {"A": "x", "B": "b", "C": "c"}  # a tie goes to the first class id
    assert winners(pick_winners(scored)) == expected
    assert winners(pick_winners(scored.iloc[::-1].reset_index(drop=True))) == expected


def test_no_distinct_text_left_raises() -> None:
    scored = scored_frame([("A", "crane", 0.9), ("B", "CRANE", 0.8), ("C", "c", 0.1)])
    with pytest.raises(ValueError, match=r"no distinct prompt name left for class\(es\) B$"):
        pick_winners(scored)
