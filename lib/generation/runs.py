"""What a generation run takes, pins and leaves behind, apart from the images themselves.

The prompt table a run takes (:func:`validate_prompts`, one guidance scale per row), the
parameters that change pixels, pinned in ``run.json`` (:func:`run_params`,
:func:`check_run`: a rerun with different ones into the same folder is refused rather than
mixing two runs), the check that a folder being resumed holds only images of these prompts
(:func:`check_done_match`), and the manifests written once every id is done
(``manifest.parquet`` and ``dropped.parquet``, :func:`write_manifests_if_done`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lib.io import read_json, write_json, write_parquet
from lib.shards import (
    ShardError,
    build_image_manifest,
    check_id,
    done_ids,
    dropped_records,
    image_ext,
)

if TYPE_CHECKING:
    from lib.generation.core import TextToImage

PROMPT_COLUMNS = ("id", "class_id", "class_name", "strategy", "prompt", "negative_prompt")
# Prompt fields recorded per image; a resumed run must agree with them for every done id.
_PROMPT_FIELDS = ("class_id", "class_name", "strategy", "prompt", "negative_prompt")
DROPPED_COLUMNS = (*PROMPT_COLUMNS, "flags")


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
        "batch_size": int(batch_size),  # kernels are chosen by shape: see core._generate_group
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


def check_done_match(
    out_dir: Path, table: pd.DataFrame, done: set[str], rank: int = 0, world_size: int = 1
) -> None:
    """Refuse to resume into a folder whose images belong to other ids or other prompts.

    The prompts of the shards ``rank`` owns are compared (together the ranks compare every
    shard), so no rank reads a shard that another may be setting aside.
    """
    if not done:
        return
    foreign = sorted(done - set(table["id"]))
    if foreign:
        raise ValueError(
            f"{out_dir} holds {len(foreign)} ids that are not in the prompts, e.g. "
            f"{foreign[:3]}; use a new output folder instead of mixing runs"
        )
    stored = pd.concat(
        [build_image_manifest(out_dir, allow_empty=True, rank=rank, world_size=world_size),
         pd.DataFrame(dropped_records(out_dir, rank, world_size))]
    )
    if stored.empty:  # nothing in this rank's share yet
        return
    stored = stored.set_index("id").loc[:, list(_PROMPT_FIELDS)]
    wanted = table.set_index("id").loc[stored.index, list(_PROMPT_FIELDS)]
    wanted["class_id"] = [jsonable(v) for v in wanted["class_id"]]
    differs = (stored.astype(str) != wanted.astype(str)).any(axis=1)
    if differs.any():
        raise ValueError(
            f"{out_dir} holds {int(differs.sum())} images made from other prompts, e.g. id "
            f"{differs.index[differs][0]!r}; use a new output folder instead of mixing runs"
        )


def jsonable(value: Any) -> Any:
    """NumPy scalars to Python ones, so class ids serialise as JSON."""
    return value.item() if hasattr(value, "item") else value


def write_manifests_if_done(out_dir: Path, table: pd.DataFrame) -> Path | None:
    """Write ``manifest.parquet`` and ``dropped.parquet`` once every id is done.

    Whichever rank completes the set writes them. No collective barrier: ranks finish hours
    apart on resumes, past any barrier timeout. Each rank publishes its markers before
    checking, so the last to finish sees them all; concurrent writers produce identical
    content and the writes are atomic. A damaged shard of another rank (not yet set aside by
    its owner, which writes the manifests when it finishes) leaves them unwritten.
    """
    if not set(table["id"]) <= done_ids(out_dir):
        return None
    try:
        manifest = build_image_manifest(out_dir)
    except ShardError as err:
        print(f"[generate] not writing the manifest yet: {err}")
        return None
    write_parquet(out_dir / "dropped.parquet", dropped_table(out_dir))
    return write_parquet(out_dir / "manifest.parquet", manifest)


def dropped_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """The dropped ids of ``out_dir`` with their prompts and flags, sorted by id."""
    records = dropped_records(out_dir)
    df = pd.DataFrame(records, columns=list(DROPPED_COLUMNS))
    return df.sort_values("id", kind="stable").reset_index(drop=True)
