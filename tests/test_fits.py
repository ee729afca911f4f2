"""Scaling-law fits (lib.analysis.fits): known parameters are recovered from noisy points
within the bootstrap interval; too few sizes, non-positive values and a single seed are
refused with an error that says which."""

from __future__ import annotations

import numpy as np
import pytest

from lib.analysis.fits import FitError, check_points, fit_curve, predict

SIZES = np.array([5, 10, 20, 40, 80, 160, 320], dtype=float)


def noisy(form: str, params: dict[str, float], seeds: int = 5, noise: float = 0.03,
          rng_seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of a known curve with multiplicative log-normal noise, one set per seed."""
    rng = np.random.default_rng(rng_seed)
    n = np.tile(SIZES, seeds)
    s = np.repeat(np.arange(seeds), len(SIZES))
    y = predict(form, params, n) * np.exp(rng.normal(0, noise, len(n)))
    return n, y, s


def test_power_law_recovers_its_exponent_within_the_interval() -> None:
    n, y, s = noisy("power", {"B": 3.0, "k": 0.35})
    fit = fit_curve(n, y, s, "power", bootstrap=300)
    lo, hi = fit.intervals["k"]
    assert lo <= 0.35 <= hi and hi - lo < 0.05
    assert fit.params["k"] == pytest.approx(0.35, abs=0.02)
    assert fit.params["B"] == pytest.approx(3.0, rel=0.1)
    assert fit.r2 > 0.95 and fit.seeds == 5 and len(fit.sizes) == len(SIZES)
    assert abs(fit.holdout_error) < 0.1
    record = fit.as_record()
    assert record["k_lo"] == lo and record["form"] == "power"


def test_saturating_law_recovers_its_floor_and_exponent() -> None:
    truth = {"E": 0.4, "A": 5.0, "alpha": 0.7}
    n, y, s = noisy("saturating", truth, seeds=8, noise=0.02)
    fit = fit_curve(n, y, s, "saturating", bootstrap=200)
    for name in truth:
        lo, hi = fit.intervals[name]
        assert lo <= truth[name] <= hi, (name, fit.params, fit.intervals)
    assert fit.predict([1e6])[0] == pytest.approx(0.4, abs=0.05)  # the floor


def test_the_bootstrap_is_deterministic_and_a_steeper_curve_has_larger_k() -> None:
    n, y, s = noisy("power", {"B": 3.0, "k": 0.2})
    first = fit_curve(n, y, s, "power", bootstrap=100, seed=3)
    assert first == fit_curve(n, y, s, "power", bootstrap=100, seed=3)
    steep = fit_curve(*noisy("power", {"B": 3.0, "k": 0.5}), "power", bootstrap=100)
    assert steep.intervals["k"][0] > first.intervals["k"][1]


def test_the_holdout_error_sees_a_curve_that_bends() -> None:
    n, y, s = noisy("saturating", {"E": 0.5, "A": 4.0, "alpha": 1.0}, noise=0.005)
    power = fit_curve(n, y, s, "power", bootstrap=50)
    assert power.holdout_error < -0.1  # a straight line in log-log space undershoots a floor


@pytest.mark.parametrize(
    ("sizes", "values", "seeds", "form", "message"),
    [
        ([5, 10, 5, 10], [1, 0.8, 1.1, 0.7], [0, 0, 1, 1], "power",
         "a power fit needs at least 3 distinct sizes, got 2"),
        ([5, 10, 20] * 2, [1, 0.8, 0.6] * 2, [0, 0, 0, 1, 1, 1], "saturating",
         "a saturating fit needs at least 4 distinct sizes, got 3"),
        ([5, 10, 20] * 2, [1, 0.0, 0.6] * 2, [0, 0, 0, 1, 1, 1], "power",
         "must be positive"),
        ([5, -10, 20] * 2, [1, 0.5, 0.6] * 2, [0, 0, 0, 1, 1, 1], "power",
         "got size -10"),
        ([5, 10, 20], [1, 0.8, 0.6], [7, 7, 7], "power", "at least 2 seeds"),
        ([5, 10, 20], [1, 0.8], [0, 0, 1], "power", "differ in length"),
        ([5, 10, 20], [1, 0.8, 0.6], [0, 1, 1], "cubic", "unknown form 'cubic'"),
    ],
)
def test_unusable_points_are_refused_saying_why(sizes, values, seeds, form, message) -> None:
    with pytest.raises(FitError, match=message):
        check_points(sizes, values, seeds, form)
    with pytest.raises(FitError, match=message):
        fit_curve(sizes, values, seeds, form, bootstrap=10)
