"""A retrieved image set, written in exactly the format of a generation run.

:func:`retrieve_set` scores the corpus against each class's query
(:mod:`lib.retrieval.select`) and writes the chosen images to ``out`` as a generation run
would (:mod:`lib.generation`): WebDataset tar shards ``shard-00000-IIIIII.tar`` with their
``.done`` markers (:class:`lib.shards.ShardWriter`), ``manifest.parquet`` (built from the
shards by :func:`lib.shards.build_image_manifest`, so it has the generation manifest's
columns), an empty ``dropped.parquet`` and ``run.json``. The training code reads such a
folder as it reads generated images, and ``python -m lib.shards verify DIR`` checks it.

Ids are ``<class_id>-retrieval-<k:06d>``, k the rank of the image in its class (0: the most
similar); images are PNG, mode L, at the corpus's size, like the mini generator's. Each
image's record (JSON member and manifest row) holds the generation fields, with the query as
``prompt``, ``strategy`` ``"retrieval"``, the CLIP model as ``model`` and ``scheduler``
``"retrieval"`` (no seed, steps or guidance: 0), plus ``rank``, ``corpus_index``,
``similarity``, ``corpus_caption`` and ``caption_names_class`` (None when the corpus has no
glyph column). ``retrieval.json`` keeps the summary and marks the set complete.

Training takes a class's first ``round(m x n)`` synthetic images in the hash order of their
ids (:mod:`lib.training.inputs`), not in rank order: a smaller multiplier trained on this
folder gets a uniform random subset of the class's retrieved images, nested across
multipliers. For exactly the top ``m x n`` per class, retrieve a folder per multiplier.

Resumable: a folder whose ``run.json`` holds the same settings and that is complete (its
summary written, :func:`lib.shards.verify` intact) is left as it is; a folder with the same
settings but unfinished or damaged is written again (retrieval is deterministic); a folder
of other settings is refused.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib import shards
from lib.backends.clip import create_clip
from lib.config import DisambiguateConfig
from lib.generation.runs import dropped_table
from lib.io import read_json, write_json, write_parquet
from lib.prompts import targets_per_class, train_counts
from lib.retrieval.corpus import DEFAULT_LEVELS, RetrievalCorpus, load_retrieval_corpus
from lib.retrieval.select import (
    assign,
    check_corpus_size,
    check_filled,
    class_glyphs,
    class_queries,
    embed_corpus,
    embed_queries,
    names_class,
)

STRATEGY = "retrieval"
SUMMARY_FILE = "retrieval.json"
RUN_FILE = "run.json"
CLASS_COLUMNS = ("class_id", "label", "name")


def sample_id(class_id: str, k: int) -> str:
    """The id of the ``k``-th retrieved image of ``class_id`` (0: the most similar)."""
    return shards.check_id(f"{class_id}-{STRATEGY}-{k:06d}")


def retrieve_set(
    corpus_dir: str | os.PathLike,
    clip_model_dir: str | os.PathLike,
    classes: pd.DataFrame,
    counts: pd.Series,
    out: str | os.PathLike,
    *,
    prompt_template: str = "the digit {name}",
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    shard_size: int = 256,
    clip_pretrained: str | None = None,
    model_name: str | None = None,
    levels: int = DEFAULT_LEVELS,
) -> dict[str, Any]:
    """Retrieve ``counts[class_id]`` corpus images per class into ``out`` (module docstring).

    ``classes`` has class_id, label, name (and prompt_name if the template uses it; a
    ``glyph`` column, if present, is what precision compares with); ``clip_model_dir`` is
    anything the ``open_clip`` CLIP backend loads; ``model_name`` is what the records and
    ``run.json`` call the model (default: ``clip_model_dir`` as given; pass the reference
    of params.yaml to keep machine paths out). Returns the summary (:func:`_summary`) with
    ``out``, ``seconds`` and ``resumed`` (True: the folder was already complete).
    """
    start = time.perf_counter()
    out = Path(out)
    table, wanted = _check_classes(classes, counts)
    queries = class_queries(table, prompt_template)
    corpus = load_retrieval_corpus(corpus_dir, levels)
    check_corpus_size(list(queries), wanted, len(corpus))
    model_name = str(clip_model_dir) if model_name is None else model_name
    params = {
        "strategy": STRATEGY, "corpus_sha256": corpus.sha256, "corpus_size": len(corpus),
        "levels": int(levels), "clip_model": model_name, "clip_pretrained": clip_pretrained,
        "clip_sha256": _model_sha256(clip_model_dir), "prompt_template": prompt_template,
        "queries": queries, "counts": dict(zip(table["class_id"], map(int, wanted))),
        "batch_size": int(batch_size), "device": device, "format": "png",
        "shard_size": int(shard_size),
    }  # fmt: skip
    if _prepare(out, params):
        return {**read_json(out / SUMMARY_FILE), "out": str(out), "resumed": True,
                "seconds": round(time.perf_counter() - start, 3)}
    scorer = create_clip("open_clip", model=str(clip_model_dir), pretrained=clip_pretrained,
                         device=device, batch_size=batch_size)
    sims = embed_corpus(scorer, corpus, batch_size, progress) @ embed_queries(
        scorer, list(queries.values())).T
    chosen = assign(sims, wanted)
    check_filled(chosen, list(queries), wanted, len(corpus))
    records = _records(table, queries, chosen, sims, corpus, model_name)
    _write(out, records, corpus, shard_size)
    summary = _summary(table, queries, chosen, sims, corpus, records, prompt_template)
    write_json(out / SUMMARY_FILE, summary)  # last: marks the set complete
    return {**summary, "out": str(out), "resumed": False,
            "seconds": round(time.perf_counter() - start, 3)}


def _check_classes(classes: pd.DataFrame, counts: pd.Series) -> tuple[pd.DataFrame, list[int]]:
    """The classes in label order with string ids, and their counts; errors name the class."""
    missing = [c for c in CLASS_COLUMNS if c not in classes.columns]
    if missing:
        raise ValueError(f"the classes table lacks columns {missing}; it needs "
                         f"{list(CLASS_COLUMNS)} (and prompt_name if the template uses it)")
    table = classes.assign(class_id=classes["class_id"].astype(str))
    table = table.sort_values("label", kind="stable").reset_index(drop=True)
    dup = table["class_id"][table["class_id"].duplicated()]
    if len(dup):
        raise ValueError(f"the classes table repeats class ids {sorted(set(dup))}")
    by_id = {str(k): v for k, v in counts.items()}
    unknown = sorted(set(by_id) - set(table["class_id"]))
    lacking = sorted(set(table["class_id"]) - set(by_id))
    if unknown or lacking:
        raise ValueError(f"counts and classes disagree: counts for unknown classes {unknown}, "
                         f"classes without a count {lacking}")
    wanted = []
    for cid in table["class_id"]:
        n = by_id[cid]
        if not float(n).is_integer() or n < 0:
            raise ValueError(f"class {cid}: count {n!r} is not a non-negative integer")
        sample_id(cid, 0)  # the class id must make valid sample ids
        wanted.append(int(n))
    return table, wanted


def _model_sha256(model: str | os.PathLike) -> str | None:
    """The sha256 of a local model folder's files (names and bytes); None for a hub name."""
    folder = Path(str(model).removeprefix("local-dir:")).expanduser()
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _prepare(out: Path, params: dict[str, Any]) -> bool:
    """True if ``out`` already holds this complete set; else make it ready to be written:
    refuse other settings or foreign shards, remove an unfinished set of these settings."""
    run_file = out / RUN_FILE
    if run_file.is_file():
        old = read_json(run_file)
        if old != params:
            diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
            raise ValueError(f"{out} holds a set made with other settings (they differ in "
                             f"{diff}); use a new output folder, or delete this one")
        if (out / SUMMARY_FILE).is_file() and shards.verify(out).ok:
            return True
    elif any(out.glob("shard-*")):
        raise ValueError(f"{out} holds shards but no {RUN_FILE}: not a retrieved set; use a "
                         "new output folder")
    for path in [*out.glob("shard-*"), *(out / n for n in (shards.MANIFEST, "dropped.parquet",
                                                            SUMMARY_FILE))]:
        path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(run_file, params)
    return False


def _records(table: pd.DataFrame, queries: dict[str, str], chosen: list[np.ndarray],
             sims: np.ndarray, corpus: RetrievalCorpus, model_name: str) -> list[dict[str, Any]]:
    """The record of every retrieved image (without sha256, added when it is encoded)."""
    height, width = corpus.images.shape[1:]
    records = []
    glyphs = class_glyphs(table)
    for c, row in table.iterrows():
        cid = row["class_id"]
        correct = names_class(corpus.glyphs, chosen[c], glyphs[c])
        for k, i in enumerate(chosen[c]):
            records.append({
                "id": sample_id(cid, k), "class_id": cid, "class_name": str(row["name"]),
                "strategy": STRATEGY, "prompt": queries[cid], "negative_prompt": "",
                "seed": 0, "guidance_scale": 0.0, "steps": 0, "scheduler": STRATEGY,
                "model": model_name, "height": int(height), "width": int(width),
                "image_height": int(height), "image_width": int(width), "format": "png",
                "retries": 0, "flags": "", "rank": k, "corpus_index": int(i),
                "similarity": float(sims[i, c]), "corpus_caption": corpus.captions[i],
                "caption_names_class": None if correct is None else bool(correct[k]),
            })  # fmt: skip
    return records


def _write(out: Path, records: list[dict[str, Any]], corpus: RetrievalCorpus,
           shard_size: int) -> None:
    """The shards (ids sorted, ``shard_size`` each, rank 0), then the manifests."""
    writer, index = None, 0
    try:
        for rec in sorted(records, key=lambda r: r["id"]):
            if writer is None:
                writer, index = shards.ShardWriter(out, 0, index, "png"), index + 1
            data = shards.encode_image(corpus.pil(rec["corpus_index"]), "png")
            writer.add(rec["id"], data, {**rec, "sha256": hashlib.sha256(data).hexdigest()})
            if writer.count >= shard_size:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:  # only on error: drop the half-written shard
            writer.abort()
    write_parquet(out / "dropped.parquet", dropped_table(out))
    write_parquet(out / shards.MANIFEST, shards.build_image_manifest(out))


def _summary(table: pd.DataFrame, queries: dict[str, str], chosen: list[np.ndarray],
             sims: np.ndarray, corpus: RetrievalCorpus, records: list[dict[str, Any]],
             prompt_template: str) -> dict[str, Any]:
    """What the set holds: sizes, similarities, precision (overall and per class) and how
    many images went to a class other than their most similar one (``contested``)."""
    per_class, correct = {}, []
    for c, cid in enumerate(table["class_id"]):
        got = [r for r in records if r["class_id"] == cid]
        ok = [r["caption_names_class"] for r in got]
        s = sims[chosen[c], c] if len(chosen[c]) else np.zeros(0)
        per_class[cid] = {
            "query": queries[cid], "images": len(got),
            "precision": _fraction(ok) if corpus.glyphs is not None else None,
            "similarity_min": _round(s.min()) if len(s) else None,
            "similarity_mean": _round(s.mean()) if len(s) else None,
        }
        correct += ok
    best = sims.argmax(axis=1) if sims.size else np.zeros(0, np.int64)
    contested = sum(int((best[ix] != c).sum()) for c, ix in enumerate(chosen))
    return {
        "images": len(records), "classes": len(table), "corpus_size": len(corpus),
        "prompt_template": prompt_template, "contested": contested,
        "precision": _fraction(correct) if corpus.glyphs is not None else None,
        "precision_basis": "corpus glyph column" if corpus.glyphs is not None else
                           "none: the corpus has no glyph column",
        "similarity_mean": _round(np.mean([r["similarity"] for r in records]))
                           if records else None,
        "per_class": per_class,
    }  # fmt: skip


def _fraction(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 6) if flags else None


def _round(x: float) -> float:
    return round(float(x), 6)


def profile_set(dis: DisambiguateConfig, template: str, out: Path, multiplier: float, *,
                batch_size: int = 256) -> dict[str, Any]:
    """The profile's retrieved set at ``multiplier`` (:func:`retrieve_set`): the classes and
    prompt names of the disambiguate stage, per class ``multiplier`` x its real train count
    (as a generation is sized), the corpus ``<common.dirs.zoo>/corpus``, the CLIP model of
    ``disambiguate.clip_model``, queries from ``template``."""
    classes = pd.read_parquet(dis.path("disambiguate") / "prompt_names.parquet")
    images = pd.read_parquet(dis.path("classes") / "images.parquet")
    return retrieve_set(
        dis.path("zoo") / "corpus", dis.resolve_model(dis.clip_model), classes,
        targets_per_class(train_counts(images), multiplier), out,
        prompt_template=template, batch_size=batch_size, device=dis.common.device,
        progress=dis.common.progress, clip_pretrained=dis.clip_pretrained,
        model_name=dis.clip_model)
