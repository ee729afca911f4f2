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
