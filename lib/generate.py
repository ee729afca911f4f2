"""Text-to-image generation of a prompt manifest into resumable WebDataset shards.

Each image is a pure function of (model, generation parameters, prompt, seed), and its seed
is ``seed_for(seed, id)``, so the bytes of an image do not depend on which ids share its
batch, on the number of ranks or on the resume point. Every pipeline call has the same shape
(``batch_size`` rows, the last call padded), because matrix kernels are chosen by shape and
a different shape can move a pixel by one level; ``batch_size`` is therefore one of the
pinned parameters, and an id regenerated alone gives the same bytes.

Ranks split the sorted ids by position (``i % world_size == rank``) and write only their
own shards (see :mod:`lib.shards`); ids already in completed shards are skipped, so a killed
run resumes with no duplicate and no missing id. ``run.json`` pins the
parameters that change pixels; a rerun with different ones into the same folder is refused
rather than mixing two runs.

A blank (near-constant) or safety-flagged output is regenerated with the derived seed
``seed_for(seed, id, "retry", k)`` for k = 1..max_retries; if every attempt is rejected the
id is dropped: recorded in its shard's marker (so a resume does not retry it forever) and
listed in ``dropped.parquet``, never silently lost.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lib.io import read_json, write_json, write_parquet
from lib.seeding import seed_for
from lib.shards import (
    ShardWriter,
    build_manifest,
    check_id,
    clean_incomplete,
    done_ids,
    dropped_records,
    encode_image,
    image_ext,
    is_blank,
    iter_samples,
    next_shard_index,
)

PROMPT_COLUMNS = ("id", "class_id", "class_name", "strategy", "prompt", "negative_prompt")
# Prompt fields recorded per image; a resumed run must agree with them for every done id.
_PROMPT_FIELDS = ("class_id", "class_name", "strategy", "prompt", "negative_prompt")
DROPPED_COLUMNS = (*PROMPT_COLUMNS, "flags")


class TextToImage(Protocol):
    """What :func:`generate` needs from a text-to-image backend.

    A backend may also carry ``settings``: a dict of what changes its pixels beyond the model
    and scheduler (dtype, device type, compilation); a run pins them in ``run.json``.
    """

    model_id: str
    scheduler_name: str

    def generate(
        self,
        prompts: list[str],
        negative_prompts: list[str] | None,
        seeds: list[int],
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
    ) -> tuple[list[Image.Image], list[bool]]: ...


def image_seed(seed: int, sample_id: str, attempt: int = 0) -> int:
    """The seed of ``attempt`` at image ``sample_id``: 0 is the first, k > 0 the k-th retry."""
    return seed_for(seed, sample_id) if attempt == 0 else seed_for(seed, sample_id, "retry", attempt)


def generate(
    prompts: pd.DataFrame,
    out_dir: str | os.PathLike,
    t2i: TextToImage,
    *,
    seed: int,
    steps: int,
    guidance_scale: float,
    height: int,
    width: int,
    batch_size: int,
    shard_size: int,
    guidance_by_strategy: Mapping[str, float] | None = None,
    output_size: int | None = None,
    image_format: str = "png",
    jpeg_quality: int = 95,
    max_retries: int = 2,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate this rank's share of ``prompts`` into ``out_dir``; resumable and idempotent.

    Returns a summary of this call: total (ids of this rank), generated (images stored now),
    skipped (ids already done), regenerated (stored after at least one retry), dropped,
    attempts (pipeline images made, retries included), padded (rows added to fill the last
    batches), rejected_blank / rejected_nsfw (attempts rejected for that reason), shards
    (written now), seconds, images_per_s and manifest (its path once every id of ``prompts``
    is done, else None).
    """
    _check_args(steps, batch_size, shard_size, height, width, rank, world_size, jpeg_quality,
                max_retries, output_size)
    table = validate_prompts(prompts)
    by_strategy = dict(guidance_by_strategy or {})
    table["guidance_scale"] = guidance_column(table["strategy"], guidance_scale, by_strategy)
    out_dir = Path(out_dir)
    params = run_params(t2i, seed, steps, guidance_scale, by_strategy, height, width,
                        output_size, batch_size, image_format, jpeg_quality, max_retries)
    check_run(out_dir, params)
    clean_incomplete(out_dir, rank)
    done = done_ids(out_dir)
    _check_done_match(out_dir, table, done)
    mine = table.iloc[rank::world_size]
    todo = mine[~mine["id"].isin(done)]
    start = time.perf_counter()
    counts = _run(todo, out_dir, t2i, params, batch_size, shard_size, rank, progress)
    seconds = time.perf_counter() - start
    manifest = _maybe_write_manifest(out_dir, table)
    return {
        "rank": rank,
        "world_size": world_size,
        "total": len(mine),
        "skipped": len(mine) - len(todo),
        **counts,
        "seconds": round(seconds, 3),
        "images_per_s": round(counts["generated"] / seconds, 3) if seconds > 0 else 0.0,
        "manifest": str(manifest) if manifest else None,
    }


def _check_args(
    steps: int,
    batch_size: int,
    shard_size: int,
    height: int,
    width: int,
    rank: int,
    world_size: int,
    jpeg_quality: int,
    max_retries: int,
    output_size: int | None,
) -> None:
    """Fail early, naming the bad argument, before any file is touched."""
    positive = [("steps", steps), ("batch_size", batch_size), ("shard_size", shard_size),
                ("height", height), ("width", width), ("world_size", world_size)]
    if output_size is not None:
        positive.append(("output_size", output_size))
    for name, value in positive:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")


def validate_prompts(prompts: pd.DataFrame) -> pd.DataFrame:
    """The prompt table sorted by id, with missing negative prompts as ''; errors if unusable."""
    if len(prompts) == 0:
        raise ValueError("the prompts table is empty: nothing to generate")
    missing = [c for c in PROMPT_COLUMNS if c not in prompts.columns]
    if missing:
        raise ValueError(f"prompts lack columns {missing}; required: {list(PROMPT_COLUMNS)}")
    table = prompts.loc[:, list(PROMPT_COLUMNS)].copy()
    for sample_id in table["id"]:
        check_id(sample_id)
    dup = table["id"][table["id"].duplicated()]
    if len(dup):
        raise ValueError(f"prompts hold {len(dup)} duplicated ids, e.g. {dup.iloc[0]!r}")
    table["negative_prompt"] = [_text(v) for v in table["negative_prompt"]]
    table["prompt"] = [_text(v) for v in table["prompt"]]
    if (table["prompt"] == "").any():
        raise ValueError(f"empty prompt for id {table['id'][table['prompt'] == ''].iloc[0]!r}")
    return table.sort_values("id", kind="stable").reset_index(drop=True)


def guidance_column(
    strategies: pd.Series, default: float, by_strategy: Mapping[str, float]
) -> pd.Series:
    """The guidance scale of each row: ``by_strategy[strategy]`` if set, else ``default``.

    A strategy named in ``by_strategy`` but absent from the prompts is refused (a typo would
    otherwise silently fall back to the default).
    """
    unknown = sorted(set(by_strategy) - set(strategies))
    if unknown:
        raise ValueError(
            f"guidance_by_strategy names strategies not in the prompts: {', '.join(unknown)}; "
            f"strategies: {', '.join(sorted(set(strategies)))}"
        )
    return strategies.map(lambda s: float(by_strategy.get(s, default))).astype(float)


def _text(value: object) -> str:
    """A prompt cell as a string; None/NaN (no negative prompt) becomes ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def run_params(
    t2i: TextToImage,
    seed: int,
    steps: int,
    guidance_scale: float,
    guidance_by_strategy: Mapping[str, float],
    height: int,
    width: int,
    output_size: int | None,
    batch_size: int,
    image_format: str,
    jpeg_quality: int,
    max_retries: int,
) -> dict[str, Any]:
    """The parameters that determine the pixels/bytes (and the kept set) of a run."""
    fmt = image_ext(image_format)
    params = {
        "model": str(t2i.model_id),
        "scheduler": str(t2i.scheduler_name),
        "seed": int(seed),
        "steps": int(steps),
        "guidance_scale": float(guidance_scale),
        "guidance_by_strategy": {k: float(v) for k, v in sorted(guidance_by_strategy.items())},
        "height": int(height),
        "width": int(width),
        "output_size": None if output_size is None else int(output_size),
        "batch_size": int(batch_size),  # kernels are chosen by shape: see _generate_group
        "format": fmt,
        "max_retries": int(max_retries),
        **dict(getattr(t2i, "settings", {}) or {}),
    }
    if fmt == "jpg":
        params["jpeg_quality"] = int(jpeg_quality)
    return params


def check_run(out_dir: Path, params: dict[str, Any]) -> None:
    """Write ``run.json`` or, if present, refuse unless it holds exactly ``params``.

    Every rank may write it: the content is identical and the write atomic.
    """
    path = out_dir / "run.json"
    if path.exists():
        old = read_json(path)
        if old != params:
            diff = {
                k: (old.get(k), params.get(k))
                for k in sorted(set(old) | set(params))
                if old.get(k) != params.get(k)
            }
            raise ValueError(
                f"{out_dir} holds a run with different parameters (stored, requested): {diff}; "
                "use a new output folder instead of mixing runs"
            )
    else:
        write_json(path, params)


def _check_done_match(out_dir: Path, table: pd.DataFrame, done: set[str]) -> None:
    """Refuse to resume into a folder whose images belong to other ids or other prompts."""
    if not done:
        return
    foreign = sorted(done - set(table["id"]))
    if foreign:
        raise ValueError(
            f"{out_dir} holds {len(foreign)} ids that are not in the prompts, e.g. "
            f"{foreign[:3]}; use a new output folder instead of mixing runs"
        )
    stored = pd.concat(
        [build_manifest(out_dir, allow_empty=True), pd.DataFrame(dropped_records(out_dir))]
    )
    stored = stored.set_index("id").loc[:, list(_PROMPT_FIELDS)]
    wanted = table.set_index("id").loc[stored.index, list(_PROMPT_FIELDS)]
    wanted["class_id"] = [_jsonable(v) for v in wanted["class_id"]]
    differs = (stored.astype(str) != wanted.astype(str)).any(axis=1)
    if differs.any():
        raise ValueError(
            f"{out_dir} holds {int(differs.sum())} images made from other prompts, e.g. id "
            f"{differs.index[differs][0]!r}; use a new output folder instead of mixing runs"
        )


def _run(
    todo: pd.DataFrame,
    out_dir: Path,
    t2i: TextToImage,
    params: dict[str, Any],
    batch_size: int,
    shard_size: int,
    rank: int,
    progress: bool,
) -> dict[str, int]:
    """Generate ``todo``, rolling over to a new shard every ``shard_size`` finished ids.

    On any error the shard being written is aborted (at most ``shard_size`` images are lost);
    completed shards stay and the next run resumes after them.
    """
    counts = dict.fromkeys(
        ("generated", "regenerated", "dropped", "attempts", "padded", "rejected_blank",
         "rejected_nsfw", "shards"), 0)  # fmt: skip
    index = next_shard_index(out_dir, rank)
    writer: ShardWriter | None = None
    bar = tqdm(total=len(todo), unit="img", desc=f"generate rank {rank}", position=rank,
               disable=not progress, mininterval=1.0, dynamic_ncols=True)
    try:
        for _, group in todo.groupby("guidance_scale", sort=True):
            for sample_id, data, meta in _generate_group(t2i, group, params, batch_size, counts):
                if writer is None:
                    writer = ShardWriter(out_dir, rank, index, params["format"])
                    index += 1
                if data is None:
                    writer.drop(sample_id, meta)
                    counts["dropped"] += 1
                else:
                    writer.add(sample_id, data, meta)
                    counts["generated"] += 1
                    counts["regenerated"] += meta["retries"] > 0
                if writer.count + len(writer.dropped) >= shard_size:
                    writer.close()
                    writer, counts["shards"] = None, counts["shards"] + 1
                bar.update(1)
                bar.set_postfix(regenerated=counts["regenerated"], dropped=counts["dropped"],
                                refresh=False)
        if writer is not None:
            writer.close()
            writer, counts["shards"] = None, counts["shards"] + 1
    finally:
        bar.close()
        if writer is not None:  # only on error: drop the half-written shard
            writer.abort()
    return counts


@dataclass
class _Work:
    """One id on its way: the prompt row, the attempt number and why earlier ones failed."""

    row: Any
    attempt: int = 0
    rejected: list[str] = field(default_factory=list)


def _generate_group(
    t2i: TextToImage,
    group: pd.DataFrame,
    params: dict[str, Any],
    batch_size: int,
    counts: dict[str, int],
) -> Iterator[tuple[str, bytes | None, dict[str, Any]]]:
    """Yield (id, encoded bytes or None if dropped, meta) for every row of ``group``.

    Every pipeline call has exactly ``batch_size`` rows: pending retries first, topped up
    with new rows, and the last call padded with copies of its last row. Matrix kernels are
    chosen by shape, so a fixed shape keeps each image's bytes independent of which ids share
    its batch, of its position there, and of whether it is generated alone.
    """
    fresh = group.itertuples(index=False)
    guidance = float(group["guidance_scale"].iloc[0])
    retry: list[_Work] = []
    while True:
        batch, retry = retry[:batch_size], retry[batch_size:]
        batch += [_Work(row) for row in itertools.islice(fresh, batch_size - len(batch))]
        if not batch:
            return
        seeds = [image_seed(params["seed"], w.row.id, w.attempt) for w in batch]
        pad = batch_size - len(batch)
        images, nsfw = t2i.generate(
            [w.row.prompt for w in batch] + [batch[-1].row.prompt] * pad,
            [w.row.negative_prompt for w in batch] + [batch[-1].row.negative_prompt] * pad,
            seeds + [seeds[-1]] * pad,
            steps=params["steps"],
            guidance_scale=guidance,
            height=params["height"],
            width=params["width"],
        )
        _check_output(images, nsfw, batch_size, params)
        counts["attempts"] += len(batch)
        counts["padded"] += pad
        for work, img, flag, seed in zip(batch, images, nsfw, seeds):
            reasons = [name for name, bad in (("blank", is_blank(img)), ("nsfw", flag)) if bad]
            if not reasons:
                img = resize_shorter(img, params["output_size"])
                data = encode_image(img, params["format"], params.get("jpeg_quality", 95))
                yield work.row.id, data, _meta(work, seed, img, data, params)
                continue
            for name in reasons:
                counts[f"rejected_{name}"] += 1
            work.rejected.append("+".join(reasons))
            if work.attempt < params["max_retries"]:
                work.attempt += 1
                retry.append(work)
            else:
                yield work.row.id, None, _drop_record(work)


def resize_shorter(img: Image.Image, size: int | None) -> Image.Image:
    """``img`` with its shorter side resized to ``size`` (Lanczos); unchanged if None."""
    if size is None or min(img.size) == size:
        return img
    w, h = img.size
    scale = size / min(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(new, Image.Resampling.LANCZOS)


def _check_output(
    images: Sequence[Image.Image], nsfw: Sequence[bool], n: int, params: dict[str, Any]
) -> None:
    if len(images) != n or len(nsfw) != n:
        raise RuntimeError(
            f"t2i returned {len(images)} images and {len(nsfw)} flags for {n} prompts"
        )
    size = (params["width"], params["height"])
    bad = [img.size for img in images if img.size != size]
    if bad:
        raise RuntimeError(f"t2i returned images of size {bad[0]} (w, h); expected {size}")


def _prompt_record(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "class_id": _jsonable(row.class_id),
        "class_name": str(row.class_name),
        "strategy": str(row.strategy),
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
    }


def _meta(
    work: _Work, seed: int, img: Image.Image, data: bytes, params: dict[str, Any]
) -> dict[str, Any]:
    """The JSON record stored beside each image (and, later, its manifest row).

    ``seed`` is the seed of the stored image; ``retries`` how many attempts before it were
    rejected and ``flags`` why ('blank', 'nsfw', 'blank+nsfw' per attempt, comma-separated).
    """
    return {
        **_prompt_record(work.row),
        "seed": seed,
        "guidance_scale": float(work.row.guidance_scale),
        "steps": params["steps"],
        "scheduler": params["scheduler"],
        "model": params["model"],
        "height": params["height"],
        "width": params["width"],
        "image_height": img.height,
        "image_width": img.width,
        "format": params["format"],
        "sha256": hashlib.sha256(data).hexdigest(),
        "retries": work.attempt,
        "flags": ",".join(work.rejected),
    }


def _drop_record(work: _Work) -> dict[str, Any]:
    """What a shard marker keeps of a dropped id: its prompt and why every attempt failed."""
    return {**_prompt_record(work.row), "flags": ",".join(work.rejected)}


def _jsonable(value: Any) -> Any:
    """NumPy scalars to Python ones, so class ids serialise as JSON."""
    return value.item() if hasattr(value, "item") else value


def _maybe_write_manifest(out_dir: Path, table: pd.DataFrame) -> Path | None:
    """Write ``manifest.parquet`` and ``dropped.parquet`` once every id is done.

    Whichever rank completes the set writes them. No collective barrier: ranks finish hours
    apart on resumes, past any barrier timeout. Each rank publishes its markers before
    checking, so the last to finish sees them all; concurrent writers produce identical
    content and the writes are atomic.
    """
    if not set(table["id"]) <= done_ids(out_dir):
        return None
    write_parquet(out_dir / "dropped.parquet", dropped_table(out_dir))
    return write_parquet(out_dir / "manifest.parquet", build_manifest(out_dir))


def dropped_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """The dropped ids of ``out_dir`` with their prompts and flags, sorted by id."""
    records = dropped_records(out_dir)
    df = pd.DataFrame(records, columns=list(DROPPED_COLUMNS))
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def sample_grid(
    out_dir: str | os.PathLike,
    manifest: pd.DataFrame,
    per_cell: int = 2,
    rows: str = "class_name",
    cols: str = "strategy",
) -> dict[str, Any]:
    """A grid of stored samples: one row per ``rows`` value, ``per_cell`` columns per
    ``cols`` value, the first ids of each cell (a stable sample).

    Returns images (row-major; a white image where a cell has fewer samples), titles (the
    column name above the first row), ncols and row_labels, for :func:`lib.plots.image_grid`.
    """
    row_names = sorted(manifest[rows].unique(), key=str)
    col_names = sorted(manifest[cols].unique(), key=str)
    first = manifest.sort_values("id", kind="stable").groupby([rows, cols]).head(per_cell)
    cells = first.groupby([rows, cols])["id"].apply(list).to_dict()
    ids = [
        (cells.get((r, c), []) + [None] * per_cell)[k]
        for r in row_names
        for c in col_names
        for k in range(per_cell)
    ]
    loaded = {s["id"]: s["image"] for s in iter_samples(out_dir, ids={i for i in ids if i})}
    size = next(iter(loaded.values())).size if loaded else (8, 8)
    images = [loaded[i] if i else Image.new("RGB", size, "white") for i in ids]
    ncols = per_cell * len(col_names)
    titles = [str(col_names[j // per_cell]) if j % per_cell == 0 else "" for j in range(ncols)]
    titles += [""] * (len(images) - ncols)
    return {"images": images, "titles": titles, "ncols": ncols,
            "row_labels": [str(r) for r in row_names]}
