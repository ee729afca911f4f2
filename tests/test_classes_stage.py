"""The classes stage names ImageNet folders from the shipped WordNet table."""

from __future__ import annotations

import pandas as pd

from lib.stages.classes import with_wordnet


def test_wordnet_fills_imagenet_classes_only() -> None:
    classes = pd.DataFrame({
        "label": [0, 1, 2],
        "class_id": ["n02012849", "n03126707", "7"],
        "name": ["n02012849", "n03126707", "seven"],
        "gloss": ["", "", "the digit 7"],
        "hypernyms": ["", "", "digit"],
    })
    out = with_wordnet(classes)
    assert out["name"].tolist() == ["crane", "crane", "seven"]  # the two ImageNet cranes
    assert "bird" in out["gloss"][0] and "lifting" in out["gloss"][1]
    assert out["hypernyms"][0].split(";")[0] != out["hypernyms"][1].split(";")[0]
    assert out.iloc[2].to_dict() == classes.iloc[2].to_dict()


def test_restrict_to_a_subset_relabels_and_names_unknown_ids() -> None:
    import pytest

    from lib.stages.classes import restrict

    classes = pd.DataFrame({"label": [0, 1, 2], "class_id": ["a", "b", "c"],
                            "name": ["a", "b", "c"]})
    images = pd.DataFrame({"image_id": ["1", "2", "3"], "class_id": ["a", "c", "b"],
                           "label": [0, 2, 1]})
    kept, imgs = restrict(classes, images, ["c", "a"], "mine")
    assert kept[["label", "class_id"]].values.tolist() == [[0, "a"], [1, "c"]]
    assert imgs[["class_id", "label"]].values.tolist() == [["a", 0], ["c", 1]]
    with pytest.raises(ValueError, match="class set 'mine': 1 class id\\(s\\) not in the dataset, e.g. zz"):
        restrict(classes, images, ["a", "zz"], "mine")


def test_a_changed_image_changes_exactly_its_row(tiny_project) -> None:
    """The manifest records each image's content (sha256): overwrite one PNG and the stage's
    outputs change, in that row only (DVC then re-runs what was trained on it)."""
    import hashlib

    import numpy as np
    from PIL import Image

    from lib import config
    from lib.stages import classes

    out = tiny_project / "outputs/classes"
    classes.run(config.load("classes"))
    before = pd.read_parquet(out / "images.parquet")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    classes.run(config.load("classes"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # a rerun: same bytes
    path = before["path"][3]
    assert before["sha256"][3] == hashlib.sha256((tiny_project / path).read_bytes()).hexdigest()

    Image.fromarray(np.full((8, 8), 7, np.uint8), mode="L").save(tiny_project / path)
    classes.run(config.load("classes"))
    after = pd.read_parquet(out / "images.parquet")
    assert (out / "images.parquet").read_bytes() != first["images.parquet"]
    changed = after.ne(before).any(axis=1)
    assert changed.tolist() == [i == 3 for i in range(len(before))]
    assert after.columns[after.ne(before).any()].tolist() == ["sha256"]
