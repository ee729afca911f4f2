"""The studies' runs as curves: summaries over seeds, scaling fits per curve, and differences
of scaling exponents with bootstrap intervals.

The input is the **study runs table**: one row per training run, with the columns ``study``
("scaling" | "diversify"), ``curve`` (e.g. "real", "synthetic/classname",
"scaleup/cdsd/aux1"), ``setting``, ``kind``, ``arch``, ``aux_norm``, ``real_per_class`` (-1 =
all), ``multiplier``, ``seed``, ``n_images`` and the metrics ``val.loss``, ``val.top1``,
``ood_<name>.loss``, ``ood_<name>.top1``. A curve is the set of runs that share a ``curve``
name; its x axis is usually ``n_images``.

The fits are those of :mod:`lib.analysis.fits` (``L = B N^-k`` by OLS in log-log space, or the
saturating form), with bootstrap intervals over seeds. A top-1 metric is fitted as its error
``1 - top1`` (the column ``fitted`` says which). A curve that cannot be fitted (too few sizes,
one seed, a zero error) gets a row whose ``error`` column holds the :class:`FitError` text,
so a table of fits never hides a curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from lib.analysis.fits import CONFIDENCE, FITTERS, FitError, check_points, fit_curve

Z95 = 1.96  # the normal quantile of a two-sided 95 % interval
DEFAULT_METRICS = ("val.loss", "val.top1", "ood.loss", "ood.top1")
EXPONENT = {"power": "k", "saturating": "alpha"}  # the scaling exponent of each form


def summarise(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: ``<metric>.mean``, ``.std`` (ddof=1), ``.n`` (non-missing values)
    and ``.half`` (the 95 % half-width ``1.96 std / sqrt(n)``; NaN for a single value)."""
    missing = [c for c in [*by, *metrics] if c not in runs.columns]
    if missing:
        raise KeyError(f"the runs table has no column(s) {missing}; it has {list(runs.columns)}")
    agg = runs.groupby(list(by), dropna=False)[list(metrics)].agg(["mean", "std", "count"])
    out = pd.DataFrame(index=agg.index)
    for m in metrics:
        out[f"{m}.mean"] = agg[(m, "mean")]
        out[f"{m}.std"] = agg[(m, "std")]
        out[f"{m}.n"] = agg[(m, "count")].astype(int)
        out[f"{m}.half"] = Z95 * out[f"{m}.std"] / np.sqrt(out[f"{m}.n"])
    return out.reset_index()


def ood_mean(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``runs`` with ``ood.loss`` and ``ood.top1``: the mean over the OOD sets
    present (``ood_<name>.<metric>`` columns; NaN-skipping). A metric with no OOD column gets
    no mean column."""
    out = runs.copy()
    for metric in ("loss", "top1"):
        cols = [c for c in runs.columns if c.startswith("ood_") and c.endswith(f".{metric}")
                and c != f"ood.{metric}"]
        if cols:
            out[f"ood.{metric}"] = runs[cols].mean(axis=1)
    return out


def fitted_values(values: pd.Series | np.ndarray, metric: str) -> tuple[np.ndarray, str]:
    """The values a fit uses for ``metric`` and what they are: a loss as is ("loss"), a top-1
    accuracy as its error ``1 - top1`` ("top1 error")."""
    v = np.asarray(values, dtype=float)
    if metric.endswith("top1"):
        return 1.0 - v, "top1 error"
    return v, "loss"


def curve_points(runs: pd.DataFrame, curve: str, metric: str, x: str = "n_images"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sizes, fitted values, seeds) of one curve's runs with a value of ``metric``; a
    :class:`FitError` when the curve or the metric is absent."""
    if metric not in runs.columns:
        raise FitError(f"the runs table has no metric {metric!r}")
    rows = runs[(runs["curve"] == curve) & runs[metric].notna()]
    if rows.empty:
        raise FitError(f"no runs of curve {curve!r} with a value of {metric!r}")
    y, _ = fitted_values(rows[metric], metric)
    return rows[x].to_numpy(dtype=float), y, rows["seed"].to_numpy()


def curve_fits(runs: pd.DataFrame, x: str = "n_images",
               metrics: Sequence[str] = DEFAULT_METRICS, curves: Iterable[str] | None = None,
               form: str = "power", bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (curve, metric): the fit's parameters with their 95 % bootstrap interval
    (``k``, ``k_lo``, ``k_hi`` for the power law; ``alpha`` ... for the saturating form), R^2,
    the holdout error, the number of sizes and seeds, ``fitted`` ("loss" or "top1 error") and
    ``error`` (empty, or why the curve could not be fitted). Every requested curve gets a row
    per requested metric, a metric absent from the table too (its ``error`` says so); the OOD
    means ``ood.loss``/``ood.top1`` are added by :func:`ood_mean` when missing."""
    curves = list(dict.fromkeys(runs["curve"])) if curves is None else list(curves)
    if any(m.startswith("ood.") and m not in runs.columns for m in metrics):
        runs = ood_mean(runs)
    rows = []
    for curve in curves:
        for metric in metrics:
            rec = {"curve": curve, "metric": metric, "fitted": fitted_values([], metric)[1],
                   "form": form, "error": ""}
            try:
                n, y, s = curve_points(runs, curve, metric, x)
                fit = fit_curve(n, y, s, form=form, bootstrap=bootstrap, seed=seed)
                rec |= fit.as_record()
            except FitError as exc:
                rec["error"] = str(exc)
            rows.append(rec)
    table = pd.DataFrame(rows)
    exp = EXPONENT.get(form, "k")
    for col in (exp, f"{exp}_lo", f"{exp}_hi", "r2", "holdout_error", "sizes", "seeds"):
        if col not in table.columns:
            table[col] = np.nan
    return table


def k_contrast(runs: pd.DataFrame, terms: Sequence[tuple[str, str, float]],
               x: str = "n_images", bootstrap: int = 1000, seed: int = 0
               ) -> tuple[float, float, float]:
    """``sum(coef * k(curve, metric))`` over ``terms`` with a 95 % bootstrap interval.

    Each curve's seeds are resampled independently of the other curves' (with replacement,
    each seed keeping all its sizes); the terms of one curve (e.g. its val and its OOD loss)
    share that curve's draw, since they are measured on the same runs. The exponent is the
    power law's ``k`` refitted by :data:`lib.analysis.fits.FITTERS`. Returns (estimate, low,
    high); a :class:`FitError` names a curve that cannot be fitted.
    """
    fitter = FITTERS["power"]
    points = {}
    for curve, metric, _ in terms:
        n, y, s = curve_points(runs, curve, metric, x)
        points[(curve, metric)] = check_points(n, y, s, "power")
    estimate = sum(c * fitter(*points[(cu, m)][:2])["k"] for cu, m, c in terms)
    seeds = {cu: np.unique(np.concatenate([points[k][2] for k in points if k[0] == cu]))
             for cu, _, _ in terms}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        picks = {cu: s[rng.integers(0, len(s), len(s))] for cu, s in seeds.items()}
        total, ok = 0.0, True
        for cu, m, c in terms:
            n, y, s = points[(cu, m)]
            idx = np.concatenate([np.flatnonzero(s == u) for u in picks[cu]])
            if len(np.unique(n[idx])) < 2:
                ok = False
                break
            total += c * fitter(n[idx], y[idx])["k"]
        if ok:
            draws.append(total)
    if not draws:
        return float(estimate), float("nan"), float("nan")
    lo, hi = np.percentile(draws, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return float(estimate), float(lo), float(hi)


def k_difference(runs: pd.DataFrame, curve_a: str, curve_b: str, metric: str,
                 x: str = "n_images", bootstrap: int = 1000, seed: int = 0
                 ) -> tuple[float, float, float]:
    """``k_a - k_b`` of the power law fitted to ``metric`` (a top-1 as its error) on two
    curves, with a 95 % bootstrap interval resampling each curve's seeds independently:
    (estimate, low, high)."""
    return k_contrast(runs, [(curve_a, metric, 1.0), (curve_b, metric, -1.0)], x=x,
                      bootstrap=bootstrap, seed=seed)


def convergence(runs: pd.DataFrame, checks: dict[str, str], metric: str = "val.loss"
                ) -> pd.DataFrame:
    """The training-length check of docs/studies.md: for each ``check`` curve (the largest
    size of the ``checks[check]`` curve trained twice as long), the mean ``metric`` of both
    at that size, the difference (longer - rule), two standard deviations over the rule's
    seeds, and ``converged``: the difference within them."""
    rows = []
    for check, base in checks.items():
        longer = runs[runs["curve"] == check]
        if longer.empty:
            continue
        size = longer.iloc[0]
        rule = runs[(runs["curve"] == base) & (runs["kind"] == size["kind"])
                    & (runs["real_per_class"] == size["real_per_class"])
                    & (runs["multiplier"] == size["multiplier"])]
        spread = 2 * float(rule[metric].std(ddof=1)) if len(rule) > 1 else float("nan")
        diff = float(longer[metric].mean() - rule[metric].mean())
        rows.append({"curve": base, "check": check, "n_images": int(size["n_images"]),
                     "steps": int(rule["steps"].iloc[0]) if "steps" in rule else None,
                     f"{metric} (rule)": float(rule[metric].mean()),
                     f"{metric} (2x steps)": float(longer[metric].mean()),
                     "difference": diff, "two_std": spread,
                     "converged": bool(abs(diff) <= spread) if spread == spread else None})
    return pd.DataFrame(rows)


EASY, POOR = 0.8, 0.5  # the grouping's thresholds, fixed before any result (docs/studies.md)


def class_groups(per_class: pd.DataFrame, curve: str) -> pd.DataFrame:
    """Each class of ``curve`` as *easy* (mean top-1 over seeds at the smallest size >=
    :data:`EASY`), *poor* (below :data:`POOR` at the largest size) or *scaling* (the
    others), from the per-class table (columns curve, class_id, n_images, seed, top1)."""
    rows = per_class[per_class["curve"] == curve]
    if rows.empty:
        return pd.DataFrame(columns=["class_id", "top1_smallest", "top1_largest", "group"])
    means = rows.groupby(["class_id", "n_images"])["top1"].mean().reset_index()
    first = means.sort_values("n_images").groupby("class_id")["top1"].first()
    last = means.sort_values("n_images").groupby("class_id")["top1"].last()
    out = pd.DataFrame({"top1_smallest": first, "top1_largest": last}).reset_index()
    out["group"] = ["easy" if a >= EASY else "poor" if b < POOR else "scaling"
                    for a, b in zip(out["top1_smallest"], out["top1_largest"])]
    return out
