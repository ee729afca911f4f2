"""The training recipe around lib.training: batch composition, schedule, augmentation, masked
evaluation, tolerant loading and data selection (lib.training.inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from lib import classsets
from lib.nn.augment import augment_batch
from lib.nn.schedule import lr_factor
from lib.seeding import torch_generator
from lib.training.datasets import ImageArrayDataset
from lib.training.evaluation import score_logits
from lib.training.inputs import (
    _check_bad,
    _class_mask_for,
    _load_files,
    _load_tolerant,
    _select_real,
    _select_synthetic,
)
from lib.training.loop import train_classifier
from lib.training.recipe import steps_for_epochs

# -- schedule and epochs -------------------------------------------------------------------


def test_steps_for_epochs_counts_real_or_all_images() -> None:
    kw = {"n_real": 100, "n_synthetic": 300, "batch_size": 20, "synthetic_fraction": 0.5}
    assert steps_for_epochs(1, "real", **kw) == 10  # 10 real images per step
    assert steps_for_epochs(1, "all", **kw) == 20  # 400 images, 20 per step
    assert steps_for_epochs(2.5, "real", **kw) == 25
    assert steps_for_epochs(1, "all", **{**kw, "synthetic_fraction": 0.0}) == 5  # no synthetic
    with pytest.raises(ValueError, match="epoch must be one of real, all"):
        steps_for_epochs(1, "images", **kw)
    with pytest.raises(ValueError, match="needs real images"):
        steps_for_epochs(1, "real", **{**kw, "synthetic_fraction": 1.0})


def test_lr_schedules() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.01
    assert lr_factor(99, 100, 10, "constant") == 1.0


def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 4, 40)
    real = ImageArrayDataset(x, y, 8, 1, synthetic=False)
    syn = ImageArrayDataset(x[::-1].copy(), y[::-1].copy(), 8, 1, synthetic=True)
    return real, syn


def _tiny_model() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return timm.create_model("resnet10t", num_classes=4, in_chans=1,
                                 channels=(8, 8, 8, 8), stem_width=8)


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "constant"), ("adamw", "cosine")])
def test_optimizers_and_augmentation_are_deterministic(optimizer, schedule) -> None:
    real, syn = _tiny_data()
    kw = dict(steps=3, batch_size=8, synthetic_fraction=0.25, lr=0.01, weight_decay=0.0,
              label_smoothing=0.0, synthetic_loss_weight=1.0, seed=3, optimizer=optimizer,
              schedule=schedule, augment=("rrc", "flip", "jitter"), progress=False)
    a, b = _tiny_model(), _tiny_model()
    train_classifier(a, real, syn, **kw)
    train_classifier(b, real, syn, **kw)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_training_refuses_unknown_recipe_choices() -> None:
    real, syn = _tiny_data()
    kw = dict(steps=1, batch_size=8, synthetic_fraction=0.25, lr=0.01, weight_decay=0.0,
              label_smoothing=0.0, synthetic_loss_weight=1.0, seed=0, progress=False)
    with pytest.raises(ValueError, match="optimizer must be one of adamw, sgd"):
        train_classifier(_tiny_model(), real, syn, optimizer="lamb", **kw)
    with pytest.raises(ValueError, match="schedule must be one of cosine, constant"):
        train_classifier(_tiny_model(), real, syn, schedule="step", **kw)
    with pytest.raises(ValueError, match="unknown augmentation"):
        train_classifier(_tiny_model(), real, syn, augment=("mixup",), **kw)


# -- augmentation ----------------------------------------------------------------------------


def test_augmentation_is_seeded_shape_preserving_and_in_range() -> None:
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    a = augment_batch(x, ["rrc", "flip", "jitter"], torch_generator(0, "augment", 1))
    b = augment_batch(x, ["rrc", "flip", "jitter"], torch_generator(0, "augment", 1))
    c = augment_batch(x, ["rrc", "flip", "jitter"], torch_generator(0, "augment", 2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_flip_mirrors_and_empty_list_is_identity() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1) / 16
    assert torch.equal(augment_batch(x, [], torch_generator(0)), x)
    out = augment_batch(x, ["flip"], torch_generator(0))
    flipped = torch.isclose(out, x.flip(-1)).flatten(1).all(1)
    same = torch.isclose(out, x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


# -- masked evaluation -------------------------------------------------------------------------


def test_masked_scoring_chooses_among_the_mask_only() -> None:
    # class 0 is the true label, but an out-of-set class (3) has the highest logit
    logits = torch.tensor([[2.0, 0.0, 1.0, 9.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([0])
    plain = score_logits(logits, labels, 7)
    masked = score_logits(logits, labels, 7, class_mask=np.array([0, 1, 2]))
    assert plain["top1"] == 0.0 and masked["top1"] == 1.0
    # the loss is the cross-entropy over the 3 kept columns
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0, 1.0]), 0)[0].item()
    assert masked["loss"] == pytest.approx(expected)
    assert "top5" not in masked and "top5" in plain  # top-5 of 3 competing classes is moot
    with pytest.raises(ValueError, match="labels outside class_mask"):
        score_logits(logits, torch.tensor([5]), 7, class_mask=np.array([0, 1, 2]))


def test_imagenet_r_mask_of_a_1000_way_model_equals_for_mask() -> None:
    table = classsets.load("imagenet1k")
    classes = pd.DataFrame({"label": table["index"], "class_id": table["wnid"]})
    for name in ("imagenet-r", "imagenet-a"):
        mask = _class_mask_for(name, classes)
        assert len(mask) == 200 and np.array_equal(mask, classsets.for_mask(name))
    assert _class_mask_for("imagenet-v2", classes) is None


# -- tolerant loading --------------------------------------------------------------------------


def test_tolerant_loader_skips_and_reports_bad_files(tmp_path) -> None:
    paths = []
    for i in range(4):
        p = tmp_path / f"ok{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(p)
        paths.append(p)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(paths[1].read_bytes()[:20])
    sources = [*paths, tmp_path / "bad.png", trunc, tmp_path / "missing.png"]
    arr, ok, bad = _load_tolerant(sources, [s.name for s in sources], "L", 8)
    assert arr.shape == (4, 8, 8) and ok.tolist() == [True] * 4 + [False] * 3
    assert [n for n, _ in bad] == ["bad.png", "trunc.png", "missing.png"]
    _check_bad("real train", bad, 1000, 0.01)  # 3 of 1000: tolerated
    with pytest.raises(ValueError, match="3 of 7 real train images are unreadable.*bad.png"):
        _check_bad("real train", bad, 7, 0.01)


def test_tolerant_loader_squares_mixed_sizes(tmp_path) -> None:
    Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 30, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    arr, ok, bad = _load_tolerant([tmp_path / "a.png", tmp_path / "b.png"], ["a", "b"], "RGB", 16)
    assert arr.shape == (2, 16, 16, 3) and ok.all() and not bad


def test_memoised_loader_sees_changed_files_and_hands_out_copies(tmp_path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)).save(p)
    names = [p.name for p in paths + [tmp_path / "missing.png"]]
    first, ok, bad = _load_files([*paths, tmp_path / "missing.png"], names, "L", 8)
    assert ok.tolist() == [True, True, True, False] and [n for n, _ in bad] == ["missing.png"]
    first[:] = 255  # the caller's copy: the memo is untouched
    again, _, _ = _load_files([*paths, tmp_path / "missing.png"], names, "L", 8)
    assert [int(a[0, 0]) for a in again] == [0, 10, 20]
    # A rewritten file (new size / modification time) is read again, as is a new file.
    Image.fromarray(np.full((8, 8), 99, dtype=np.uint8)).save(paths[1])
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8)).save(tmp_path / "missing.png")
    changed, ok, bad = _load_files([*paths, tmp_path / "missing.png"], names, "L", 8)
    assert [int(a[0, 0]) for a in changed] == [0, 99, 20, 77] and ok.all() and not bad


# -- data selection ---------------------------------------------------------------------------


def _rows(per_class: int, classes: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"{c}-{i}" for c in range(classes) for i in range(per_class)],
                         "label": [c for c in range(classes) for _ in range(per_class)]})


def test_real_fraction_and_cap_are_nested_and_per_class() -> None:
    rows = _rows(20)
    half = _select_real(rows, 0.5, None, seed=0)
    quarter = _select_real(rows, 0.25, None, seed=0)
    assert half["label"].value_counts().to_dict() == {0: 10, 1: 10, 2: 10}
    assert set(quarter["image_id"]) < set(half["image_id"])
    assert _select_real(rows, 1.0, 3, seed=0)["label"].value_counts().max() == 3
    assert len(_select_real(rows, 0.01, None, seed=0)) == 3  # at least one per class
    assert set(_select_real(rows, 0.5, None, seed=1)["image_id"]) != set(half["image_id"])
    with pytest.raises(ValueError, match="real_fraction"):
        _select_real(rows, 0.0, None, seed=0)


def test_synthetic_multiplier_takes_a_nested_prefix_per_class() -> None:
    meta = _rows(60).rename(columns={"image_id": "id"})  # one generation at 6x of 10 real
    real_counts = {0: 10, 1: 10, 2: 10}
    chosen = {m: _select_synthetic(meta, real_counts, m, seed=0) for m in (0.5, 1, 2, 4, 6)}
    for m, (rows, short) in chosen.items():
        assert short == 0 and rows["label"].value_counts().to_dict() == {c: int(10 * m) for c in range(3)}
    assert set(chosen[0.5][0]["id"]) < set(chosen[1][0]["id"]) < set(chosen[6][0]["id"])
    # the chosen ids do not depend on the order the shards list them in
    again, _ = _select_synthetic(meta.iloc[::-1], real_counts, 2, seed=0)
    assert set(again["id"]) == set(chosen[2][0]["id"])
    rows, short = _select_synthetic(meta, real_counts, 8, seed=0)
    assert short == 3 * 20 and len(rows) == 180
    all_rows, short = _select_synthetic(meta, real_counts, None, seed=0)
    assert len(all_rows) == 180 and short == 0


# -- evaluation sets in the stage ------------------------------------------------------------


def test_stage_evaluates_present_sets_with_masks_and_skips_absent(tmp_path, monkeypatch) -> None:
    from lib import config, paths
    from lib.training.inputs import _external_sets

    cfg = config.load("train")  # the repository's params, resolved against tmp_path below
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    table = classsets.load("imagenet1k")
    classes = pd.DataFrame({"label": table["index"], "class_id": table["wnid"]})
    r_wnid = classsets.load("imagenet-r")["wnid"].iloc[0]
    not_r = table.loc[~table["wnid"].isin(classsets.load("imagenet-r")["wnid"]), "wnid"].iloc[0]
    for folder, cls in (("imagenet-r", r_wnid), ("imagenet-r", not_r), ("imagenet-v2", "7")):
        d = tmp_path / "data" / folder / cls
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((12, 10, 3), 60 * i, dtype=np.uint8)).save(d / f"{i}.png")
    (tmp_path / "data/imagenet-r" / r_wnid / "broken.png").write_bytes(b"broken")
    found, info = _external_sets(classes, bad := [], data_dir=cfg.path("data"),
                                 names=cfg.eval_sets, channels=3, image_size=8,
                                 max_bad_fraction=0.5)
    assert sorted(found) == ["imagenet-r", "imagenet-v2"]
    assert info["eval_sets_skipped"] == len(cfg.eval_sets) - 2
    r_set, r_mask = found["imagenet-r"]
    assert np.array_equal(r_mask, classsets.for_mask("imagenet-r"))
    assert info["imagenet-r.outside_classes"] == 2  # the non-R class is not scored
    assert len(r_set) == 2 and [b["name"].endswith("broken.png") for b in bad] == [True]
    v2_set, v2_mask = found["imagenet-v2"]
    assert v2_mask is None and v2_set.labels.tolist() == [7, 7]  # V2's index-named folders
