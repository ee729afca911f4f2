"""Stage ``report``: the two studies' results, each paper claim beside our measurement.

Reads the runs tables of both studies (``<study>/runs/<study>/runs.parquet``) and the
generations (``<study>/synth/<setting>/images``), and writes to ``<study>/report/``:
``runs.csv`` (every run), ``fits.csv`` (the power-law fit of every curve, per metric, with
95 % bootstrap intervals over seeds), ``quality.csv`` (recognizability and diversity per
setting and class), ``claims.csv`` (each claim, our estimate, its interval and the verdict
computed by the rule of :mod:`lib.analysis.verdicts`) and the figures (PNG + PDF);
``metrics/report.json`` holds the verdict counts and the headline numbers. All logic is in
:mod:`lib.study`, :mod:`lib.analysis` and :mod:`lib.plots`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from lib import config, plots, provenance
from lib.analysis import claims, claims_diversify, curves, verdicts
from lib.config import ReportConfig
from lib.io import write_parquet
from lib.metrics import write_metrics
from lib.plots import scaling as scaling_plots
from lib.plots.images import sample_grid_figure
from lib.study import runs as study_runs
from lib.study import synth
from lib.study.quality import judge_run, quality, sample_grid
from lib.study.spec import RETRIEVAL

STUDIES = ("scaling", "diversify")
# The papers' numbers, for reference only (ImageNet's; the mini world is judged on the
# direction of each claim): as the papers' abstracts state them.
PAPER_VALUES = {
    "S10": "synthetic data helps below about 0.5 M real ImageNet images",
    "D4": "+1.2 to +2.35 top-1 on ImageNet val, across architectures (up to 6x)",
    "D5": "about +10 top-1 on ImageNet-Sketch and -R with large ViTs",
}
# What a reader must know beside a claim's number (the design, not its result).
CAVEATS = {
    "D7": "its 0x run trains half the steps of the others (an epoch is a pass over the real "
          "data, half of each mixed batch), and the convergence check covers the CNN "
          "curves only: the gain mixes the synthetic data with longer optimisation",
    "D1": "judged at the sizes that ran (study.large runs the paper's 6x)",
    "D2": "judged at the sizes that ran (study.large runs the paper's 6x)",
}
# Claims whose runs the pipeline does not make yet: listed, so the report shows them.
NOT_BUILT = (
    verdicts.not_measured(
        "S12", "scaling", "CLIP trained on synthetic image-text pairs scales almost as well as "
        "on real pairs", "k(CLIP, synthetic pairs) - k(CLIP, real pairs), zero-shot loss",
        "the CLIP-from-scratch study on corpus pairs is not built yet (the clip stage "
        "fine-tunes on labelled digits)"),
)


def read_runs(cfg: ReportConfig, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                     dict[str, str]]:
    """Both studies' runs and per-class tables, after checking their records."""
    tables, per_class, inputs = [], [], {}
    train = config.build("train", config.stage_section(params, "train"))
    study = config.build("study", config.stage_section(params, "study"))
    for which in STUDIES:
        name = f"study/{which}"
        expected = {"train": provenance.settings(train), "study": provenance.settings(study),
                    "which": which}
        inputs[name] = provenance.digest(provenance.check_folder(cfg, name, expected))
        folder = study_runs.folder(cfg, which)
        tables.append(pd.read_parquet(folder / study_runs.TABLE))
        per_class.append(pd.read_parquet(folder / study_runs.PER_CLASS))
    return (curves.ood_mean(pd.concat(tables, ignore_index=True)),
            pd.concat(per_class, ignore_index=True), inputs)


def run(cfg: ReportConfig) -> dict[str, Any]:
    params = config.load_params(cfg.root / "params.yaml")
    params = {**params, "common": {**params["common"], "profile": cfg.common.profile}}
    out = cfg.path("study") / "report"
    inputs = provenance.begin(cfg, "report", out=out)
    study = config.build("study", config.stage_section(params, "study"))
    runs, per_class, more = read_runs(cfg, params)
    inputs |= more
    used = sorted({s for s in runs["setting"] if s})
    for s in used:
        inputs[f"synth/{s}"] = provenance.digest(provenance.check_folder(
            cfg, f"synth/{s}", synth.recorded_settings(params, s)))
    out.mkdir(parents=True, exist_ok=True)
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")

    from lib.backends.clip import create_clip

    embedder = create_clip(cfg.embed_backend, model=cfg.resolve_model(cfg.embed_model),
                           pretrained=cfg.embed_pretrained, device=cfg.common.device)
    judge = judge_run(runs)
    qual = quality({s: synth.folder(cfg, s) / "images" for s in used},
                   study_runs.folder(cfg, "scaling") / judge / "model.pt", embedder, classes,
                   cfg.batch_size, cfg.common.device, cfg.common.progress)
    metrics_cols = [c for c in runs.columns if c.endswith((".loss", ".top1"))]
    fits = curves.curve_fits(runs, x="n_images", metrics=tuple(metrics_cols),
                             curves=sorted(c for c in runs["curve"].unique()
                                           if c == "real" or c.startswith("synthetic/")),
                             bootstrap=cfg.bootstrap)
    guidance = {(study.settings[s].guidance or 2.0): s for s in study.guidance_settings}
    found = [*claims.scaling_claims(runs, quality=qual, per_class=per_class,
                                    guidance=guidance, bootstrap=cfg.bootstrap),
             *claims_diversify.diversify_claims(runs), *NOT_BUILT]
    found = [dataclasses.replace(
        c, paper_value=PAPER_VALUES.get(c.id, c.paper_value),
        note="; ".join(n for n in (c.note, CAVEATS.get(c.id, "")) if n)) for c in found]
    table = verdicts.claims_table(found)
    checks = {"check/real": "real",
              f"check/{study.mixed_setting}": f"synthetic/{study.mixed_setting}"}
    converged = curves.convergence(runs, checks)
    groups = curves.class_groups(per_class, f"synthetic/{study.mixed_setting}").merge(
        qual[qual["setting"] == study.mixed_setting][["class_id", "name", "recognizability",
                                                      "diversity"]], on="class_id", how="left")
    runs.to_csv(out / "runs.csv", index=False)
    fits.to_csv(out / "fits.csv", index=False)
    qual.to_csv(out / "quality.csv", index=False)
    converged.to_csv(out / "convergence.csv", index=False)
    groups.to_csv(out / "class_groups.csv", index=False)
    table.to_csv(out / "claims.csv", index=False)
    write_parquet(out / "per_class.parquet", per_class)
    figures = make_figures(runs, fits, table, study)
    figures["per_class_gain"] = scaling_plots.per_class_gain_figure(
        per_class, [f"scaleup/{s}/aux1" for s in study.scaleup_settings])
    figures["samples"] = sample_grid_figure(sample_grid(
        {s: synth.folder(cfg, s) / "images" for s in used}, classes))
    for name, fig in figures.items():
        plots.save_figure(fig, out / name, dpi=cfg.dpi)
        plt.close(fig)
    metrics = headline(table, fits, qual)
    metrics["converged"] = {r.curve: r.converged for r in converged.itertuples()}
    write_metrics(cfg.path("metrics"), "report", metrics)
    provenance.finish(cfg, "report", inputs, out=out)
    return {"runs": runs, "fits": fits, "quality": qual, "claims": table,
            "convergence": converged, "class_groups": groups,
            "figures": figures, "metrics": metrics, "judge": judge}


def make_figures(runs: pd.DataFrame, fits: pd.DataFrame, table: pd.DataFrame,
                 study: config.StudyConfig) -> dict[str, plt.Figure]:
    """The report's figures, by file name."""
    syn = lambda names: [f"synthetic/{s}" for s in names]  # noqa: E731
    panels = {"real vs synthetic (classname)": ["real", f"synthetic/{study.mixed_setting}"],
              "prompts": syn(study.prompt_settings), "guidance": syn(study.guidance_settings),
              "generator": syn(study.generator_settings)}
    scaleup = sorted(c for c in runs["curve"].unique()
                     if c.startswith(("scaleup/", "arch/")) or c == RETRIEVAL)
    ablation = claims_diversify.ablation_table(runs, claims_diversify.ABLATION_ROWS, "val.top1")
    return {
        "scaling": scaling_plots.factor_panels(runs, fits, panels),
        "scaleup": scaling_plots.multiplier_figure(runs, scaleup),
        "ablation": scaling_plots.ablation_figure(ablation),
        "verdicts": scaling_plots.verdict_figure(table),
    }


def headline(table: pd.DataFrame, fits: pd.DataFrame, qual: pd.DataFrame) -> dict[str, Any]:
    """The numbers ``dvc metrics diff`` compares: verdict counts, k of every curve on val
    loss, and recognizability / diversity per setting."""
    counts = table["verdict"].value_counts().to_dict()
    k = fits[(fits["metric"] == "val.loss") & (fits["error"].fillna("") == "")]
    summary = qual[qual["num_images"] > 0].groupby("setting")[
        ["recognizability", "diversity"]].mean()
    return {"verdicts": {str(v): int(n) for v, n in sorted(counts.items())},
            "k_val_loss": {str(r.curve): round(float(r.k), 6) for r in k.itertuples()},
            "recognizability": summary["recognizability"].round(6).to_dict(),
            "diversity": summary["diversity"].round(6).to_dict()}
