"""The smoke pipeline end to end: `dvc repro` on a temporary copy of the repository.

The copy's params.yaml selects the ``smoke`` profile (the default is ``mini``, whose model
training takes minutes) and a two-source ablation grid.

One module-scoped run (about 2 minutes on 2 cores) checks that every stage runs
offline with the tiny models and leaves its artefacts; that a second `dvc repro` does
nothing; and that `dvc exp run -S train.<key>=<value>` re-runs only what depends on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lib import notebooks

# `dvc repro` of the smoke profile (minutes); the first test also waits for the module's run.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE_PROFILE = ("\n  profile: mini ", "\n  profile: smoke ")
GRID_SOURCES = ("\n  sources: [real, real-noaug, classname, cd, sd, cdsd]",
                "\n  sources: [real, cdsd]")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SYNTHSCALE_ROOT", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # `python` in dvc.yaml is this venv's
    env["HF_HUB_OFFLINE"] = "1"
    env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@localhost",
               GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@localhost")
    return env


def sh(*args: str, cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh clone-like copy (tracked files only) with the real data materialised."""
    dest = tmp_path_factory.mktemp("repo") / "synthscale"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = dest / "params.yaml"
    text = params.read_text()
    for old, new in ((SMOKE_PROFILE[0], SMOKE_PROFILE[1]), (GRID_SOURCES[0], GRID_SOURCES[1])):
        assert old in text, f"params.yaml no longer has {old!r}"
        text = text.replace(old, new)
    params.write_text(text)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "copy", cwd=dest)
    # The data steps of .ci/setup.
    sh(str(BIN / "python"), "-m", "lib.data", "data/digits", cwd=dest)
    sh(str(BIN / "dvc"), "commit", "-q", "-f", "data.dvc", cwd=dest)
    return dest


@pytest.fixture(scope="module")
def repro(repo: Path) -> str:
    return sh(str(BIN / "dvc"), "repro", cwd=repo)


def test_data_dvc_stays_clean_after_materialising(repo):
    out = sh(str(BIN / "dvc"), "status", "data.dvc", cwd=repo)
    assert "up to date" in out.lower()
    sh("git", "diff", "--exit-code", "data.dvc", cwd=repo)


def test_every_stage_runs_and_leaves_its_artefacts(repo, repro):
    for stage in ("zoo", "classes", "finetune", "disambiguate", "prompts", "generate", "train",
                  "clip", "analyze"):
        assert f"Running stage '{stage}'" in repro
        executed = notebooks.read(repo / "reports/notebooks" / f"{stage}.ipynb")
        assert notebooks.has_outputs(executed), stage
    prompts = pd.read_parquet(repo / "outputs/prompts/prompts.parquet")
    generated = pd.read_parquet(repo / "outputs/generate/manifest.parquet")
    assert len(prompts) > 0 and sorted(generated["id"]) == sorted(prompts["id"])
    assert list((repo / "outputs/generate").glob("*.tar"))
    assert (repo / "outputs/train/model.pt").stat().st_size > 0
    for fig in ("per_class", "clip_zero_shot"):
        assert (repo / "outputs/analyze" / f"{fig}.png").exists()
        assert (repo / "outputs/analyze" / f"{fig}.pdf").exists()
    runs = sorted(p.relative_to(repo / "outputs/sweep").as_posix()
                  for p in (repo / "outputs/sweep").glob("*/*/metrics.json"))
    assert runs == ["cdsd/full-cdsd-m0.125-aux0-s0/metrics.json",
                    "cdsd/full-cdsd-m0.125-aux1-s0/metrics.json",
                    "real/full-real-mna-aux0-s0/metrics.json"]
    headline = json.loads((repo / "metrics/headline.json").read_text())
    assert headline["sweep_runs"] == 3
    train = json.loads((repo / "metrics/train.json").read_text())
    assert 0.0 <= train["val.top1"] <= 1.0 and train["num_synthetic"] == len(generated)


def test_the_studies_run_and_the_report_judges_every_claim(repo, repro):
    """The study stages on the smoke profile: one generation per setting a run uses (an
    empty folder for the others), every run of both studies, and the report's tables."""
    assert "Running stage 'report'" in repro
    study = repo / "outputs/study"
    used = json.loads((study / "synth/classname/summary.json").read_text())
    assert used["num_images"] > 0 and list((study / "synth/classname/images").glob("*.tar"))
    unused = json.loads((study / "synth/description/summary.json").read_text())
    assert unused["num_images"] == 0 and not (study / "synth/description/images").exists()
    for which in ("scaling", "diversify"):
        runs = pd.read_parquet(study / "runs" / which / "runs.parquet")
        folders = {p.parent.name for p in (study / "runs" / which).glob("*/metrics.json")}
        assert set(runs["run"]) == folders and len(folders) > 5
    claims = pd.read_csv(study / "report/claims.csv")
    assert {"reproduced", "not reproduced", "inconclusive", "not measured"} >= set(
        claims["verdict"])
    assert len(claims) >= 10
    report = json.loads((repo / "metrics/report.json").read_text())  # flat keys
    assert sum(v for k, v in report.items() if k.startswith("verdicts.")) == len(claims)
    for fig in ("scaling", "scaleup", "ablation", "verdicts"):
        assert (study / "report" / f"{fig}.png").exists()


def test_finetune_none_writes_the_train_captions_and_no_model(repo, repro):
    """smoke has no fine-tuner (finetune.backend none): the stage writes the captions of the
    train split, no model, and metrics that say how many images it captioned."""
    out = repo / "outputs/finetune"
    captions = pd.read_parquet(out / "captions.parquet")
    images = pd.read_parquet(repo / "outputs/classes/images.parquet")
    train = images[images["split"] == "train"]
    assert sorted(captions["image_id"]) == sorted(train["image_id"])
    assert captions["caption"].str.startswith("the digit ").all()
    assert not (out / "t2i").exists()
    assert json.loads((out / "finetune.json").read_text())["model"] is None
    assert json.loads((repo / "metrics/finetune.json").read_text()) == {
        "train_images": len(train)}


def test_aux_norm_path_is_on_in_the_checkpoint(repo, repro):
    import torch

    state = torch.load(repo / "outputs/train/model.pt", map_location="cpu", weights_only=True)
    assert state["meta"]["aux_norm"] is True
    assert any(".aux." in k for k in state["state_dict"])


def test_metrics_and_plots_are_shown(repo, repro):
    out = sh(str(BIN / "dvc"), "metrics", "show", "--json", cwd=repo)
    assert "val.top1" in out and "zero_shot_top1.synthetic" in out
    out = sh(str(BIN / "dvc"), "plots", "show", "--json", cwd=repo)
    assert "train_history.csv" in out


def test_replaying_recorded_answers_rebuilds_prompts_byte_for_byte(repo, repro):
    """With the LLM cache deleted, the recorded backend alone rebuilds the same manifest."""
    manifest = repo / "outputs/prompts/prompts.parquet"
    before = manifest.read_bytes()
    shutil.rmtree(repo / "cache")
    sh(str(BIN / "dvc"), "repro", "-f", "-s", "disambiguate", cwd=repo)
    sh(str(BIN / "dvc"), "repro", "-f", "-s", "prompts", cwd=repo)
    assert manifest.read_bytes() == before
    sh(str(BIN / "dvc"), "repro", cwd=repo)


def test_training_reproduces_bit_for_bit(repo, repro):
    """A forced re-run of the train stage gives the same metrics (but for the throughput) and
    the same output bytes: nothing downstream becomes stale."""
    def results() -> dict:
        metrics = json.loads((repo / "metrics/train.json").read_text())
        assert metrics["throughput.images_per_s"] > 0  # the timings are metrics only
        return {k: v for k, v in metrics.items() if not k.startswith("throughput.")}

    metrics = results()
    curve = (repo / "metrics/train_history.csv").read_bytes()
    outputs = {p.name: p.read_bytes() for p in (repo / "outputs/train").iterdir()}
    sh(str(BIN / "dvc"), "repro", "-f", "-s", "train", cwd=repo)
    assert results() == metrics
    assert (repo / "metrics/train_history.csv").read_bytes() == curve
    assert {p.name: p.read_bytes() for p in (repo / "outputs/train").iterdir()} == outputs
    out = sh(str(BIN / "dvc"), "status", cwd=repo)  # analyze reads outputs/train: unchanged
    assert "analyze" not in out, out


def test_a_typo_in_params_fails_naming_the_key_and_keeps_the_metrics(repo, repro):
    """A typo'd value fails `dvc repro` naming the key, before anything is written: the
    metrics and curves (not cached, so not restorable) are left as they were, and after the
    fix `dvc checkout` restores the cached outputs DVC removed: nothing is left to re-run."""
    params = repo / "params.yaml"
    good = params.read_text()
    assert "\n  optimizer: adamw " in good
    metrics = {p.name: p.read_bytes() for p in (repo / "metrics").iterdir()}
    params.write_text(good.replace("\n  optimizer: adamw ", "\n  optimizer: adamww ", 1))
    try:
        proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=_env(),
                              capture_output=True, text=True)
    finally:
        params.write_text(good)
    assert proc.returncode != 0
    assert "optimizer='adamww' is not a valid choice" in proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in (repo / "metrics").iterdir()} == metrics
    sh(str(BIN / "dvc"), "checkout", cwd=repo)
    out = sh(str(BIN / "dvc"), "repro", cwd=repo)
    assert "Running stage" not in out, out


def test_second_repro_does_nothing(repo, repro):
    out = sh(str(BIN / "dvc"), "repro", cwd=repo)
    assert "Running stage" not in out
    assert "up to date" in out.lower()


def test_saving_a_notebook_without_code_change_reruns_nothing(repo, repro):
    path = repo / "notebooks/train.ipynb"
    nb = notebooks.read(path)
    nb["metadata"]["language_info"] = {"name": "python"}
    nb["cells"][2]["execution_count"] = 7
    path.write_text(json.dumps(nb, indent=2))
    out = sh(str(BIN / "dvc"), "repro", cwd=repo)
    assert "Running stage 'strip@train'" in out
    assert "Running stage 'train'" not in out
    sh("git", "checkout", "--", "notebooks/train.ipynb", cwd=repo)
    sh(str(BIN / "dvc"), "repro", cwd=repo)


def test_exp_run_reruns_only_dependent_stages(repo, repro):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "smoke run", cwd=repo)
    out = sh(str(BIN / "dvc"), "exp", "run", "-S", "train.label_smoothing=0.05", cwd=repo)
    assert "Running stage 'train'" in out and "Running stage 'analyze'" in out
    for stage in ("zoo", "classes", "finetune", "disambiguate", "prompts", "generate", "clip"):
        assert f"Running stage '{stage}'" not in out


def test_sweep_runs_do_not_depend_on_the_number_of_workers(repo, repro):
    """The sweep stage's runs (1 worker in smoke) give the same results with 2 workers."""
    out = sh(str(BIN / "python"), "-m", "lib.sweep", "--source", "cdsd", "--workers", "2",
             "--out", "outputs/sweep-check", cwd=repo)
    assert "2 runs, 0 already done" in out
    for run in ("full-cdsd-m0.125-aux0-s0", "full-cdsd-m0.125-aux1-s0"):
        assert ((repo / "outputs/sweep-check" / run / "metrics.json").read_text()
                == (repo / "outputs/sweep/cdsd" / run / "metrics.json").read_text())
    # a finished run with the same configuration is kept
    again = sh(str(BIN / "python"), "-m", "lib.sweep", "--source", "cdsd",
               "--out", "outputs/sweep-check", cwd=repo)
    assert "2 runs, 2 already done" in again
    shutil.rmtree(repo / "outputs/sweep-check")


def test_a_damaged_shard_fails_train_and_generate_repairs_it(repo, repro):
    """Issue 12, case 1, as reported: a shard truncated to half its size on a 512-byte
    boundary. `verify` names it, `train` refuses it (before: exit 0 on fewer images), and
    `generate` sets it aside and regenerates its ids byte for byte (before: "skipped" every
    id and rewrote the manifest short). Runs last: it changes outputs/generate."""
    out = repo / "outputs/generate"
    manifest = pd.read_parquet(out / "manifest.parquet")
    tar = sorted(out.glob("shard-*.tar"))[len(list(out.glob("shard-*.tar"))) // 2]
    data = tar.read_bytes()
    tar.unlink()  # a new file: never write through a link into the DVC cache
    tar.write_bytes(data[: len(data) // 2 // 512 * 512])
    marker = json.loads((out / f"{tar.name}.done").read_text())
    held = marker["ids"] + [d["id"] for d in marker["dropped"]]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "python"), "-m", *args], cwd=repo, env=_env(),
                              capture_output=True, text=True)

    check = run("lib.shards", "verify", "outputs/generate")
    assert check.returncode == 1 and f"{tar.name}: the tar's sha256 differs" in check.stdout
    train = run("lib.runner", "train")
    assert train.returncode != 0
    assert tar.name in train.stdout + train.stderr and "rerun the generate stage" in (
        train.stdout + train.stderr)
    generate = run("lib.runner", "generate")
    assert generate.returncode == 0, generate.stdout[-2000:] + generate.stderr[-2000:]
    executed = (repo / "reports/notebooks/generate.ipynb").read_text()
    assert "repaired 1 damaged shards" in executed  # printed by the stage
    metrics = json.loads((repo / "metrics/generate.json").read_text())
    assert (metrics["repaired_shards"], metrics["repaired_ids"]) == (1, len(held))
    repaired = pd.read_parquet(out / "manifest.parquet")
    assert metrics["num_images"] == len(repaired) == len(manifest)
    assert repaired.drop(columns="shard").equals(manifest.drop(columns="shard"))  # same sha256
    assert (out / f"{tar.name}.damaged").is_file()  # set aside, not deleted
    assert run("lib.shards", "verify", "outputs/generate").returncode == 0
