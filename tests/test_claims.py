"""The verdict rule (lib.analysis.verdicts) and the claims of both papers (lib.analysis.claims,
lib.analysis.claims_diversify) on small synthetic runs tables whose answer is known: each
claim gets the verdict its built-in difference implies, and a claim whose curve is absent is
listed as "not measured" with a note naming the curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from study_tables import curve_rows, point_rows

from lib.analysis import claims as sc
from lib.analysis import claims_diversify as dc
from lib.analysis.verdicts import (
    Claim,
    claims_table,
    mean_difference,
    mean_interval,
    verdict,
    verdict_two_sided,
)

B = 200  # bootstrap rounds: enough for the test's clear-cut intervals


# ---- the rule --------------------------------------------------------------------------

@pytest.mark.parametrize(("low", "high", "one", "two"), [
    (0.1, 0.3, "reproduced", "reproduced"),
    (-0.3, -0.1, "not reproduced", "reproduced"),
    (-0.1, 0.2, "inconclusive", "inconclusive"),
    (0.0, 0.2, "inconclusive", "inconclusive"),  # an interval touching zero contains it
    (None, 0.2, "not measured", "not measured"),
    (float("nan"), 0.2, "not measured", "not measured"),
])
def test_verdict_rules(low, high, one, two) -> None:
    assert verdict(low, high) == one
    assert verdict_two_sided(low, high) == two


def test_claim_computes_its_verdict_and_cannot_be_given_one() -> None:
    c = Claim("X", "scaling", "x beats y", "x - y", 0.2, 0.1, 0.3)
    assert c.verdict == "reproduced"
    assert Claim("X", "scaling", "s", "m", -0.2, -0.3, -0.1, two_sided=True).verdict == \
        "reproduced"
    with pytest.raises(TypeError):
        Claim("X", "scaling", "s", "m", 0.2, 0.1, 0.3, verdict="not reproduced")
    table = claims_table([c, Claim("Y", "diversify", "s", "m", note="no runs")])
    assert table["verdict"].tolist() == ["reproduced", "not measured"]
    assert list(table.columns[:10]) == ["id", "paper", "statement", "paper_value", "measure",
                                        "estimate", "low", "high", "verdict", "note"]


def test_mean_difference_is_welch_and_nan_safe() -> None:
    a, b = [1.0, 2.0, 3.0, np.nan], [0.0, 0.0, 1.0, 1.0]
    est, lo, hi = mean_difference(a, b)
    se = np.sqrt(1.0 / 3 + (1 / 3) / 4)
    assert est == pytest.approx(1.5)
    assert (lo, hi) == pytest.approx((1.5 - 1.96 * se, 1.5 + 1.96 * se))
    with pytest.raises(ValueError, match="side b has 1 finite value"):
        mean_difference(a, [1.0, np.nan])
    est, lo, hi = mean_interval([0.1, 0.3])
    assert est == pytest.approx(0.2) and hi - est == pytest.approx(1.96 * 0.1)


# ---- the scaling paper -------------------------------------------------------------------

def scaling_runs() -> pd.DataFrame:
    """Curves with known exponents (see each claim's expected verdict below)."""
    parts = [curve_rows("real", 0.4, k_ood=0.2, rng_seed=1),
             curve_rows("synthetic/classname", 0.15, k_ood=0.25, rng_seed=2),
             curve_rows("synthetic/cdsd", 0.25, rng_seed=3),
             curve_rows("synthetic/captions", 0.35, rng_seed=4),
             curve_rows("synthetic/description", 0.2, rng_seed=5),
             curve_rows("synthetic/guidance-5", 0.05, rng_seed=6),
             curve_rows("synthetic/dit", 0.3, rng_seed=7)]
    runs = pd.concat(parts, ignore_index=True)
    real = runs["curve"] == "real"
    runs.loc[real, "real_per_class"] = runs.loc[real, "n_images"] // 10  # 4 ... 64
    top1 = {4: 1 - 0.8 * 40 ** -0.4, 64: 1 - 0.8 * 640 ** -0.4}
    mixed = [point_rows("mixed/classname", top1[4] + 0.05, study="scaling", real_per_class=4),
             point_rows("mixed/classname", top1[64] + 0.002, study="scaling",
                        real_per_class=64)]
    return pd.concat([runs, *mixed], ignore_index=True)


def quality_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for setting, div, rec in (("guidance-1", 0.5, 0.6), ("classname", 0.4, 0.7),
                              ("guidance-5", 0.3, 0.9)):
        for c in range(10):
            rows.append({"setting": setting, "class_id": c,
                         "diversity": div + rng.normal(0, 0.02),
                         "recognizability": rec + 0.02 * c + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


def per_class_table() -> pd.DataFrame:
    """Per-class top-1 of the classname curve: class c's error scales with k = 0.1 + 0.03 c
    (so k rises with class id, as recognizability does)."""
    rng = np.random.default_rng(1)
    return pd.DataFrame([{"curve": "synthetic/classname", "class_id": c, "n_images": n,
                          "seed": s, "top1": 1 - 0.7 * n ** -(0.1 + 0.03 * c)
                          * np.exp(rng.normal(0, 0.02))}
                         for c in range(10) for s in range(3) for n in (40, 80, 160, 320)])


def by_id(claims: list[Claim]) -> dict[str, Claim]:
    return {c.id: c for c in claims}


def test_scaling_claims_get_the_verdicts_their_data_imply() -> None:
    got = by_id(sc.scaling_claims(scaling_runs(), quality_table(), per_class_table(),
                                  bootstrap=B))
    expected = {"S2": "reproduced", "S3": "reproduced", "S4": "reproduced",
                "S5a": "reproduced", "S5b": "reproduced", "S6": "reproduced",
                "S7": "reproduced", "S8": "reproduced", "S9": "reproduced",
                "S10": "reproduced", "S11": "reproduced"}
    assert {k: got[k].verdict for k in expected} == expected
    s1 = [c for c in got if c.startswith("S1/")]
    assert len(s1) == 6 and all(got[c].verdict == "reproduced" for c in s1)
    assert got["S2"].estimate == pytest.approx(0.25, abs=0.03)
    assert got["S4"].note == "rank 1 of 4 prompt curves by k"  # captions, cdsd, description, classname
    assert got["S11"].estimate == pytest.approx(0.3, abs=0.05)
    assert got["S7"].two_sided and got["S8"].note == "10 classes"


def test_scaling_claims_that_fail_their_direction() -> None:
    runs = scaling_runs()
    swap = {"synthetic/cdsd": "synthetic/classname", "synthetic/classname": "synthetic/cdsd"}
    flipped = runs.assign(curve=runs["curve"].map(lambda c: swap.get(c, c)))
    got = by_id(sc.s2_to_s4_prompts(flipped, bootstrap=B))
    assert got["S3"].verdict == "not reproduced" and got["S3"].estimate < 0
    same = runs[runs["curve"] != "synthetic/dit"].copy()
    twin = same[same["curve"] == "synthetic/classname"].assign(curve="synthetic/dit")
    s7 = sc.s7_generator(pd.concat([same, twin]), bootstrap=B)[0]
    assert s7.estimate == pytest.approx(0.0) and s7.verdict == "inconclusive"


def test_absent_curves_are_listed_as_not_measured_with_the_curve_named() -> None:
    runs = scaling_runs()
    runs = runs[~runs["curve"].isin(["synthetic/captions", "mixed/classname"])]
    got = by_id(sc.scaling_claims(runs, bootstrap=20))
    assert got["S4"].verdict == "not measured"
    assert "synthetic/captions" in got["S4"].note
    assert got["S9"].verdict == got["S10"].verdict == "not measured"
    assert "mixed/classname" in got["S9"].note
    assert got["S5a"].note == "no quality table" and got["S8"].verdict == "not measured"
    empty = sc.scaling_claims(runs.iloc[:0], bootstrap=5)
    assert {c.verdict for c in empty} == {"not measured"} and len(empty) == 12


def test_a_curve_with_one_seed_is_not_measured_with_the_reason() -> None:
    runs = scaling_runs()
    runs = runs[(runs["curve"] != "synthetic/cdsd") | (runs["seed"] == 0)]
    s3 = by_id(sc.s2_to_s4_prompts(runs, bootstrap=20))["S3"]
    assert s3.verdict == "not measured" and "at least 2 seeds" in s3.note


# ---- the Diversify paper -----------------------------------------------------------------

def diversify_runs() -> pd.DataFrame:
    def points(curve: str, by_mult: dict[float, float], ood: dict[float, float] | None = None
               ) -> list[pd.DataFrame]:
        return [point_rows(curve, top1, multiplier=m,
                           ood_top1=None if ood is None else ood[m])
                for m, top1 in by_mult.items()]

    rows = [*points(dc.FINETUNED, {0.0: 0.8, 1.0: 0.85, 6.0: 0.8}),
            *points(dc.CDSD, {0.0: 0.8, 1.0: 0.84, 6.0: 0.86}, {0.0: 0.5, 1.0: 0.55, 6.0: 0.6}),
            *points(dc.RETRIEVAL, {1.0: 0.82}),
            *points(dc.VIT, {0.0: 0.7, 6.0: 0.69})]
    for row, top1 in zip(dc.ABLATION_ROWS, (0.70, 0.75, 0.77, 0.7705, 0.79, 0.805)):
        rows.append(point_rows(dc.ablation(row), top1))
    return pd.concat(rows, ignore_index=True)


def test_diversify_claims_get_the_verdicts_their_data_imply() -> None:
    got = by_id(dc.diversify_claims(diversify_runs()))
    expected = {"D1": "reproduced", "D2": "reproduced", "D3/classname": "reproduced",
                "D3/cd": "reproduced", "D3/sd": "inconclusive", "D3/cdsd": "reproduced",
                "D3/cdsd_aux": "reproduced", "D4": "reproduced", "D5": "reproduced",
                "D6": "reproduced", "D7": "not reproduced"}
    assert {k: c.verdict for k, c in got.items()} == expected
    assert got["D4"].estimate == pytest.approx(0.06)
    assert got["D5"].estimate == pytest.approx(0.04)  # 0.1 on OOD - 0.06 on val
    assert got["D3/classname"].note == "delta exceeds 2 std of the row above"
    assert got["D3/sd"].note == "delta within 2 std of the row above"
    assert got["D1"].note == "largest multiplier 6x"


def test_ablation_table_rows_deltas_and_spread() -> None:
    table = dc.ablation_table(diversify_runs())
    assert table["row"].tolist() == list(dc.ABLATION_ROWS)
    assert np.isnan(table["delta"].iloc[0])
    assert table["delta"].iloc[1] == pytest.approx(0.05)
    assert table["exceeds_2std"].tolist()[1:] == [True, True, False, True, True]


def test_diversify_claims_without_runs_are_not_measured() -> None:
    runs = diversify_runs()
    runs = runs[~runs["curve"].isin([dc.RETRIEVAL, dc.ablation("sd")])]
    got = by_id(dc.diversify_claims(runs))
    assert got["D6"].verdict == "not measured" and dc.RETRIEVAL in got["D6"].note
    assert got["D3/sd"].verdict == got["D3/cdsd"].verdict == "not measured"
    assert "ablation/sd" in got["D3/cdsd"].note
    assert got["D2"].verdict == "reproduced"
    only_1x = runs[(runs["curve"] != dc.CDSD) | (runs["multiplier"] <= 1.0)]
    d2 = by_id(dc.d1_d2_scaleup(only_1x))["D2"]
    assert d2.verdict == "not measured" and "no multiplier other than 1x" in d2.note
    no_ood = by_id(dc.d4_d5_gain(runs.drop(columns=["ood_noise.top1", "ood_rotate.top1"])))
    assert no_ood["D5"].verdict == "not measured" and "ood.top1" in no_ood["D5"].note


def test_all_real_images_count_as_the_largest_real_size() -> None:
    """real_per_class -1 (all real images) is the largest size, not the smallest."""
    runs = scaling_runs().replace({"real_per_class": {64: -1}})
    got = by_id(sc.s9_s10_scarce_real(runs))
    assert got["S9"].note == "real_per_class 4" and got["S9"].verdict == "reproduced"
    assert got["S10"].note == "real_per_class 4 vs -1"
