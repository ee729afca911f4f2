"""The images a classifier run trains and is evaluated on: selected, decoded tolerantly.

One public function, :func:`load_inputs`, with plain arguments (the ``train`` stage and the
ablation grid pass their settings). What a run trains on (all deterministic given ``seed``):

* **real**: the real train split, per class the first ``max(1, round(real_fraction x n))``
  images (at most ``real_per_class``) in the order of ``seed_for(seed, "real-subset", id)``,
  so a smaller fraction is a subset of a larger one (the limited-real regime);
* **synthetic-only** (``real_fraction: 0``): no real image; the synthetic images are the
  only (main-domain) data;
* **synthetic**: the generated images of ``synthetic_strategy`` (None: every strategy), per
  class the first ``round(synthetic_multiplier x n)`` generated images in
  the order of ``seed_for(seed, "synthetic-subset", id)``, where ``n`` is the class's *full*
  real train count (the count the prompts stage sized the generation on), so one generation
  at the largest multiplier serves every smaller one; None uses all generated images.

It is evaluated on the real val split and on each of ``eval_sets`` (folders under the data
root, e.g. ImageNet-V2/-Sketch/-R/-A) that exists, with the output columns that ImageNet-R
and -A are scored on.

Unreadable or corrupt images (real train, real val, evaluation sets, synthetic) are skipped
and listed; more than ``max_bad_fraction`` of a set is an error naming the first bad files.
The generated images are read only from a folder that :func:`lib.shards.verify` finds intact
(every shard as its marker describes it, the manifest in agreement): a damaged shard fails
the run naming the folder, the shards and their ids, and says to rerun the generate stage,
which repairs it. A run never trains silently on fewer images than the manifest lists.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from lib import classsets, data, shards
from lib.seeding import seed_for
from lib.training.datasets import ImageArrayDataset

_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class TrainingInputs:
    """What :func:`load_inputs` returns."""

    real: ImageArrayDataset  # the main domain: the real images (synthetic-only: the generated)
    synthetic: ImageArrayDataset | None  # the auxiliary domain, None when not used
    synthetic_missing: int  # generated images the multiplier asks for that are absent or bad
    val_images: np.ndarray  # the real val split (uint8), its labels and image ids
    val_labels: np.ndarray
    val_ids: list[str]
    eval_sets: dict[str, tuple[ImageArrayDataset, np.ndarray | None]]  # name -> (set, mask)
    eval_info: dict[str, int]  # eval_sets_skipped, and <name>.outside_classes per set
    bad_images: list[dict[str, str]]  # set, name, error of every image skipped


def load_inputs(
    classes: pd.DataFrame,
    images: pd.DataFrame,
    *,
    root: Path,
    generate_dir: Path,
    data_dir: Path,
    image_size: int,
    channels: int,
    seed: int,
    real_fraction: float,
    real_per_class: int | None,
    use_synthetic: bool,
    synthetic_fraction: float,
    synthetic_strategy: str | None,
    synthetic_multiplier: float | None,
    eval_sets: Sequence[str],
    max_bad_fraction: float,
) -> TrainingInputs:
    """The training and evaluation images of a run (see the module docstring).

    ``classes`` and ``images`` are the classes stage's tables (``label``, ``class_id``; and
    ``path`` relative to ``root``, ``split``, ``label``, ``image_id``); ``generate_dir`` holds
    the generated shards and ``data_dir`` the evaluation folders. Decoded images are
    ``image_size`` pixels wide with ``channels`` channels (1: gray).
    """
    bad_log: list[dict[str, str]] = []
    decoding = {"image_size": image_size, "max_bad_fraction": max_bad_fraction}

    def dataset(arr: np.ndarray, labels: np.ndarray, synthetic: bool) -> ImageArrayDataset:
        return ImageArrayDataset(arr, labels, image_size, channels, synthetic=synthetic)

    train_rows = images[images["split"] == "train"]
    real_counts = {int(k): int(v) for k, v in train_rows["label"].value_counts().items()}

    def generated() -> tuple[np.ndarray, np.ndarray, int]:
        return _synthetic_set(classes, real_counts, bad_log, generate_dir=generate_dir,
                              strategy=synthetic_strategy, multiplier=synthetic_multiplier,
                              seed=seed, **decoding)

    synthetic, short = None, 0
    if real_fraction == 0:  # synthetic only: the generated images are the one domain
        if not use_synthetic or synthetic_multiplier == 0:
            raise ValueError("real_fraction=0 (synthetic-only) needs use_synthetic=true and a "
                             "non-zero synthetic_multiplier")
        sx, sy, short = generated()
        real = dataset(sx, sy, False)
    else:
        used = _select_real(train_rows, real_fraction, real_per_class, seed)
        x, y, _ = _real_split(used, "train", bad_log, root=root, channels=channels, **decoding)
        real = dataset(x, y, False)
        if use_synthetic and synthetic_fraction > 0 and synthetic_multiplier != 0:
            sx, sy, short = generated()
            synthetic = dataset(sx, sy, True)
    vx, vy, vids = _real_split(images[images["split"] == "val"], "val", bad_log, root=root,
                               channels=channels, **decoding)
    found, info = _external_sets(classes, bad_log, data_dir=data_dir, names=eval_sets,
                                 channels=channels, **decoding)
    return TrainingInputs(real, synthetic, short, vx, vy, vids, found, info, bad_log)


# --------------------------------------------------------------------------- tolerant loading


def _decode(source: Any, mode: str) -> np.ndarray:
    with Image.open(source) as im:
        return np.asarray(im.convert(mode))


def _to_square(arr: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (bilinear) to ``size``: for mixed-size folders."""
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(arr[top : top + s, left : left + s])
    return np.asarray(im.resize((size, size), Image.BILINEAR))


def _load_tolerant(
    sources: list[Any], names: list[str], mode: str, image_size: int
) -> tuple[np.ndarray | None, np.ndarray, list[tuple[str, str]]]:
    """Decode ``sources`` (paths or file-like objects) skipping those that fail.

    Returns ``(images, ok, bad)``: the uint8 array of the readable images (kept at their
    size when all share one, else centre-cropped and resized to ``image_size``; None when
    none is readable), a bool mask over ``sources``, and ``(name, error)`` per failure.
    """
    arrays, ok, bad = [], np.zeros(len(sources), dtype=bool), []
    for i, (src, name) in enumerate(zip(sources, names)):
        try:
            arrays.append(_decode(src, mode))
            ok[i] = True
        except _READ_ERRORS as err:
            bad.append((name, f"{type(err).__name__}: {err}"))
    if not arrays:
        return None, ok, bad
    if len({a.shape for a in arrays}) > 1:
        arrays = [_to_square(a, image_size) for a in arrays]
    return np.stack(arrays), ok, bad


# Decoded inputs are memoised per process, keyed by the files' identity (path, size and
# modification time): the ablation grid trains many runs in one worker process on the same
# images. A changed file has a new key; the arrays handed out are copies.
def _file_key(path: Path) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), -1, -1)  # unreadable: _load_tolerant reports it
    return (str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_files(files: tuple[tuple[str, int, int], ...], names: tuple[str, ...], mode: str,
                  image_size: int) -> tuple[np.ndarray | None, np.ndarray, list[tuple[str, str]]]:
    return _load_tolerant([Path(f[0]) for f in files], list(names), mode, image_size)


def _load_files(paths: list[Path], names: list[str], mode: str, image_size: int
                ) -> tuple[np.ndarray | None, np.ndarray, list[tuple[str, str]]]:
    """:func:`_load_tolerant` of image files, memoised per process by the files' identity."""
    arr, ok, bad = _cached_files(tuple(_file_key(p) for p in paths), tuple(names), mode,
                                 image_size)
    return (None if arr is None else arr.copy()), ok.copy(), list(bad)


@functools.lru_cache(maxsize=4)
def _cached_shards(folder: str, files: tuple[tuple[str, int, int], ...]
                   ) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in shards.iter_samples(folder, decode=False)}


@functools.lru_cache(maxsize=4)
def _cached_verify(folder: str, files: tuple[tuple[str, int, int], ...]) -> shards.VerifyReport:
    return shards.verify(folder)


def _check_generated(folder: Path) -> None:
    """Refuse a generation folder that :func:`lib.shards.verify` does not find intact; the
    check is memoised per process by the identity of the folder's shard files and manifest."""
    files = [*sorted(folder.glob("shard-*")), folder / shards.MANIFEST]
    report = _cached_verify(str(folder), tuple(_file_key(p) for p in files))
    if not report.ok:
        raise ValueError(
            f"the generated images under {folder} cannot be trusted ({len(report.damaged)} "
            f"damaged shards, {len(report.damaged_ids)} ids affected); no run trains on less "
            f"than the manifest lists:\n{report.describe()}"
        )


def _shard_samples(folder: Path) -> dict[str, dict[str, Any]]:
    """Every stored sample of the completed shards under ``folder`` (id -> sample, not
    decoded), memoised per process by the shards' identity."""
    key = tuple(_file_key(p) for p in shards.completed_shards(folder))
    return dict(_cached_shards(str(folder), key))


def _check_bad(what: str, bad: list[tuple[str, str]], total: int, max_fraction: float) -> None:
    """Fail when more than ``max_fraction`` of ``total`` images (or all of them) are bad."""
    if bad and (len(bad) > max_fraction * total or len(bad) == total):
        first = "; ".join(f"{n} ({e})" for n, e in bad[:3])
        raise ValueError(
            f"{len(bad)} of {total} {what} images are unreadable or corrupt "
            f"(max_bad_fraction={max_fraction}); first: {first}"
        )


# --------------------------------------------------------------------------- selection


def _first_per_class(
    ids: pd.Series, labels: pd.Series, counts: dict[int, int], seed: int, key: str
) -> np.ndarray:
    """Positions of the first ``counts[label]`` items of each class in hash order of the id."""
    order = pd.DataFrame({"pos": range(len(ids)), "label": labels.to_numpy(),
                          "h": [seed_for(seed, key, i) for i in ids]}).sort_values(["label", "h"])
    rank = order.groupby("label").cumcount()
    cap = order["label"].map(counts).fillna(0)
    return np.sort(order.loc[rank.to_numpy() < cap.to_numpy(), "pos"].to_numpy())


def _select_real(rows: pd.DataFrame, real_fraction: float, real_per_class: int | None,
                 seed: int) -> pd.DataFrame:
    """The real train rows used: per class ``max(1, round(fraction x n))``, capped."""
    if not 0.0 < real_fraction <= 1.0:
        raise ValueError(f"real_fraction must be in (0, 1], got {real_fraction}")
    if real_per_class is not None and real_per_class < 1:
        raise ValueError(f"real_per_class must be positive or null, got {real_per_class}")
    n = rows["label"].value_counts()
    counts = {int(c): min(max(1, round(real_fraction * k)), real_per_class or k)
              for c, k in n.items()}
    pos = _first_per_class(rows["image_id"], rows["label"], counts, seed, "real-subset")
    return rows.iloc[pos]


def _select_synthetic(meta: pd.DataFrame, real_counts: dict[int, int],
                      multiplier: float | None, seed: int) -> tuple[pd.DataFrame, int]:
    """The synthetic rows used (columns id, label) and the shortfall (images missing).

    ``multiplier`` x the class's real train count, first in hash order of the id; a class
    with fewer generated images uses all it has and the missing ones are counted.
    """
    if multiplier is None:
        return meta, 0
    if multiplier < 0:
        raise ValueError(f"synthetic_multiplier must be >= 0 or null, got {multiplier}")
    want = {c: round(multiplier * k) for c, k in real_counts.items()}
    have = meta["label"].value_counts().to_dict()
    short = sum(max(0, w - have.get(c, 0)) for c, w in want.items())
    pos = _first_per_class(meta["id"], meta["label"], want, seed, "synthetic-subset")
    return meta.iloc[pos], short


# --------------------------------------------------------------------------- data sets


def _real_split(rows: pd.DataFrame, what: str, bad_log: list[dict[str, str]], *, root: Path,
                channels: int, image_size: int, max_bad_fraction: float
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``rows`` of the manifest, skipping (and logging) unreadable images."""
    if rows.empty:
        raise ValueError(f"the real {what} split is empty")
    mode = "L" if channels == 1 else "RGB"
    paths = rows["path"].tolist()
    arr, ok, bad = _load_files([root / p for p in paths], paths, mode, image_size)
    bad_log.extend({"set": what, "name": n, "error": e} for n, e in bad)
    _check_bad(f"real {what}", bad, len(rows), max_bad_fraction)
    kept = rows[ok]
    return arr, kept["label"].to_numpy(), kept["image_id"].tolist()


def _synthetic_set(classes: pd.DataFrame, real_counts: dict[int, int],
                   bad_log: list[dict[str, str]], *, generate_dir: Path, strategy: str | None,
                   multiplier: float | None, seed: int, image_size: int,
                   max_bad_fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The synthetic images used, their labels, and the shortfall against the multiplier."""
    label_of = dict(zip(classes["class_id"], classes["label"]))
    _check_generated(generate_dir)
    samples = _shard_samples(generate_dir)
    if not samples:
        raise ValueError(f"no generated images under {generate_dir}")
    if strategy is not None:
        found = sorted({s["meta"]["strategy"] for s in samples.values()})
        samples = {k: s for k, s in samples.items() if s["meta"]["strategy"] == strategy}
        if not samples:
            raise ValueError(f"synthetic_strategy={strategy!r}: no generated image of that "
                             f"strategy; found: {', '.join(found)}")
    meta = pd.DataFrame({"id": list(samples),
                         "label": [label_of[s["meta"]["class_id"]] for s in samples.values()]})
    chosen, short = _select_synthetic(meta, real_counts, multiplier, seed)
    total = sum(round((multiplier or 0) * k) for k in real_counts.values())
    if short > max_bad_fraction * max(total, 1):
        raise ValueError(
            f"synthetic_multiplier={multiplier} needs {total} images but {short} are missing "
            f"from {generate_dir}; generate more (prompts.synthetic_multiplier) or lower the "
            f"multiplier"
        )
    ids = chosen["id"].tolist()
    arr, ok, bad = _load_tolerant([io.BytesIO(samples[i]["bytes"]) for i in ids], ids, "RGB",
                                  image_size)
    bad_log.extend({"set": "synthetic", "name": n, "error": e} for n, e in bad)
    _check_bad("synthetic", bad, len(ids), max_bad_fraction)
    return arr, chosen["label"].to_numpy()[ok], short + len(bad)


def _external_labels(found: pd.DataFrame, classes: pd.DataFrame) -> pd.Series:
    """Model labels of an evaluation folder's images (folders named by class id, or by the
    ImageNet-1k index as ImageNet-V2 ships); NaN for classes the model does not have."""
    label_of = dict(zip(classes["class_id"].astype(str), classes["label"]))
    wnid_of = dict(zip(classsets.load("imagenet1k")["index"].astype(str),
                       classsets.load("imagenet1k")["wnid"]))
    cid = found["class_id"].map(lambda c: c if c in label_of else wnid_of.get(c, c))
    return cid.map(label_of)


def _class_mask_for(name: str, classes: pd.DataFrame) -> np.ndarray | None:
    """The model's output columns of class set ``name`` (ImageNet-R/-A), else None.

    For a 1000-way model with labels in ImageNet index order this is
    ``classsets.for_mask(name)``; for a subset model (ImageNet-100) it is the intersection.
    """
    if name not in ("imagenet-r", "imagenet-a"):
        return None
    wnids = set(classsets.load(name)["wnid"])
    return np.sort(classes.loc[classes["class_id"].isin(wnids), "label"].to_numpy())


def _external_sets(classes: pd.DataFrame, bad_log: list[dict[str, str]], *, data_dir: Path,
                   names: Sequence[str], channels: int, image_size: int,
                   max_bad_fraction: float
                   ) -> tuple[dict[str, tuple[ImageArrayDataset, np.ndarray | None]], dict]:
    """Each present folder of ``names`` under ``data_dir`` as a dataset (+ class mask);
    counts of the rest."""
    found_sets, info = {}, {"eval_sets_skipped": 0}
    mode = "L" if channels == 1 else "RGB"
    for name in names:
        folder = data_dir / name
        if not folder.is_dir():
            info["eval_sets_skipped"] += 1
            continue
        found = data.scan_imagefolder(folder)
        found["label"] = _external_labels(found, classes)
        mask = _class_mask_for(name, classes)
        inside = found["label"].notna()
        if mask is not None:
            inside &= found["label"].isin(mask)
        info[f"{name}.outside_classes"] = int((~inside).sum())
        found = found[inside]
        if found.empty:
            raise ValueError(f"evaluation set {folder} has no images of the model's classes")
        paths = found["path"].tolist()
        arr, ok, bad = _load_tolerant(paths, paths, mode, image_size)
        bad_log.extend({"set": name, "name": n, "error": e} for n, e in bad)
        _check_bad(name, bad, len(found), max_bad_fraction)
        ds = ImageArrayDataset(arr, found["label"].to_numpy()[ok].astype(np.int64),
                               image_size, channels, synthetic=False)
        found_sets[name] = (ds, mask)
    return found_sets, info
