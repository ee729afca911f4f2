"""Stages check where their inputs came from (lib.provenance): a stage refuses the outputs of
another profile, of other settings than params.yaml's, of an older upstream, or of no
finished run, saying what to run; it accepts its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lib import config, provenance
from lib.provenance import ProvenanceError
from lib.stages import classes, train

ROOT = Path(__file__).resolve().parents[1]


def _set_params(root: Path, old: str, new: str) -> None:
    path = root / "params.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _fake_generate(root: Path) -> None:
    """A finished generate record of params.yaml's settings (train reads no image of it when
    use_synthetic is off)."""
    provenance.finish(config.load("generate"), "generate", {})


def test_upstream_table_is_dvc_yamls_dependencies():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, reads in provenance.UPSTREAM.items():
        deps = stages[stage]["deps"] if stage != "sweep" else stages["sweep"]["deps"]
        dirs = {m.group(1) for d in deps if (m := re.fullmatch(r"\$\{common\.dirs\.(\w+)}", d))}
        assert dirs - {"data"} == set(reads), stage


def test_a_stage_refuses_another_profiles_inputs_and_accepts_its_own(tiny_project):
    classes.run(config.load("classes"))  # the smoke profile's
    _fake_generate(tiny_project)
    smoke = config.load("train")
    inputs = provenance.begin(smoke, "train")  # its own: accepted
    assert set(inputs) == {"classes", "generate"}

    _set_params(tiny_project, "\n  profile: smoke ", "\n  profile: mini ")
    with pytest.raises(ProvenanceError) as err:
        train.run(config.load("train"))  # what the issue saw: a mini train on smoke inputs
    assert str(err.value) == (
        "outputs/classes was made by profile 'smoke' (stage `classes`); this run uses profile "
        "'mini': run `dvc repro` (or `python -m lib.runner classes`) first")
    assert not (tiny_project / "outputs/train").exists()  # refused before anything is written


def test_a_stage_refuses_other_settings_older_upstreams_and_unfinished_runs(tiny_project):
    classes.run(config.load("classes"))
    _fake_generate(tiny_project)
    _set_params(tiny_project, "\n  val_fraction: 0.25\n", "\n  val_fraction: 0.3\n")
    cfg = config.load("train")
    with pytest.raises(ProvenanceError, match=re.escape(
            "outputs/classes was made with other settings than params.yaml's (profile 'smoke'): "
            "val_fraction: 0.25 there, 0.3 in params.yaml: run `dvc repro` (or `python -m "
            "lib.runner classes`) first")):
        provenance.begin(cfg, "train")
    classes.run(config.load("classes"))
    inputs = provenance.begin(cfg, "train")

    # train finished; then classes is rebuilt (another image): train's outputs are stale
    provenance.finish(cfg, "train", inputs)
    image = next((tiny_project / "data/digits/0").iterdir())
    image.write_bytes((tiny_project / "data/digits/1/img-00.png").read_bytes())
    classes.run(config.load("classes"))
    with pytest.raises(ProvenanceError, match=re.escape(
            "outputs/train was made from other outputs of `classes` than outputs/classes holds "
            "now: run `dvc repro` (or `python -m lib.runner train`) first")):
        provenance.check_folder(cfg, "train", provenance.settings(cfg))

    (tiny_project / "outputs/generate" / provenance.RECORD).unlink()  # e.g. interrupted
    with pytest.raises(ProvenanceError, match=re.escape(
            "outputs/generate has no provenance.json: it is not a finished run of `generate`")):
        provenance.begin(cfg, "train")


def test_the_zoo_is_checked_only_for_models_in_its_folder(tiny_project):
    generate = config.load("generate")  # smoke: model ./outputs/zoo/t2i
    assert provenance.uses_zoo(generate)
    hub = config.build("generate", {**config.stage_section(config.load_params(), "generate"),
                                    "model": "org/some-model"})
    assert not provenance.uses_zoo(hub)


def test_records_are_deterministic_and_hold_no_machine_path(tiny_project):
    classes.run(config.load("classes"))
    record = (tiny_project / "outputs/classes" / provenance.RECORD).read_text()
    classes.run(config.load("classes"))
    assert (tiny_project / "outputs/classes" / provenance.RECORD).read_text() == record
    assert str(tiny_project) not in record and "device" not in record
