"""Semantics of the auxiliary norms (lib.nn.aux_norm) and the timm classifier backend."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
from torch import nn

from lib.nn.aux_norm import (
    AuxBatchNorm1d,
    AuxBatchNorm2d,
    AuxLayerNorm,
    DomainSplit,
    convert_to_aux_norm,
    set_synthetic_mask,
    strip_aux,
)

TINY_RESNET = {"channels": (8, 16, 32, 64), "stem_width": 8}
TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
MASK = torch.tensor([True, False, False, True, False, True, False, False])  # interleaved


def _bn2d_with_mask(mask: torch.Tensor | None) -> AuxBatchNorm2d:
    bn = AuxBatchNorm2d(3)
    set_synthetic_mask(bn, mask)
    return bn


def _stats(bn: nn.Module) -> list[torch.Tensor]:
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial weights and running stats (so copies are really tested)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=g))


def test_real_only_batch_moves_only_main_stats() -> None:
    for mask in (None, torch.zeros(8, dtype=torch.bool)):
        bn = _bn2d_with_mask(mask)
        aux_before, main_before = _stats(bn.aux), _stats(bn)
        x = torch.randn(8, 3, 4, 4) * 2 + 1
        y = bn(x)
        assert _same(_stats(bn.aux), aux_before)  # the empty synthetic part was skipped
        assert not _same(_stats(bn), main_before)
        torch.testing.assert_close(y, nn.BatchNorm2d(3)(x))


def test_synthetic_only_batch_moves_only_aux_stats() -> None:
    bn = _bn2d_with_mask(torch.ones(8, dtype=torch.bool))
    aux_before, main_before = _stats(bn.aux), _stats(bn)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    y = bn(x)
    assert _same(_stats(bn), main_before)
    assert not _same(_stats(bn.aux), aux_before)
    torch.testing.assert_close(y, nn.BatchNorm2d(3)(x))


def test_mixed_batch_equals_two_plain_bns() -> None:
    torch.manual_seed(0)
    bn = AuxBatchNorm2d(3)
    with torch.no_grad():
        bn.aux.weight.fill_(2.0)
        bn.aux.bias.fill_(-1.0)
    real_bn, syn_bn = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    syn_bn.load_state_dict(bn.aux.state_dict())
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    x[MASK] += 5  # a domain shift between the parts
    set_synthetic_mask(bn, MASK)
    y = bn(x)
    expected = torch.empty_like(y)
    expected[~MASK] = real_bn(x[~MASK])
    expected[MASK] = syn_bn(x[MASK])
    torch.testing.assert_close(y, expected)
    assert _same(_stats(bn), _stats(real_bn)) and _same(_stats(bn.aux), _stats(syn_bn))
    (y * torch.arange(y.numel()).view_as(y)).sum().backward()
    (expected * torch.arange(y.numel()).view_as(y)).sum().backward()
    torch.testing.assert_close(bn.weight.grad, real_bn.weight.grad)
    torch.testing.assert_close(bn.aux.weight.grad, syn_bn.weight.grad)


def test_blocked_batch_takes_the_slice_path_with_the_same_result() -> None:
    """Real-then-synthetic batches (the trainer's layout) use slices instead of gathers."""
    blocked = torch.tensor([False] * 5 + [True] * 3)
    assert DomainSplit.from_mask(blocked).n_real_first == 5
    assert DomainSplit.from_mask(MASK).n_real_first is None  # interleaved: gather path
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    fast, slow = AuxBatchNorm2d(3), AuxBatchNorm2d(3)
    with torch.no_grad():
        for bn in (fast, slow):
            bn.aux.weight.fill_(2.0)
    fast.domain_split = DomainSplit.from_mask(blocked)
    slow.domain_split = dataclasses.replace(DomainSplit.from_mask(blocked), n_real_first=None)
    y_fast, y_slow = fast(x), slow(x)
    torch.testing.assert_close(y_fast, y_slow)
    g_fast = torch.autograd.grad((y_fast * torch.arange(y_fast.numel()).view_as(x)).sum(), x)
    g_slow = torch.autograd.grad((y_slow * torch.arange(y_slow.numel()).view_as(x)).sum(), x)
    torch.testing.assert_close(g_fast, g_slow)
    assert _same(_stats(fast), _stats(slow)) and _same(_stats(fast.aux), _stats(slow.aux))


def test_eval_uses_main_branch_regardless_of_mask() -> None:
    bn = AuxBatchNorm2d(3)
    with torch.no_grad():
        bn.aux.weight.fill_(5.0)
        bn.aux.running_mean.fill_(3.0)
        bn.running_mean.fill_(-1.0)
    plain = nn.BatchNorm2d(3).eval()
    plain.load_state_dict(strip_aux(bn.state_dict()))
    bn.eval()
    x = torch.randn(8, 3, 4, 4)
    for mask in (None, MASK, torch.ones(8, dtype=torch.bool)):
        set_synthetic_mask(bn, mask)
        before = _stats(bn) + _stats(bn.aux)
        torch.testing.assert_close(bn(x), plain(x))
        assert _same(before, _stats(bn) + _stats(bn.aux))


def test_batchnorm1d_single_sample_part_is_refused() -> None:
    bn = AuxBatchNorm1d(4)
    set_synthetic_mask(bn, torch.tensor([False, False, False, True]))
    with pytest.raises(ValueError, match="synthetic part of the batch has 1 sample"):
        bn(torch.randn(4, 4))
    set_synthetic_mask(bn, torch.tensor([False, False, True, True]))
    assert bn(torch.randn(4, 4)).shape == (4, 4)
    # BatchNorm2d normalises one sample over its H*W positions, so one sample is fine there
    bn2 = _bn2d_with_mask(torch.tensor([False, False, False, True]))
    assert bn2(torch.randn(4, 3, 2, 2)).shape == (4, 3, 2, 2)


def test_mask_errors_are_clear() -> None:
    bn = _bn2d_with_mask(MASK)
    with pytest.raises(ValueError, match="batch of 4 samples but the synthetic mask has 8"):
        bn(torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="1-D bool"):
        set_synthetic_mask(bn, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="no auxiliary norm layers"):
        set_synthetic_mask(nn.BatchNorm2d(3), MASK)
    assert set_synthetic_mask(nn.BatchNorm2d(3), None) == 0


def test_usable_as_timm_norm_layer() -> None:
    plain = timm.create_model("resnet10t", num_classes=3, in_chans=1, **TINY_RESNET)
    aux = timm.create_model(
        "resnet10t", num_classes=3, in_chans=1, norm_layer=AuxBatchNorm2d, **TINY_RESNET
    )
    n_plain = sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, AuxBatchNorm2d) for m in aux.modules()) == n_plain
    assert set(strip_aux(aux.state_dict())) == set(plain.state_dict())


def test_converter_copies_weights_into_both_branches() -> None:
    model = timm.create_model("resnet10t", num_classes=3, in_chans=1, **TINY_RESNET)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(4, 1, 16, 16)
    expected = model(x)
    converted = convert_to_aux_norm(copy.deepcopy(model))
    layers = [m for m in converted.modules() if isinstance(m, AuxBatchNorm2d)]
    assert len(layers) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for layer in layers:
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(layer, name), getattr(layer.aux, name))
    torch.testing.assert_close(converted(x), expected)
    set_synthetic_mask(converted, torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(converted(x), expected)  # eval: mask ignored
    assert convert_to_aux_norm(converted) is converted  # idempotent: no nested aux layers
    assert sum(isinstance(m, AuxBatchNorm2d) for m in converted.modules()) == len(layers)


def test_converter_keeps_timm_batchnorm_act() -> None:
    model = timm.create_model("mobilenetv3_small_050", num_classes=3)  # BatchNormAct2d inside
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    converted = convert_to_aux_norm(copy.deepcopy(model)).eval()
    torch.testing.assert_close(converted(x), model(x))
    assert set(strip_aux(converted.state_dict())) == set(model.state_dict())


def test_converter_refuses_models_without_norms() -> None:
    with pytest.raises(ValueError, match="no BatchNorm to convert"):
        convert_to_aux_norm(nn.Sequential(nn.Linear(3, 3)))
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=3, **TINY_VIT)
    with pytest.raises(ValueError, match="layernorm='aux'"):
        convert_to_aux_norm(vit)
    with pytest.raises(ValueError, match="LayerNorm2d"):
        convert_to_aux_norm(nn.Sequential(timm.layers.LayerNorm2d(3)), layernorm="aux")


def test_strip_aux_loads_into_plain_timm_strictly() -> None:
    torch.manual_seed(0)
    model = convert_to_aux_norm(timm.create_model("resnet10t", num_classes=3, **TINY_RESNET))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    x = torch.randn(8, 3, 16, 16)
    for _ in range(2):  # make the branches differ
        set_synthetic_mask(model, MASK)
        x_shifted = x + 3 * MASK.view(-1, 1, 1, 1)
        nn.functional.cross_entropy(model(x_shifted), torch.arange(8) % 3).backward()
        optimizer.step()
    assert not torch.equal(model.bn1.running_mean, model.bn1.aux.running_mean)
    plain = timm.create_model("resnet10t", num_classes=3, **TINY_RESNET)
    plain.load_state_dict(strip_aux(model.state_dict()), strict=True)
    model.eval()
    plain.eval()
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=0)


def test_strip_aux_keeps_unrelated_aux_names() -> None:
    state = {"aux_head.weight": 1, "blocks.aux.weight": 2, "aux.bias": 3, "head.aux.fc.weight": 4}
    assert strip_aux(state) == {"aux_head.weight": 1, "head.aux.fc.weight": 4}


def _vit_with_distinct_aux_ln() -> nn.Module:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=3, **TINY_VIT)
    vit = convert_to_aux_norm(vit, layernorm="aux")
    with torch.no_grad():
        for m in vit.modules():
            if isinstance(m, AuxLayerNorm):
                m.aux.weight.mul_(-2.0)
                m.aux.bias.add_(0.5)
    return vit


def test_aux_layernorm_routes_each_sample_on_a_tiny_vit() -> None:
    vit = _vit_with_distinct_aux_ln().train()  # ViT has no dropout by default
    assert sum(isinstance(m, AuxLayerNorm) for m in vit.modules()) == 3  # norm1, norm2, norm
    x = torch.randn(8, 3, 32, 32)
    set_synthetic_mask(vit, None)
    all_real = vit(x)
    set_synthetic_mask(vit, torch.ones(8, dtype=torch.bool))
    all_syn = vit(x)
    set_synthetic_mask(vit, MASK)
    mixed = vit(x)
    assert not torch.allclose(all_real, all_syn)
    torch.testing.assert_close(mixed[~MASK], all_real[~MASK])
    torch.testing.assert_close(mixed[MASK], all_syn[MASK])
    vit.eval()
    torch.testing.assert_close(vit(x), all_real)  # eval: main branch for every sample
    plain = timm.create_model("vit_tiny_patch16_224", num_classes=3, **TINY_VIT).eval()
    plain.load_state_dict(strip_aux(vit.state_dict()), strict=True)
    torch.testing.assert_close(plain(x), all_real)


def test_shared_layernorm_is_left_untouched() -> None:
    ln = nn.LayerNorm(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.Flatten(2), nn.Flatten(1))
    model.append(nn.Linear(4, 4)).append(ln)
    model = convert_to_aux_norm(model)  # layernorm="shared" is the default
    assert isinstance(model[1], AuxBatchNorm2d)
    assert model[5] is ln and type(model[5]) is nn.LayerNorm


def test_timm_backend_builds_aux_models_and_suggests_names() -> None:
    from lib.backends.classifier import create_classifier

    model = create_classifier("timm", arch="resnet10t", num_classes=3, aux_norm=True, **TINY_RESNET)
    assert any(isinstance(m, AuxBatchNorm2d) for m in model.modules())
    plain = create_classifier("timm", arch="resnet10t", num_classes=3, in_chans=1, **TINY_RESNET)
    assert not any(isinstance(m, AuxBatchNorm2d) for m in plain.modules())
    assert plain.conv1[0].in_channels == 1
    vit = create_classifier(
        "timm",
        arch="vit_tiny_patch16_224",
        num_classes=3,
        aux_norm=True,
        aux_layernorm="aux",
        **TINY_VIT,
    )
    assert any(isinstance(m, AuxLayerNorm) for m in vit.modules())
    with pytest.raises(ValueError, match="resnet18"):
        create_classifier("timm", arch="resnet_18", num_classes=3)
