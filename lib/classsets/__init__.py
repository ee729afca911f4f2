"""ImageNet class sets as data: the 1000 classes, standard subsets and ambiguous names.

Everything is read from small files that ship inside the package (``lib/resources/
classsets/``), so no stage needs WordNet, timm's metadata or the network at run time:

- ``imagenet1k.tsv`` — the 1000 ILSVRC-2012 classes in the standard index order (sorted
  WordNet ids) with the raw WordNet name, all synonyms, open_clip's cleaned CLIP name, the
  WordNet 3.0 gloss and the hypernym chain (nearest first, up to ``entity``).
- ``imagenet100.txt`` (CMC's subset), ``imagenet_r.txt`` and ``imagenet_a.txt`` (the
  200-class subsets of ImageNet-R and ImageNet-A) — WordNet ids, each file naming its source.
- ``ambiguous.tsv`` — classes whose names collide or are commonly confused.

The TSV files are written by ``python -m lib.classsets build --wordnet PATH``
(:mod:`lib.classsets.build`, run by :mod:`lib.classsets.__main__`), which records in each file's
header exactly which packages and files it read; runtime code (this module) only reads them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

RESOURCES = Path(__file__).parents[1] / "resources" / "classsets"
COLUMNS = ["index", "wnid", "name", "lemmas", "clip_name", "gloss", "hypernyms", "hypernym_wnids"]
# Class set name -> file of WordNet ids (None: all 1000 classes).
SUBSET_FILES: dict[str, str | None] = {
    "imagenet1k": None,
    "imagenet100": "imagenet100.txt",
    "imagenet-r": "imagenet_r.txt",
    "imagenet-a": "imagenet_a.txt",
}
SUBSET_SIZES = {"imagenet1k": 1000, "imagenet100": 100, "imagenet-r": 200, "imagenet-a": 200}


# -- runtime: reading the committed data ----------------------------------------------------


def _read_tsv(path: Path) -> pd.DataFrame:
    """A TSV whose leading ``#`` lines are its provenance header; every cell kept as text."""
    lines = path.read_text(encoding="utf-8").splitlines()
    n_header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    rows = [line.split("\t") for line in lines[n_header + 1 :] if line]
    return pd.DataFrame(rows, columns=lines[n_header].split("\t"))


def _read_ids(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@functools.cache
def _imagenet1k() -> pd.DataFrame:
    table = _read_tsv(RESOURCES / "imagenet1k.tsv")
    return table.astype({"index": "int64"})


def names() -> list[str]:
    """The valid class set names."""
    return list(SUBSET_FILES)


def load(name: str) -> pd.DataFrame:
    """The class table of class set ``name``, in ImageNet-1k index order.

    Columns: index (0..999, the class's index among the 1000 ImageNet classes), wnid, name
    (the raw first WordNet lemma: two classes may share it), lemmas (all WordNet synonyms,
    ", "-joined), clip_name (open_clip's cleaned name), gloss (WordNet 3.0 definition),
    hypernyms (";"-joined chain of hypernym names, nearest first) and hypernym_wnids (the
    same chain as WordNet ids).
    """
    if name not in SUBSET_FILES:
        raise KeyError(f"unknown class set {name!r}; valid: {', '.join(SUBSET_FILES)}")
    table = _imagenet1k()
    file = SUBSET_FILES[name]
    if file is not None:
        table = table[table["wnid"].isin(_read_ids(RESOURCES / file))]
    if len(table) != SUBSET_SIZES[name]:  # a damaged data file must not shrink a class set
        raise ValueError(f"class set {name}: {len(table)} classes, expected {SUBSET_SIZES[name]}")
    return table.reset_index(drop=True).copy()


def for_mask(name: str) -> np.ndarray:
    """Sorted 1000-way class indices of ``name``: ``logits[:, for_mask("imagenet-r")]``."""
    return load(name)["index"].to_numpy(dtype=np.int64)


def ambiguous() -> pd.DataFrame:
    """ImageNet-1k classes whose names collide or are commonly confused.

    One row per class and group. Columns: group (the shared or confusable word), kind
    (``same_name``: identical raw names; ``shared_synonym``: a WordNet synonym in common;
    ``near_name``: names differing only by a plural ending; ``other_sense``: the name's other
    common WordNet sense is not an ImageNet class), index, wnid, name, confused_with (the
    other WordNet ids, ";"-joined) and note.
    """
    return _read_tsv(RESOURCES / "ambiguous.tsv").astype({"index": "int64"})


def normalize_name(name: str) -> str:
    """Case-, underscore- and whitespace-insensitive form of a class name."""
    return " ".join(name.replace("_", " ").casefold().split())
