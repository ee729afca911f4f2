"""The small 8x8 classifiers registered with timm (lib.nn.mini_cnn)."""

from __future__ import annotations

import pytest
import timm
import torch

from lib.backends.classifier import create_classifier
from lib.nn.aux_norm import aux_norm_layers
from lib.training.checkpoints import load_plain_timm, save_checkpoint


@pytest.mark.parametrize("arch", ["mini_cnn", "mini_cnn_small"])
def test_registered_with_timm_and_keeps_8x8_resolution(arch: str) -> None:
    import lib.nn.mini_cnn  # noqa: F401

    assert timm.is_model(arch)
    model = timm.create_model(arch, num_classes=10, in_chans=1).eval()
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert model.forward_features(torch.zeros(1, 1, 8, 8)).shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(arch, pretrained=True)


def test_aux_norm_checkpoint_loads_into_plain_timm(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_classifier("timm", arch="mini_cnn", num_classes=10, in_chans=1, aux_norm=True)
    assert len(aux_norm_layers(model)) == 4  # every BatchNorm2d got an auxiliary branch
    save_checkpoint(model, tmp_path / "model.pt", {"arch": "mini_cnn"})
    plain = load_plain_timm(tmp_path / "model.pt", "mini_cnn", 10, 1)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(plain(x), model.eval()(x))  # eval uses the main branch
    assert not aux_norm_layers(plain)
