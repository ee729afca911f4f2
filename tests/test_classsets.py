"""Class sets: the committed ImageNet tables, subsets and ambiguous names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib import classsets


def names_collide(df: pd.DataFrame, column: str = "name", key: str = "wnid") -> list[list[str]]:
    """Groups of ``key`` values whose ``column`` values are equal after :func:`lib.classsets.normalize_name`.

    Only groups of two or more are returned, in order of first appearance. Use it on raw
    names (``crane`` twice in ImageNet-1k) or to check that final prompt names are unique.
    """
    for col in (column, key):
        if col not in df.columns:
            raise KeyError(f"column {col!r} not in table; columns: {', '.join(df.columns)}")
    groups: dict[str, list[str]] = {}
    for value, k in zip(df[column], df[key]):
        groups.setdefault(classsets.normalize_name(str(value)), []).append(str(k))
    return [g for g in groups.values() if len(g) > 1]


@pytest.fixture(scope="module")
def in1k() -> pd.DataFrame:
    return classsets.load("imagenet1k")


def test_imagenet1k_table(in1k):
    assert list(in1k.columns) == classsets.COLUMNS
    assert len(in1k) == 1000
    assert in1k["index"].tolist() == list(range(1000))
    assert in1k["wnid"].is_unique
    assert in1k["wnid"].tolist() == sorted(in1k["wnid"])
    assert in1k["wnid"].str.fullmatch(r"n\d{8}").all()
    for col in ("name", "clip_name", "gloss", "hypernyms", "hypernym_wnids"):
        assert (in1k[col].str.len() > 0).all(), col
    chains = in1k["hypernyms"].str.split(";")
    assert (chains.str.len() == in1k["hypernym_wnids"].str.split(";").str.len()).all()
    assert (chains.str[-1] == "entity").all()


def test_imagenet1k_known_entries(in1k):
    tench = in1k.iloc[0]
    assert (tench["wnid"], tench["name"], tench["clip_name"]) == ("n01440764", "tench", "tench")
    assert tench["hypernyms"].split(";")[:2] == ["cyprinid", "cypriniform fish"]
    assert tench["gloss"].startswith("freshwater dace-like game fish")
    assert in1k.iloc[999][["wnid", "name"]].tolist() == ["n15075141", "toilet tissue"]
    assert (in1k["name"] == "crane").sum() == 2
    cranes = in1k.set_index("wnid").loc[["n02012849", "n03126707"]]
    assert cranes["index"].tolist() == [134, 517]
    assert cranes["hypernyms"].str.split(";").str[0].tolist() == ["wading bird", "lifting device"]


@pytest.mark.parametrize("name", ["imagenet100", "imagenet-r", "imagenet-a"])
def test_subsets_are_rows_of_imagenet1k(name, in1k):
    subset = classsets.load(name)
    assert len(subset) == classsets.SUBSET_SIZES[name]
    assert subset["wnid"].is_unique
    assert subset["index"].is_monotonic_increasing
    merged = subset.merge(in1k, on=list(in1k.columns), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_subset_files_hold_exactly_their_ids():
    # A typo in a committed list must fail here, not silently shrink the subset.
    for name, file in classsets.SUBSET_FILES.items():
        if file is not None:
            ids = classsets._read_ids(classsets.RESOURCES / file)
            assert len(ids) == len(set(ids)) == classsets.SUBSET_SIZES[name], name


@pytest.mark.parametrize("name", ["imagenet-r", "imagenet-a"])
def test_masks_of_200_class_subsets(name):
    mask = classsets.for_mask(name)
    assert mask.dtype == np.int64 and mask.shape == (200,)
    assert (np.diff(mask) > 0).all() and mask.min() >= 0 and mask.max() < 1000


def test_known_mask_entries():
    # ImageNet-R starts goldfish, great white shark; ImageNet-A starts at index 6 (stingray).
    assert classsets.for_mask("imagenet-r")[:3].tolist() == [1, 2, 4]
    assert classsets.for_mask("imagenet-a")[:3].tolist() == [6, 11, 13]
    assert classsets.for_mask("imagenet1k").tolist() == list(range(1000))
    assert "n02869837" in set(classsets.load("imagenet100")["wnid"])  # CMC's first entry


def test_unknown_class_set_lists_valid_names():
    with pytest.raises(KeyError, match="imagenet100.*imagenet-r.*imagenet-a"):
        classsets.load("imagenet-sketch")
    with pytest.raises(KeyError, match="valid"):
        classsets.for_mask("imagenet21k")


def test_load_returns_a_copy():
    a = classsets.load("imagenet1k")
    a.loc[0, "name"] = "changed"
    assert classsets.load("imagenet1k").loc[0, "name"] == "tench"


def test_ambiguous_table_entries_exist_in_imagenet1k(in1k):
    amb = classsets.ambiguous()
    assert set(amb["kind"]) == {"same_name", "near_name", "shared_synonym", "other_sense"}
    rows = in1k.set_index("wnid").loc[amb["wnid"]]
    assert rows["index"].tolist() == amb["index"].tolist()
    assert rows["name"].tolist() == amb["name"].tolist()
    collisions = amb[amb["kind"] != "other_sense"]
    partners = collisions["confused_with"].str.split(";").explode()
    assert partners.isin(in1k["wnid"]).all()
    # The other sense of an "other_sense" class is by definition not an ImageNet class.
    others = amb.loc[amb["kind"] == "other_sense", "confused_with"]
    assert not others.isin(in1k["wnid"]).any()


def test_ambiguous_table_has_the_known_cases():
    amb = classsets.ambiguous()
    groups = amb.groupby("group")["wnid"].apply(set).to_dict()
    assert groups["crane"] == {"n02012849", "n03126707"}
    assert groups["maillot"] == {"n03710637", "n03710721"}
    assert groups["cardigan"] == {"n02113186", "n02963159"}
    assert groups["sunglass/sunglasses"] == {"n04355933", "n04356056"}
    assert groups["kite"] == {"n01608432"} and groups["drake"] == {"n01847000"}


def test_names_collide(in1k):
    groups = names_collide(in1k)
    assert sorted(map(sorted, groups)) == [
        ["n02012849", "n03126707"],  # crane
        ["n02113186", "n02963159"],  # Cardigan (corgi) / cardigan (sweater): case ignored
        ["n03710637", "n03710721"],  # maillot
    ]
    # Even open_clip's cleaned names are not unique; both pairs are in the ambiguous table.
    clip_groups = names_collide(in1k, column="clip_name")
    assert clip_groups == [["n03773504", "n04008634"], ["n04355933", "n04356056"]]
    assert {w for g in clip_groups for w in g} <= set(classsets.ambiguous()["wnid"])
    toy = pd.DataFrame({"wnid": ["a", "b", "c"], "name": ["Sun_glass", "sun glass ", "x"]})
    assert names_collide(toy) == [["a", "b"]]
    with pytest.raises(KeyError, match="columns"):
        names_collide(toy, column="prompt")
