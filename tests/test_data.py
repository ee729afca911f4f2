"""Real data (lib.data): the bundled digits, ImageFolder splits and the OOD corruptions."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.data import (
    CORRUPTIONS,
    build_splits,
    corrupt,
    corruption_examples,
    materialize_digits,
    read_class_table,
)

NUM_DIGITS = 1797


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def png_bytes(value: int, size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_flat(dataset: Path, per_class: dict[str, int], reverse: bool = False) -> None:
    """``dataset/<class_id>/img-NNN.png``; ``reverse`` creates the files in the other order."""
    files = [(c, k) for c, n in per_class.items() for k in range(n)]
    for c, k in reversed(files) if reverse else files:
        (dataset / c).mkdir(parents=True, exist_ok=True)
        (dataset / c / f"{c}-img-{k:03d}.png").write_bytes(png_bytes(k % 256))


# -- the bundled digits ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("digits")
    assert materialize_digits(dest) == NUM_DIGITS
    return dest


def test_digits_layout_and_class_names(digits_dir: Path) -> None:
    from sklearn.datasets import load_digits

    pngs = sorted(digits_dir.rglob("*.png"))
    assert len(pngs) == NUM_DIGITS
    assert sorted(d.name for d in digits_dir.iterdir() if d.is_dir()) == [str(i) for i in range(10)]
    per_class = {str(i): len(list((digits_dir / str(i)).glob("*.png"))) for i in range(10)}
    expected = np.bincount(load_digits().target, minlength=10)
    assert per_class == {str(i): int(n) for i, n in enumerate(expected)}
    names = "zero one two three four five six seven eight nine".split()
    table = read_class_table(digits_dir, [str(i) for i in range(10)])
    assert table["name"].tolist() == names
    assert table["gloss"][3] == "the digit 3, a handwritten numeral"
    assert (table["hypernyms"] == "digit;numeral;symbol").all()


def test_digits_bytes_identical_across_runs(digits_dir: Path, tmp_path: Path) -> None:
    materialize_digits(tmp_path)
    assert tree_digest(tmp_path) == tree_digest(digits_dir)


def test_digits_rerun_rewrites_nothing(tmp_path: Path) -> None:
    materialize_digits(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    digest = tree_digest(tmp_path)
    assert materialize_digits(tmp_path) == NUM_DIGITS
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    assert tree_digest(tmp_path) == digest


def test_digits_pixels_scaled_to_0_255(digits_dir: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Image 0 peaks at 15 (-> 239); the others hold full-count 16s (-> 255).
    with_16 = [i for i in range(NUM_DIGITS) if digits.images[i].max() == 16]
    for index in [0, with_16[0], with_16[len(with_16) // 2], NUM_DIGITS - 1]:
        raw = digits.images[index]  # counts 0..16
        path = digits_dir / str(digits.target[index]) / f"digit-{index:04d}.png"
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == (8, 8)
            img = np.asarray(im)
        assert np.all(img[raw == 16] == 255)
        assert np.all(img[raw == 15] == 239)
        assert np.all(img[raw == 0] == 0)
        np.testing.assert_array_equal(img, np.rint(raw * 255 / 16).astype(np.uint8))
    assert (digits.images[with_16[0]] == 16).any()


# -- build_splits ------------------------------------------------------------------------

SPLIT_KW = {"val_fraction": 0.25, "train_per_class": None, "val_per_class": None, "seed": 0}
MANIFEST_COLUMNS = ["image_id", "path", "class_id", "label", "split"]


def test_flat_split_uses_every_image_once(tmp_path: Path) -> None:
    dataset = tmp_path / "data" / "toy"
    make_flat(dataset, {"cat": 60, "ant": 60, "bee": 60})
    classes, images = build_splits(dataset, tmp_path, **SPLIT_KW)
    assert list(images.columns) == MANIFEST_COLUMNS
    assert len(images) == 180 and images["path"].is_unique
    assert set(images["split"]) == {"train", "val"}
    # Each image goes to val with probability val_fraction: 45 expected of 180.
    assert 25 <= (images["split"] == "val").sum() <= 65
    for path in images["path"]:
        assert not Path(path).is_absolute() and path.startswith("data/toy/")
        assert (tmp_path / path).is_file()
    # Ids are the path inside the dataset: unique even when file names repeat across classes.
    expected = [Path(p).relative_to("data/toy").with_suffix("").as_posix().replace("/", "-")
                for p in images["path"]]
    assert images["image_id"].tolist() == expected and images["image_id"].is_unique


def test_flat_split_depends_on_seed(tmp_path: Path) -> None:
    dataset = tmp_path / "toy"
    make_flat(dataset, {"a": 40, "b": 40})
    _, s0 = build_splits(dataset, tmp_path, **SPLIT_KW)
    _, s1 = build_splits(dataset, tmp_path, **(SPLIT_KW | {"seed": 1}))
    val0 = set(s0.loc[s0["split"] == "val", "path"])
    val1 = set(s1.loc[s1["split"] == "val", "path"])
    assert val0 != val1


def test_split_independent_of_creation_order(tmp_path: Path) -> None:
    """The same files created in the opposite order, under another root, split identically."""
    counts = {"cat": 30, "ant": 25, "bee": 20}
    make_flat(tmp_path / "r1" / "toy", counts)
    make_flat(tmp_path / "r2" / "toy", dict(reversed(counts.items())), reverse=True)
    kw = SPLIT_KW | {"train_per_class": 12, "val_per_class": 4}
    c1, s1 = build_splits(tmp_path / "r1" / "toy", tmp_path / "r1", **kw)
    c2, s2 = build_splits(tmp_path / "r2" / "toy", tmp_path / "r2", **kw)
    pd.testing.assert_frame_equal(c1, c2)
    pd.testing.assert_frame_equal(s1, s2)


def test_caps_per_class_and_split(tmp_path: Path) -> None:
    dataset = tmp_path / "toy"
    make_flat(dataset, {"a": 40, "b": 40, "c": 3})
    _, full = build_splits(dataset, tmp_path, **SPLIT_KW)
    _, capped = build_splits(
        dataset, tmp_path, **(SPLIT_KW | {"train_per_class": 5, "val_per_class": 2})
    )
    counts = capped.groupby(["split", "class_id"]).size()
    full_counts = full.groupby(["split", "class_id"]).size()
    for (split, cls), n in full_counts.items():
        assert counts.get((split, cls), 0) == min(n, 5 if split == "train" else 2)
    # A cap picks a subset of the uncapped split: never moves an image between splits.
    merged = capped.merge(full, on="path", suffixes=("", "_full"))
    assert len(merged) == len(capped)
    assert (merged["split"] == merged["split_full"]).all()


def test_cap_on_one_split_only(tmp_path: Path) -> None:
    dataset = tmp_path / "toy"
    make_flat(dataset, {"a": 40, "b": 40})
    _, full = build_splits(dataset, tmp_path, **SPLIT_KW)
    _, capped = build_splits(dataset, tmp_path, **(SPLIT_KW | {"val_per_class": 1}))
    pd.testing.assert_frame_equal(
        capped[capped["split"] == "train"].reset_index(drop=True),
        full[full["split"] == "train"].reset_index(drop=True),
    )
    assert capped[capped["split"] == "val"].groupby("class_id").size().to_dict() == {"a": 1, "b": 1}


def test_labels_sorted_and_names_from_tsv(tmp_path: Path) -> None:
    dataset = tmp_path / "toy"
    make_flat(dataset, {"zebra": 8, "ant": 8, "moth": 8})
    (dataset / "classes.tsv").write_text(
        "# class_id, name, gloss, hypernyms\nant\tsmall ant\tan insect\tinsect;animal\n"
        "zebra\tplains zebra\n",
        encoding="utf-8",
    )
    classes, images = build_splits(dataset, tmp_path, **SPLIT_KW)
    assert classes.to_dict("list") == {
        "label": [0, 1, 2],
        "class_id": ["ant", "moth", "zebra"],
        "name": ["small ant", "moth", "plains zebra"],  # moth has no row: its folder name
        "gloss": ["an insect", "", ""],
        "hypernyms": ["insect;animal", "", ""],
    }
    expected = {"ant": 0, "moth": 1, "zebra": 2}
    assert (images["label"] == images["class_id"].map(expected)).all()
    assert images["path"].str.split("/").str[1].tolist() == images["class_id"].tolist()


def test_train_val_subfolders(tmp_path: Path) -> None:
    dataset = tmp_path / "toy"
    make_flat(dataset / "train", {"b": 6, "a": 5})
    make_flat(dataset / "val", {"b": 2, "a": 3})
    classes, images = build_splits(dataset, tmp_path, **SPLIT_KW)
    assert classes["class_id"].tolist() == ["a", "b"]
    by_split = images.groupby(["split", "class_id"]).size().to_dict()
    assert by_split == {("train", "a"): 5, ("train", "b"): 6, ("val", "a"): 3, ("val", "b"): 2}
    assert (images["path"].str.split("/").str[1] == images["split"]).all()
    assert images["path"].str.startswith("toy/").all()
    capped = build_splits(
        dataset, tmp_path, **(SPLIT_KW | {"train_per_class": 4, "val_per_class": 1})
    )[1]
    assert capped.groupby(["split", "class_id"]).size().to_dict() == {
        ("train", "a"): 4,
        ("train", "b"): 4,
        ("val", "a"): 1,
        ("val", "b"): 1,
    }


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_splits(tmp_path / "nowhere", tmp_path, **SPLIT_KW)


def test_train_without_val_folder(tmp_path: Path) -> None:
    make_flat(tmp_path / "toy" / "train", {"a": 2})
    with pytest.raises(FileNotFoundError, match="val"):
        build_splits(tmp_path / "toy", tmp_path, **SPLIT_KW)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "toy").mkdir()
    with pytest.raises(ValueError, match="no images"):
        build_splits(tmp_path / "toy", tmp_path, **SPLIT_KW)
    (tmp_path / "toy" / "a").mkdir()
    (tmp_path / "toy" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no images"):
        build_splits(tmp_path / "toy", tmp_path, **SPLIT_KW)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_val_fraction(tmp_path: Path, fraction: float) -> None:
    make_flat(tmp_path / "toy", {"a": 4})
    with pytest.raises(ValueError, match="val_fraction"):
        build_splits(tmp_path / "toy", tmp_path, **(SPLIT_KW | {"val_fraction": fraction}))


# -- corruptions -------------------------------------------------------------------------

IDS = ["img-a", "img-b", "img-c"]


@pytest.fixture(params=["L", "RGB"])
def batch(request: pytest.FixtureRequest) -> np.ndarray:
    shape = (3, 16, 16) if request.param == "L" else (3, 16, 16, 3)
    return np.random.default_rng(123).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_changes_every_image(batch: np.ndarray, name: str) -> None:
    out = corrupt(batch, IDS, name, seed=0)
    assert out.shape == batch.shape and out.dtype == np.uint8
    for before, after in zip(batch, out, strict=True):
        assert not np.array_equal(before, after)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_deterministic_and_batch_independent(batch: np.ndarray, name: str) -> None:
    full = corrupt(batch, IDS, name, seed=5)
    np.testing.assert_array_equal(corrupt(batch, IDS, name, seed=5), full)
    alone = corrupt(batch[[1]], [IDS[1]], name, seed=5)
    np.testing.assert_array_equal(alone[0], full[1])
    reordered = corrupt(batch[[2, 0]], [IDS[2], IDS[0]], name, seed=5)
    np.testing.assert_array_equal(reordered, full[[2, 0]])


def test_noise_seeded_by_seed_and_id() -> None:
    img = np.full((2, 16, 16), 128, np.uint8)
    base = corrupt(img, ["x", "y"], "noise", seed=0)
    assert not np.array_equal(base[0], base[1])  # same pixels, other id: other noise
    assert not np.array_equal(base, corrupt(img, ["x", "y"], "noise", seed=1))
    residual = base.astype(float) - 128
    assert 40 < residual.std() < 80  # sigma = 25% of 255, a little clipped


def test_invert_and_blur_values() -> None:
    img = np.zeros((1, 12, 12), np.uint8)
    img[0, ::2] = 255  # stripes: high contrast that a blur must flatten
    np.testing.assert_array_equal(corrupt(img, ["s"], "invert", seed=0), 255 - img)
    blurred = corrupt(img, ["s"], "blur", seed=0)
    assert blurred.std() < 0.5 * img.std()
    assert abs(float(blurred.mean()) - float(img.mean())) < 10


def test_corruption_examples_first_val_image_per_class(tmp_path: Path) -> None:
    make_flat(tmp_path / "toy", {"ant": 8, "bee": 8})
    _, images = build_splits(tmp_path / "toy", tmp_path, **SPLIT_KW)
    out = corruption_examples(images, tmp_path, ["invert", "noise"], seed=3)
    assert list(out) == ["val", "invert", "noise"]
    first = images[images["split"] == "val"].groupby("class_id").head(1)
    assert out["val"].shape == (2, 4, 4)
    np.testing.assert_array_equal(out["invert"], 255 - out["val"])
    np.testing.assert_array_equal(
        out["noise"], corrupt(out["val"], first["image_id"].tolist(), "noise", seed=3))


def test_unknown_corruption_lists_valid() -> None:
    with pytest.raises(KeyError, match="unknown corruption 'fog'.*blur, invert, noise"):
        corrupt(np.zeros((1, 4, 4), np.uint8), ["a"], "fog", seed=0)


def test_same_file_name_in_two_classes_gets_distinct_ids_and_noise(tmp_path: Path) -> None:
    dataset = tmp_path / "toy"
    for c in ("a", "b"):
        (dataset / c).mkdir(parents=True)
        (dataset / c / "0001.png").write_bytes(png_bytes(128))
    _, images = build_splits(dataset, tmp_path, **(SPLIT_KW | {"val_fraction": 0.5}))
    assert sorted(images["image_id"]) == ["a-0001", "b-0001"]
    arr = np.full((2, 8, 8), 128, dtype=np.uint8)
    noisy = corrupt(arr, images["image_id"].tolist(), "noise", seed=0)
    assert not np.array_equal(noisy[0], noisy[1])
