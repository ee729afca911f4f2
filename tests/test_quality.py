"""Recognizability (per-class F1 of a real-only judge) and diversity (per-class std of
normalised embeddings), lib.analysis.quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.analysis.quality import per_class_diversity, per_class_f1, quality_table, summarise


def test_f1_punishes_a_judge_that_calls_everything_one_class() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    everything_zero = np.zeros(6, dtype=int)
    f1 = per_class_f1(labels, everything_zero, 3)
    # recall of class 0 is 1, but its precision is 1/3: F1 = 0.5; the others score 0
    assert f1.tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert per_class_f1(labels, labels, 3).tolist() == [1.0, 1.0, 1.0]


def test_diversity_is_zero_for_copies_and_grows_with_spread() -> None:
    rng = np.random.default_rng(0)
    same = np.tile(rng.normal(size=(1, 8)), (5, 1))
    spread = rng.normal(size=(5, 8))
    labels = np.array([0] * 5 + [1] * 5)
    div = per_class_diversity(np.vstack([same, spread]), labels, 3)
    assert div[0] == pytest.approx(0.0, abs=1e-12)
    assert div[1] > 0.1
    assert np.isnan(div[2])  # no image of class 2
    scaled = per_class_diversity(np.vstack([same, 10 * spread]), labels, 3)
    assert scaled[1] == pytest.approx(div[1])  # normalised: the scale does not matter


def test_quality_table_per_setting_and_class() -> None:
    labels = np.array([0, 1, 0, 1])
    predicted = np.array([0, 1, 1, 1])
    emb = np.eye(4)
    table = quality_table(pd.Series(["a", "a", "b", "b"]), labels, predicted, emb, 2)
    assert len(table) == 4 and set(table["setting"]) == {"a", "b"}
    a = table[table["setting"] == "a"].set_index("label")
    assert a.loc[0, "recognizability"] == 1.0 and a.loc[1, "num_images"] == 1
    summary = summarise(table).set_index("setting")
    assert summary.loc["a", "recognizability"] == 1.0
    assert summary.loc["b", "recognizability"] == pytest.approx((0 + 2 / 3) / 2)
