"""Real data: the bundled digits, ImageFolder class sets, splits and OOD corruptions.

Real datasets live under the DVC-tracked ``data/`` root in ImageFolder layout
(``<dataset>/<class_id>/<image>`` or ``<dataset>/{train,val}/<class_id>/<image>``) with an
optional ``classes.tsv`` (``class_id<TAB>name[<TAB>gloss[<TAB>hypernyms]]``). The stages keep *manifests* of the splits,
never copies, with each image's sha256 (:func:`file_digests`). Out-of-distribution sets are corruptions of the val split, applied when the
images are loaded, seeded per image id.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from lib.seeding import numpy_rng, seed_for

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


# -- the bundled real data ---------------------------------------------------------------

def materialize_digits(dest: str | Path) -> int:
    """Write scikit-learn's bundled handwritten digits as an ImageFolder of 8x8 PNGs.

    The 1,797 images (UCI Optical Recognition of Handwritten Digits: counts of set pixels of
    32x32 bitmaps in 4x4 blocks, 0..16) are scaled to 0..255. The bytes are identical on
    every run, so ``data.dvc`` stays clean. Returns the number of images written.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # Glosses and hypernyms written for this project (the digits have no WordNet ids).
    rows = ["# class_id\tname\tgloss\thypernyms"] + [
        f"{i}\t{name}\tthe digit {i}, a handwritten numeral\tdigit;numeral;symbol"
        for i, name in enumerate(DIGIT_NAMES)
    ]
    _write_if_changed(dest / "classes.tsv", ("\n".join(rows) + "\n").encode())
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for index, (img, label) in enumerate(zip(pixels, digits.target)):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        _write_if_changed(dest / str(label) / f"digit-{index:04d}.png", buf.getvalue())
    return len(pixels)


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- class sets and splits ---------------------------------------------------------------

CLASS_COLUMNS = ("name", "gloss", "hypernyms")


def read_class_table(dataset: Path, class_ids: list[str]) -> pd.DataFrame:
    """Per class id: name, gloss and hypernym chain (";"-joined, nearest first).

    From ``classes.tsv`` (``class_id<TAB>name[<TAB>gloss[<TAB>hypernyms]]``) when present;
    a class missing there is named by its folder, with no gloss or hypernyms.
    """
    table = {c: {"name": c, "gloss": "", "hypernyms": ""} for c in class_ids}
    tsv = dataset / "classes.tsv"
    if tsv.exists():
        for line in tsv.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                cid, *fields = line.split("\t")
                if cid in table:
                    for col, value in zip(CLASS_COLUMNS, fields):
                        table[cid][col] = value.strip() or table[cid][col]
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("class_id").reset_index()


def scan_imagefolder(folder: Path) -> pd.DataFrame:
    """All images under ``folder/<class_id>/``: columns path (str), class_id."""
    if not folder.is_dir():
        raise FileNotFoundError(f"real-image folder {folder} does not exist")
    rows = [
        (str(p), cls.name)
        for cls in sorted(d for d in folder.iterdir() if d.is_dir())
        for p in sorted(cls.rglob("*"))
        if p.suffix.lower() in IMAGE_EXTS
    ]
    if not rows:
        raise ValueError(f"no images found under {folder} (expected <class_id>/<image> layout)")
    return pd.DataFrame(rows, columns=["path", "class_id"])


def build_splits(
    dataset: Path,
    root: Path,
    *,
    val_fraction: float,
    train_per_class: int | None,
    val_per_class: int | None,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The class table and the split manifest of an ImageFolder dataset.

    Uses ``train/`` and ``val/`` subfolders when the dataset has them; otherwise each class is
    split by a hash of (seed, image path), so the split never depends on file order. Paths in
    the manifest are relative to the project root.
    """
    if not dataset.is_dir():
        raise FileNotFoundError(
            f"dataset folder {dataset} does not exist; see README ('Real data') to add it"
        )
    if (dataset / "train").is_dir():
        parts = [scan_imagefolder(dataset / s).assign(split=s) for s in ("train", "val")]
        images = pd.concat(parts, ignore_index=True)
    else:
        images = scan_imagefolder(dataset)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        u = images["path"].map(lambda p: seed_for(seed, "split", _rel_id(p, dataset)) / 2**63)
        images["split"] = np.where(u < val_fraction, "val", "train")
    images["image_id"] = images["path"].map(lambda p: _rel_id(p, dataset))
    images["path"] = images["path"].map(lambda p: str(Path(p).relative_to(root)))
    images = images.sort_values("path").reset_index(drop=True)
    rank = images.groupby(["split", "class_id"]).cumcount()
    cap = images["split"].map({"train": train_per_class, "val": val_per_class})
    images = images[cap.isna() | (rank < cap.fillna(0))]
    ids = sorted(images["class_id"].unique())
    classes = read_class_table(dataset, ids)
    classes.insert(0, "label", range(len(ids)))
    images["label"] = images["class_id"].map(dict(zip(ids, range(len(ids)))))
    cols = ["image_id", "path", "class_id", "label", "split"]
    return classes, images[cols].sort_values(["split", "path"]).reset_index(drop=True)


def file_digests(paths: Sequence[str], root: Path, workers: int = 8) -> list[str]:
    """The sha256 of each file of ``paths`` (relative to ``root``), in order.

    The split manifest records them so that it changes when an image's content does: DVC
    then re-runs everything trained on it (a path alone stays the same). Files are read in
    ``workers`` threads (hashing releases the GIL), which keeps ImageNet's 1.3M files to
    minutes; an unreadable file is an error naming it.
    """
    def digest(rel: str) -> str:
        h = hashlib.sha256()
        try:
            with open(root / rel, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except OSError as err:
            raise OSError(f"cannot read real image {rel} to record its digest: {err}") from err
        return h.hexdigest()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(digest, paths, chunksize=256))


def _rel_id(path: str, dataset: Path) -> str:
    """A stable image id: the path inside the dataset, without suffix, "/" -> "-".

    Unique within a dataset and independent of where the checkout lives.
    """
    return Path(path).relative_to(dataset).with_suffix("").as_posix().replace("/", "-")


# -- loading and corruptions ---------------------------------------------------------------

def load_images(paths: list[str], root: Path, mode: str = "L") -> np.ndarray:
    """Decode images (all of one size) into a uint8 array (N,H,W) for "L", (N,H,W,3) for "RGB"."""
    arrays = []
    for p in paths:
        with Image.open(root / p) as im:
            arrays.append(np.asarray(im.convert(mode)))
    return np.stack(arrays)


def _invert(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - img


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0.0, 0.25 * 255, img.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    radius = max(img.shape[0], img.shape[1]) / 12.0
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


def _thicken(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Grey dilation with a 3x3 window (a pen one pixel wider), blended half-way so an 8x8
    # digit keeps its holes: thicker, brighter strokes.
    dilated = np.asarray(Image.fromarray(img).filter(ImageFilter.MaxFilter(3)), np.float32)
    return np.clip(np.rint(0.5 * img + 0.5 * dilated + 0.25 * dilated * (img > 0)),
                   0, 255).astype(np.uint8)


def _rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = float(rng.uniform(15.0, 30.0) * rng.choice([-1.0, 1.0]))
    return np.asarray(Image.fromarray(img).rotate(angle, resample=Image.BILINEAR))


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "invert": _invert,  # polarity flip: light strokes on dark become dark on light
    "noise": _noise,  # additive Gaussian noise, sigma = 25% of the range
    "blur": _blur,  # Gaussian blur, radius = 1/12 of the image side
    "thicken": _thicken,  # stroke thickening: 3x3 grey dilation, blended with the original
    "rotate": _rotate,  # rotation by 15-30 degrees either way (bilinear, black corners)
}


def corrupt(images: np.ndarray, image_ids: list[str], name: str, seed: int) -> np.ndarray:
    """The OOD version ``name`` of ``images``; each image's randomness is seeded by its id."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; valid: {', '.join(sorted(CORRUPTIONS))}")
    fn = CORRUPTIONS[name]
    if len(images) == 0:
        return images.copy()
    return np.stack([fn(img, numpy_rng(seed, name, i)) for img, i in zip(images, image_ids)])


def corruption_examples(images: pd.DataFrame, root: Path, names: Sequence[str],
                        seed: int) -> dict[str, np.ndarray]:
    """The first val image of each class (``images``: the classes stage's image table) and
    its OOD versions: ``{"val": images, name: corrupt(images, ...) for each name}``."""
    val = images[images["split"] == "val"].groupby("class_id").head(1)
    arr = load_images(val["path"].tolist(), root)
    ids = val["image_id"].tolist()
    return {"val": arr, **{name: corrupt(arr, ids, name, seed) for name in names}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.data", description="materialise the bundled real data under data/"
    )
    parser.add_argument("dest", nargs="?", default="data/digits")
    args = parser.parse_args(argv)
    n = materialize_digits(args.dest)
    print(f"digits: {n} images in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
