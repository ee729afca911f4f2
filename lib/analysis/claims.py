"""The claims of the scaling-laws paper (Fan et al., arXiv 2312.04567), computed from the study
runs table (:mod:`lib.analysis.curves`) with the verdict rule of :mod:`lib.analysis.verdicts`.

Each function returns a list of :class:`~lib.analysis.verdicts.Claim`. A claim whose runs are
absent is returned all the same, verdict "not measured" and a note naming the missing curve,
so that the report shows it. The exponents ``k`` are those of ``L = B N^-k`` fitted to the
validation loss (unless a claim says otherwise) against the run's number of training images,
with 95 % bootstrap intervals over seeds (each curve's seeds resampled independently);
accuracies are compared as differences of means over seeds +- 1.96 standard errors.

The curve and setting names are module constants (the defaults of every function's keyword
arguments): a caller whose runs are named otherwise passes its names. A synthetic curve of a
generation setting is ``synthetic/<setting>``. The Diversify claims are in
:mod:`lib.analysis.claims_diversify`; both share the helpers here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lib.analysis.curves import curve_points, k_contrast, k_difference, ood_mean
from lib.analysis.fits import CONFIDENCE, FitError, fit_curve
from lib.analysis.verdicts import Claim, mean_difference, mean_interval, not_measured

PAPER = "scaling"
REAL = "real"
CLASSNAME = "classname"  # the class-name setting: guidance 2, the UNet generator
PROMPT_SETTINGS = ("classname", "description", "hypernym", "templates", "word2sen", "cd", "sd",
                   "cdsd", "captions")
GUIDANCE_SETTINGS = {1.0: "guidance-1", 1.5: "guidance-1_5", 2.0: CLASSNAME, 3.0: "guidance-3",
                     5.0: "guidance-5"}
OTHER_GENERATOR = "dit"  # the classname setting drawn by the transformer denoiser (study.settings.dit)
MIXED = "mixed/classname"  # real + classname synthetic (1x), at several real sizes
LOSS = "val.loss"


def synthetic(setting: str) -> str:
    """The synthetic-only curve of a generation setting."""
    return f"synthetic/{setting}"


# ---- shared helpers (also used by lib.analysis.claims_diversify) -------------------------

def missing_curves(runs: pd.DataFrame, *curves: str) -> str:
    """"" when every curve has runs, else a note naming the missing ones."""
    present = set(runs["curve"]) if "curve" in runs.columns else set()
    absent = [c for c in curves if c not in present]
    return f"no runs of curve(s) {', '.join(absent)}" if absent else ""


def guarded(make: Callable[[], Claim], id: str, paper: str, statement: str, measure: str,
            curves: Sequence[str], runs: pd.DataFrame, two_sided: bool = False) -> Claim:
    """``make()``, or a "not measured" claim naming the missing curves or the reason a fit or
    an interval could not be computed (too few sizes or seeds)."""
    why = missing_curves(runs, *curves)
    if not why:
        try:
            return make()
        except (FitError, ValueError) as exc:
            why = str(exc)
        except KeyError as exc:
            why = f"the runs table has no column {exc}"
    return not_measured(id, paper, statement, measure, why, two_sided)


def k_claim(runs: pd.DataFrame, id: str, statement: str, a: str, b: str, metric: str = LOSS,
            two_sided: bool = False, bootstrap: int = 1000, seed: int = 0, note: str = "",
            paper: str = PAPER) -> Claim:
    """The claim "k(a) - k(b) > 0" (or "!= 0" when ``two_sided``) on ``metric``."""
    measure = f"k({a}) - k({b}) on {metric}"

    def make() -> Claim:
        est, lo, hi = k_difference(runs, a, b, metric, bootstrap=bootstrap, seed=seed)
        return Claim(id, paper, statement, measure, est, lo, hi, note=note, two_sided=two_sided)

    return guarded(make, id, paper, statement, measure, [a, b], runs, two_sided)


def values(runs: pd.DataFrame, curve: str, metric: str, **where: float) -> pd.Series:
    """``metric`` of a curve's runs with the given column values, indexed by seed; a
    ValueError naming the curve and the filter when there are none."""
    rows = runs[runs["curve"] == curve]
    for col, val in where.items():
        rows = rows[np.isclose(rows[col].astype(float), float(val))]
    if rows.empty:
        raise ValueError(f"no runs of curve {curve} with {where}")
    return rows.set_index("seed")[metric]


def largest(runs: pd.DataFrame, curve: str, column: str = "multiplier") -> float:
    """The largest value of ``column`` among a curve's runs."""
    return float(runs.loc[runs["curve"] == curve, column].max())


def real_size_key(size: float) -> float:
    """``real_per_class`` in size order: -1 (all real images) is the largest."""
    return float("inf") if size < 0 else float(size)


# ---- the scaling paper's claims -----------------------------------------------------------

def s1_synthetic_scales(runs: pd.DataFrame, bootstrap: int = 1000, seed: int = 0
                        ) -> list[Claim]:
    """S1: per synthetic-only curve, val loss falls with N (k > 0)."""
    curves = sorted(c for c in set(runs.get("curve", [])) if c.startswith("synthetic/"))
    statement = "Synthetic-only training: validation loss decreases with the number of images"
    if not curves:
        return [not_measured("S1", PAPER, statement, "k > 0", "no runs of any synthetic/* curve")]
    out = []
    for curve in curves:
        def make(curve: str = curve) -> Claim:
            n, y, s = curve_points(runs, curve, LOSS)
            fit = fit_curve(n, y, s, bootstrap=bootstrap, seed=seed)
            lo, hi = fit.intervals["k"]
            return Claim(f"S1/{curve}", PAPER, f"{statement} ({curve})", f"k({curve}) on {LOSS}",
                         fit.params["k"], lo, hi, note=f"R^2 {fit.r2:.2f}")
        out.append(guarded(make, f"S1/{curve}", PAPER, f"{statement} ({curve})",
                           f"k({curve}) on {LOSS}", [curve], runs))
    return out


def s2_to_s4_prompts(runs: pd.DataFrame, bootstrap: int = 1000, seed: int = 0,
                     real: str = REAL, classname: str = synthetic(CLASSNAME),
                     cdsd: str = synthetic("cdsd"), captions: str = synthetic("captions"),
                     prompt_curves: Sequence[str] = tuple(map(synthetic, PROMPT_SETTINGS))
                     ) -> list[Claim]:
    """S2 real scales better than synthetic; S3 CD+SD better than the class name; S4 captions
    of real images better than the class name (with their rank among the prompt curves)."""
    kw = {"bootstrap": bootstrap, "seed": seed}
    return [
        k_claim(runs, "S2", "Real images scale better than synthetic images for classifiers",
                real, classname, **kw),
        k_claim(runs, "S3", "Diversified prompts (CD+SD) scale better than the class name",
                cdsd, classname, **kw),
        k_claim(runs, "S4", "Captions of real images scale best in distribution",
                captions, classname, note=_rank_note(runs, captions, prompt_curves), **kw),
    ]


def _rank_note(runs: pd.DataFrame, curve: str, curves: Sequence[str]) -> str:
    """"rank r of m prompt curves by k" (1 = the largest k), or why there is no rank."""
    ks = {}
    for c in curves:
        try:
            n, y, s = curve_points(runs, c, LOSS)
            ks[c] = fit_curve(n, y, s, bootstrap=0).params["k"]
        except FitError:
            continue
    if curve not in ks:
        return f"{curve} could not be ranked (no fit)"
    order = sorted(ks, key=ks.get, reverse=True)
    return f"rank {order.index(curve) + 1} of {len(order)} prompt curves by k"


def s5_s6_guidance(runs: pd.DataFrame, quality: pd.DataFrame | None,
                   guidance: Mapping[float, str] = GUIDANCE_SETTINGS, low: float = 1.0,
                   moderate: float = 2.0, high: float = 5.0, bootstrap: int = 1000,
                   seed: int = 0) -> list[Claim]:
    """S5: low guidance is more diverse, high guidance more recognizable (paired per class);
    S6: moderate guidance scales better than strong guidance."""
    out = [
        _quality_claim(quality, "S5a", "Lower guidance gives more diverse images",
                       "diversity", guidance.get(low), guidance.get(high)),
        _quality_claim(quality, "S5b", "Higher guidance gives more recognizable images",
                       "recognizability", guidance.get(high), guidance.get(low)),
    ]
    a, b = synthetic(guidance.get(moderate, "?")), synthetic(guidance.get(high, "?"))
    out.append(k_claim(runs, "S6", f"Moderate guidance ({moderate:g}) scales better than "
                       f"strong guidance ({high:g})", a, b, bootstrap=bootstrap, seed=seed))
    return out


def quality_rows(quality: pd.DataFrame, setting: str) -> pd.DataFrame:
    """A setting's rows of the quality table indexed by ``class_id`` (``label`` accepted, as
    :func:`lib.analysis.quality.quality_table` names it)."""
    q = quality.rename(columns={"label": "class_id"}) if "class_id" not in quality else quality
    rows = q[q["setting"] == setting]
    if rows.empty:
        raise ValueError(f"the quality table has no rows of setting {setting}")
    return rows.set_index("class_id")


def _quality_claim(quality: pd.DataFrame | None, id: str, statement: str, column: str,
                   a: str | None, b: str | None) -> Claim:
    """``column(a) - column(b) > 0``, paired per class: mean of the per-class differences
    +- 1.96 standard errors over classes."""
    measure = f"{column}({a}) - {column}({b}), mean over classes"
    if quality is None or a is None or b is None:
        why = "no quality table" if quality is None else "guidance setting not named"
        return not_measured(id, PAPER, statement, measure, why)
    try:
        diff = (quality_rows(quality, a)[column] - quality_rows(quality, b)[column]).dropna()
        est, lo, hi = mean_interval(diff)
    except ValueError as exc:
        return not_measured(id, PAPER, statement, measure, str(exc))
    return Claim(id, PAPER, statement, measure, est, lo, hi, note=f"{len(diff)} classes")


def s7_generator(runs: pd.DataFrame, other: str = synthetic(OTHER_GENERATOR),
                 unet: str = synthetic(CLASSNAME), bootstrap: int = 1000, seed: int = 0
                 ) -> list[Claim]:
    """S7 (two-sided): the generator changes the scaling exponent."""
    return [k_claim(runs, "S7", "The generator changes how synthetic data scales", unet, other,
                    two_sided=True, bootstrap=bootstrap, seed=seed)]


def s8_recognizability_vs_k(quality: pd.DataFrame | None, per_class: pd.DataFrame | None,
                            curve: str = synthetic(CLASSNAME), setting: str = CLASSNAME,
                            bootstrap: int = 1000, seed: int = 0) -> list[Claim]:
    """S8: Spearman rho between a class's recognizability and its per-class k (fitted to
    the class's top-1 error); interval by a bootstrap over classes."""
    statement = "Classes with more recognizable synthetic images scale better"
    measure = f"Spearman rho(recognizability({setting}), per-class k of {curve} top-1 error)"
    if quality is None or per_class is None:
        why = "no quality table" if quality is None else "no per-class table"
        return [not_measured("S8", PAPER, statement, measure, why)]
    try:
        ks, skipped = per_class_k(per_class, curve)
        rec = quality_rows(quality, setting)["recognizability"]
        both = pd.concat([rec, ks], axis=1, join="inner").dropna()
        if len(both) < 3:
            raise ValueError(f"{len(both)} classes have both a recognizability and a k; a "
                             f"rank correlation needs at least 3")
        est, lo, hi = _spearman_bootstrap(both.iloc[:, 0], both.iloc[:, 1], bootstrap, seed)
    except ValueError as exc:
        return [not_measured("S8", PAPER, statement, measure, str(exc))]
    note = f"{len(both)} classes" + (f"; not fitted: {skipped}" if skipped else "")
    return [Claim("S8", PAPER, statement, measure, est, lo, hi, note=note)]


def per_class_k(per_class: pd.DataFrame, curve: str) -> tuple[pd.Series, str]:
    """Per class, k of the power law fitted to the top-1 error of ``curve`` (columns curve,
    class_id, n_images, seed, top1); and the classes that could not be fitted, with why."""
    rows = per_class[per_class["curve"] == curve]
    if rows.empty:
        raise ValueError(f"the per-class table has no rows of curve {curve}")
    ks, skipped = {}, []
    for cls, g in rows.groupby("class_id"):
        try:
            ks[cls] = fit_curve(g["n_images"], 1.0 - g["top1"], g["seed"], bootstrap=0
                                ).params["k"]
        except FitError as exc:
            skipped.append(f"class {cls} ({exc})")
    return pd.Series(ks, name="k", dtype=float), "; ".join(skipped)


def _spearman_bootstrap(a: pd.Series, b: pd.Series, rounds: int, seed: int
                        ) -> tuple[float, float, float]:
    """Spearman rho with a percentile interval from resampling classes (resamples whose rho is
    undefined, e.g. a constant side, are left out)."""
    x, y = a.to_numpy(float), b.to_numpy(float)
    est = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            draws.append(spearmanr(x[i], y[i]).statistic)
    if not draws:
        return est, float("nan"), float("nan")
    lo, hi = np.percentile(draws, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return est, float(lo), float(hi)


def s9_s10_scarce_real(runs: pd.DataFrame, mixed: str = MIXED, real: str = REAL,
                       metric: str = "val.top1") -> list[Claim]:
    """S9: at the smallest real size, real + synthetic beats real only; S10: that gain is
    larger at the smallest real size than at the largest (gains paired by seed)."""
    s9 = "Synthetic data helps when real data is scarce"
    s10 = "The help of synthetic data shrinks as real data grows"
    sizes = sorted(set(runs.loc[runs["curve"] == mixed, "real_per_class"]), key=real_size_key)
    m9 = f"{metric}({mixed}) - {metric}({real}) at the smallest real size"
    m10 = f"gain at the smallest real size - gain at the largest (gain = {mixed} - {real})"
    if not sizes:
        return [not_measured("S9", PAPER, s9, m9, missing_curves(runs, mixed, real)),
                not_measured("S10", PAPER, s10, m10, missing_curves(runs, mixed, real))]
    small, big = sizes[0], sizes[-1]

    def make9() -> Claim:
        est, lo, hi = mean_difference(values(runs, mixed, metric, real_per_class=small),
                                      values(runs, real, metric, real_per_class=small))
        return Claim("S9", PAPER, s9, m9, est, lo, hi, note=f"real_per_class {small:g}")

    def make10() -> Claim:
        if small == big:
            raise ValueError(f"{mixed} has one real size ({small:g}); S10 needs two")
        g_small, g_big = (_seed_gains(runs, mixed, real, metric, size) for size in (small, big))
        est, lo, hi = mean_difference(g_small, g_big)
        return Claim("S10", PAPER, s10, m10, est, lo, hi,
                     note=f"real_per_class {small:g} vs {big:g}")

    return [guarded(make9, "S9", PAPER, s9, m9, [mixed, real], runs),
            guarded(make10, "S10", PAPER, s10, m10, [mixed, real], runs)]


def _seed_gains(runs: pd.DataFrame, mixed: str, real: str, metric: str, size: float
                ) -> pd.Series:
    """Per seed, mixed minus real at one real size (seeds present on both sides)."""
    gain = (values(runs, mixed, metric, real_per_class=size)
            - values(runs, real, metric, real_per_class=size))
    return gain.dropna()


def s11_ood(runs: pd.DataFrame, classname: str = synthetic(CLASSNAME), real: str = REAL,
            bootstrap: int = 1000, seed: int = 0) -> list[Claim]:
    """S11: synthetic data scales better out of distribution than in it, relative to real
    data: (k_ood - k_val)(synthetic) - (k_ood - k_val)(real) > 0, on the mean OOD loss."""
    statement = ("Synthetic data scales better out of distribution: its OOD exponent exceeds "
                 "its val exponent by more than real data's does")
    measure = f"(k_ood - k_val)({classname}) - (k_ood - k_val)({real}), losses"
    runs = ood_mean(runs)
    terms = [(classname, "ood.loss", 1.0), (classname, LOSS, -1.0),
             (real, "ood.loss", -1.0), (real, LOSS, 1.0)]

    def make() -> Claim:
        est, lo, hi = k_contrast(runs, terms, bootstrap=bootstrap, seed=seed)
        return Claim("S11", PAPER, statement, measure, est, lo, hi)

    return [guarded(make, "S11", PAPER, statement, measure, [classname, real], runs)]


def scaling_claims(runs: pd.DataFrame, quality: pd.DataFrame | None = None,
                   per_class: pd.DataFrame | None = None,
                   guidance: Mapping[float, str] = GUIDANCE_SETTINGS, bootstrap: int = 1000,
                   seed: int = 0) -> list[Claim]:
    """Every claim of the scaling paper (S1-S11), in order, from the scaling study's runs."""
    runs = runs[runs["study"] == "scaling"] if "study" in runs.columns else runs
    kw = {"bootstrap": bootstrap, "seed": seed}
    return [*s1_synthetic_scales(runs, **kw), *s2_to_s4_prompts(runs, **kw),
            *s5_s6_guidance(runs, quality, guidance, **kw), *s7_generator(runs, **kw),
            *s8_recognizability_vs_k(quality, per_class, **kw), *s9_s10_scarce_real(runs),
            *s11_ood(runs, **kw)]
