"""Prompt strategies and the prompt manifest (lib.prompts)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from lib.prompts import STRATEGIES, build_manifest, classname, targets_per_class, templates
from lib.shards import check_id

SHARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
COLUMNS = [
    "id", "class_id", "label", "class_name", "prompt_name", "strategy", "prompt",
    "negative_prompt", "parts",
]  # fmt: skip


def make_classes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "class_id": ["n01", "n02", "n03"],
            "label": [0, 1, 2],
            "name": ["crane", "tench", "mouse"],
            "prompt_name": ["crane bird", "tench fish", "computer mouse"],
        }
    )


def test_classname_is_the_name() -> None:
    assert classname("tabby cat", 0) == ("tabby cat", "")
    assert classname("tabby cat", 12345) == ("tabby cat", "")


def test_templates_golden() -> None:
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert templates("goldfish", 0) == ("a bad photo of a goldfish.", "template:0")
    assert templates("goldfish", 1) == ("a photo of many goldfish.", "template:1")
    assert templates("goldfish", 80) == ("a bad photo of a goldfish.", "template:0")
    assert templates("goldfish", 2**62 + 3) == (
        OPENAI_IMAGENET_TEMPLATES[(2**62 + 3) % 80]("goldfish"),
        f"template:{(2**62 + 3) % 80}",
    )
    for i, template in enumerate(OPENAI_IMAGENET_TEMPLATES):
        prompt, parts = templates("goldfish", i)
        assert (prompt, parts) == (template("goldfish"), f"template:{i}")
        assert "goldfish" in prompt


def test_targets_per_class() -> None:
    counts = pd.Series({"a": 10, "b": 3, "c": 0})
    assert targets_per_class(counts, 1.0).to_dict() == {"a": 10, "b": 3, "c": 0}
    assert targets_per_class(counts, 2.0).to_dict() == {"a": 20, "b": 6, "c": 0}
    assert targets_per_class(counts, 0.2).to_dict() == {"a": 2, "b": 1, "c": 0}
    assert targets_per_class(counts, 0).to_dict() == {"a": 0, "b": 0, "c": 0}
    assert targets_per_class(counts, 0.5).dtype.kind == "i"


def test_negative_multiplier_error() -> None:
    with pytest.raises(ValueError, match="synthetic_multiplier must be >= 0, got -0.5"):
        targets_per_class(pd.Series({"a": 10}), -0.5)


def test_manifest_rows_per_class_and_columns() -> None:
    classes = make_classes()
    targets = targets_per_class(pd.Series({"n01": 10, "n02": 4, "n03": 7}), 0.5)
    manifest = build_manifest(classes, targets, ["classname"], seed=0, negative_prompt="blurry")
    assert list(manifest.columns) == COLUMNS
    assert manifest.groupby("class_id").size().to_dict() == {"n01": 5, "n02": 2, "n03": 4}
    row = manifest.iloc[0]
    assert row.to_dict() == {
        "id": "n01-classname-000000",
        "class_id": "n01",
        "label": 0,
        "class_name": "crane",
        "prompt_name": "crane bird",
        "strategy": "classname",
        "prompt": "crane bird",
        "negative_prompt": "blurry",
        "parts": "",
    }
    assert (manifest["negative_prompt"] == "blurry").all()
    assert manifest["class_name"].tolist() == ["crane"] * 5 + ["tench"] * 2 + ["mouse"] * 4


def test_manifest_round_robin_and_ids() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 5, "n02": 0, "n03": 2})
    manifest = build_manifest(classes, targets, ["classname", "templates"], seed=0)
    assert manifest["id"].tolist() == [
        "n01-classname-000000",
        "n01-templates-000001",
        "n01-classname-000002",
        "n01-templates-000003",
        "n01-classname-000004",
        "n03-classname-000000",
        "n03-templates-000001",
    ]
    assert manifest["strategy"].tolist() == ["classname", "templates"] * 2 + ["classname"] + [
        "classname",
        "templates",
    ]
    assert manifest["id"].is_unique
    for sample_id in manifest["id"]:
        assert SHARD_ID.match(sample_id)
        assert check_id(sample_id) == sample_id
    for row in manifest.itertuples():
        if row.strategy == "classname":
            assert (row.prompt, row.parts) == (row.prompt_name, "")
        else:
            index = int(row.parts.removeprefix("template:"))
            assert row.parts == f"template:{index}"
            assert row.prompt == OPENAI_IMAGENET_TEMPLATES[index](row.prompt_name)


def test_manifest_three_strategies_round_robin() -> None:
    classes = make_classes().iloc[:1]
    manifest = build_manifest(
        classes, pd.Series({"n01": 7}), ["templates", "classname", "templates"], seed=0
    )
    assert manifest["strategy"].tolist() == [
        "templates", "classname", "templates", "templates", "classname", "templates", "templates",
    ]  # fmt: skip
    assert manifest["id"].str[-6:].tolist() == [f"{k:06d}" for k in range(7)]


def test_manifest_deterministic_and_order_free() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 12, "n02": 9, "n03": 10})
    strategies = ["classname", "templates"]
    first = build_manifest(classes, targets, strategies, seed=3)
    pd.testing.assert_frame_equal(first, build_manifest(classes, targets, strategies, seed=3))

    shuffled = classes.iloc[[2, 0, 1]].reset_index(drop=True)
    other = build_manifest(shuffled, targets.iloc[::-1], strategies, seed=3)

    def by_id(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("id").reset_index(drop=True)

    pd.testing.assert_frame_equal(by_id(other), by_id(first))
    # One class alone gets exactly the rows it gets among the others.
    alone = build_manifest(classes.iloc[[1]], targets, strategies, seed=3)
    pd.testing.assert_frame_equal(alone, first[first["class_id"] == "n02"].reset_index(drop=True))


def test_manifest_template_choice_depends_on_seed() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 20, "n02": 20, "n03": 20})
    a = build_manifest(classes, targets, ["templates"], seed=0)
    b = build_manifest(classes, targets, ["templates"], seed=1)
    assert a["id"].tolist() == b["id"].tolist()
    assert a["parts"].tolist() != b["parts"].tolist()
    assert a["parts"].nunique() > 10  # 60 draws from 80 templates: many distinct


def test_unknown_strategy_error_lists_valid() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 2})
    valid = ", ".join(STRATEGIES)
    assert valid == "classname, templates"
    with pytest.raises(ValueError, match=re.escape(f"['llm_rewrite']; valid: {valid}")):
        build_manifest(classes, targets, ["classname", "llm_rewrite"], seed=0)
    with pytest.raises(ValueError, match="valid: classname, templates"):
        build_manifest(classes, targets, [], seed=0)
