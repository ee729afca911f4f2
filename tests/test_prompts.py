"""Prompt strategies and the prompt manifest (lib.prompts)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from lib.prompts import (
    STRATEGIES,
    ClassTexts,
    MissingInput,
    build_prompt_manifest,
    targets_per_class,
)
from lib.seeding import numpy_rng
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


TEXTS = ClassTexts(
    class_id="n01",
    name="crane bird",
    gloss="large long-necked wading bird",
    hypernym="wading bird",
    sentences=("A crane bird stands in a marsh.", "Two crane birds fly over a field."),
    captions=("a bird standing in water",),
    contexts={"background": ("in a misty marsh", "on a frozen lake"),
              "lighting": ("at golden hour",),
              "viewpoint": ("seen from below",)},
    styles=("a pencil sketch", "an oil painting"),
)


def run(strategy: str, item: str = "x", sd_ratio: float = 0.5) -> tuple[str, dict]:
    return STRATEGIES[strategy](TEXTS, numpy_rng(0, "prompt", item), sd_ratio)


def test_golden_strings_of_the_fixed_strategies() -> None:
    assert run("classname") == ("crane bird", {})
    assert run("description") == ("crane bird, large long-necked wading bird",
                                  {"gloss": "large long-necked wading bird"})
    assert run("hypernym") == ("crane bird, a type of wading bird", {"hypernym": "wading bird"})


def test_templates_are_clips_80() -> None:
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80
    seen = set()
    for item in range(200):
        prompt, parts = run("templates", str(item))
        assert prompt == OPENAI_IMAGENET_TEMPLATES[parts["template"]]("crane bird")
        seen.add(parts["template"])
    assert len(seen) > 60  # 200 draws from 80 templates
    assert OPENAI_IMAGENET_TEMPLATES[0]("goldfish") == "a bad photo of a goldfish."


def test_llm_and_caption_strategies_use_their_texts() -> None:
    prompt, parts = run("word2sen")
    assert prompt == TEXTS.sentences[parts["sentence"]]
    prompt, parts = run("captions")
    assert prompt == "crane bird, a bird standing in water" and parts == {"caption": 0}
    prompt, parts = run("sd")
    assert prompt == f"{TEXTS.styles[parts['style']]} of crane bird"
    prompt, parts = run("cd")
    axes = sorted(parts["contexts"])
    assert len(axes) == 2 and set(axes) <= set(TEXTS.contexts)
    phrases = [TEXTS.contexts[a][parts["contexts"][a]] for a in axes]
    assert prompt == "a photo of crane bird, " + ", ".join(phrases)


def test_cdsd_mixing_ratio() -> None:
    modes = [run("cdsd", str(i), sd_ratio=0.25)[1]["mode"] for i in range(400)]
    assert 0.18 < modes.count("sd") / 400 < 0.32
    assert {run("cdsd", str(i), sd_ratio=0.0)[1]["mode"] for i in range(50)} == {"cd"}
    assert {run("cdsd", str(i), sd_ratio=1.0)[1]["mode"] for i in range(50)} == {"sd"}


def test_missing_inputs_fail_naming_the_class() -> None:
    bare = ClassTexts("n07", "kite")
    for strategy in ("description", "hypernym", "word2sen", "captions", "cd", "sd", "cdsd"):
        with pytest.raises(MissingInput, match="class 'n07' \\(kite\\) has no"):
            STRATEGIES[strategy](bare, numpy_rng(0, "x"), 0.5)
    classes = make_classes()
    with pytest.raises(ValueError, match="prompt strategies lack their inputs: sd: class 'n01'"):
        build_prompt_manifest(classes, pd.Series({"n01": 2, "n02": 2, "n03": 2}), ["sd"], seed=0)


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
    manifest = build_prompt_manifest(classes, targets, ["classname"], seed=0,
                                     negative_prompt="blurry")
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
        "parts": "{}",
    }
    assert (manifest["negative_prompt"] == "blurry").all()
    assert manifest["class_name"].tolist() == ["crane"] * 5 + ["tench"] * 2 + ["mouse"] * 4


def test_manifest_round_robin_and_ids() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 5, "n02": 0, "n03": 2})
    manifest = build_prompt_manifest(classes, targets, ["classname", "templates"], seed=0)
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
            assert (row.prompt, row.parts) == (row.prompt_name, "{}")
        else:
            index = json.loads(row.parts)["template"]
            assert row.prompt == OPENAI_IMAGENET_TEMPLATES[index](row.prompt_name)


def test_manifest_three_strategies_round_robin() -> None:
    classes = make_classes().iloc[:1]
    manifest = build_prompt_manifest(
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
    first = build_prompt_manifest(classes, targets, strategies, seed=3)
    again = build_prompt_manifest(classes, targets, strategies, seed=3)
    pd.testing.assert_frame_equal(first, again)

    shuffled = classes.iloc[[2, 0, 1]].reset_index(drop=True)
    other = build_prompt_manifest(shuffled, targets.iloc[::-1], strategies, seed=3)

    def by_id(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("id").reset_index(drop=True)

    pd.testing.assert_frame_equal(by_id(other), by_id(first))
    # One class alone gets exactly the rows it gets among the others.
    alone = build_prompt_manifest(classes.iloc[[1]], targets, strategies, seed=3)
    pd.testing.assert_frame_equal(alone, first[first["class_id"] == "n02"].reset_index(drop=True))


def test_manifest_template_choice_depends_on_seed() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 20, "n02": 20, "n03": 20})
    a = build_prompt_manifest(classes, targets, ["templates"], seed=0)
    b = build_prompt_manifest(classes, targets, ["templates"], seed=1)
    assert a["id"].tolist() == b["id"].tolist()
    assert a["parts"].tolist() != b["parts"].tolist()
    assert a["parts"].nunique() > 10  # 60 draws from 80 templates: many distinct


def test_unknown_strategy_error_lists_valid() -> None:
    classes = make_classes()
    targets = pd.Series({"n01": 2})
    valid = ", ".join(STRATEGIES)
    assert valid.startswith("classname, description, hypernym, templates")
    with pytest.raises(ValueError, match=re.escape(f"['llm_rewrite']; valid: {valid}")):
        build_prompt_manifest(classes, targets, ["classname", "llm_rewrite"], seed=0)
    with pytest.raises(ValueError, match="valid: classname, description"):
        build_prompt_manifest(classes, targets, [], seed=0)
