"""The synthetic images a training run reads (lib.training.inputs): only from a generation
folder that verifies (issue 12, case 1).

Before, a shard truncated on a 512-byte boundary gave a run that exited 0 with fewer
synthetic images and ``synthetic_missing = 0``; now the run fails naming the folder, the
shard and its ids, and says to rerun the generate stage, which repairs it. The folder is
made by the seed-noise stand-in of tests/generation_fakes.py (three classes, 38 images).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from generation_fakes import make_prompts, run
from PIL import Image

from lib.shards import marker_path
from lib.training.inputs import load_inputs

N, SHARD = 40, "shard-00000-000002.tar"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """Real images (4 train and 2 val per class), the classes tables, a finished generation."""
    root = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    rows = []
    for label in range(3):
        for k in range(6):
            split = "train" if k < 4 else "val"
            path = Path("data") / split / f"c{label}" / f"{k}.png"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / path)
            rows.append({"path": path.as_posix(), "split": split, "label": label,
                         "image_id": f"c{label}-{k}"})
    classes = pd.DataFrame({"class_id": [0, 1, 2], "label": [0, 1, 2],
                            "name": ["class0", "class1", "class2"]})
    generated = root / "pristine"
    run(generated, prompts=make_prompts(N), shard_size=8)
    return {"root": root, "classes": classes, "images": pd.DataFrame(rows),
            "pristine": generated}


@pytest.fixture
def generated(project, tmp_path) -> Path:
    return Path(shutil.copytree(project["pristine"], tmp_path / "generate"))


def inputs(project: dict, generate_dir: Path):
    return load_inputs(
        project["classes"], project["images"], root=project["root"], generate_dir=generate_dir,
        data_dir=project["root"] / "data", image_size=8, channels=3, seed=0, real_fraction=1.0,
        real_per_class=None, use_synthetic=True, synthetic_fraction=0.5,
        synthetic_strategy=None, synthetic_multiplier=None, eval_sets=[], max_bad_fraction=0.01,
    )


def test_an_intact_generation_is_read_whole(project, generated):
    found = inputs(project, generated)
    manifest = pd.read_parquet(generated / "manifest.parquet")
    assert len(found.synthetic) == len(manifest) == 38
    assert found.synthetic_missing == 0 and found.bad_images == []


@pytest.mark.parametrize("on_boundary", [True, False])
def test_a_truncated_shard_fails_the_run_naming_it(project, generated, on_boundary):
    with tarfile.open(generated / SHARD) as t:
        m = t.getmembers()[6]
    os.truncate(generated / SHARD, m.offset if on_boundary else m.offset_data + 7)
    first = sorted(pd.read_parquet(generated / "manifest.parquet")
                   .query("shard == @SHARD")["id"])[0]
    with pytest.raises(ValueError, match=(
        rf"(?s)generated images under {generated} cannot be trusted \(1 damaged shards.*"
        rf"{SHARD}: the tar's sha256 differs.*{first}.*rerun the generate stage"
    )):
        inputs(project, generated)
    # The generate stage repairs it; the run then reads every image again.
    run(generated, prompts=make_prompts(N), shard_size=8)
    assert len(inputs(project, generated).synthetic) == 38


def test_a_manifest_row_without_an_image_fails_the_run(project, generated):
    (generated / SHARD).unlink()
    marker_path(generated / SHARD).unlink()  # the shard is gone; the manifest still lists it
    with pytest.raises(ValueError, match=rf"(?s){SHARD}: the tar and its marker are missing"):
        inputs(project, generated)
    (generated / "manifest.parquet").unlink()
    with pytest.raises(ValueError, match="no manifest.parquet: the run is not finished"):
        inputs(project, generated)
