"""Sharded, resumable generation (lib.generation.core and .runs), the shard format
(lib.shards) and the sample grid's selection (lib.generation.samples).

The text-to-image model here is a tiny deterministic stand-in whose image is a function of
the seed alone (tests/generation_fakes.py): these tests are about ids, seeds, shards, markers, retries and resumption,
not about diffusion (tests/test_generation_distributed.py runs the real diffusers pipeline, under
torchrun and through a SIGKILL); tests/test_generation_worker.py covers the worker.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from generation_fakes import (
    KEPT,
    MANIFEST_COLUMNS,
    SIZE,
    SeedImages,
    image_bytes,
    make_prompts,
    run,
)
from PIL import Image

from lib import shards
from lib.generation.core import image_seed, resize_shorter
from lib.generation.samples import sample_grid
from lib.seeding import seed_for
from lib.shards import (
    ShardWriter,
    build_image_manifest,
    completed_shards,
    done_ids,
    encode_image,
    is_blank,
    iter_samples,
    to_imagefolder,
)
from lib.shards.__main__ import main as shards_main


def test_layout_is_webdataset_readable(tmp_path):
    t2i = SeedImages()
    summary = run(tmp_path, t2i=t2i)
    assert summary["total"] == 10 and summary["skipped"] == 0
    assert summary["generated"] == 8 and summary["dropped"] == 2 and summary["regenerated"] == 1
    assert summary["shards"] == 3 and summary["manifest"]
    # Every call has batch_size rows: retries join the next batch, the last one is padded.
    assert {n for _, n in t2i.calls} == {3} and summary["padded"] == 3 * len(t2i.calls) - 15
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "dropped.parquet", "manifest.parquet", "run.json",
        "shard-00000-000000.tar", "shard-00000-000000.tar.done",
        "shard-00000-000001.tar", "shard-00000-000001.tar.done",
        "shard-00000-000002.tar", "shard-00000-000002.tar.done",
    ]  # fmt: skip
    # A shard covers shard_size finished ids, stored or dropped (drops live in the marker).
    marker = json.loads((tmp_path / "shard-00000-000000.tar.done").read_text())
    assert marker["count"] == 4 and marker["ids"] == ["img-0000", "img-0001", "img-0002", "img-0004"]
    assert marker["dropped"] == []
    tar = (tmp_path / "shard-00000-000000.tar").read_bytes()
    assert marker["sha256"] == hashlib.sha256(tar).hexdigest()
    marker = json.loads((tmp_path / "shard-00000-000001.tar.done").read_text())
    assert marker["ids"] == ["img-0006", "img-0007"]
    assert [d["id"] for d in marker["dropped"]] == ["img-0003", "img-0005"]

    urls = [str(p) for p in completed_shards(tmp_path)]
    raw = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in raw] == KEPT
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
    run(tmp_path / "b4", batch_size=4, shard_size=3, image_format=fmt)  # (stub: shape-blind)
    r0 = run(tmp_path / "ws2", world_size=2, rank=0, image_format=fmt)
    assert r0["total"] == 5 and r0["manifest"] is None  # rank 1 has not finished yet
    assert not (tmp_path / "ws2" / "manifest.parquet").exists()
    r1 = run(tmp_path / "ws2", world_size=2, rank=1, image_format=fmt)
    assert r1["total"] == 5 and r1["manifest"]  # the rank completing the set writes it

    reference = image_bytes(tmp_path / "b1")
    assert sorted(reference) == KEPT
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
        assert pd.read_parquet(tmp_path / name / "dropped.parquet").equals(
            pd.read_parquet(tmp_path / "b1" / "dropped.parquet")
        )


def test_resume_after_crash_has_no_duplicates_or_gaps(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(out, t2i=SeedImages(fail_after=1), batch_size=2, shard_size=4)
    assert done_ids(out) == set() and not list(out.glob("*.tmp")) and not list(out.glob("*.tar"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(out, t2i=SeedImages(fail_after=3), batch_size=2, shard_size=4)
    # Calls: [0, 1], [2, 3] (3 blank), [3 retry, 4]: ids 0, 1, 2, 4 fill shard 0; then crash.
    assert done_ids(out) == {"img-0000", "img-0001", "img-0002", "img-0004"}
    assert not list(out.glob("*.tmp"))
    # A kill between the rename and the marker leaves a tar without marker (here holding
    # ids that are already done, so reading it would duplicate them), plus a temp tar.
    shutil.copy(out / "shard-00000-000000.tar", out / "shard-00000-000005.tar")
    shutil.copy(out / "shard-00000-000000.tar", out / "shard-00000-000006.tar.tmp")
    shutil.copy(out / "shard-00000-000000.tar", out / "shard-00001-000000.tar")  # other rank
    assert len(completed_shards(out)) == 1 and len(done_ids(out)) == 4

    summary = run(out, batch_size=2, shard_size=3)  # another shard size is fine
    assert summary["skipped"] == 4 and summary["generated"] + summary["dropped"] == 6
    assert not (out / "shard-00000-000005.tar").exists()
    assert not (out / "shard-00000-000006.tar.tmp").exists()
    assert (out / "shard-00001-000000.tar").exists()  # rank 1's files are rank 1's business
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest["id"]) == KEPT

    run(tmp_path / "clean", batch_size=2)
    assert image_bytes(out) == image_bytes(tmp_path / "clean")
    again = run(out, batch_size=2)  # nothing left: a no-op that still (re)writes the manifest
    assert again["generated"] == 0 and again["skipped"] == 10 and again["manifest"]
    assert again["attempts"] == 0  # dropped ids are done too: never retried on resume


def test_refuses_to_mix_runs(tmp_path):
    run(tmp_path, prompts=make_prompts(6))
    for change, key in [
        ({"steps": 3}, "steps"),
        ({"t2i": SeedImages(model_id="other/model")}, "model"),
        ({"image_format": "jpg"}, "format"),
        ({"guidance_by_strategy": {"templates": 5.0}}, "guidance_by_strategy"),
        ({"output_size": 8}, "output_size"),
        ({"max_retries": 4}, "max_retries"),
        ({"batch_size": 2}, "batch_size"),
    ]:
        with pytest.raises(ValueError, match=f"different parameters.*{key}"):
            run(tmp_path, **change)
    changed = make_prompts()
    changed.loc[changed["id"] == "img-0001", "prompt"] = "a drawing of 1"
    with pytest.raises(ValueError, match="other prompts.*img-0001"):
        run(tmp_path, prompts=changed)
    changed = make_prompts()  # a dropped id's prompt is checked as well
    changed.loc[changed["id"] == "img-0003", "prompt"] = "blank paper"
    with pytest.raises(ValueError, match="other prompts.*img-0003"):
        run(tmp_path, prompts=changed)
    with pytest.raises(ValueError, match="not in the prompts"):
        run(tmp_path, prompts=make_prompts(3))
    assert len(done_ids(tmp_path)) == 6  # refusals lose nothing
    assert run(tmp_path)["generated"] == 4  # the same run may grow to more ids


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="prompts table is empty"):
        run(tmp_path, prompts=make_prompts().iloc[:0])
    with pytest.raises(ValueError, match="no images in completed shards"):
        build_image_manifest(tmp_path)
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
    with pytest.raises(ValueError, match="not in the prompts: word2sen; strategies: classname"):
        run(tmp_path, guidance_by_strategy={"word2sen": 4.0})
    with pytest.raises(ValueError, match="max_retries must be a non-negative"):
        run(tmp_path, max_retries=-1)
    with pytest.raises(ValueError, match="output_size must be a positive"):
        run(tmp_path, output_size=0)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_manifest_columns_and_values(tmp_path):
    run(tmp_path)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert set(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["id"]) == KEPT
    assert manifest.equals(build_image_manifest(tmp_path))
    first = manifest[manifest["retries"] == 0]
    assert list(first["seed"]) == [seed_for(7, i) for i in first["id"]]
    assert manifest["retries"].dtype == "int64"
    row = manifest.set_index("id").loc["img-0002"]
    assert (row["class_id"], row["class_name"], row["negative_prompt"]) == (2, "class2", "blurry")
    assert manifest.set_index("id").loc["img-0001", "negative_prompt"] == ""
    assert (row["model"], row["scheduler"], row["steps"], row["guidance_scale"]) == (
        "test/seed-noise", "none", 2, 3.0
    )  # fmt: skip
    assert (row["height"], row["width"], row["image_height"], row["image_width"]) == (16,) * 4
    by_id = image_bytes(tmp_path)
    assert all(
        hashlib.sha256(by_id[i]).hexdigest() == s for i, s in manifest[["id", "sha256"]].values
    )
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json == {
        "model": "test/seed-noise", "scheduler": "none", "seed": 7, "steps": 2,
        "guidance_scale": 3.0, "guidance_by_strategy": {}, "height": SIZE, "width": SIZE,
        "output_size": None, "batch_size": 3, "format": "png", "max_retries": 2,
    }  # fmt: skip


def test_blank_and_nsfw_are_regenerated_then_dropped(tmp_path):
    t2i = SeedImages()
    summary = run(tmp_path, t2i=t2i)
    # id 3: blank x3; id 5: blank+nsfw x3 (black and flagged); id 7: blank once, then kept.
    assert (summary["generated"], summary["regenerated"], summary["dropped"]) == (8, 1, 2)
    assert summary["attempts"] == 10 + 2 + 2 + 1
    assert (summary["rejected_blank"], summary["rejected_nsfw"]) == (7, 3)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet").set_index("id")
    assert manifest.loc["img-0007", "retries"] == 1 and manifest.loc["img-0007", "flags"] == "blank"
    assert manifest.loc["img-0007", "seed"] == image_seed(7, "img-0007", 1)
    assert manifest.loc["img-0007", "seed"] == seed_for(7, "img-0007", "retry", 1)
    assert set(manifest.index[manifest["retries"] == 0]) == set(KEPT) - {"img-0007"}
    assert (manifest.drop(index="img-0007")["flags"] == "").all()
    dropped = pd.read_parquet(tmp_path / "dropped.parquet")
    assert list(dropped["id"]) == ["img-0003", "img-0005"]
    assert list(dropped["flags"]) == ["blank,blank,blank", "blank+nsfw,blank+nsfw,blank+nsfw"]
    assert list(dropped["prompt"]) == ["blank canvas", "an nsfw thing"]

    strict = run(tmp_path / "strict", max_retries=0)
    assert (strict["generated"], strict["dropped"], strict["attempts"]) == (7, 3, 10)
    with pytest.raises(ValueError, match=r"manifest would be empty \(1 ids were dropped"):
        run(tmp_path / "all-dropped", prompts=make_prompts(6).iloc[[2]])  # only id 3
    assert done_ids(tmp_path / "all-dropped") == {"img-0003"}  # recorded, not retried

    assert is_blank(Image.new("RGB", (8, 8), (255, 0, 0)))  # solid colour: blank per channel
    assert is_blank(Image.new("L", (8, 8), 17))
    rng = np.random.default_rng(0)
    faint = (128 + rng.normal(0, 0.3, (8, 8, 3))).round().astype(np.uint8)
    assert is_blank(Image.fromarray(faint))
    assert not is_blank(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))


def test_guidance_per_strategy(tmp_path):
    t2i = SeedImages()
    run(tmp_path, t2i=t2i, guidance_by_strategy={"templates": 5.0}, batch_size=8)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    expected = np.where(manifest["strategy"] == "templates", 5.0, 3.0)
    assert np.array_equal(manifest["guidance_scale"].to_numpy(), expected)
    # One guidance scale per pipeline call: batches split by guidance, never mixed.
    # classname: 7 ids, then retries of 3 and 7, then of 3; templates: 3 ids, retries of 5;
    # every call padded to batch_size.
    assert t2i.calls == [(3.0, 8)] * 3 + [(5.0, 8)] * 3


def test_output_size_resizes_after_generation(tmp_path):
    run(tmp_path, output_size=8, image_format="jpg", jpeg_quality=90)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert set(manifest["image_width"]) == {8} and set(manifest["height"]) == {SIZE}
    assert {s["image"].size for s in iter_samples(tmp_path)} == {(8, 8)}
    wide = Image.new("RGB", (32, 16))
    assert resize_shorter(wide, 8).size == (16, 8) and resize_shorter(wide, None) is wide
    assert run(tmp_path / "wide", height=8, width=16, output_size=4)["generated"] == 8
    assert {s["image"].size for s in iter_samples(tmp_path / "wide")} == {(8, 4)}


def test_to_imagefolder_and_cli(tmp_path, capsys):
    run(tmp_path / "shards", image_format="jpg", jpeg_quality=80)
    counts = to_imagefolder(tmp_path / "shards", tmp_path / "folder")
    assert counts == {"class0": 3, "class1": 3, "class2": 2}
    files = sorted(
        p.relative_to(tmp_path / "folder").as_posix() for p in (tmp_path / "folder").rglob("*")
    )
    assert "class0/img-0000.jpg" in files and "class2/img-0008.jpg" in files
    assert len([f for f in files if f.endswith(".jpg")]) == 8
    by_id = image_bytes(tmp_path / "shards")
    assert (tmp_path / "folder/class1/img-0004.jpg").read_bytes() == by_id["img-0004"]
    to_imagefolder(tmp_path / "shards", tmp_path / "by_id", class_key="class_id")
    assert sorted(p.name for p in (tmp_path / "by_id").iterdir()) == ["0", "1", "2"]
    with pytest.raises(KeyError, match="no 'label'"):
        to_imagefolder(tmp_path / "shards", tmp_path / "x", class_key="label")

    assert shards_main(["to-imagefolder", str(tmp_path / "shards"), str(tmp_path / "cli")]) == 0
    assert "8 images in 3 class folders" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["class0", "class1", "class2"]
    assert shards_main(["to-imagefolder", str(tmp_path / "none"), str(tmp_path / "y")]) == 2
    assert "no completed shards" in capsys.readouterr().err


def test_sample_grid_rows_classes_columns_strategies(tmp_path):
    run(tmp_path)
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    grid = sample_grid(tmp_path, manifest, per_cell=2)
    assert grid["ncols"] == 4 and grid["row_labels"] == ["class0", "class1", "class2"]
    assert grid["titles"][:4] == ["classname", "", "templates", ""]
    assert len(grid["images"]) == len(grid["titles"]) == 12
    by_id = {s["id"]: s["image"] for s in iter_samples(tmp_path)}
    # Rows: class0 [0, 6 | 9, -], class1 [4, 7 | 1, -], class2 [2, 8 | -, -] (3, 5 dropped).
    expected = ["img-0000", "img-0006", "img-0009", None, "img-0004", "img-0007", "img-0001",
                None, "img-0002", "img-0008", None, None]  # fmt: skip
    for img, sample_id in zip(grid["images"], expected):
        want = by_id[sample_id] if sample_id else Image.new("RGB", (SIZE, SIZE), "white")
        assert np.array_equal(np.asarray(img), np.asarray(want))


def test_encode_image_is_deterministic():
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    tagged = img.copy()
    tagged.info["dpi"] = (300, 300)
    for fmt in ("png", "jpg"):
        assert encode_image(img, fmt) == encode_image(img, fmt) == encode_image(tagged, fmt)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(img)))), pixels)
    assert encode_image(img, "jpg", 50) != encode_image(img, "jpg", 95)


def test_shard_writer_publishes_only_on_close(tmp_path):
    png = encode_image(Image.new("RGB", (4, 4), (1, 2, 3)))
    w = ShardWriter(tmp_path, rank=3, index=2)
    w.add("a-1", png, {"id": "a-1"})
    assert not completed_shards(tmp_path) and not done_ids(tmp_path)
    w.abort()
    assert not list(tmp_path.iterdir())  # aborted: no tar, no marker, no temp
    w = ShardWriter(tmp_path, rank=3, index=2)
    w.add("a-1", png, {"id": "a-1"})
    w.drop("a-2", {"flags": "nsfw"})
    w.close()
    with pytest.raises(RuntimeError, match="already closed"):
        w.add("a-3", png, {"id": "a-3"})
    assert [p.name for p in completed_shards(tmp_path)] == ["shard-00003-000002.tar"]
    assert done_ids(tmp_path) == {"a-1", "a-2"}
    assert shards.dropped_records(tmp_path) == [{"id": "a-2", "flags": "nsfw"}]
    with pytest.raises(FileExistsError, match="already complete"):
        ShardWriter(tmp_path, rank=3, index=2)
