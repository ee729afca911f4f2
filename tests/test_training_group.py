"""Training groups (lib.training.group_loop, lib.nn.mini_cnn_group, lib.training.group_run)
and their use by the sweep: a run trained in a group ends with exactly (bit for bit) the
weights, buffers, optimizer state, history and checkpoint bytes it ends with alone, whichever
runs share its group, however many, and after a kill and resume.

The tolerance is zero: the grouped kernels compute each run's part as the lone kernels do
(lib/nn/mini_cnn_group.py says why, and checks grouped convolutions per shape)."""

from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import config, provenance
from lib.backends.classifier import create_classifier
from lib.grid import grid_points
from lib.nn import mini_cnn_group
from lib.nn.augment import augment_batch, augment_batches
from lib.stages import classes
from lib.sweep import RESULTS, run_sweep, sweep_tasks
from lib.training.datasets import ImageArrayDataset
from lib.training.group_batches import GroupBatches
from lib.training.group_loop import GroupMember, train_group
from lib.training.loop import run_config, train_classifier

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

N_CLS = 4
SETTINGS = {"steps": 12, "batch_size": 16, "synthetic_fraction": 0.5, "lr": 3e-3,
            "weight_decay": 0.05, "label_smoothing": 0.1, "synthetic_loss_weight": 0.7}
LOOP = {"log_every": 3, "checkpoint_every": 5, "channels_last": True}


def _images(n: int, seed: int, rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    """8x8 noise with a bright band whose row encodes the class (RGB: a synthetic domain)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLS, n)
    images = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c: 2 * c + 2, :] += 150
    return (np.repeat(images[..., None], 3, axis=-1) if rgb else images), labels


# run name -> (seed, real images, synthetic images, augmentation)
RUNS = {"a": (3, 64, 40, ("crop",)), "b": (4, 100, 64, ("crop",)),
        "c": (5, 30, 50, ("crop",)), "d": (6, 80, 80, ("rrc", "flip", "jitter"))}


def _run(name: str, aux_norm: bool = True) -> tuple[torch.nn.Module, ImageArrayDataset,
                                                     ImageArrayDataset, dict]:
    seed, n_real, n_syn, augment = RUNS[name]
    real = ImageArrayDataset(*_images(n_real, seed, False), 8, 1, synthetic=False)
    synthetic = ImageArrayDataset(*_images(n_syn, seed + 100, True), 8, 1, synthetic=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_classifier("timm", arch="mini_cnn", num_classes=N_CLS, in_chans=1,
                                  aux_norm=aux_norm)
    return model, real, synthetic, {**SETTINGS, "seed": seed, "augment": augment}


def _alone(name: str, folder: Path, aux_norm: bool = True) -> tuple[dict, list]:
    model, real, synthetic, settings = _run(name, aux_norm)
    history = train_classifier(model, real, synthetic, **settings, progress=False,
                               checkpoint_path=folder / name / "state.pt", **LOOP)
    return model.state_dict(), history


def _grouped(names: list[str], folder: Path, aux_norm: bool = True) -> dict[str, tuple]:
    runs = {n: _run(n, aux_norm) for n in names}
    members = [GroupMember(model, real, syn, run_config(real, syn, **settings),
                           folder / n / "state.pt")
               for n, (model, real, syn, settings) in runs.items()]
    histories = train_group(members, **LOOP)
    return {n: (runs[n][0].state_dict(), h) for n, h in zip(names, histories)}


def _assert_same(alone: tuple[dict, list], grouped: tuple[dict, list], what: str) -> None:
    state, history = alone
    other, other_history = grouped
    assert state.keys() == other.keys()
    differ = [k for k in state if not torch.equal(state[k], other[k])]
    assert not differ, f"{what}: {differ[:4]} differ from the run trained alone"
    assert other_history == history, f"{what}: the history differs"


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> tuple[Path, dict[str, tuple]]:
    folder = tmp_path_factory.mktemp("alone")
    return folder, {n: _alone(n, folder) for n in RUNS}


def test_a_run_in_any_group_equals_the_run_alone_bit_for_bit(alone, tmp_path) -> None:
    folder, lone = alone
    for i, names in enumerate((["a", "b", "c"], ["c", "a"], ["b"], ["a", "b", "c", "d"])):
        out = tmp_path / f"group{i}"
        for name, result in _grouped(names, out).items():
            _assert_same(lone[name], result, f"run {name} in group {names}")
            for file in ("state.pt",):  # checkpoints: the same bytes as the lone run's
                assert filecmp.cmp(out / name / file, folder / name / file, shallow=False)


def test_runs_without_auxiliary_norm_and_the_per_model_fallback(tmp_path, monkeypatch) -> None:
    lone = {n: _alone(n, tmp_path / "alone", aux_norm=False) for n in ("a", "b")}
    for name, result in _grouped(["a", "b"], tmp_path / "g", aux_norm=False).items():
        _assert_same(lone[name], result, f"run {name} without aux norm")
    # where a grouped convolution would not be exact, layers run model by model: same bits
    monkeypatch.setattr(mini_cnn_group, "grouped_conv_is_exact", lambda *a, **k: False)
    for name, result in _grouped(["b", "a"], tmp_path / "fallback", aux_norm=False).items():
        _assert_same(lone[name], result, f"run {name}, convolutions model by model")


def test_bf16_groups_equal_bf16_runs_alone(tmp_path) -> None:
    """``amp: bf16`` (an option: other numbers than fp32) keeps the group's guarantee."""
    lone = {}
    for name in ("a", "c"):
        model, real, syn, settings = _run(name)
        history = train_classifier(model, real, syn, **settings, progress=False, amp="bf16",
                                   **LOOP)
        lone[name] = (model.state_dict(), history)
    runs = {n: _run(n) for n in ("a", "c")}
    members = [GroupMember(m, r, s, run_config(r, s, **kw)) for m, r, s, kw in runs.values()]
    for name, history in zip(runs, train_group(members, amp="bf16", **LOOP)):
        _assert_same(lone[name], (runs[name][0].state_dict(), history), f"bf16 run {name}")


def test_a_killed_group_resumes_exactly_alone_or_grouped(alone, tmp_path, monkeypatch) -> None:
    _, lone = alone
    original = GroupBatches.batch

    def killed_at_7(self: GroupBatches, step: int):
        if step == 7:
            raise RuntimeError("killed")
        return original(self, step)

    monkeypatch.setattr(GroupBatches, "batch", killed_at_7)
    with pytest.raises(RuntimeError, match="killed"):
        _grouped(["a", "b", "c"], tmp_path)
    monkeypatch.undo()
    for name in ("a", "b", "c"):  # each left its checkpoint of step 5
        assert torch.load(tmp_path / name / "state.pt", weights_only=True)["step"] == 5
    model, real, syn, settings = _run("a")  # one resumes alone, the others in a group
    history = train_classifier(model, real, syn, **settings, progress=False,
                               checkpoint_path=tmp_path / "a" / "state.pt", **LOOP)
    _assert_same(lone["a"], (model.state_dict(), history), "run a resumed alone")
    for name, result in _grouped(["c", "b"], tmp_path).items():
        _assert_same(lone[name], result, f"run {name} resumed in a group")


def test_runs_that_cannot_share_a_group_are_refused(tmp_path) -> None:
    def member(name: str, aux_norm: bool = True, **change) -> GroupMember:
        model, real, syn, settings = _run(name, aux_norm)
        return GroupMember(model, real, syn, run_config(real, syn, **{**settings, **change}))

    with pytest.raises(ValueError, match="auxiliary norms or none"):
        train_group([member("a"), member("b", aux_norm=False)])
    with pytest.raises(ValueError, match="differs from run 0 in lr"):
        train_group([member("a"), member("b", lr=1e-2)])
    with pytest.raises(ValueError, match="differs from run 0 in synthetic_fraction"):
        train_group([member("a"), member("b", synthetic_fraction=0.25)])
    with pytest.raises(ValueError, match="fp16"):
        train_group([member("a")], amp="fp16")
    resumed = _run("a")
    first = GroupMember(resumed[0], resumed[1], resumed[2], run_config(
        resumed[1], resumed[2], **{**resumed[3], "steps": 5}), tmp_path / "a.pt")
    train_group([first])
    model, real, syn, settings = _run("a")
    again = GroupMember(model, real, syn, run_config(real, syn, **settings), tmp_path / "a.pt")
    with pytest.raises(ValueError, match="steps"):  # its checkpoint is of another run
        train_group([again, member("b")])


def test_augment_batches_equals_one_call_per_part() -> None:
    x = torch.randn(3 * 20, 1, 8, 8)
    for ops in (("crop",), ("rrc", "flip", "jitter"), ("flip",)):
        joint = augment_batches(x, ops, [torch.Generator().manual_seed(s) for s in range(3)])
        alone = torch.cat([augment_batch(part, ops, torch.Generator().manual_seed(s))
                           for s, part in enumerate(torch.chunk(x, 3))])
        assert torch.equal(joint, alone), ops


# --------------------------------------------------------------------------- the sweep


@pytest.fixture
def sweep_setup(tiny_project) -> tuple[config.TrainConfig, config.SweepConfig]:
    classes.run(config.load("classes"))
    provenance.finish(config.load("generate"), "generate", {})  # no synthetic image is read
    train = dataclasses.replace(config.load("train"), arch="mini_cnn", image_size=8,
                                channels=1, steps=6, batch_size=8, checkpoint_every=3,
                                use_synthetic=False)
    sweep = dataclasses.replace(config.load("sweep"), sources=("real", "cd"),
                                regimes=("full", "limited", "none"), limited_per_class=2,
                                seeds=(0, 1, 2), multipliers=(0.5,), aux_norm=(True, False),
                                large=False)
    return train, sweep


def test_sweep_groups_write_the_bytes_of_lone_runs(sweep_setup, tiny_project) -> None:
    train, sweep = sweep_setup
    out = {size: tiny_project / f"outputs/sweep-{size}/real" for size in (1, 4)}
    for size, folder in out.items():
        lines = run_sweep(train, dataclasses.replace(sweep, group_size=size), "real", folder,
                          workers=1)
        assert len(lines) == 6
    for run in sorted(p.name for p in out[1].iterdir() if p.is_dir()):
        files = sorted(p.name for p in (out[1] / run).iterdir())
        assert {"model.pt", RESULTS, "history.csv", "per_class.csv"} <= set(files)
        assert files == sorted(p.name for p in (out[4] / run).iterdir())
        for file in files:
            assert filecmp.cmp(out[1] / run / file, out[4] / run / file, shallow=False), \
                f"{run}/{file} differs between group_size 1 and 4"


def test_sweep_tasks_group_runs_that_can_train_together(sweep_setup, tmp_path) -> None:
    train, sweep = sweep_setup
    points = grid_points(sweep, "cd")  # full/limited x aux on/off x 3 seeds + none x 3
    grouped = sweep_tasks(train, dataclasses.replace(sweep, group_size=4), points, tmp_path)
    assert sorted(len(t) for t in grouped) == [1, 2, 4, 4, 4]  # aux: 6, others: 9
    for task in grouped:  # aux runs apart from the others (their batches split per domain)
        assert len({p.aux_norm for p in task}) == 1
    assert [[p] for p in points] == sweep_tasks(
        train, dataclasses.replace(sweep, group_size=1), points, tmp_path)
    # a run resuming from another step trains apart; an architecture without a group: alone
    resumed = next(p for p in points if p.aux_norm)
    (tmp_path / resumed.name).mkdir()
    torch.save({"step": 3}, tmp_path / resumed.name / "state.pt")
    tasks = sweep_tasks(train, dataclasses.replace(sweep, group_size=4), points, tmp_path)
    assert [resumed] in tasks
    resnet = dataclasses.replace(train, arch="resnet18")
    assert all(len(t) == 1 for t in sweep_tasks(
        resnet, dataclasses.replace(sweep, group_size=4), points, tmp_path))
