"""Curves of the study runs table (lib.analysis.curves): summaries over seeds, fits per curve
with the top-1 fitted as its error and unfittable curves reported (not raised), the OOD mean,
and the bootstrap interval of a difference of exponents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from study_tables import curve_rows, point_rows

from lib.analysis.curves import (
    class_groups,
    convergence,
    curve_fits,
    k_contrast,
    k_difference,
    ood_mean,
    summarise,
)


def test_summarise_gives_mean_std_n_and_half_width() -> None:
    runs = pd.concat([point_rows("a", 0.8, spread=0.01), point_rows("b", 0.5, seeds=2)])
    s = summarise(runs, ["curve"], ["val.top1"]).set_index("curve")
    assert s.loc["a", "val.top1.mean"] == pytest.approx(0.8)
    assert s.loc["a", "val.top1.std"] == pytest.approx(0.01)
    assert s.loc["a", "val.top1.n"] == 3 and s.loc["b", "val.top1.n"] == 2
    assert s.loc["a", "val.top1.half"] == pytest.approx(1.96 * 0.01 / np.sqrt(3))
    with pytest.raises(KeyError, match="no column"):
        summarise(runs, ["curve"], ["test.top1"])


def test_summarise_skips_missing_values_in_n() -> None:
    runs = point_rows("a", 0.8)
    runs.loc[0, "val.top1"] = np.nan
    s = summarise(runs, ["curve"], ["val.top1"]).iloc[0]
    assert s["val.top1.n"] == 2


def test_ood_mean_averages_the_sets_present() -> None:
    runs = ood_mean(point_rows("a", 0.8, ood_top1=0.6))
    assert runs["ood.top1"].tolist() == pytest.approx([0.6] * 3)
    assert "ood.loss" not in runs.columns  # no ood_*.loss column: no mean


def test_curve_fits_recovers_k_and_fits_top1_as_error() -> None:
    runs = pd.concat([curve_rows("real", 0.4), curve_rows("synthetic/a", 0.15)])
    fits = curve_fits(runs, bootstrap=200).set_index(["curve", "metric"])
    assert set(fits.index.get_level_values("metric")) == {"val.loss", "val.top1", "ood.loss",
                                                          "ood.top1"}
    for curve, k in (("real", 0.4), ("synthetic/a", 0.15)):
        row = fits.loc[(curve, "val.loss")]
        assert row["k_lo"] <= k <= row["k_hi"] and row["error"] == ""
        assert row["fitted"] == "loss" and row["sizes"] == 5 and row["seeds"] == 3
        top1 = fits.loc[(curve, "val.top1")]
        assert top1["fitted"] == "top1 error" and top1["k"] == pytest.approx(k, abs=0.03)
    assert fits.loc[("real", "val.loss"), "r2"] > 0.95


def test_curve_fits_reports_unfittable_curves_instead_of_raising() -> None:
    runs = pd.concat([curve_rows("one seed", 0.3, seeds=1),
                      curve_rows("two sizes", 0.3, sizes=(10, 20)),
                      curve_rows("ok", 0.3)])
    fits = curve_fits(runs, metrics=("val.loss",), curves=["one seed", "two sizes", "ok",
                                                            "absent"], bootstrap=50)
    err = dict(zip(fits["curve"], fits["error"]))
    assert "at least 2 seeds" in err["one seed"]
    assert "at least 3 distinct sizes" in err["two sizes"]
    assert "no runs of curve 'absent'" in err["absent"]
    assert err["ok"] == "" and np.isnan(fits.set_index("curve").loc["one seed", "k"])
    absent = curve_fits(runs, metrics=("test.loss",), curves=["ok"], bootstrap=5)
    assert absent["error"].tolist() == ["the runs table has no metric 'test.loss'"]


def test_curve_fits_saturating_form_reports_alpha() -> None:
    fits = curve_fits(curve_rows("a", 0.3), metrics=("val.loss",), form="saturating",
                      bootstrap=20)
    assert {"alpha", "alpha_lo", "alpha_hi", "E"} <= set(fits.columns)


def test_k_difference_interval_contains_the_truth_and_excludes_zero() -> None:
    runs = pd.concat([curve_rows("a", 0.4, rng_seed=1), curve_rows("b", 0.2, rng_seed=2)])
    est, lo, hi = k_difference(runs, "a", "b", "val.loss", bootstrap=300)
    assert est == pytest.approx(0.2, abs=0.03)
    assert 0 < lo <= 0.2 <= hi
    same = pd.concat([curve_rows("a", 0.3, rng_seed=1, noise=0.1),
                      curve_rows("b", 0.3, rng_seed=2, noise=0.1)])
    _, lo, hi = k_difference(same, "a", "b", "val.loss", bootstrap=300)
    assert lo < 0 < hi


def test_k_difference_resamples_each_curve_independently() -> None:
    """Curves with different seed sets (a: seeds 0-2, b: seeds 0-4) are both resampled: the
    interval is wider than one curve's alone would make it."""
    runs = pd.concat([curve_rows("a", 0.4, noise=0.08), curve_rows("b", 0.2, seeds=5,
                                                                  noise=0.08, rng_seed=3)])
    _, lo, hi = k_difference(runs, "a", "b", "val.loss", bootstrap=300)
    _, lo_a, hi_a = k_contrast(runs, [("a", "val.loss", 1.0)], bootstrap=300)
    assert hi - lo > hi_a - lo_a


def test_k_difference_names_a_missing_curve() -> None:
    from lib.analysis.fits import FitError

    with pytest.raises(FitError, match="no runs of curve 'b'"):
        k_difference(curve_rows("a", 0.3), "a", "b", "val.loss", bootstrap=10)


def test_the_convergence_check_compares_twice_the_steps_with_the_seed_spread() -> None:
    base = {"kind": "real", "real_per_class": -1, "multiplier": 0.0, "n_images": 1344,
            "steps": 168}
    rows = [{**base, "curve": "real", "seed": s, "val.loss": v}
            for s, v in enumerate([0.30, 0.32, 0.34])]
    rows += [{**base, "curve": "check/real", "seed": s, "val.loss": v, "steps": 336}
             for s, v in enumerate([0.31, 0.33, 0.35])]
    table = convergence(pd.DataFrame(rows), {"check/real": "real"})
    (row,) = table.to_dict("records")
    assert row["difference"] == pytest.approx(0.01) and row["two_std"] == pytest.approx(0.04)
    assert row["converged"] and row["steps"] == 168
    rows = [r | {"val.loss": r["val.loss"] - 0.1} if r["curve"] == "check/real" else r
            for r in rows]
    assert not convergence(pd.DataFrame(rows), {"check/real": "real"})["converged"].item()


def test_classes_are_grouped_by_their_curve() -> None:
    top1 = {"a": (0.9, 0.95), "b": (0.3, 0.9), "c": (0.1, 0.4)}  # easy, scaling, poor
    rows = [{"curve": "synthetic/x", "class_id": c, "n_images": n, "seed": s, "top1": v}
            for c, (lo, hi) in top1.items() for s in (0, 1)
            for n, v in ((40, lo), (670, hi))]
    groups = class_groups(pd.DataFrame(rows), "synthetic/x").set_index("class_id")["group"]
    assert groups.to_dict() == {"a": "easy", "b": "scaling", "c": "poor"}
    assert class_groups(pd.DataFrame(rows), "synthetic/y").empty
