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
rather than mixing two runs (:mod:`lib.generation.runs`). Before resuming, a rank verifies
its shards and sets damaged ones aside, so their ids are generated again, byte for byte
(:mod:`lib.generation.repair`).

A blank (near-constant) or safety-flagged output is regenerated with the derived seed
``seed_for(seed, id, "retry", k)`` for k = 1..max_retries; if every attempt is rejected the
id is dropped: recorded in its shard's marker (so a resume does not retry it forever) and
listed in ``dropped.parquet``, never silently lost.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lib.generation.repair import repair_damaged
from lib.generation.runs import (
    check_done_match,
    check_run,
    guidance_column,
    jsonable,
    run_params,
    validate_prompts,
    write_manifests_if_done,
)
from lib.seeding import seed_for
from lib.shards import (
    ShardWriter,
    clean_incomplete,
    done_ids,
    encode_image,
    is_blank,
    next_shard_index,
)


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
    repaired_shards / repaired_ids (damaged shards set aside before resuming, and the ids
    they held, generated again),
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
    repaired = repair_damaged(out_dir, rank, world_size)
    clean_incomplete(out_dir, rank)
    done = done_ids(out_dir)
    check_done_match(out_dir, table, done, rank, world_size)
    mine = table.iloc[rank::world_size]
    todo = mine[~mine["id"].isin(done)]
    start = time.perf_counter()
    counts = _run(todo, out_dir, t2i, params, batch_size, shard_size, rank, progress)
    seconds = time.perf_counter() - start
    manifest = write_manifests_if_done(out_dir, table)
    return {
        "rank": rank,
        "world_size": world_size,
        "total": len(mine),
        "skipped": len(mine) - len(todo),
        **counts,
        **repaired,
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
        "class_id": jsonable(row.class_id),
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


