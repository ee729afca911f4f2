"""The small 8x8 ViT registered with timm (lib.nn.mini_vit), its auxiliary LayerNorms
(train.aux_layernorm, lib.nn.aux_norm) and its runs through the training entry point of the
train stage and the sweep (lib.training.classifier_run.train_and_evaluate)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from lib import config, provenance
from lib.backends.classifier import create_classifier
from lib.grid import grid_points
from lib.nn.aux_norm import AuxLayerNorm, aux_norm_layers, set_synthetic_mask
from lib.stages import classes
from lib.sweep import sweep_tasks
from lib.training.checkpoints import load_plain_timm, save_checkpoint
from lib.training.classifier_run import train_and_evaluate
from lib.training.datasets import ImageArrayDataset
from lib.training.group_run import groupable
from lib.training.loop import train_classifier

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]


def _vit(aux_norm: bool = True, seed: int = 0, **kwargs) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_classifier("timm", arch="mini_vit", num_classes=10, in_chans=1,
                                 aux_norm=aux_norm, aux_layernorm="aux", **kwargs)


# --------------------------------------------------------------------------- the model


def test_registered_with_timm_the_studys_shape() -> None:
    import lib.nn.mini_vit  # noqa: F401

    assert timm.is_model("mini_vit")
    model = timm.create_model("mini_vit", num_classes=10).eval()  # in_chans: 1 by default
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert model.patch_embed.num_patches == 16 and model.cls_token is not None
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (64, 4, 4)
    assert model.blocks[0].mlp.fc1.out_features == 128  # mlp_ratio 2
    assert model.global_pool == "token"
    rgb = timm.create_model("mini_vit", num_classes=3, in_chans=3).eval()
    assert rgb(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


def test_pretrained_weights_are_refused() -> None:
    import lib.nn.mini_vit  # noqa: F401

    with pytest.raises(ValueError, match="mini_vit has no pretrained weights"):
        timm.create_model("mini_vit", pretrained=True)


def test_auxiliary_norm_needs_aux_layernorms() -> None:
    with pytest.raises(ValueError, match="no BatchNorm to convert.*layernorm='aux'"):
        create_classifier("timm", arch="mini_vit", num_classes=10, in_chans=1, aux_norm=True,
                          aux_layernorm="shared")
    model = _vit()
    assert len(aux_norm_layers(model)) == 9  # 2 per block x 4 + the final norm
    assert all(isinstance(m, AuxLayerNorm) for m in aux_norm_layers(model))


def test_aux_layernorms_route_synthetic_samples_to_the_aux_parameters() -> None:
    model = _vit().train()  # no dropout in the mini ViT: train mode is deterministic
    torch.manual_seed(1)
    with torch.no_grad():  # the two branches start as copies: set the aux ones apart
        for layer in aux_norm_layers(model):
            layer.aux.weight.copy_(torch.rand_like(layer.aux.weight) + 0.5)
            layer.aux.bias.copy_(torch.randn_like(layer.aux.bias))
    x = torch.rand(6, 1, 8, 8)

    def run(mask: torch.Tensor | None) -> torch.Tensor:
        set_synthetic_mask(model, mask)
        return model(x)

    real, synthetic = run(None), run(torch.ones(6, dtype=torch.bool))
    assert not torch.allclose(real, synthetic, atol=1e-3)  # the aux parameters are used
    mixed_mask = torch.tensor([True, False, False, True, False, True])
    mixed = run(mixed_mask)
    # each sample goes through its own domain's parameters (a ViT mixes no samples)
    torch.testing.assert_close(mixed[mixed_mask], synthetic[mixed_mask])
    torch.testing.assert_close(mixed[~mixed_mask], real[~mixed_mask])
    # a synthetic-only batch trains the aux parameters only
    model.zero_grad()
    run(torch.ones(6, dtype=torch.bool)).sum().backward()
    for layer in aux_norm_layers(model):
        assert layer.weight.grad is None and layer.aux.weight.grad is not None
    # eval: the main parameters for every sample, whatever the mask
    model.eval()
    torch.testing.assert_close(run(torch.ones(6, dtype=torch.bool)), real)


def test_aux_checkpoint_loads_into_plain_timm(tmp_path) -> None:
    model = _vit()
    save_checkpoint(model, tmp_path / "model.pt", {"arch": "mini_vit"})
    plain = load_plain_timm(tmp_path / "model.pt", "mini_vit", 10, 1)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(plain(x), model.eval()(x))
    assert not aux_norm_layers(plain)


def _digits(n: int, seed: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 noise with a bright row pair at the class's place (offset: another domain)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c: 2 * c + 2, :] += 150 - offset
    return images, labels


def test_training_with_synthetic_images_moves_the_aux_parameters_apart() -> None:
    real = ImageArrayDataset(*_digits(48, 0, 0), 8, 1, synthetic=False)
    synthetic = ImageArrayDataset(*_digits(48, 1, 80), 8, 1, synthetic=True)
    model = _vit()
    train_classifier(model, real, synthetic, steps=4, batch_size=16, synthetic_fraction=0.5,
                     lr=3e-3, weight_decay=0.05, label_smoothing=0.1, synthetic_loss_weight=1.0,
                     seed=0, progress=False)
    for layer in aux_norm_layers(model):  # trained on different samples: no longer copies
        assert not torch.equal(layer.weight, layer.aux.weight)


# --------------------------------------------------------------------------- runs


@pytest.fixture
def train_cfg(tiny_project) -> config.TrainConfig:
    classes.run(config.load("classes"))
    provenance.finish(config.load("generate"), "generate", {})  # no synthetic image is read
    return dataclasses.replace(config.load("train"), arch="mini_vit", image_size=8, channels=1,
                               steps=4, batch_size=8, checkpoint_every=2, use_synthetic=False,
                               augment=("crop",), channels_last=True)


def _run_bytes(cfg: config.TrainConfig, folder: Path) -> dict[str, bytes]:
    result = train_and_evaluate(cfg, out=folder, metrics_path=folder / "metrics.json",
                                history_path=folder / "history.csv")
    assert result["metrics"]["steps"] == 4
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("aux_norm", [True, False])
def test_a_mini_vit_run_trains_and_reruns_bit_for_bit(train_cfg, tmp_path, aux_norm) -> None:
    cfg = dataclasses.replace(train_cfg, aux_norm=aux_norm)
    first, second = _run_bytes(cfg, tmp_path / "a"), _run_bytes(cfg, tmp_path / "b")
    assert {"model.pt", "metrics.json", "history.csv", "per_class.csv"} <= set(first)
    for name, data in first.items():
        assert second[name] == data, f"{name} differs between two runs of the same settings"
    state = torch.load(tmp_path / "a/model.pt", weights_only=True)["state_dict"]
    assert any(k.endswith("norm1.aux.weight") for k in state) == aux_norm
    assert "cls_token" in state and "pos_embed" in state


def test_aux_layernorm_leaves_a_model_without_layernorm_unchanged(train_cfg, tmp_path) -> None:
    """mini_cnn has no LayerNorm: its runs write the same bytes whatever aux_layernorm says."""
    cnn = dataclasses.replace(train_cfg, arch="mini_cnn", aux_norm=True)
    runs = {mode: _run_bytes(dataclasses.replace(cnn, aux_layernorm=mode), tmp_path / mode)
            for mode in ("shared", "aux")}
    assert runs["shared"] == runs["aux"]


def test_a_mini_vit_run_trains_alone_in_the_sweep(train_cfg, tmp_path) -> None:
    assert not groupable(train_cfg)
    assert groupable(dataclasses.replace(train_cfg, arch="mini_cnn"))  # the contrast
    sweep = dataclasses.replace(config.load("sweep"), sources=("real", "cd"),
                                regimes=("full", "limited"), limited_per_class=2,
                                seeds=(0, 1, 2), multipliers=(0.5,), aux_norm=(True, False),
                                large=False, group_size=4)
    points = grid_points(sweep, "cd")
    tasks = sweep_tasks(train_cfg, sweep, points, tmp_path)
    assert tasks == [[p] for p in points]
    cnn = sweep_tasks(dataclasses.replace(train_cfg, arch="mini_cnn"), sweep, points, tmp_path)
    assert max(len(t) for t in cnn) > 1  # the same grid groups the small CNN's runs
