"""Text-to-image generation of a prompt manifest into resumable WebDataset shards.

Each image is a pure function of (model, generation parameters, prompt, ``seed_for(seed,
id)``), so the bytes of an image do not depend on batch size, number of ranks or resume
point. Ranks split the sorted ids by position (``i % world_size == rank``) and write only
their own shards (see :mod:`lib.shards`); ids already in completed shards are skipped, so a
killed run resumes with no duplicate and no missing id. ``run.json`` pins the parameters
that change pixels; a rerun with different ones into the same folder is refused rather than
mixing two runs.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator, Sequence
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
    encode_image,
    image_ext,
    is_blank,
    next_shard_index,
)

PROMPT_COLUMNS = ("id", "class_id", "class_name", "strategy", "prompt", "negative_prompt")
# Prompt fields recorded per image; a resumed run must agree with them for every done id.
_PROMPT_FIELDS = ("class_id", "class_name", "strategy", "prompt", "negative_prompt")


class TextToImage(Protocol):
    """What :func:`generate` needs from a text-to-image backend."""

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
    image_format: str = "png",
    jpeg_quality: int = 95,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate this rank's share of ``prompts`` into ``out_dir``; resumable and idempotent.

    Returns a summary of this call: total (ids of this rank), generated, skipped_done,
    blank and nsfw (among the generated), seconds, images_per_s, shards (written now) and
    manifest (the path once every id of ``prompts`` is done, else None).
    """
    _check_args(steps, batch_size, shard_size, height, width, rank, world_size, jpeg_quality)
    table = validate_prompts(prompts)
    out_dir = Path(out_dir)
    params = run_params(t2i, seed, steps, guidance_scale, height, width, image_format, jpeg_quality)
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
        "total": len(mine),
        "generated": len(todo),
        "skipped_done": len(mine) - len(todo),
        **counts,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(todo) / seconds, 3) if seconds > 0 else 0.0,
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
) -> None:
    """Fail early, naming the bad argument, before any file is touched."""
    for name, value in [
        ("steps", steps),
        ("batch_size", batch_size),
        ("shard_size", shard_size),
        ("height", height),
        ("width", width),
        ("world_size", world_size),
    ]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")


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
    height: int,
    width: int,
    image_format: str,
    jpeg_quality: int,
) -> dict[str, Any]:
    """The parameters that determine the pixels/bytes of every image of a run."""
    fmt = image_ext(image_format)
    params = {
        "model": str(t2i.model_id),
        "scheduler": str(t2i.scheduler_name),
        "seed": int(seed),
        "steps": int(steps),
        "guidance_scale": float(guidance_scale),
        "height": int(height),
        "width": int(width),
        "format": fmt,
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
    stored = build_manifest(out_dir).set_index("id").loc[:, list(_PROMPT_FIELDS)]
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
    """Generate ``todo`` in batches, rolling over to a new shard every ``shard_size`` images.

    On any error the shard being written is aborted (at most ``shard_size`` images are lost);
    completed shards stay and the next run resumes after them.
    """
    counts = {"blank": 0, "nsfw": 0, "shards": 0}
    index = next_shard_index(out_dir, rank)
    writer: ShardWriter | None = None
    bar = tqdm(total=len(todo), unit="img", desc=f"generate rank {rank}", disable=not progress)
    try:
        for batch in _batches(todo, batch_size):
            for sample_id, data, meta in _generate_batch(t2i, batch, params):
                if writer is None:
                    writer = ShardWriter(out_dir, rank, index, params["format"])
                    index += 1
                writer.add(sample_id, data, meta)
                counts["blank"] += meta["blank"]
                counts["nsfw"] += meta["nsfw"]
                if writer.count >= shard_size:
                    writer.close()
                    writer, counts["shards"] = None, counts["shards"] + 1
            bar.update(len(batch))
        if writer is not None:
            writer.close()
            writer, counts["shards"] = None, counts["shards"] + 1
    finally:
        bar.close()
        if writer is not None:  # only on error: drop the half-written shard
            writer.abort()
    return counts


def _batches(df: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(df), size):
        yield df.iloc[start : start + size]


def _generate_batch(
    t2i: TextToImage, batch: pd.DataFrame, params: dict[str, Any]
) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """Run the model on one batch; yield (id, encoded bytes, meta) per image."""
    ids = list(batch["id"])
    seeds = [seed_for(params["seed"], i) for i in ids]
    images, nsfw = t2i.generate(
        list(batch["prompt"]),
        list(batch["negative_prompt"]),
        seeds,
        steps=params["steps"],
        guidance_scale=params["guidance_scale"],
        height=params["height"],
        width=params["width"],
    )
    _check_output(images, nsfw, len(ids), params)
    for row, img, flag, s in zip(batch.itertuples(index=False), images, nsfw, seeds):
        data = encode_image(img, params["format"], params.get("jpeg_quality", 95))
        yield row.id, data, _meta(row, s, bool(flag), is_blank(img), data, params)


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


def _meta(
    row: Any, seed: int, nsfw: bool, blank: bool, data: bytes, params: dict[str, Any]
) -> dict[str, Any]:
    """The JSON record stored beside each image (and, later, its manifest row)."""
    return {
        "id": row.id,
        "class_id": _jsonable(row.class_id),
        "class_name": str(row.class_name),
        "strategy": str(row.strategy),
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
        "seed": seed,
        "guidance_scale": params["guidance_scale"],
        "steps": params["steps"],
        "scheduler": params["scheduler"],
        "model": params["model"],
        "height": params["height"],
        "width": params["width"],
        "format": params["format"],
        "sha256": hashlib.sha256(data).hexdigest(),
        "nsfw": nsfw,
        "blank": blank,
    }


def _jsonable(value: Any) -> Any:
    """NumPy scalars to Python ones, so class ids serialise as JSON."""
    return value.item() if hasattr(value, "item") else value


def _maybe_write_manifest(out_dir: Path, table: pd.DataFrame) -> Path | None:
    """Write ``manifest.parquet`` once every id is done; whichever rank completes the set.

    No collective barrier: ranks finish hours apart on resumes, past any barrier timeout.
    Each rank publishes its markers before checking, so the last to finish sees them all;
    concurrent writers produce identical content and the write is atomic.
    """
    if not set(table["id"]) <= done_ids(out_dir):
        return None
    return write_parquet(out_dir / "manifest.parquet", build_manifest(out_dir))
