"""Sharded, resumable generation (lib.generate) and the shard format (lib.shards).

The text-to-image model here is a tiny deterministic stand-in whose image is a function of
the seed alone: these tests are about ids, seeds, shards, markers and resumption, not about
diffusion (the real diffusers backend has its own integration test).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from lib.generate import generate
from lib.seeding import seed_for
from lib.shards import (
    ShardWriter,
    build_manifest,
    completed_shards,
    done_ids,
    encode_image,
    is_blank,
    iter_samples,
    to_imagefolder,
)

SIZE = 16
PARAMS = {"seed": 7, "steps": 2, "guidance_scale": 3.0, "height": SIZE, "width": SIZE}
PARAMS |= {"batch_size": 3, "shard_size": 4}
MANIFEST_COLUMNS = {
    "id", "class_id", "class_name", "strategy", "prompt", "negative_prompt", "seed",
    "guidance_scale", "steps", "scheduler", "model", "height", "width", "format", "sha256",
    "nsfw", "blank", "shard",
}  # fmt: skip


class SeedImages:
    """Image = uniform noise from ``default_rng(seed)``; prompts starting 'blank' give a solid
    colour and prompts containing 'nsfw' a black image flagged nsfw (as a safety checker does).
    ``fail_after`` raises on the call after that many, to simulate a crash mid-run."""

    model_id = "test/seed-noise"
    scheduler_name = "none"

    def __init__(self, fail_after: int | None = None, model_id: str | None = None):
        self.fail_after, self.calls = fail_after, 0
        if model_id:
            self.model_id = model_id

    def generate(self, prompts, negative_prompts, seeds, *, steps, guidance_scale, height, width):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        assert len(negative_prompts) == len(prompts) == len(seeds)
        return [self._image(p, s, height, width) for p, s in zip(prompts, seeds)], [
            "nsfw" in p for p in prompts
        ]

    @staticmethod
    def _image(prompt: str, seed: int, height: int, width: int) -> Image.Image:
        if prompt.startswith("blank"):
            return Image.new("RGB", (width, height), (200, 30, 30))
        if "nsfw" in prompt:
            return Image.new("RGB", (width, height), (0, 0, 0))
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels)


def make_prompts(n: int = 10) -> pd.DataFrame:
    """``n`` prompts over three classes, deliberately not in id order; two special ones."""
    rows = []
    for i in reversed(range(n)):
        text = "blank canvas" if i == 3 else "an nsfw thing" if i == 5 else f"a photo of {i}"
        negative = None if i % 2 else "blurry"
        rows.append(
            {"id": f"img-{i:04d}", "class_id": i % 3, "class_name": f"class{i % 3}"}
            | {"strategy": "classname", "prompt": text, "negative_prompt": negative}
        )
    return pd.DataFrame(rows)


def run(out: Path, prompts: pd.DataFrame | None = None, t2i=None, **kw) -> dict:
    args = {**PARAMS, "progress": False, **kw}
    return generate(
        make_prompts() if prompts is None else prompts, out, t2i or SeedImages(), **args
    )


def image_bytes(out: Path) -> dict[str, bytes]:
    return {s["id"]: s["bytes"] for s in iter_samples(out, decode=False)}


def test_layout_is_webdataset_readable(tmp_path):
    summary = run(tmp_path)
    assert summary["total"] == summary["generated"] == 10 and summary["skipped_done"] == 0
    assert summary["shards"] == 3 and summary["manifest"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "manifest.parquet", "run.json",
        "shard-00000-000000.tar", "shard-00000-000000.tar.done",
        "shard-00000-000001.tar", "shard-00000-000001.tar.done",
        "shard-00000-000002.tar", "shard-00000-000002.tar.done",
    ]  # fmt: skip
    marker = json.loads((tmp_path / "shard-00000-000000.tar.done").read_text())
    assert marker["count"] == 4 and marker["ids"] == [f"img-{i:04d}" for i in range(4)]
    tar = (tmp_path / "shard-00000-000000.tar").read_bytes()
    assert marker["sha256"] == hashlib.sha256(tar).hexdigest()

    urls = [str(p) for p in completed_shards(tmp_path)]
    raw = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in raw] == sorted(make_prompts()["id"])
    for s in raw:
        meta = json.loads(s["json"])
        assert meta["id"] == s["__key__"] and hashlib.sha256(s["png"]).hexdigest() == meta["sha256"]
    decoded = next(iter(wds.WebDataset(urls, shardshuffle=False).decode("pil")))
    assert decoded["png"].size == (SIZE, SIZE) and decoded["json"]["class_name"] == "class0"

    ours = list(iter_samples(tmp_path))
    assert [s["id"] for s in ours] == [s["__key__"] for s in raw]
    assert np.array_equal(np.asarray(ours[0]["image"]), np.asarray(decoded["png"]))
    assert [s["id"] for s in iter_samples(tmp_path, ids=["img-0009", "img-0001"])] == [
        "img-0001", "img-0009"
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_bytes_do_not_depend_on_batch_size_or_ranks(tmp_path, fmt):
    run(tmp_path / "b1", batch_size=1, image_format=fmt)
    run(tmp_path / "b4", batch_size=4, shard_size=3, image_format=fmt)
    r0 = run(tmp_path / "ws2", world_size=2, rank=0, image_format=fmt)
    assert r0["total"] == 5 and r0["manifest"] is None  # rank 1 has not finished yet
    assert not (tmp_path / "ws2" / "manifest.parquet").exists()
    r1 = run(tmp_path / "ws2", world_size=2, rank=1, image_format=fmt)
    assert r1["total"] == 5 and r1["manifest"]  # the rank completing the set writes it

    reference = image_bytes(tmp_path / "b1")
    assert len(reference) == 10
    assert image_bytes(tmp_path / "b4") == reference
    assert image_bytes(tmp_path / "ws2") == reference
    assert {p.name[:11] for p in completed_shards(tmp_path / "ws2")} == {
        "shard-00000", "shard-00001"
    }  # fmt: skip
    for name in ("b1", "b4", "ws2"):
        manifest = pd.read_parquet(tmp_path / name / "manifest.parquet")
        assert set(manifest["format"]) == {fmt}
        assert manifest.drop(columns="shard").equals(
            pd.read_parquet(tmp_path / "b1" / "manifest.parquet").drop(columns="shard")
        )


def test_resume_after_crash_has_no_duplicates_or_gaps(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(out, t2i=SeedImages(fail_after=3), batch_size=2, shard_size=4)
    # 3 batches of 2: shard 0 (4 images) completed, shard 1 half-written and aborted.
    assert done_ids(out) == {f"img-{i:04d}" for i in range(4)}
    assert not list(out.glob("*.tmp"))
    # A kill between the rename and the marker leaves a tar without marker (here holding
    # ids that are already done, so reading it would duplicate them), plus a temp tar.
    shutil.copy(out / "shard-00000-000000.tar", out / "shard-00000-000005.tar")
    shutil.copy(out / "shard-00000-000000.tar", out / "shard-00000-000006.tar.tmp")
    shutil.copy(out / "shard-00000-000000.tar", out / "shard-00001-000000.tar")  # other rank
    assert len(completed_shards(out)) == 1 and len(done_ids(out)) == 4

    summary = run(out, batch_size=4, shard_size=3)  # other batch/shard sizes are fine
    assert summary["skipped_done"] == 4 and summary["generated"] == 6
    assert not (out / "shard-00000-000005.tar").exists()
    assert not (out / "shard-00000-000006.tar.tmp").exists()
    assert (out / "shard-00001-000000.tar").exists()  # rank 1's files are rank 1's business
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest["id"]) == sorted(make_prompts()["id"])

    run(tmp_path / "clean")
    assert image_bytes(out) == image_bytes(tmp_path / "clean")
    again = run(out)  # nothing left: a no-op that still (re)writes the manifest
    assert again["generated"] == 0 and again["skipped_done"] == 10 and again["manifest"]


def test_refuses_to_mix_runs(tmp_path):
    run(tmp_path, prompts=make_prompts(6))
    with pytest.raises(ValueError, match="different parameters.*steps"):
        run(tmp_path, steps=3)
    with pytest.raises(ValueError, match="different parameters.*model"):
        run(tmp_path, t2i=SeedImages(model_id="other/model"))
    with pytest.raises(ValueError, match="different parameters.*format"):
        run(tmp_path, image_format="jpg")
    changed = make_prompts()
    changed.loc[changed["id"] == "img-0001", "prompt"] = "a drawing of 1"
    with pytest.raises(ValueError, match="other prompts.*img-0001"):
        run(tmp_path, prompts=changed)
    with pytest.raises(ValueError, match="not in the prompts"):
        run(tmp_path, prompts=make_prompts(3))
    assert len(done_ids(tmp_path)) == 6  # refusals lose nothing
    assert run(tmp_path)["generated"] == 4  # the same run may grow to more ids


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="prompts table is empty"):
        run(tmp_path, prompts=make_prompts().iloc[:0])
    with pytest.raises(ValueError, match="no completed shards"):
        build_manifest(tmp_path)
    with pytest.raises(ValueError, match=r"lack columns \['strategy'\]"):
        run(tmp_path, prompts=make_prompts().drop(columns="strategy"))
    bad = make_prompts()
    bad.loc[0, "id"] = "img.0001"
    with pytest.raises(ValueError, match="invalid sample id 'img.0001'"):
        run(tmp_path, prompts=bad)
    with pytest.raises(ValueError, match="duplicated ids"):
        run(tmp_path, prompts=pd.concat([make_prompts(2), make_prompts(2)]))
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        run(tmp_path, rank=2, world_size=2)
    with pytest.raises(ValueError, match="valid formats: png, jpg, jpeg"):
        run(tmp_path, image_format="webp")
    assert not list(tmp_path.iterdir())  # nothing was written


def test_manifest_columns_and_values(tmp_path):
    run(tmp_path)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert set(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["id"]) == sorted(manifest["id"]) and len(manifest) == 10
    assert manifest.equals(build_manifest(tmp_path))
    assert list(manifest["seed"]) == [seed_for(7, i) for i in manifest["id"]]
    assert manifest["nsfw"].dtype == bool and manifest["blank"].dtype == bool
    row = manifest.set_index("id").loc["img-0002"]
    assert (row["class_id"], row["class_name"], row["negative_prompt"]) == (2, "class2", "blurry")
    assert manifest.set_index("id").loc["img-0001", "negative_prompt"] == ""
    assert (row["model"], row["scheduler"], row["steps"], row["guidance_scale"]) == (
        "test/seed-noise", "none", 2, 3.0
    )  # fmt: skip
    by_id = image_bytes(tmp_path)
    assert all(
        hashlib.sha256(by_id[i]).hexdigest() == s for i, s in manifest[["id", "sha256"]].values
    )
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json == {
        "model": "test/seed-noise", "scheduler": "none", "seed": 7, "steps": 2,
        "guidance_scale": 3.0, "height": SIZE, "width": SIZE, "format": "png",
    }  # fmt: skip


def test_to_imagefolder(tmp_path):
    run(tmp_path / "shards", image_format="jpg", jpeg_quality=80)
    counts = to_imagefolder(tmp_path / "shards", tmp_path / "folder")
    assert counts == {"class0": 4, "class1": 3, "class2": 3}
    files = sorted(
        p.relative_to(tmp_path / "folder").as_posix() for p in (tmp_path / "folder").rglob("*")
    )
    assert "class0/img-0000.jpg" in files and "class2/img-0008.jpg" in files
    assert len([f for f in files if f.endswith(".jpg")]) == 10
    by_id = image_bytes(tmp_path / "shards")
    assert (tmp_path / "folder/class1/img-0004.jpg").read_bytes() == by_id["img-0004"]
    to_imagefolder(tmp_path / "shards", tmp_path / "by_id", class_key="class_id")
    assert sorted(p.name for p in (tmp_path / "by_id").iterdir()) == ["0", "1", "2"]
    with pytest.raises(KeyError, match="no 'label'"):
        to_imagefolder(tmp_path / "shards", tmp_path / "x", class_key="label")


def test_blank_and_nsfw_flags(tmp_path):
    summary = run(tmp_path)
    assert summary["blank"] == 2 and summary["nsfw"] == 1  # the black nsfw image is blank too
    manifest = pd.read_parquet(tmp_path / "manifest.parquet").set_index("id")
    assert set(manifest.index[manifest["blank"]]) == {"img-0003", "img-0005"}
    assert list(manifest.index[manifest["nsfw"]]) == ["img-0005"]

    assert is_blank(Image.new("RGB", (8, 8), (255, 0, 0)))  # solid colour: blank per channel
    assert is_blank(Image.new("L", (8, 8), 17))
    rng = np.random.default_rng(0)
    faint = (128 + rng.normal(0, 0.3, (8, 8, 3))).round().astype(np.uint8)
    assert is_blank(Image.fromarray(faint))
    assert not is_blank(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))


def test_encode_image_is_deterministic():
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    tagged = img.copy()
    tagged.info["dpi"] = (300, 300)
    for fmt in ("png", "jpg"):
        assert encode_image(img, fmt) == encode_image(img, fmt) == encode_image(tagged, fmt)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(img)))), pixels)
    assert encode_image(img, "jpg", 50) != encode_image(img, "jpg", 95)


def test_shard_writer_publishes_only_on_success(tmp_path):
    png = encode_image(Image.new("RGB", (4, 4), (1, 2, 3)))
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(tmp_path, rank=3, index=2) as w:
        w.add("a-1", png, {"id": "a-1"})
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())  # aborted: no tar, no marker, no temp
    with ShardWriter(tmp_path, rank=3, index=2) as w:
        w.add("a-1", png, {"id": "a-1"})
    assert [p.name for p in completed_shards(tmp_path)] == ["shard-00003-000002.tar"]
    assert done_ids(tmp_path) == {"a-1"}
    with pytest.raises(FileExistsError, match="already complete"):
        ShardWriter(tmp_path, rank=3, index=2)
