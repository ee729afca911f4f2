"""Data-parallel training (lib.training under torchrun, 2 gloo processes on CPU) against one
process, exact resume under DDP, sharded evaluation, and the AMP options.

One torchrun launch runs every distributed scenario (this file is its worker) and saves
what each rank returned; the tests compare those files with runs in this process.

What is compared, and why not always bit for bit:

* ``sync_bn=True``: 2 processes x (4 real + 4 synthetic) normalise each domain over its 8
  samples of the global batch, like 1 process, so weights and losses agree up to float
  summation order (BN statistics summed per process then all-reduced; DDP's averaged
  gradients): a tight tolerance (the largest difference seen was 1e-6).
* Default per-process BN: each process normalises its own 4 real + 4 synthetic samples,
  which is *not* what one process computes on 8 + 8 (differences up to 0.6 after 4 steps).
  The test replays that in one process (per-share forward passes, averaged gradients,
  rank 0's running statistics kept) and matches it within the same tolerance (largest
  difference seen 2e-5: BN over 4 values per channel at the 1x1 last stages amplifies the
  rounding), and checks that it does differ from the one-process run.
* Resume under DDP is exact (the same processes, seeds and summation order).

CPU float results depend on the number of intra-op threads, so everything here runs with
one thread per process, as torchrun's workers do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from crashing import CrashingItems
from torch import nn
from torch.utils.data import Dataset

from lib.nn.aux_norm import (
    AuxBatchNorm2d,
    convert_to_aux_norm,
    set_synthetic_mask,
    synced_batchnorm,
)
from lib.training.batches import make_batch
from lib.training.checkpoints import RunState
from lib.training.datasets import ImageArrayDataset
from lib.training.distributed import DistInfo, check_world, shutdown_distributed
from lib.training.evaluation import evaluate
from lib.training.loop import _batch_loss, train_classifier
from lib.training.recipe import RunConfig

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
WORLD = 2
STEPS = 4
# SGD keeps float noise from being amplified (AdamW divides tiny gradients by their own
# square root); a synthetic loss weight != 1 checks the weighting across processes.
EXACT_KW = {
    "batch_size": 16,
    "synthetic_fraction": 0.5,
    "lr": 0.01,
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "synthetic_loss_weight": 0.5,
    "seed": 7,
    "optimizer": "sgd",
    "momentum": 0.9,
    "log_every": 1,
    "progress": False,
}
RESUME_KW = {**EXACT_KW, "optimizer": "adamw", "lr": 3e-3, "augment": ("crop", "jitter"),
             "steps": 6, "log_every": 3, "checkpoint_every": 2}
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _toy_data() -> tuple[ImageArrayDataset, ImageArrayDataset]:
    """8x8 noise with a bright band whose row encodes the class; synthetic ones brighter."""
    sets = []
    for seed, brightness, synthetic in ((0, 150, False), (1, 190, True)):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, NUM_CLASSES, 96)
        images = rng.integers(0, 60, (96, 8, 8)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 2, :] += brightness
        sets.append(ImageArrayDataset(images, labels, 16, 1, synthetic=synthetic))
    return sets[0], sets[1]


def _model(seed: int = 0, aux: bool = True, **kwargs) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.create_model("resnet10t", num_classes=NUM_CLASSES, in_chans=1,
                                  channels=(8, 16, 32, 64), stem_width=8, **kwargs)
    return convert_to_aux_norm(model) if aux else model


def _odd_set(real: ImageArrayDataset) -> ImageArrayDataset:
    """37 of the real images: an evaluation set that two processes cannot split evenly."""
    return ImageArrayDataset(real.images[:37].numpy()[..., 0], real.labels[:37].numpy(), 16, 1,
                             synthetic=False)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- the worker


def _worker(out: Path) -> None:
    """Every distributed scenario, in one process group; writes ``rank<r>.pt``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    real, synthetic = _toy_data()
    results: dict[str, object] = {}
    for name, sync_bn in (("sync", True), ("per_rank", False)):
        model = _model()
        history = train_classifier(model, real, synthetic, steps=STEPS, sync_bn=sync_bn,
                                   **EXACT_KW)
        results[name] = {"state": _state(model), "history": history}
        if sync_bn:  # sharded evaluation on an odd number of images (uneven shards)
            results["evaluate"] = evaluate(model, _odd_set(real), NUM_CLASSES, batch_size=5)
    model = _model(aux=False)  # plain BNs, synced
    history = train_classifier(model, real, synthetic, steps=STEPS, sync_bn=True, **EXACT_KW)
    results["sync_plain"] = {"state": _state(model), "history": history}

    # resume: augmentation and dropout on (seeded per rank), AdamW, per-process BN
    ckpt = out / "state.pt"
    reference = _model(drop_rate=0.3)
    ref_history = train_classifier(reference, CrashingItems(real), CrashingItems(synthetic), **RESUME_KW)
    crashing = CrashingItems(synthetic, crash_after=4 * 4)  # 4 synthetic per rank: dies in step 5
    try:
        train_classifier(_model(drop_rate=0.3), CrashingItems(real), crashing, checkpoint_path=ckpt,
                         **RESUME_KW)
    except RuntimeError as err:
        assert "simulated crash" in str(err)
    dist.barrier()  # a relaunch starts once every process has died
    saved_step = torch.load(ckpt, weights_only=True)["step"]
    resumed = _model(seed=123, drop_rate=0.3)  # other initial weights: all from the checkpoint
    history = train_classifier(resumed, CrashingItems(real), CrashingItems(synthetic), checkpoint_path=ckpt,
                               **RESUME_KW)
    results["resume"] = {"reference": _state(reference), "ref_history": ref_history,
                         "resumed": _state(resumed), "history": history,
                         "saved_step": saved_step}

    # a run without synthetic images: the aux branches get no gradients (unused parameters)
    model = _model()
    history = train_classifier(model, real, None, steps=2, **{**EXACT_KW,
                                                               "synthetic_fraction": 0.0})
    results["real_only"] = {"history": history}
    torch.save(results, out / f"rank{dist.get_rank()}.pt")
    shutdown_distributed()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each of the 2 ranks of one torchrun launch of :func:`_worker` returned."""
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={WORLD}", str(Path(__file__)), "--worker", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# torchrun launches: slow; the first test also waits for the launch (module fixture)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow, pytest.mark.timeout(600)]


def _assert_states_close(got: dict, expected: dict, **tol) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key, **tol)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --------------------------------------------------------------------------- DDP vs 1 process


def test_every_rank_ends_with_the_same_model_and_history(ddp) -> None:
    for name in ("sync", "per_rank"):
        a, b = ddp[0][name], ddp[1][name]
        for key, value in a["state"].items():
            assert torch.equal(value, b["state"][key]), (name, key)
        assert a["history"] == b["history"]
        assert [row["step"] for row in a["history"]] == list(range(1, STEPS + 1))
    assert ddp[0]["evaluate"] == ddp[1]["evaluate"]


@pytest.mark.parametrize("name", ["sync", "sync_plain"])
def test_sync_bn_matches_one_process(ddp, name) -> None:
    """With the auxiliary BNs (each domain synced on its own) and with plain BNs."""
    real, synthetic = _toy_data()
    model = _model(aux=name == "sync")
    history = train_classifier(model, real, synthetic, steps=STEPS, **EXACT_KW)
    got = ddp[0][name]
    _assert_states_close(got["state"], _state(model), **TOL)
    for row, ref in zip(got["history"], history, strict=True):
        assert row.keys() == ref.keys()
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, rel=1e-5), key


def test_sharded_evaluation_equals_one_process(ddp) -> None:
    """37 images over 2 processes, gathered: the metrics of the same weights in one process."""
    real, _ = _toy_data()
    model = _model()
    model.load_state_dict(ddp[0]["sync"]["state"])
    metrics = evaluate(model, _odd_set(real), NUM_CLASSES)
    sharded = ddp[0]["evaluate"]
    assert sharded["n"] == metrics["n"] == 37
    assert sharded["top1"] == metrics["top1"] and sharded["per_class"] == metrics["per_class"]
    assert sharded["loss"] == pytest.approx(metrics["loss"], rel=1e-6)


def _per_rank_replay(model: nn.Module, real: Dataset, synthetic: Dataset) -> nn.Module:
    """One process doing what DDP with per-process BN does: each rank's share forwarded on
    its own (BN statistics of that share), gradients averaged, rank 0's running stats kept
    (DDP broadcasts rank 0's buffers before every forward pass)."""
    kw = {k: v for k, v in EXACT_KW.items() if k not in ("log_every", "progress")}
    cfg = RunConfig(steps=STEPS, **kw, n_real=len(real), n_synthetic=len(synthetic))
    run = RunState.start(model.train(), cfg, None, torch.device("cpu"))
    for step in range(STEPS):
        run.optimizer.zero_grad(set_to_none=True)
        start = {k: v.clone() for k, v in model.named_buffers()}
        kept = None
        for rank in range(WORLD):
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(start[k])
            x, y, mask = make_batch(real, synthetic, cfg, step, DistInfo(rank, WORLD))
            set_synthetic_mask(model, mask)
            loss, _ = _batch_loss(model(x), y, mask, cfg, int(mask.sum()))
            (loss / WORLD).backward()
            if rank == 0:
                kept = {k: v.clone() for k, v in model.named_buffers()}
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(kept[k])
        run.optimizer.step()
        run.scheduler.step()
    set_synthetic_mask(model, None)
    return model


def test_per_rank_bn_differs_from_one_process_only_by_the_bn_batch(ddp) -> None:
    real, synthetic = _toy_data()
    got = ddp[0]["per_rank"]["state"]
    replay = _state(_per_rank_replay(_model(), real, synthetic))
    _assert_states_close(got, replay, **TOL)
    one = _model()
    train_classifier(one, real, synthetic, steps=STEPS, **EXACT_KW)
    assert _max_diff(got, _state(one)) > 1000 * TOL["atol"]  # a real, documented difference
    assert _max_diff(got, ddp[0]["sync"]["state"]) > 1000 * TOL["atol"]


def test_resume_under_ddp_equals_uninterrupted_run(ddp) -> None:
    for rank in range(WORLD):
        r = ddp[rank]["resume"]
        assert r["saved_step"] == 4  # checkpoint_every=2, crash in step 5
        for key, value in r["reference"].items():
            assert torch.equal(value, r["resumed"][key]), (rank, key)
        assert r["history"] == r["ref_history"]
        assert [row["step"] for row in r["history"]] == [3, 6]
    assert all(torch.equal(v, ddp[1]["resume"]["resumed"][k])
               for k, v in ddp[0]["resume"]["resumed"].items())


def test_real_only_run_with_unused_aux_branches(ddp) -> None:
    history = ddp[0]["real_only"]["history"]
    assert [row["step"] for row in history] == [1, 2]
    assert all(np.isfinite(row["loss"]) and row["loss_synthetic"] is None for row in history)


# --------------------------------------------------------------------------- in one process


def test_batches_split_evenly_per_domain() -> None:
    real, synthetic = _toy_data()
    kw = {k: v for k, v in EXACT_KW.items() if k not in ("log_every", "progress")}
    cfg = RunConfig(steps=1, **kw, n_real=len(real), n_synthetic=len(synthetic))
    x, y, mask = make_batch(real, synthetic, cfg, 0)
    parts = [make_batch(real, synthetic, cfg, 0, DistInfo(r, WORLD)) for r in range(2)]
    for part in parts:
        assert part[2].tolist() == [False] * 4 + [True] * 4  # real first, then synthetic
    assert torch.equal(torch.cat([parts[0][1][:4], parts[1][1][:4], parts[0][1][4:],
                                  parts[1][1][4:]]), y)  # the same images as one process
    check_world(cfg, 4)
    with pytest.raises(ValueError, match="8 real and 8 synthetic images must each divide by 3"):
        check_world(cfg, 3)


def test_synced_batchnorm_is_plain_alone_and_restores_the_layers() -> None:
    model = _model()
    x = torch.randn(8, 1, 16, 16)
    mask = torch.tensor([False] * 4 + [True] * 4)
    reference = _model()
    set_synthetic_mask(reference, mask)
    set_synthetic_mask(model, mask)
    with synced_batchnorm(model) as n:  # no process group: every layer computes as before
        assert n == 2 * sum(isinstance(m, AuxBatchNorm2d) for m in model.modules())
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert all(m.sync is None for m in model.modules() if isinstance(m, AuxBatchNorm2d))
    with pytest.raises(ValueError, match="cannot sync SyncBatchNorm"):
        with synced_batchnorm(nn.Sequential(nn.SyncBatchNorm(3))):
            pass


def test_fp16_amp_uses_a_grad_scaler_and_resumes_exactly(tmp_path) -> None:
    real, synthetic = _toy_data()
    kw = {**EXACT_KW, "steps": 4, "checkpoint_every": 2, "amp": "fp16", "channels_last": True}
    reference = _model()
    ref_history = train_classifier(reference, real, synthetic, **kw)
    assert all(np.isfinite(row["loss"]) for row in ref_history)
    ckpt = tmp_path / "state.pt"
    crashing = CrashingItems(synthetic, crash_after=3 * 8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_classifier(_model(), real, crashing, checkpoint_path=ckpt, **kw)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 2 and state["scaler"]["scale"] > 0
    resumed = _model(seed=5)
    history = train_classifier(resumed, real, synthetic, checkpoint_path=ckpt, **kw)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert history == ref_history
    with pytest.raises(ValueError, match="amp must be"):
        train_classifier(_model(), real, synthetic, **{**kw, "amp": "int8"})


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
