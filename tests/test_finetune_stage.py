"""The finetune stage on a tiny project: it fine-tunes on the real train split only, writes a
model folder the text-to-image backend serves, records where its inputs came from, refuses
another profile's inputs, and with backend ``none`` writes the captions alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lib import config, data, finetuning, provenance
from lib.backends.finetune_mini import MiniFinetuner
from lib.backends.t2i import create_t2i
from lib.provenance import ProvenanceError
from lib.stages import classes, finetune

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

FAST = {"backend": "mini", "steps": 4, "batch_size": 8, "checkpoint_every": 2,
        "samples_per_class": 2, "sample_steps": 2}


@pytest.fixture
def mini_zoo(tiny_project):
    """A tiny mini text-to-image model where the profile's zoo keeps its t2i, with a finished
    zoo record (the smoke profile's settings: the stage checks the record, not the build)."""
    from lib.mini.corpus.render import render
    from lib.mini.t2i_pretraining import train_mini_t2i

    corpus = render(range(16), seed=0)
    train_mini_t2i(corpus.images, corpus.captions, tiny_project / "outputs/zoo/t2i", steps=2,
                   batch_size=8, block_out_channels=(16, 32), attention_heads=2,
                   progress=False)
    provenance.finish(config.load("zoo"), "zoo", {})
    return tiny_project / "outputs/zoo/t2i"


def _config(**values) -> config.FinetuneConfig:
    section = config.stage_section(config.load_params(), "finetune")
    return config.build("finetune", {**section, **values})


def test_the_stage_finetunes_on_the_train_split_only(tiny_project, mini_zoo, monkeypatch):
    made = classes.run(config.load("classes"))
    images = made["images"]
    seen = {}
    real = MiniFinetuner.finetune

    def recording(self, pixels, captions, folder, **settings):
        seen.update(pixels=pixels, captions=captions)
        return real(self, pixels, captions, folder, **settings)

    monkeypatch.setattr(MiniFinetuner, "finetune", recording)
    result = finetune.run(_config(**FAST))

    train, val = images[images["split"] == "train"], images[images["split"] == "val"]
    assert len(train) and len(val)  # the tiny project has both splits
    as_bytes = {im.tobytes() for im in seen["pixels"]}
    assert len(seen["pixels"]) == len(train)
    assert as_bytes == {im.tobytes() for im in data.load_images(list(train["path"]),
                                                                 tiny_project)}
    assert not as_bytes & {im.tobytes() for im in data.load_images(list(val["path"]),
                                                                    tiny_project)}
    written = pd.read_parquet(tiny_project / "outputs/finetune/captions.parquet")
    assert sorted(written["image_id"]) == sorted(train["image_id"])
    assert set(seen["captions"]) == {"the digit 0", "the digit 1"}  # the project's class names
    assert result["metrics"]["train_images"] == len(train)


def test_the_model_is_served_and_the_run_recorded(tiny_project, mini_zoo):
    classes.run(config.load("classes"))
    result = finetune.run(_config(**FAST))
    out = tiny_project / "outputs/finetune"
    info = json.loads((out / "finetune.json").read_text())
    assert info == {"backend": "mini", "base_model": "./outputs/zoo/t2i",
                    "model": "outputs/finetune/t2i", "t2i_backend": "mini",
                    "train_images": len(result["train_set"])}
    metrics = json.loads((tiny_project / "metrics/finetune.json").read_text())
    assert metrics["steps"] == 4 and metrics["loss_start"] > 0 and metrics["final_loss"] > 0
    # The project's PNGs are random bytes, not the 17 grey levels: rounded, and counted.
    assert metrics["off_grid_images"] == metrics["train_images"]
    assert len(result["losses"]) == 4
    samples = result["samples"]
    assert samples.models == ["off-the-shelf", "fine-tuned"]
    assert samples.images.shape == (2, 2, 2, 8, 8)  # classes, models, seeds, H, W
    t2i = create_t2i("mini", model=str(out / "t2i"))
    images, _ = t2i.generate(["the digit 1"], None, [0], steps=2, guidance_scale=2.0,
                             height=8, width=8)
    assert images[0].size == (8, 8)
    record = provenance.read(out)
    assert record["profile"] == "smoke" and set(record["inputs"]) == {"classes", "zoo"}
    assert record["settings"]["backend"] == "mini" and str(tiny_project) not in json.dumps(record)
    assert not (out / "t2i.ckpt").exists()


def test_backend_none_writes_the_captions_only(tiny_project):
    classes.run(config.load("classes"))
    provenance.finish(config.load("zoo"), "zoo", {})  # its base model is not even read
    stale = tiny_project / "outputs/finetune/t2i"
    stale.mkdir(parents=True)  # a model of an earlier run with another backend
    cfg = config.load("finetune")
    assert cfg.backend == "none"
    result = finetune.run(cfg)
    assert not stale.exists() and result["samples"] is None
    assert json.loads((tiny_project / "metrics/finetune.json").read_text()) == {
        "train_images": len(result["train_set"])}
    info = json.loads((tiny_project / "outputs/finetune/finetune.json").read_text())
    assert info["model"] is None and info["backend"] == "none"


def test_the_stage_refuses_another_profiles_inputs(tiny_project):
    classes.run(config.load("classes"))  # the smoke profile's
    params = tiny_project / "params.yaml"
    params.write_text(params.read_text().replace("\n  profile: smoke ", "\n  profile: mini ", 1))
    with pytest.raises(ProvenanceError, match="outputs/classes was made by profile 'smoke'"):
        finetune.run(config.load("finetune"))
    assert not (tiny_project / "outputs/finetune").exists()


def test_captions_name_the_class_and_nothing_else():
    classes_ = pd.DataFrame({"class_id": ["3", "1"], "label": [1, 0], "name": ["three", "one"]})
    assert finetuning.class_prompts(classes_, "the digit {name}") == ["the digit one",
                                                                      "the digit three"]
    for bad in ("the digit", "the {label} {name}", "a {name} {}"):
        with pytest.raises(ValueError, match="finetune.caption_template"):
            finetuning.caption(bad, "three")
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["x", "y", "z"],
                           "class_id": ["3", "9", "1"], "label": [1, 2, 0],
                           "split": ["train", "val", "train"], "sha256": ["", "", ""]})
    got = finetuning.finetune_set(classes_, images, "the digit {name}")
    assert list(got["caption"]) == ["the digit three", "the digit one"]  # val's "9" left out
    images.loc[2, "class_id"] = "7"
    with pytest.raises(ValueError, match="not in classes.parquet"):
        finetuning.finetune_set(classes_, images, "the digit {name}")


def test_the_paper_scale_imagefolder(tiny_project, tmp_path):
    made = classes.run(config.load("classes"))
    names = pd.DataFrame({"class_id": ["0", "1"], "label": [0, 1], "name": ["zero", "one"]})
    train_set = finetuning.finetune_set(names, made["images"], "a photo of a {name}")
    n = finetuning.write_imagefolder(train_set, tiny_project, tmp_path / "folder")
    lines = [json.loads(x) for x in (tmp_path / "folder/metadata.jsonl").read_text().split("\n")
             if x]
    assert n == len(lines) == len(train_set)
    first = lines[0]
    assert first["text"] in {"a photo of a zero", "a photo of a one"}
    linked = tmp_path / "folder" / first["file_name"]
    source = tiny_project / train_set.loc[0, "path"]
    assert linked.is_symlink() and linked.read_bytes() == source.read_bytes()
    assert np.array_equal(data.load_images([first["file_name"]], tmp_path / "folder"),
                          data.load_images([train_set.loc[0, "path"]], tiny_project))
