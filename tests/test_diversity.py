"""Prompt diversity measures (lib.diversity)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lib.diversity import dispersion, distinct_n, diversity_table


def test_distinct_n() -> None:
    assert distinct_n(["a cat", "a cat"], 1) == 0.5
    assert distinct_n(["a cat", "a dog"], 1) == 0.75
    assert distinct_n(["a cat", "a dog"], 2) == 1.0
    assert distinct_n(["A Cat", "a cat"], 2) == 0.5  # case-insensitive
    assert math.isnan(distinct_n(["cat"], 2))


def test_dispersion() -> None:
    same = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert dispersion(same) == 0.0
    orthogonal = np.eye(3)
    assert dispersion(orthogonal) == 1.0
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert dispersion(opposite) == 2.0
    assert math.isnan(dispersion(np.ones((1, 4))))


def test_diversity_table_per_class_and_strategy() -> None:
    manifest = pd.DataFrame({
        "class_name": ["a", "a", "a", "a"],
        "strategy": ["classname", "classname", "cd", "cd"],
        "prompt": ["kite", "kite", "kite in the sky", "kite on a beach"],
    })
    vocab = {"kite": [1, 0, 0], "kite in the sky": [0, 1, 0], "kite on a beach": [0, 0, 1]}
    table = diversity_table(manifest, lambda texts: np.array([vocab[t] for t in texts], float))
    row = table.set_index("strategy").loc["classname"]
    assert (row["n"], row["unique"], row["dispersion"]) == (2, 1, 0.0)
    row = table.set_index("strategy").loc["cd"]
    assert (row["n"], row["unique"], row["dispersion"]) == (2, 2, 1.0)
    assert row["distinct_1"] == 7 / 8  # "kite" twice among 8 words
