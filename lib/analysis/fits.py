"""Scaling-law fits of a loss against the amount of training data, with intervals over seeds.

Two forms, as in the scaling-laws literature:

* the pure power law ``L(N) = B * N^(-k)``: ordinary least squares of ``log L`` on ``log N``
  (statsmodels OLS), every (size, seed) measurement a point, so the seeds are replicates.
  ``k`` is the "scaling ability" of Fan et al. (the slope of the loss in log-log space);
* the saturating power law ``L(N) = E + A * N^(-alpha)``: robust nonlinear least squares
  (scipy ``least_squares`` with a soft-L1 loss, ``E, A >= 0`` and ``0 <= alpha <= 5``),
  started from several values of ``alpha`` and ``E``, the lowest cost kept.

Each fit reports its parameters, 95 % intervals from a bootstrap over seeds (whole seeds are
resampled with replacement, each keeping all its sizes, and the fit repeated; the 2.5 and
97.5 percentiles), the goodness of fit (R^2 of ``log L``; the root mean square error), and
the error of predicting the largest size from the others (fit without the largest size,
predict it, compare with the mean over seeds measured there: ``(predicted - observed) /
observed``).

A loss must be positive; top-1 accuracy is fitted as its error ``1 - top1``. Too few sizes,
a non-positive value or a single seed (no interval) fail with :class:`FitError` naming the
problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

MIN_SIZES = {"power": 3, "saturating": 4}  # distinct sizes a fit needs (one more than params)
CONFIDENCE = 0.95


class FitError(ValueError):
    """Data a fit cannot use, saying what is wrong."""


@dataclass(frozen=True)
class Fit:
    """One fitted curve: ``form`` is "power" (params B, k) or "saturating" (E, A, alpha)."""

    form: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]  # 95 % bootstrap intervals over seeds
    r2: float  # R^2 of log L
    rmse: float  # root mean square error of L
    holdout_error: float | None  # relative error predicting the largest size from the others
    sizes: tuple[float, ...]
    seeds: int
    bootstrap: int
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, n: Any) -> np.ndarray:
        return predict(self.form, self.params, np.asarray(n, dtype=float))

    def as_record(self) -> dict[str, Any]:
        """Flat values for a table or a metrics file."""
        rec: dict[str, Any] = {"form": self.form, "r2": self.r2, "rmse": self.rmse,
                               "holdout_error": self.holdout_error, "sizes": len(self.sizes),
                               "seeds": self.seeds}
        for name, value in self.params.items():
            lo, hi = self.intervals[name]
            rec |= {name: value, f"{name}_lo": lo, f"{name}_hi": hi}
        return rec


def predict(form: str, params: dict[str, float], n: np.ndarray) -> np.ndarray:
    """``L(n)`` of a fitted form."""
    if form == "power":
        return params["B"] * n ** (-params["k"])
    if form == "saturating":
        return params["E"] + params["A"] * n ** (-params["alpha"])
    raise FitError(f"unknown form {form!r}; valid: power, saturating")


def check_points(sizes: Sequence[float], values: Sequence[float], seeds: Sequence[Any],
                 form: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points as arrays, or a :class:`FitError` saying why they cannot be fitted."""
    if form not in MIN_SIZES:
        raise FitError(f"unknown form {form!r}; valid: {', '.join(MIN_SIZES)}")
    n, y, s = (np.asarray(a) for a in (sizes, values, seeds))
    if not (len(n) == len(y) == len(s)):
        raise FitError(f"sizes ({len(n)}), values ({len(y)}) and seeds ({len(s)}) differ in length")
    n, y = n.astype(float), y.astype(float)
    if not np.all(np.isfinite(n)) or not np.all(np.isfinite(y)):
        raise FitError("sizes and values must be finite")
    bad = np.flatnonzero((n <= 0) | (y <= 0))
    if len(bad):
        i = bad[0]
        raise FitError(f"sizes and values must be positive (a power law is fitted in log-log "
                       f"space); got size {n[i]:g}, value {y[i]:g} ({len(bad)} such points)")
    distinct = len(np.unique(n))
    if distinct < MIN_SIZES[form]:
        raise FitError(f"a {form} fit needs at least {MIN_SIZES[form]} distinct sizes, got "
                       f"{distinct}")
    if len(np.unique(s)) < 2:
        raise FitError("a fit needs at least 2 seeds: its interval is a bootstrap over seeds")
    return n, y, s


def _fit_power(n: np.ndarray, y: np.ndarray, start: dict[str, float] | None = None
               ) -> dict[str, float]:
    import statsmodels.api as sm

    model = sm.OLS(np.log(y), sm.add_constant(np.log(n))).fit()
    intercept, slope = model.params
    return {"B": float(np.exp(intercept)), "k": float(-slope)}


_ALPHA_STARTS = (0.1, 0.3, 0.6, 1.0, 2.0)


def _starts(n: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """Starting points (E, A, alpha) spread over the plausible range."""
    starts = []
    for alpha in _ALPHA_STARTS:
        for e_share in (0.0, 0.5, 0.9):
            e0 = e_share * float(y.min())
            starts.append([e0, max(float(y.max()) - e0, 1e-6) * float(n.min()) ** alpha, alpha])
    return starts


def _fit_saturating(n: np.ndarray, y: np.ndarray, start: dict[str, float] | None = None
                    ) -> dict[str, float]:
    """The lowest-cost robust fit from several starts (or from ``start`` alone: the
    bootstrap refits start from the full data's solution)."""
    def residuals(p: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * n ** (-p[2]) - y

    starts = _starts(n, y) if start is None else [[start["E"], start["A"], start["alpha"]]]
    best = None
    for x0 in starts:
        fit = least_squares(residuals, x0=x0, loss="soft_l1",
                            f_scale=max(float(np.std(y)), 1e-6),
                            bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, 5.0]))
        if best is None or fit.cost < best.cost:
            best = fit
    e, a, alpha = best.x
    return {"E": float(e), "A": float(a), "alpha": float(alpha)}


FITTERS = {"power": _fit_power, "saturating": _fit_saturating}


def fit_curve(sizes: Sequence[float], values: Sequence[float], seeds: Sequence[Any],
              form: str = "power", bootstrap: int = 1000, seed: int = 0) -> Fit:
    """Fit ``form`` to (size, value, seed) measurements, with bootstrap intervals over seeds.

    ``bootstrap`` resamples of the seeds (with replacement, each keeping all its sizes) give
    the 95 % intervals; the resampling is drawn from ``numpy.random.default_rng(seed)``.
    """
    n, y, s = check_points(sizes, values, seeds, form)
    fitter = FITTERS[form]
    params = fitter(n, y)
    pred = predict(form, params, n)
    ss_res = float(np.sum((np.log(y) - np.log(pred)) ** 2))
    ss_tot = float(np.sum((np.log(y) - np.log(y).mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    rmse = float(np.sqrt(np.mean((y - pred) ** 2)))
    intervals = _bootstrap(n, y, s, fitter, params, bootstrap, seed)
    return Fit(form=form, params=params, intervals=intervals, r2=r2, rmse=rmse,
               holdout_error=_holdout_error(n, y, form), sizes=tuple(np.unique(n)),
               seeds=len(np.unique(s)), bootstrap=bootstrap)


def _bootstrap(n: np.ndarray, y: np.ndarray, s: np.ndarray, fitter: Any,
               params: dict[str, float], rounds: int, seed: int
               ) -> dict[str, tuple[float, float]]:
    names = list(params)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(s == u) for u in np.unique(s)]
    draws = []
    for _ in range(rounds):
        pick = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        if len(np.unique(n[pick])) < 2:
            continue
        refit = fitter(n[pick], y[pick], start=params)
        draws.append([refit[k] for k in names])
    if not draws:
        return {k: (float("nan"), float("nan")) for k in names}
    lo, hi = np.percentile(np.asarray(draws), [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)],
                           axis=0)
    return {k: (float(a), float(b)) for k, a, b in zip(names, lo, hi)}


def _holdout_error(n: np.ndarray, y: np.ndarray, form: str) -> float | None:
    """Relative error of predicting the largest size from a fit to the others (None when
    the others are too few for the form)."""
    largest = n.max()
    rest = n < largest
    if len(np.unique(n[rest])) < MIN_SIZES[form]:
        return None
    params = FITTERS[form](n[rest], y[rest])
    observed = float(y[~rest].mean())
    return float((predict(form, params, np.array([largest]))[0] - observed) / observed)
