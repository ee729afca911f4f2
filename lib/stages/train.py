"""Stage ``train``: a timm classifier on real (+ synthetic) images, with the auxiliary BN.

What the run trains on (all deterministic given ``common.seed``):

* **real**: the real train split, per class the first ``max(1, round(real_fraction x n))``
  images (at most ``real_per_class``) in the order of ``seed_for(seed, "real-subset", id)``,
  so a smaller fraction is a subset of a larger one (the limited-real regime);
* **synthetic-only** (``real_fraction: 0``): no real image; the synthetic images are the
  only (main-domain) data, so the auxiliary norm does not apply and is refused;
* **synthetic**: the generated images of ``synthetic_strategy`` (null: every strategy), per
  class the first ``round(synthetic_multiplier x n)`` generated images in
  the order of ``seed_for(seed, "synthetic-subset", id)``, where ``n`` is the class's *full*
  real train count (the count the prompts stage sized the generation on), so one generation
  at the largest multiplier serves every smaller one; ``null`` uses all generated images.

Unreadable or corrupt images (real train, real val, evaluation sets, synthetic) are skipped,
listed in ``bad_images.csv`` and counted in the metrics; more than ``max_bad_fraction`` of a
set fails the stage, naming the first bad files.

Evaluates on the real val split, each OOD corruption of it, and each of ``eval_sets``
(folders under the data root, e.g. ImageNet-V2/-Sketch/-R/-A) that exists; ImageNet-R and -A
are scored with the logits restricted to their 200 classes. Writes the checkpoint, metrics,
per-class accuracies and the training curve.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from lib import classsets, data, shards
from lib.backends import create_classifier
from lib.config import TrainConfig
from lib.io import atomic_path, read_json
from lib.metrics import write_curve, write_metrics
from lib.seeding import seed_for
from lib.training.checkpoints import save_checkpoint
from lib.training.datasets import ImageArrayDataset
from lib.training.distributed import is_main_process, shutdown_distributed
from lib.training.evaluation import evaluate
from lib.training.loop import train_classifier
from lib.training.recipe import steps_for_epochs

_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


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


def load_tolerant(
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
        return (str(path), -1, -1)  # unreadable: load_tolerant reports it
    return (str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_files(files: tuple[tuple[str, int, int], ...], names: tuple[str, ...], mode: str,
                image_size: int) -> tuple[np.ndarray | None, np.ndarray, list[tuple[str, str]]]:
    return load_tolerant([Path(f[0]) for f in files], list(names), mode, image_size)


def load_files(paths: list[Path], names: list[str], mode: str, image_size: int
               ) -> tuple[np.ndarray | None, np.ndarray, list[tuple[str, str]]]:
    """:func:`load_tolerant` of image files, memoised per process by the files' identity."""
    arr, ok, bad = _load_files(tuple(_file_key(p) for p in paths), tuple(names), mode,
                               image_size)
    return (None if arr is None else arr.copy()), ok.copy(), list(bad)


@functools.lru_cache(maxsize=4)
def _shard_samples(folder: str, files: tuple[tuple[str, int, int], ...]
                   ) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in shards.iter_samples(folder, decode=False)}


def shard_samples(folder: Path) -> dict[str, dict[str, Any]]:
    """Every stored sample of the completed shards under ``folder`` (id -> sample, not
    decoded), memoised per process by the shards' identity."""
    key = tuple(_file_key(p) for p in shards.completed_shards(folder))
    return dict(_shard_samples(str(folder), key))


def check_bad(what: str, bad: list[tuple[str, str]], total: int, max_fraction: float) -> None:
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


def select_real(rows: pd.DataFrame, real_fraction: float, real_per_class: int | None,
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


def select_synthetic(meta: pd.DataFrame, real_counts: dict[int, int],
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


def real_split(cfg: TrainConfig, rows: pd.DataFrame, what: str,
               bad_log: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``rows`` of the manifest, skipping (and logging) unreadable images."""
    if rows.empty:
        raise ValueError(f"the real {what} split is empty")
    mode = "L" if cfg.channels == 1 else "RGB"
    paths = rows["path"].tolist()
    arr, ok, bad = load_files([cfg.root / p for p in paths], paths, mode, cfg.image_size)
    bad_log.extend({"set": what, "name": n, "error": e} for n, e in bad)
    check_bad(f"real {what}", bad, len(rows), cfg.max_bad_fraction)
    kept = rows[ok]
    return arr, kept["label"].to_numpy(), kept["image_id"].tolist()


def synthetic_set(cfg: TrainConfig, classes: pd.DataFrame, real_counts: dict[int, int],
                  bad_log: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray, int]:
    """The synthetic images used, their labels, and the shortfall against the multiplier."""
    label_of = dict(zip(classes["class_id"], classes["label"]))
    samples = shard_samples(cfg.path("generate"))
    if not samples:
        raise ValueError(f"no generated images under {cfg.path('generate')}")
    if cfg.synthetic_strategy is not None:
        found = sorted({s["meta"]["strategy"] for s in samples.values()})
        samples = {k: s for k, s in samples.items()
                   if s["meta"]["strategy"] == cfg.synthetic_strategy}
        if not samples:
            raise ValueError(f"synthetic_strategy={cfg.synthetic_strategy!r}: no generated "
                             f"image of that strategy; found: {', '.join(found)}")
    meta = pd.DataFrame({"id": list(samples),
                         "label": [label_of[s["meta"]["class_id"]] for s in samples.values()]})
    chosen, short = select_synthetic(meta, real_counts, cfg.synthetic_multiplier,
                                     cfg.common.seed)
    total = sum(round((cfg.synthetic_multiplier or 0) * k) for k in real_counts.values())
    if short > cfg.max_bad_fraction * max(total, 1):
        raise ValueError(
            f"synthetic_multiplier={cfg.synthetic_multiplier} needs {total} images but "
            f"{short} are missing from {cfg.path('generate')}; generate more "
            f"(prompts.synthetic_multiplier) or lower the multiplier"
        )
    ids = chosen["id"].tolist()
    arr, ok, bad = load_tolerant([io.BytesIO(samples[i]["bytes"]) for i in ids], ids, "RGB",
                                 cfg.image_size)
    bad_log.extend({"set": "synthetic", "name": n, "error": e} for n, e in bad)
    check_bad("synthetic", bad, len(ids), cfg.max_bad_fraction)
    return arr, chosen["label"].to_numpy()[ok], short + len(bad)


def _external_labels(found: pd.DataFrame, classes: pd.DataFrame) -> pd.Series:
    """Model labels of an evaluation folder's images (folders named by class id, or by the
    ImageNet-1k index as ImageNet-V2 ships); NaN for classes the model does not have."""
    label_of = dict(zip(classes["class_id"].astype(str), classes["label"]))
    wnid_of = dict(zip(classsets.load("imagenet1k")["index"].astype(str),
                       classsets.load("imagenet1k")["wnid"]))
    cid = found["class_id"].map(lambda c: c if c in label_of else wnid_of.get(c, c))
    return cid.map(label_of)


def class_mask_for(name: str, classes: pd.DataFrame) -> np.ndarray | None:
    """The model's output columns of class set ``name`` (ImageNet-R/-A), else None.

    For a 1000-way model with labels in ImageNet index order this is
    ``classsets.for_mask(name)``; for a subset model (ImageNet-100) it is the intersection.
    """
    if name not in ("imagenet-r", "imagenet-a"):
        return None
    wnids = set(classsets.load(name)["wnid"])
    return np.sort(classes.loc[classes["class_id"].isin(wnids), "label"].to_numpy())


def external_sets(cfg: TrainConfig, classes: pd.DataFrame, bad_log: list[dict[str, str]]
                  ) -> tuple[dict[str, tuple[ImageArrayDataset, np.ndarray | None]], dict]:
    """Each present folder of ``eval_sets`` as a dataset (+ class mask); counts of the rest."""
    found_sets, info = {}, {"eval_sets_skipped": 0}
    mode = "L" if cfg.channels == 1 else "RGB"
    for name in cfg.eval_sets:
        folder = cfg.path("data") / name
        if not folder.is_dir():
            info["eval_sets_skipped"] += 1
            continue
        found = data.scan_imagefolder(folder)
        found["label"] = _external_labels(found, classes)
        mask = class_mask_for(name, classes)
        inside = found["label"].notna()
        if mask is not None:
            inside &= found["label"].isin(mask)
        info[f"{name}.outside_classes"] = int((~inside).sum())
        found = found[inside]
        if found.empty:
            raise ValueError(f"evaluation set {folder} has no images of the model's classes")
        paths = found["path"].tolist()
        arr, ok, bad = load_tolerant(paths, paths, mode, cfg.image_size)
        bad_log.extend({"set": name, "name": n, "error": e} for n, e in bad)
        check_bad(name, bad, len(found), cfg.max_bad_fraction)
        ds = ImageArrayDataset(arr, found["label"].to_numpy()[ok].astype(np.int64),
                               cfg.image_size, cfg.channels, synthetic=False)
        found_sets[name] = (ds, mask)
    return found_sets, info


# --------------------------------------------------------------------------- the stage


def run(cfg: TrainConfig, out: Path | None = None, metrics_path: Path | None = None,
        history_path: Path | None = None, extra_metrics: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    """Train and evaluate; write the checkpoint and tables to ``out`` (default
    ``dirs.train``), the flat metrics to ``metrics_path`` (default ``metrics/train.json``)
    and the curve to ``history_path`` (default ``metrics/train_history.csv``)."""
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    ood = read_json(cfg.path("classes") / "ood.json")["corruptions"]
    seed, device, n_cls = cfg.common.seed, cfg.common.device, len(classes)
    out = out or cfg.path("train")
    bad_log: list[dict[str, str]] = []

    def dataset(arr: np.ndarray, labels: np.ndarray, synthetic: bool) -> ImageArrayDataset:
        return ImageArrayDataset(arr, labels, cfg.image_size, cfg.channels, synthetic=synthetic)

    train_rows = images[images["split"] == "train"]
    real_counts = {int(k): int(v) for k, v in train_rows["label"].value_counts().items()}
    synthetic, short = None, 0
    if cfg.real_fraction == 0:  # synthetic only: the generated images are the one domain
        if not cfg.use_synthetic or cfg.synthetic_multiplier == 0:
            raise ValueError("real_fraction=0 (synthetic-only) needs use_synthetic=true and a "
                             "non-zero synthetic_multiplier")
        if cfg.aux_norm:
            raise ValueError("real_fraction=0 (synthetic-only): aux_norm must be false, there "
                             "are no real images for the main norm")
        sx, sy, short = synthetic_set(cfg, classes, real_counts, bad_log)
        real = dataset(sx, sy, False)
    else:
        used = select_real(train_rows, cfg.real_fraction, cfg.real_per_class, seed)
        x, y, _ = real_split(cfg, used, "train", bad_log)
        real = dataset(x, y, False)
        if cfg.use_synthetic and cfg.synthetic_fraction > 0 and cfg.synthetic_multiplier != 0:
            sx, sy, short = synthetic_set(cfg, classes, real_counts, bad_log)
            synthetic = dataset(sx, sy, True)
    fraction = cfg.synthetic_fraction if synthetic is not None else 0.0
    steps = cfg.steps if cfg.epochs is None else steps_for_epochs(
        cfg.epochs, cfg.epoch, n_real=len(real),
        n_synthetic=0 if synthetic is None else len(synthetic),
        batch_size=cfg.batch_size, synthetic_fraction=fraction)
    # The initial weights come from torch's global generator: seed it per run (forked, so the
    # caller's stream is untouched), or two runs of the same settings would differ.
    with torch.random.fork_rng():
        torch.manual_seed(seed_for(seed, "init"))
        model = create_classifier("timm", arch=cfg.arch, num_classes=n_cls,
                                  in_chans=cfg.channels, aux_norm=cfg.aux_norm)
    history = train_classifier(
        model, real, synthetic, steps=steps, batch_size=cfg.batch_size,
        synthetic_fraction=fraction, lr=cfg.lr, weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing, synthetic_loss_weight=cfg.synthetic_loss_weight,
        seed=seed, optimizer=cfg.optimizer, momentum=cfg.momentum, schedule=cfg.schedule,
        warmup_fraction=cfg.warmup_fraction, augment=cfg.augment, device=device,
        log_every=max(1, steps // 20), checkpoint_path=out / "state.pt",
        checkpoint_every=cfg.checkpoint_every, progress=cfg.common.progress,
        amp=cfg.amp or False, channels_last=cfg.channels_last, sync_bn=cfg.sync_bn,
    )
    save_checkpoint(model, out / "model.pt", {"arch": cfg.arch, "num_classes": n_cls,
                                              "in_chans": cfg.channels, "aux_norm": cfg.aux_norm,
                                              "image_size": cfg.image_size})
    vx, vy, vids = real_split(cfg, images[images["split"] == "val"], "val", bad_log)
    evals = {"val": evaluate(model, dataset(vx, vy, False), n_cls, device=device)}
    for name in ood:
        evals[f"ood_{name}"] = evaluate(model, dataset(data.corrupt(vx, vids, name, seed), vy, False),
                                        n_cls, device=device)
    extra, eval_info = external_sets(cfg, classes, bad_log)
    for name, (ds, mask) in extra.items():
        evals[name] = evaluate(model, ds, n_cls, device=device, class_mask=mask)
    per_class = pd.DataFrame({"label": classes["label"], "class_id": classes["class_id"],
                              "name": classes["name"],
                              **{k: v["per_class"] for k, v in evals.items()}})
    main = is_main_process()  # under torchrun, rank 0 writes
    if main:
        with atomic_path(out / "per_class.csv") as tmp:
            per_class.to_csv(tmp, index=False)
        with atomic_path(out / "bad_images.csv") as tmp:
            pd.DataFrame(bad_log, columns=["set", "name", "error"]).to_csv(tmp, index=False)
    history_path = history_path or cfg.path("metrics") / "train_history.csv"
    if main:
        write_curve(history_path.parent, history_path.stem, history)
    metrics: dict[str, Any] = {**(extra_metrics or {})} | {
        k: {m: v[m] for m in ("top1", "top5", "loss", "n") if m in v} for k, v in evals.items()}
    bad_counts = pd.Series([b["set"] for b in bad_log], dtype=object).value_counts()
    metrics.update({
        "num_real": 0 if cfg.real_fraction == 0 else len(real),
        "num_synthetic": (len(real) if cfg.real_fraction == 0
                          else 0 if synthetic is None else len(synthetic)),
        "synthetic_missing": short, "steps": steps,
        "bad_images": {s: int(bad_counts.get(s, 0)) for s in ("train", "val", "synthetic")},
        **eval_info,
    })
    metrics_path = metrics_path or cfg.path("metrics") / "train.json"
    if main:
        write_metrics(metrics_path.parent, metrics_path.stem, metrics)
    return {"history": pd.DataFrame(history), "evals": evals, "per_class": per_class,
            "metrics": metrics, "bad_images": pd.DataFrame(bad_log, columns=["set", "name", "error"])}


def with_overrides(cfg: TrainConfig, **values: Any) -> TrainConfig:
    """``cfg`` with some keys replaced (the ablation grid's per-run settings)."""
    return dataclasses.replace(cfg, **values)


def main() -> int:
    """Run the stage with params.yaml's settings in every process of a torchrun launch:

        torchrun --standalone --nproc-per-node 8 -m lib.stages.train

    Each rank trains on its share of every (globally drawn) batch (see
    :func:`lib.training.loop.train_classifier`); rank 0 writes the outputs. ``dvc commit train``
    then records them (the `train` notebook is the single-process entry point).
    """
    from lib import config

    try:
        result = run(config.load("train"))
        if is_main_process():
            print(f"[train] val top1 {result['metrics']['val']['top1']:.4f}")
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
