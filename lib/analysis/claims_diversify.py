"""The claims of the Diversify paper (Yu et al., arXiv 2312.02253), computed from the study
runs table with the verdict rule of :mod:`lib.analysis.verdicts`.

Accuracies are compared as differences of means over seeds +- 1.96 standard errors (Welch,
unpaired) unless a claim says "paired by seed". A claim whose runs are absent is returned
with verdict "not measured" and a note naming the missing curve. The curve names are module
constants, the defaults of the functions' keyword arguments (see
:mod:`lib.analysis.claims` for the shared helpers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lib.analysis.claims import guarded, largest, values
from lib.analysis.curves import ood_mean
from lib.analysis.verdicts import Claim, mean_difference, mean_interval

PAPER = "diversify"
FINETUNED = "scaleup/finetuned/aux1"
CDSD = "scaleup/cdsd/aux1"
RETRIEVAL = "retrieval"
VIT = "arch/mini_vit/aux1"
# The ablation rows in order, each adding one component to the row above (docs/studies.md).
ABLATION_ROWS = ("naive", "classname", "cd", "sd", "cdsd", "cdsd_aux")
ABLATION_LABELS = {"naive": "naive class name", "classname": "+ disambiguation",
                   "cd": "+ CD", "sd": "+ SD", "cdsd": "+ CD+SD", "cdsd_aux": "+ auxiliary norm"}
TOP1 = "val.top1"


def ablation(row: str) -> str:
    """The curve of one ablation row."""
    return f"ablation/{row}"


def _multiplier(runs: pd.DataFrame, curve: str, multiplier: float | str) -> float:
    """A multiplier, "largest" resolved to the curve's largest."""
    return largest(runs, curve) if multiplier == "largest" else float(multiplier)


def _at(runs: pd.DataFrame, curve: str, multiplier: float | str, metric: str = TOP1
        ) -> pd.Series:
    """``metric`` per seed of a curve at one multiplier ("largest": the curve's largest)."""
    return values(runs, curve, metric, multiplier=_multiplier(runs, curve, multiplier))


def _welch(runs: pd.DataFrame, id: str, statement: str, a: tuple[str, float | str],
           b: tuple[str, float | str], metric: str = TOP1) -> Claim:
    """``metric(a) - metric(b) > 0`` with a = (curve, multiplier), Welch over seeds."""
    name = {1.0: "1x", 0.0: "0x", "largest": "the largest multiplier"}
    measure = (f"{metric}({a[0]} at {name.get(a[1], a[1])}) - "
               f"{metric}({b[0]} at {name.get(b[1], b[1])})")

    def make() -> Claim:
        if a[0] == b[0] and _multiplier(runs, *a) == _multiplier(runs, *b):
            raise ValueError(f"{a[0]} has no multiplier other than {_multiplier(runs, *a):g}x; "
                             f"the claim compares two of its multipliers")
        est, lo, hi = mean_difference(_at(runs, *a, metric), _at(runs, *b, metric))
        return Claim(id, PAPER, statement, measure, est, lo, hi,
                     note=f"largest multiplier {largest(runs, a[0]):g}x"
                     if "largest" in (a[1], b[1]) else "")

    return guarded(make, id, PAPER, statement, measure, [a[0], b[0]], runs)


def d1_d2_scaleup(runs: pd.DataFrame, finetuned: str = FINETUNED, cdsd: str = CDSD
                  ) -> list[Claim]:
    """D1: the fine-tuned generator degrades past 1x; D2: off-the-shelf + CD+SD + aux norm
    keeps improving up to the largest multiplier."""
    return [
        _welch(runs, "D1", "The fine-tuned generator's synthetic data hurts past 1x",
               (finetuned, 1.0), (finetuned, "largest")),
        _welch(runs, "D2", "Off-the-shelf generator + CD+SD + auxiliary norm keeps improving "
               "up to the largest multiplier", (cdsd, "largest"), (cdsd, 1.0)),
    ]


def ablation_table(runs: pd.DataFrame, rows: Sequence[str] = ABLATION_ROWS,
                   metric: str = TOP1) -> pd.DataFrame:
    """One row per ablation row present, in order: ``row``, ``label``, ``mean``, ``std``,
    ``n``, ``half`` (95 % half-width), and against the row above: ``delta`` with its 95 %
    interval (``delta_lo``, ``delta_hi``; Welch), ``exceeds_2std`` (delta > 2 std of the row
    above, the seed-to-seed spread of docs/studies.md)."""
    out, above = [], None
    for row in rows:
        v = runs.loc[runs["curve"] == ablation(row), metric].dropna()
        if v.empty:
            continue
        rec = {"row": row, "label": ABLATION_LABELS.get(row, row), "mean": v.mean(),
               "std": v.std(ddof=1), "n": len(v)}
        rec["half"] = 1.96 * rec["std"] / np.sqrt(len(v))
        rec |= _delta(v, above)
        out.append(rec)
        above = v
    cols = ["row", "label", "mean", "std", "n", "half", "delta", "delta_lo", "delta_hi",
            "exceeds_2std"]
    return pd.DataFrame(out, columns=cols)


def _delta(v: pd.Series, above: pd.Series | None) -> dict:
    if above is None:
        return {"delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "exceeds_2std": None}
    try:
        est, lo, hi = mean_difference(v, above)
    except ValueError:
        est, lo, hi = float(v.mean() - above.mean()), np.nan, np.nan
    spread = 2 * above.std(ddof=1)
    return {"delta": est, "delta_lo": lo, "delta_hi": hi,
            "exceeds_2std": bool(est > spread) if np.isfinite(spread) else None}


def d3_ablation(runs: pd.DataFrame, rows: Sequence[str] = ABLATION_ROWS, metric: str = TOP1
                ) -> list[Claim]:
    """D3: each ablation row improves on the row above (one claim per row after the first;
    the note says whether the delta exceeds 2 std of the row above)."""
    table = ablation_table(runs, rows, metric).set_index("row")
    return [_d3_row(runs, table, prev, row, metric) for prev, row in zip(rows, rows[1:])]


def _d3_row(runs: pd.DataFrame, table: pd.DataFrame, prev: str, row: str, metric: str
            ) -> Claim:
    """D3 for one ablation row against the row above it."""
    cid = f"D3/{row}"
    statement = f"Ablation: {ABLATION_LABELS.get(row, row)} improves on the row above"
    measure = f"{metric}({ablation(row)}) - {metric}({ablation(prev)}) at 1x"

    def make() -> Claim:
        est, lo, hi = mean_difference(values(runs, ablation(row), metric),
                                      values(runs, ablation(prev), metric))
        big = table.loc[row, "exceeds_2std"]
        note = ("delta exceeds 2 std of the row above" if big else
                "delta within 2 std of the row above" if big is not None else "")
        return Claim(cid, PAPER, statement, measure, est, lo, hi, note=note)

    return guarded(make, cid, PAPER, statement, measure, [ablation(row), ablation(prev)], runs)


def d4_d5_gain(runs: pd.DataFrame, cdsd: str = CDSD) -> list[Claim]:
    """D4: synthetic data raises val top-1 over real only (same curve, multiplier 0); D5:
    the gain on the mean OOD top-1 exceeds the gain on val (paired by seed)."""
    runs = ood_mean(runs)
    d4 = _welch(runs, "D4", "Synthetic data improves in-domain accuracy over real only",
                (cdsd, "largest"), (cdsd, 0.0))
    statement = "The gain from synthetic data is larger out of distribution"
    measure = (f"gain on ood.top1 - gain on val.top1, gain = {cdsd} at the largest multiplier"
               " - at 0x, paired by seed")

    def make() -> Claim:
        gains = {m: _at(runs, cdsd, "largest", m) - _at(runs, cdsd, 0.0, m)
                 for m in ("ood.top1", TOP1)}
        diff = (gains["ood.top1"] - gains[TOP1]).dropna()
        est, lo, hi = mean_interval(diff)
        return Claim("D5", PAPER, statement, measure, est, lo, hi, note=f"{len(diff)} seeds")

    return [d4, guarded(make, "D5", PAPER, statement, measure, [cdsd], runs)]


def d6_retrieval(runs: pd.DataFrame, cdsd: str = CDSD, retrieval: str = RETRIEVAL
                 ) -> list[Claim]:
    """D6: generated images beat retrieved ones at 1x."""
    return [_welch(runs, "D6", "Generating images beats retrieving them from the corpus",
                   (cdsd, 1.0), (retrieval, 1.0))]


def d7_vit(runs: pd.DataFrame, vit: str = VIT) -> list[Claim]:
    """D7: the gain holds for a ViT."""
    return [_welch(runs, "D7", "The gain from synthetic data holds for a ViT",
                   (vit, "largest"), (vit, 0.0))]


def diversify_claims(runs: pd.DataFrame) -> list[Claim]:
    """Every claim of the Diversify paper (D1-D7), in order, from the Diversify study's runs."""
    runs = runs[runs["study"] == "diversify"] if "study" in runs.columns else runs
    return [*d1_d2_scaleup(runs), *d3_ablation(runs), *d4_d5_gain(runs), *d6_retrieval(runs),
            *d7_vit(runs)]
