"""The verdict rule of docs/studies.md ("Verdicts") as code, and the claims table.

Every claim is stated as a difference that the paper says is positive ("X - Y > 0"). Its
95 % interval (a bootstrap over seeds for fits; mean +- 1.96 standard errors over seeds for
accuracies) decides:

* one-sided claims (:func:`verdict`): **reproduced** when the interval lies above zero, **not
  reproduced** when it lies below zero, **inconclusive** when it contains zero;
* two-sided claims, "X differs from Y" (:func:`verdict_two_sided`): **reproduced** when the
  interval excludes zero in either direction, **inconclusive** otherwise;
* a claim whose runs are absent (no interval) is **not measured**, and is still listed.

A :class:`Claim` computes its verdict from its interval: a verdict is never passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

Z95 = 1.96
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not measured")


def _missing(*values: float | None) -> bool:
    return any(v is None or not math.isfinite(v) for v in values)


def verdict(low: float | None, high: float | None) -> str:
    """The one-sided rule for a claim "difference > 0" with 95 % interval [low, high]."""
    if _missing(low, high):
        return "not measured"
    if low > 0:
        return "reproduced"
    if high < 0:
        return "not reproduced"
    return "inconclusive"


def verdict_two_sided(low: float | None, high: float | None) -> str:
    """The two-sided rule for a claim "difference != 0": reproduced when the 95 % interval
    excludes zero (either side), inconclusive when it contains zero."""
    if _missing(low, high):
        return "not measured"
    return "reproduced" if low > 0 or high < 0 else "inconclusive"


def _clean(values: Iterable[float], side: str) -> np.ndarray:
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        raise ValueError(f"{side} has {len(v)} finite value(s); a standard error needs at "
                         f"least 2 (run more seeds, or check that its runs finished)")
    return v


def mean_difference(a: Iterable[float], b: Iterable[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) +- 1.96 x the unpaired (Welch) standard error
    ``sqrt(var_a / n_a + var_b / n_b)``: (estimate, low, high). NaNs are ignored; a side with
    fewer than 2 finite values raises ValueError naming the side."""
    va, vb = _clean(a, "side a"), _clean(b, "side b")
    est = float(va.mean() - vb.mean())
    se = float(np.sqrt(va.var(ddof=1) / len(va) + vb.var(ddof=1) / len(vb)))
    return est, est - Z95 * se, est + Z95 * se


def mean_interval(values: Iterable[float]) -> tuple[float, float, float]:
    """mean +- 1.96 standard errors of paired differences (one value per seed or class):
    (estimate, low, high); fewer than 2 finite values raise ValueError."""
    v = _clean(values, "the paired differences")
    est = float(v.mean())
    se = float(v.std(ddof=1) / np.sqrt(len(v)))
    return est, est - Z95 * se, est + Z95 * se


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, our estimate of its difference and the verdict the rule gives.

    ``paper_value`` is the paper's number for reference (ImageNet's, not comparable in
    size); ``measure`` says in words what is compared; ``two_sided`` picks
    :func:`verdict_two_sided`. ``estimate``/``low``/``high`` None: not measured (``note``
    says which curve is missing)."""

    id: str
    paper: str  # "scaling" or "diversify"
    statement: str
    measure: str
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    paper_value: str | None = None
    note: str = ""
    two_sided: bool = False
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        rule = verdict_two_sided if self.two_sided else verdict
        object.__setattr__(self, "verdict", rule(self.low, self.high))


def not_measured(id: str, paper: str, statement: str, measure: str, why: str,
                 two_sided: bool = False) -> Claim:
    """A claim that could not be measured, with the reason (e.g. the missing curve)."""
    return Claim(id=id, paper=paper, statement=statement, measure=measure, note=why,
                 two_sided=two_sided)


COLUMNS = ("id", "paper", "statement", "paper_value", "measure", "estimate", "low", "high",
           "verdict", "note")


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim, in the order given, with the columns of :data:`COLUMNS` (and
    ``two_sided``)."""
    rows = [asdict(c) for c in claims]
    return pd.DataFrame(rows, columns=[*COLUMNS, "two_sided"])
