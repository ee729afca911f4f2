"""The classifier training core (lib.training) on tiny timm models and a learnable toy task."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from crashing import CrashingItems
from torch import nn

from lib.nn.aux_norm import AuxBatchNorm2d, convert_to_aux_norm
from lib.training.checkpoints import load_plain_timm, save_checkpoint
from lib.training.datasets import ImageArrayDataset
from lib.training.evaluation import evaluate, predict
from lib.training.history import Throughput
from lib.training.loop import train_classifier

TINY_RESNET = {"channels": (8, 16, 32, 64), "stem_width": 8}
NUM_CLASSES = 4
TRAIN_KW = {
    "batch_size": 16,
    "synthetic_fraction": 0.5,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "synthetic_loss_weight": 1.0,
    "seed": 7,
    "progress": False,
}


def _toy_images(n: int, seed: int, brightness: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 noise with a bright horizontal band whose row encodes the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c : 2 * c + 2, :] += brightness
    return images, labels


def _toy_data() -> tuple[ImageArrayDataset, ImageArrayDataset]:
    """Gray "real" images and RGB "synthetic" ones with a brightness shift (a domain gap)."""
    real_x, real_y = _toy_images(160, seed=0, brightness=150)
    syn_x, syn_y = _toy_images(160, seed=1, brightness=190)
    real = ImageArrayDataset(real_x, real_y, image_size=16, channels=1, synthetic=False)
    syn_rgb = np.repeat(syn_x[..., None], 3, axis=-1)
    synthetic = ImageArrayDataset(syn_rgb, syn_y, image_size=16, channels=1, synthetic=True)
    return real, synthetic


def _model(seed: int = 0, **kwargs) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.create_model(
            "resnet10t", num_classes=NUM_CLASSES, in_chans=1, **TINY_RESNET, **kwargs
        )
    return convert_to_aux_norm(model)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, list[dict], ImageArrayDataset]:
    real, synthetic = _toy_data()
    model = _model()
    history = train_classifier(model, real, synthetic, steps=60, log_every=20, **TRAIN_KW)
    return model, history, real


def test_dataset_converts_channels_size_and_range() -> None:
    gray = np.zeros((2, 4, 4), dtype=np.uint8)
    gray[0, :2] = 255
    ds = ImageArrayDataset(gray, np.array([3, 1]), image_size=8, channels=3, synthetic=True)
    x, label, synthetic = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 8, 8)
    assert (label, synthetic) == (3, True) and isinstance(label, int)
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    red = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    red[..., 0] = 255
    x_gray = ImageArrayDataset(red, np.array([0]), 2, 1, synthetic=False)[0][0]
    assert x_gray.shape == (1, 2, 2)
    torch.testing.assert_close(x_gray, torch.full((1, 2, 2), 2 * 0.299 - 1))
    xb, yb, flags = ds.batch(np.array([1, 0]))
    assert torch.equal(xb[1], x) and yb.tolist() == [1, 3] and flags.all()


def test_dataset_rejects_bad_input() -> None:
    labels = np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match="uint8"):
        ImageArrayDataset(np.zeros((2, 4, 4), np.float32), labels, 4, 1, False)
    with pytest.raises(ValueError, match="C in"):
        ImageArrayDataset(np.zeros((2, 4, 4, 2), np.uint8), labels, 4, 1, False)
    with pytest.raises(ValueError, match="labels"):
        ImageArrayDataset(np.zeros((3, 4, 4), np.uint8), labels, 4, 1, False)
    with pytest.raises(ValueError, match="channels"):
        ImageArrayDataset(np.zeros((2, 4, 4), np.uint8), labels, 4, 2, False)


def test_training_learns_the_toy_task(trained) -> None:
    model, history, real = trained
    assert [row["step"] for row in history] == [20, 40, 60]
    assert set(history[0]) == {"step", "loss", "loss_real", "loss_synthetic", "acc_real",
                               "acc_synthetic", "lr"}  # no timing: reruns write the same bytes
    assert all(0.0 <= row["acc_real"] <= 1.0 and 0.0 <= row["acc_synthetic"] <= 1.0
               for row in history)
    assert history[-1]["acc_real"] > history[0]["acc_real"]  # it learns
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert history[-1]["lr"] < history[0]["lr"]  # cosine decay
    assert all(m.domain_split is None for m in model.modules() if isinstance(m, AuxBatchNorm2d))
    assert evaluate(model, real, NUM_CLASSES)["top1"] > 0.8


def test_same_seed_gives_identical_weights() -> None:
    real, synthetic = _toy_data()
    models = [_model(), _model(), _model()]
    for model, seed in zip(models, (7, 7, 8), strict=True):
        train_classifier(model, real, synthetic, steps=3, **{**TRAIN_KW, "seed": seed})
    same, other = models[1].state_dict(), models[2].state_dict()
    for key, value in models[0].state_dict().items():
        assert torch.equal(value, same[key]), key
    assert any(not torch.equal(v, other[k]) for k, v in models[0].state_dict().items())


def test_resume_equals_uninterrupted_run(tmp_path) -> None:
    real, synthetic = _toy_data()
    kw = {**TRAIN_KW, "steps": 6, "log_every": 3, "checkpoint_every": 2}
    reference = _model(drop_rate=0.3)  # dropout: the forward pass must be seeded per step too
    ref_history = train_classifier(reference, CrashingItems(real), CrashingItems(synthetic), **kw)

    ckpt = tmp_path / "run.pt"
    crashing = CrashingItems(synthetic, crash_after=4 * 8)  # dies in the 5th step, after step 4's save
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_classifier(_model(drop_rate=0.3), CrashingItems(real), crashing, checkpoint_path=ckpt, **kw)
    assert torch.load(ckpt, weights_only=True)["step"] == 4

    resumed = _model(seed=123, drop_rate=0.3)  # other initial weights: all must come from ckpt
    history = train_classifier(resumed, CrashingItems(real), CrashingItems(synthetic), checkpoint_path=ckpt, **kw)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert history == ref_history

    again = _model(seed=5, drop_rate=0.3)  # a finished checkpoint is returned as is
    assert train_classifier(again, real, synthetic, checkpoint_path=ckpt, **kw) == history
    assert torch.equal(again.fc.weight, reference.fc.weight)
    with pytest.raises(ValueError, match="lr: checkpoint"):
        train_classifier(_model(), real, synthetic, checkpoint_path=ckpt, **{**kw, "lr": 0.1})


def test_same_run_writes_the_same_checkpoint_bytes(tmp_path) -> None:
    """The checkpoint holds no timing: two runs of the same settings write the same bytes
    (DVC sees an unchanged output); the throughput is measured apart."""
    real, synthetic = _toy_data()
    meters = [Throughput(), Throughput()]
    for name, meter in zip(("a", "b"), meters, strict=True):
        train_classifier(_model(), real, synthetic, steps=3, log_every=1,
                         checkpoint_path=tmp_path / name / "state.pt", throughput=meter,
                         **TRAIN_KW)
    assert (tmp_path / "a/state.pt").read_bytes() == (tmp_path / "b/state.pt").read_bytes()
    summary = meters[0].summary()
    assert summary["steps"] == 3 and summary["images_per_s"] > 0
    assert 0.0 <= summary["data_share"] <= 1.0
    finished = Throughput()  # a finished checkpoint is returned as is: nothing timed
    train_classifier(_model(), real, synthetic, steps=3, log_every=1,
                     checkpoint_path=tmp_path / "a/state.pt", throughput=finished, **TRAIN_KW)
    assert finished.summary() == {"steps": 0, "images_per_s": None, "data_share": None}


def test_throughput_leaves_out_warmup_steps() -> None:
    meter = Throughput(warmup=2)  # benchmarks/train.py: the steps after the warmup
    meter.start()
    for _ in range(5):
        meter.add(8, data_seconds=0.0)
    meter.stop()
    assert (meter.steps, meter.images, meter.data_seconds) == (3, 24, 0.0)
    assert meter.summary()["data_share"] == 0.0 and meter.summary()["steps"] == 3


def test_training_refuses_inconsistent_inputs() -> None:
    real, synthetic = _toy_data()
    with pytest.raises(ValueError, match="no synthetic dataset"):
        train_classifier(_model(), real, None, steps=1, **TRAIN_KW)
    with pytest.raises(ValueError, match="passed as real"):
        train_classifier(_model(), synthetic, synthetic, steps=1, **TRAIN_KW)


class _FixedLogits(nn.Module):
    """Predicts the same ranking 0 > 1 > 2 > 3 > 4 > rest for every input."""

    def __init__(self, num_classes: int):
        super().__init__()
        logits = torch.zeros(num_classes)
        ranking = torch.tensor([10.0, 4.0, 3.0, 2.0, 1.0])[:num_classes]
        logits[: len(ranking)] = ranking
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_evaluate_and_predict_on_a_known_predictor() -> None:
    labels = np.array([0, 0, 1, 2, 5, 6, 6, 4, 0, 3])
    images = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    dataset = ImageArrayDataset(images, labels, 4, 1, synthetic=False)
    model = _FixedLogits(num_classes=8)
    metrics = evaluate(model, dataset, 8, batch_size=3)
    assert metrics["n"] == 10 and metrics["top1"] == pytest.approx(0.3)
    assert metrics["top5"] == pytest.approx(0.7)
    assert metrics["per_class"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None]
    log_probs = torch.log_softmax(model.logits, dim=0)
    assert metrics["loss"] == pytest.approx(-log_probs[labels].mean().item(), rel=1e-5)
    probs, got_labels = predict(model, dataset, batch_size=4)
    assert probs.shape == (10, 8) and np.array_equal(got_labels, labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert "top5" not in evaluate(
        _FixedLogits(4), ImageArrayDataset(images, labels % 4, 4, 1, False), 4
    )


def test_checkpoint_loads_into_plain_timm(trained, tmp_path) -> None:
    model, _, real = trained
    save_checkpoint(model, tmp_path / "model.pt", {"arch": "resnet10t"})
    plain = load_plain_timm(tmp_path / "model.pt", "resnet10t", NUM_CLASSES, 1, **TINY_RESNET)
    assert not any(isinstance(m, AuxBatchNorm2d) for m in plain.modules())
    probs_plain, _ = predict(plain, real)
    probs_aux, _ = predict(model, real)
    np.testing.assert_array_equal(probs_plain, probs_aux)
