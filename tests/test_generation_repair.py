"""Repair on resume (lib.generation.repair, issue 12 case 1): a rank verifies its shards
before trusting them, sets a damaged one aside (renamed, not deleted) and generates its ids
again, byte for byte; the manifest is rewritten complete and the repair is counted and
printed, in the summary and in metrics/generate.json.

Before this, a shard truncated on a 512-byte boundary was trusted on resume ("skipped" every
id) and the manifest was rewritten with the images it had lost. The fast tests use the
seed-noise stand-in (tests/generation_fakes.py); the last one the real diffusers pipeline of
the tiny zoo, where an id regenerated apart from its former batch companions must still
give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from generation_fakes import SeedImages, image_bytes, make_prompts, run

from lib import config, paths, provenance
from lib.backends.t2i import create_t2i
from lib.generation import worker
from lib.generation.core import generate
from lib.shards import marker_path, verify
from lib.stages import generate as stage

ROOT = Path(__file__).resolve().parents[1]
N, SHARD_SIZE = 40, 8
SHARD = "shard-00000-000002.tar"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pristine") / "generate"
    run(out, prompts=make_prompts(N), shard_size=SHARD_SIZE)
    return out


@pytest.fixture
def folder(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "generate"))


def held(out: Path, name: str) -> tuple[list[str], list[str]]:
    """The stored and the dropped ids a shard's marker lists."""
    marker = json.loads(marker_path(out / name).read_text())
    return marker["ids"], [d["id"] for d in marker["dropped"]]


def cut_at_member(tar: Path, on_boundary: bool, sample: int = 3) -> None:
    """Truncate ``tar`` at the header of its ``sample``-th sample (from 0; a 512-byte
    boundary) or inside that sample's image."""
    with tarfile.open(tar) as t:
        m = t.getmembers()[2 * sample]
    os.truncate(tar, m.offset if on_boundary else m.offset_data + m.size // 2 + 1)


def flip_byte(tar: Path) -> None:
    data = bytearray(tar.read_bytes())
    data[len(data) // 4] ^= 0xFF
    tar.write_bytes(bytes(data))


DAMAGE = {
    "truncated-on-512": lambda out: cut_at_member(out / SHARD, on_boundary=True),
    "truncated-off-512": lambda out: cut_at_member(out / SHARD, on_boundary=False),
    "flipped-byte": lambda out: flip_byte(out / SHARD),
    "garbled-marker": lambda out: marker_path(out / SHARD).write_text("{not json"),
    "lost-marker": lambda out: marker_path(out / SHARD).unlink(),  # the manifest names it
    "lost-tar": lambda out: (out / SHARD).unlink(),
}


def assert_same_as(out: Path, pristine: Path) -> None:
    """Every image byte for byte, the same manifest (but for the shard names), the same
    dropped ids, and a folder that verifies."""
    assert image_bytes(out) == image_bytes(pristine)
    ours = pd.read_parquet(out / "manifest.parquet").drop(columns="shard")
    assert ours.equals(pd.read_parquet(pristine / "manifest.parquet").drop(columns="shard"))
    dropped = pd.read_parquet(out / "dropped.parquet")
    assert dropped.equals(pd.read_parquet(pristine / "dropped.parquet"))
    assert verify(out).ok


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_shard_is_set_aside_and_regenerated_byte_for_byte(folder, pristine, damage,
                                                                    capsys):
    ids, dropped = held(pristine, SHARD)
    DAMAGE[damage](folder)
    summary = run(folder, prompts=make_prompts(N), shard_size=SHARD_SIZE)
    assert (summary["repaired_shards"], summary["repaired_ids"]) == (1, len(ids) + len(dropped))
    assert summary["generated"] == len(ids) and summary["skipped"] == N - len(ids) - len(dropped)
    assert summary["manifest"]
    assert_same_as(folder, pristine)
    left = {"lost-marker": [SHARD], "lost-tar": [f"{SHARD}.done"]}.get(
        damage, [SHARD, f"{SHARD}.done"])
    kept = sorted(p.name for p in folder.glob(f"{SHARD}*"))  # renamed, never deleted
    assert kept == [f"{name}.damaged" for name in left]
    out = capsys.readouterr().out
    assert f"damaged shard {folder / SHARD}" in out and f"its {len(ids)} ids are generated" in out
    again = run(folder, prompts=make_prompts(N), shard_size=SHARD_SIZE)
    assert again["repaired_shards"] == again["generated"] == 0  # repaired once, for good


def test_dropped_ids_of_a_damaged_shard_are_tried_and_dropped_again(folder, pristine):
    name = next(p.name[: -len(".done")] for p in sorted(pristine.glob("*.tar.done"))
                if held(pristine, p.name[: -len(".done")])[1])
    ids, dropped = held(pristine, name)
    assert dropped  # ids 3 (blank) and 5 (nsfw) of make_prompts
    flip_byte(folder / name)
    summary = run(folder, prompts=make_prompts(N), shard_size=SHARD_SIZE)
    assert summary["repaired_ids"] == len(ids) + len(dropped)
    assert summary["dropped"] == len(dropped) and summary["generated"] == len(ids)
    assert_same_as(folder, pristine)


def test_each_rank_repairs_its_own_share(tmp_path):
    out, table = tmp_path / "ws2", make_prompts(20)
    for rank in (0, 1):
        run(out, prompts=table, shard_size=4, world_size=2, rank=rank)
    reference = image_bytes(out)
    damaged = "shard-00001-000000.tar"
    cut_at_member(out / damaged, on_boundary=True, sample=1)
    # Rank 0 finds all its ids done; it neither touches rank 1's shard nor writes a manifest
    # from it (before the repair, the manifest would have lost its images).
    r0 = run(out, prompts=table, shard_size=4, world_size=2, rank=0)
    assert r0["repaired_shards"] == 0 and r0["manifest"] is None
    assert (out / damaged).exists()
    r1 = run(out, prompts=table, shard_size=4, world_size=2, rank=1)
    assert r1["repaired_shards"] == 1 and r1["manifest"]
    assert image_bytes(out) == reference and verify(out).ok
    assert sorted(pd.read_parquet(out / "manifest.parquet")["id"]) == sorted(reference)


def stage_config(root: Path, **changes) -> config.GenerateConfig:
    """The repository's generate config with outputs under ``root``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    values = config.stage_section(params, "generate")
    values |= {"model": "test/seed-noise", "seed": 7, "steps": 2, "guidance_scale": 3.0,
               "height": 16, "width": 16, "batch_size": 3, "shard_size": SHARD_SIZE,
               "nproc": 1, "progress": False, "guidance_by_strategy": {}, **changes}
    return config.build("generate", values)


def test_the_stage_repairs_counts_and_reports(tmp_path, monkeypatch, capsys):
    """The issue's reproduction, through the stage: truncate a shard on a 512-byte boundary
    and run it again."""
    root = tmp_path / "project"
    (root / "outputs/prompts").mkdir(parents=True)
    make_prompts(N).to_parquet(root / "outputs/prompts/prompts.parquet")
    monkeypatch.setenv(paths.ROOT_ENV, str(root))
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")  # the stage checks provenance:
    provenance.finish(config.load("prompts"), "prompts", {})  # the prompts' record
    monkeypatch.setattr(worker, "create_backend", lambda cfg, device: SeedImages())
    cfg = stage_config(root)
    first = stage.run(cfg)
    assert first["metrics"]["repaired_shards"] == first["metrics"]["repaired_ids"] == 0
    out = root / "outputs/generate"
    pristine = Path(shutil.copytree(out, tmp_path / "pristine"))
    ids, dropped = held(out, SHARD)
    cut_at_member(out / SHARD, on_boundary=True)

    result = stage.run(cfg)
    metrics = json.loads((root / "metrics/generate.json").read_text())
    assert metrics == result["metrics"]
    assert (metrics["repaired_shards"], metrics["repaired_ids"]) == (1, len(ids) + len(dropped))
    assert metrics["num_images"] == len(result["manifest"]) == first["metrics"]["num_images"]
    assert metrics["generated"] == len(ids)
    assert f"[generate] repaired 1 damaged shards of {out}" in capsys.readouterr().out
    assert_same_as(out, pristine)


@pytest.mark.usefixtures("one_thread")
def test_real_pipeline_regenerates_the_same_bytes(tiny_zoo, tmp_path):
    t2i = create_t2i("diffusers", model=tiny_zoo["t2i"])
    table = make_prompts(12)
    table["prompt"] = [f"a photo of the digit {i}" for i in range(12)]  # none blank or nsfw
    args = {"seed": 3, "steps": 3, "guidance_scale": 2.0, "height": 32, "width": 32,
            "batch_size": 4, "shard_size": 5, "progress": False}
    out = tmp_path / "generate"
    generate(table, out, t2i, **args)
    pristine = Path(shutil.copytree(out, tmp_path / "pristine"))
    middle = "shard-00000-000001.tar"
    cut_at_member(out / middle, on_boundary=False)
    summary = generate(table, out, t2i, **args)  # 5 ids in one padded batch of 4 and one of 4
    assert summary["repaired_shards"] == 1 and summary["generated"] == 5
    assert len(set(image_bytes(out).values())) == 12  # distinct images: a working model
    assert_same_as(out, pristine)
