"""Determinism of generation with the real diffusers pipeline (the tiny zoo model) on CPU:
the same bytes in one batch or alone, from one process or two under torchrun (launched by
the stage itself), and after a worker killed with SIGKILL mid-run is resumed.

CPU float results depend on the number of intra-op threads (summation order), so every run
compared here uses one thread per process, as torchrun's workers do (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lib import config, paths, provenance, shards
from lib.backends.t2i import create_t2i
from lib.generation.core import generate
from lib.io import write_json
from lib.stages import generate as stage

ROOT = Path(__file__).resolve().parents[1]
GEN = {"seed": 3, "steps": 3, "guidance_scale": 2.0, "height": 32, "width": 32}


# torchrun launches and a killed worker: slow
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def t2i(tiny_zoo):
    return create_t2i("diffusers", model=tiny_zoo["t2i"])


def prompts(n: int) -> pd.DataFrame:
    classes = ["zero", "one", "two"]
    return pd.DataFrame(
        {
            "id": [f"c{i % 3}-{'templates' if i % 2 else 'classname'}-{i:04d}" for i in range(n)],
            "class_id": [i % 3 for i in range(n)],
            "class_name": [classes[i % 3] for i in range(n)],
            "strategy": ["templates" if i % 2 else "classname" for i in range(n)],
            "prompt": [f"a photo of the digit {classes[i % 3]}, number {i}" for i in range(n)],
            "negative_prompt": ["blurry" if i % 3 else "" for i in range(n)],
        }
    )


def stored(out: Path) -> dict[str, bytes]:
    return {s["id"]: s["bytes"] for s in shards.iter_samples(out, decode=False)}


def reference(t2i, table: pd.DataFrame, out: Path, **kw) -> dict[str, bytes]:
    args = {**GEN, "batch_size": 8, "shard_size": 4, "progress": False, **kw}
    generate(table, out, t2i, **args)
    return stored(out)


def prompts_stage(root: Path, table: pd.DataFrame, monkeypatch) -> Path:
    """A project ``root`` (SYNTHSCALE_ROOT) whose prompts stage has written ``table`` (with its
    provenance record of the repository's params.yaml, which the generate stage checks)."""
    (root / "outputs/prompts").mkdir(parents=True)
    table.to_parquet(root / "outputs/prompts/prompts.parquet")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    monkeypatch.setenv(paths.ROOT_ENV, str(root))
    provenance.finish(config.load("prompts"), "prompts", {})
    return root


def stage_config(root: Path, model: str, **changes) -> config.GenerateConfig:
    """The repository's smoke generate config, with outputs under ``root``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    values = config.stage_section(params, "generate")
    values |= {"model": model, "seed": GEN["seed"], "steps": GEN["steps"], "progress": True}
    values |= {"backend": "diffusers"}  # the tiny zoo model is a diffusers pipeline
    values |= {"guidance_scale": GEN["guidance_scale"], "height": 32, "width": 32, **changes}
    return config.build("generate", values)


def assert_intact(out: Path) -> list[Path]:
    """The completed shards of ``out``, each tar matching the sha256 in its marker."""
    done = shards.completed_shards(out)
    for tar in done:
        digest = hashlib.sha256(tar.read_bytes()).hexdigest()
        assert digest == json.loads(shards.marker_path(tar).read_text())["sha256"], tar
    return done


def assert_complete(out: Path, ids: list[str]) -> None:
    """Exactly ``ids``, each once, in tars that verify against their markers and read fully."""
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    tars = sorted(out.glob("shard-*.tar"))
    assert tars == assert_intact(out)  # every tar has its marker
    names = []
    for tar in tars:
        with tarfile.open(tar) as t:
            names += [m.name for m in t.getmembers()]
            for m in t.getmembers():
                assert len(t.extractfile(m).read()) == m.size
    keys = sorted(n.split(".")[0] for n in names if n.endswith(".png"))
    assert keys == sorted(ids)  # no duplicate, no gap
    assert sorted(pd.read_parquet(out / "manifest.parquet")["id"]) == sorted(ids)


def test_real_pipeline_same_bytes_in_a_batch_or_alone(t2i, tmp_path):
    table = prompts(8)
    batched = reference(t2i, table, tmp_path / "b8")
    assert len(batched) == 8
    assert len(set(batched.values())) == 8  # distinct images, not a degenerate model
    for i in (0, 5, 7):  # each id regenerated alone (its batch padded to the same shape)
        alone = reference(t2i, table.iloc[[i]], tmp_path / f"alone{i}")
        assert alone == {table["id"][i]: batched[table["id"][i]]}
    shuffled = reference(t2i, table.iloc[::-1], tmp_path / "other", shard_size=3, world_size=2)
    shuffled |= reference(t2i, table, tmp_path / "other", shard_size=3, world_size=2, rank=1)
    assert shuffled == batched  # other batch companions and positions, other shards
    manifest = pd.read_parquet(tmp_path / "b8" / "manifest.parquet")
    assert (manifest["retries"] == 0).all() and set(manifest["scheduler"]) == {"DDIMScheduler"}


def test_torchrun_two_processes_match_one(t2i, tiny_zoo, tmp_path, monkeypatch):
    table = prompts(8)
    expected = reference(t2i, table, tmp_path / "one")
    root = prompts_stage(tmp_path / "project", table, monkeypatch)
    cfg = stage_config(root, tiny_zoo["t2i"], nproc=2, batch_size=8, shard_size=2)
    result = stage.run(cfg)  # launches torchrun --standalone --nproc-per-node 2

    out = root / "outputs/generate"
    assert stored(out) == expected
    assert {p.name[:11] for p in shards.completed_shards(out)} == {"shard-00000", "shard-00001"}
    assert_complete(out, list(table["id"]))
    ranks = result["ranks"]
    assert list(ranks["rank"]) == [0, 1] and list(ranks["generated"]) == [4, 4]
    assert list(ranks["device"]) == ["cpu", "cpu"]
    metrics = json.loads((root / "metrics/generate.json").read_text())
    assert metrics["nproc"] == 2 and metrics["generated"] == metrics["num_images"] == 8
    assert metrics["dropped"] == metrics["skipped"] == 0 and metrics["images_per_s"] > 0
    assert result["manifest"]["id"].tolist() == sorted(table["id"])

    again = stage.run(stage_config(root, tiny_zoo["t2i"], nproc=1, batch_size=8))
    assert again["summary"]["skipped"] == 8 and again["summary"]["generated"] == 0
    assert stored(out) == expected  # another process count finds the run complete
    assert again["metrics"] == metrics  # a no-op keeps the metrics of the generating run
    assert json.loads((root / "metrics/generate.json").read_text()) == metrics

    missing = stage_config(root, "./no/such/model", nproc=2)
    with pytest.raises(RuntimeError, match=r"(?s)workers failed.*'./no/such/model' does not"):
        stage.run(missing)  # a worker's error reaches the stage's message


def test_sigkill_mid_shard_then_resume(t2i, tiny_zoo, tmp_path, monkeypatch):
    table = prompts(18)
    root = prompts_stage(tmp_path / "project", table, monkeypatch)
    # Batches of two and 10 steps: the run lasts seconds after its first shard completes.
    cfg = stage_config(root, tiny_zoo["t2i"], steps=10, batch_size=2, shard_size=3)
    cfg_file = write_json(tmp_path / "config.json", cfg.as_params())
    out = root / "outputs/generate"
    env = {**os.environ, "OMP_NUM_THREADS": "1", paths.ROOT_ENV: str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib.generation", "--config", str(cfg_file)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    # Kill once a shard is complete and the next one is being written (its temporary tar).
    while not (list(out.glob("*.tar.done")) and list(out.glob("*.tar.tmp"))):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard completed in 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = shards.done_ids(out)
    assert list(out.glob("*.tar.tmp"))  # a half-written shard was left behind
    assert 3 <= len(done) < len(table) and not (out / "manifest.parquet").exists()
    assert_intact(out)  # what is marked complete is intact

    resumed = stage.run(cfg)  # in process, one thread, like the killed worker
    assert resumed["summary"]["skipped"] == len(done)
    assert resumed["summary"]["generated"] == len(table) - len(done)
    assert_complete(out, list(table["id"]))
    steps10 = dict(steps=10, batch_size=2, shard_size=3)
    assert stored(out) == reference(t2i, table, tmp_path / "uninterrupted", **steps10)


def test_backend_speed_settings(t2i, tiny_zoo):
    assert t2i.settings == {"dtype": "float32", "device": "cpu", "compile": False}
    with pytest.raises(ValueError, match="cpu_offload needs a cuda device"):
        create_t2i("diffusers", model=tiny_zoo["t2i"], cpu_offload=True)
    half = create_t2i("diffusers", model=tiny_zoo["t2i"], dtype="bfloat16")
    assert half.pipe.unet.dtype == torch.bfloat16 and half.settings["dtype"] == "bfloat16"
