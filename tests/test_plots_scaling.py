"""The studies' figures (lib.plots.scaling) on small synthetic tables: each returns a figure
with the expected panels, points, fitted lines and colours, and save_figure writes it."""

from __future__ import annotations

import matplotlib
import matplotlib.colors as mcolors
import pandas as pd
import pytest
from study_tables import curve_rows, point_rows

from lib import plots
from lib.analysis.claims_diversify import ablation, ablation_table
from lib.analysis.curves import curve_fits, ood_mean
from lib.analysis.verdicts import Claim, claims_table
from lib.plots.scaling import (
    VERDICT_COLOURS,
    ablation_figure,
    factor_panels,
    multiplier_figure,
    scaling_figure,
    verdict_figure,
)

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")


@pytest.fixture(scope="module")
def runs_and_fits() -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.concat([curve_rows("real", 0.4), curve_rows("synthetic/a", 0.2),
                      curve_rows("synthetic/b", 0.1), curve_rows("one seed", 0.3, seeds=1)])
    return runs, curve_fits(runs, metrics=("val.loss", "val.top1"), bootstrap=30)


def fit_lines(ax) -> list:
    return [line for line in ax.lines if line.get_gid() == "fit"]


def test_scaling_figure_draws_points_fit_and_k_in_the_legend(runs_and_fits, tmp_path) -> None:
    runs, fits = runs_and_fits
    fig = scaling_figure(runs, fits, ["real", "synthetic/a", "one seed"], "val.loss")
    (ax,) = fig.axes
    assert len(ax.containers) == 3  # error bars per curve, the unfittable one too
    assert len(fit_lines(ax)) == 2  # no line where the fit failed
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    k_real = fits.set_index(["curve", "metric"]).loc[("real", "val.loss"), "k"]
    assert labels[0].startswith(f"real: k={k_real:.3f} [")
    assert "no fit" in labels[2]
    line = fit_lines(ax)[0]
    assert line.get_ydata()[0] == pytest.approx(
        fits.set_index(["curve", "metric"]).loc[("real", "val.loss"), "B"] * 40 ** -k_real)
    paths = plots.save_figure(fig, tmp_path / "scaling")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size for p in paths)


def test_scaling_figure_draws_top1_as_its_error(runs_and_fits) -> None:
    runs, fits = runs_and_fits
    ax = scaling_figure(runs, fits, ["real"], "val.top1").axes[0]
    means = ax.containers[0].lines[0].get_ydata()
    expected = (1 - runs[runs["curve"] == "real"].groupby("n_images")["val.top1"].mean())
    assert list(means) == pytest.approx(list(expected))


def test_factor_panels_one_panel_per_factor(runs_and_fits) -> None:
    runs, fits = runs_and_fits
    panels = {"real vs synthetic": ["real", "synthetic/a"], "prompts": ["synthetic/a",
                                                                      "synthetic/b"],
              "generator": ["synthetic/b"]}
    fig = factor_panels(runs, fits, panels)
    assert [ax.get_title() for ax in fig.axes] == list(panels)
    assert [len(fit_lines(ax)) for ax in fig.axes] == [2, 2, 1]


def test_multiplier_figure_panels_lines_and_bands() -> None:
    runs = ood_mean(pd.concat([point_rows("scaleup/x", top1, multiplier=m)
                               for m, top1 in ((0.0, 0.8), (1.0, 0.84), (6.0, 0.86))]
                              + [point_rows("scaleup/y", 0.7, multiplier=m) for m in (0.0, 6.0)]))
    fig = multiplier_figure(runs, ["scaleup/x", "scaleup/y"])
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [len(line.get_xdata()) for line in ax.lines] == [3, 2]
    assert len(ax.collections) == 2 and ax.get_xscale() == "symlog"
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.8, 0.84, 0.86])
    with pytest.raises(KeyError, match="ood_mean"):
        multiplier_figure(runs.drop(columns="ood.top1"), ["scaleup/x"])


def test_ablation_figure_bars_and_deltas(tmp_path) -> None:
    runs = pd.concat([point_rows(ablation(r), t) for r, t in
                      (("naive", 0.7), ("classname", 0.75), ("cd", 0.752))])
    fig = ablation_figure(ablation_table(runs))
    (ax,) = fig.axes
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.texts] == ["+0.050*", "+0.002"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["naive class name",
                                                            "+ disambiguation", "+ CD"]
    assert all(p.stat().st_size for p in plots.save_figure(fig, tmp_path / "ablation"))


def test_verdict_figure_colours_rows_by_verdict(tmp_path) -> None:
    claims = claims_table([Claim("A", "scaling", "up", "m", 0.2, 0.1, 0.3),
                           Claim("B", "scaling", "down", "m", -0.2, -0.3, -0.1),
                           Claim("C", "diversify", "flat", "m", 0.0, -0.1, 0.1),
                           Claim("D", "diversify", "absent", "m", note="no runs")])
    fig = verdict_figure(claims)
    table = fig.axes[0].tables[0]
    cells = table.get_celld()
    for row, verdict in enumerate(claims["verdict"], start=1):
        assert mcolors.to_hex(cells[row, 3].get_facecolor()) == VERDICT_COLOURS[verdict]
        assert cells[row, 3].get_text().get_text() == verdict
    assert cells[4, 2].get_text().get_text() == "-"
    assert cells[1, 2].get_text().get_text() == "+0.200 [+0.100, +0.300]"
    assert all(p.stat().st_size for p in plots.save_figure(fig, tmp_path / "verdicts"))


def test_per_class_gain_figure_has_one_bar_per_class_and_curve(tmp_path) -> None:
    from lib.plots.scaling import per_class_gain_figure

    rows = [{"curve": c, "label": k, "name": f"c{k}", "multiplier": m, "seed": s,
             "val": 0.5 + 0.1 * m * (k + 1) / 3}
            for c in ("scaleup/a/aux1", "scaleup/b/aux1") for k in range(3)
            for m in (0.0, 1.0, 2.0) for s in (0, 1)]
    fig = per_class_gain_figure(pd.DataFrame(rows), ["scaleup/a/aux1", "scaleup/b/aux1", "x"])
    bars = fig.axes[0].patches
    assert len(bars) == 6
    assert bars[2].get_height() == pytest.approx(0.2)  # class 2 of curve a: 0.1 x 2 x 3/3
    plots.save_figure(fig, tmp_path / "gain")
    assert (tmp_path / "gain.png").exists()
