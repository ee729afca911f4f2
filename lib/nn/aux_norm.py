"""Auxiliary norms: real and synthetic images normalised by separate layers.

"Diversify, Don't Fine-Tune" (Yu et al.) trains on real + synthetic images with an auxiliary
batch-norm in the manner of AdvProp: real samples go through the main BN, synthetic samples
through an auxiliary BN, so the statistics of the synthetic domain never contaminate the
statistics used at test time. Evaluation uses the main BN only.

How it plugs in
    * :class:`AuxBatchNorm2d` / :class:`AuxBatchNorm1d` ARE the main BN (their own
      parameters and buffers), with one child ``aux`` holding the auxiliary BN. State-dict
      keys therefore match a plain model plus ``*.aux.*`` keys, and :func:`strip_aux` turns a
      checkpoint into one that loads (strict) into plain ``timm.create_model`` of the same
      architecture. Both accept the ``nn.BatchNorm2d`` constructor, so they also work as a
      timm ``norm_layer``.
    * :func:`convert_to_aux_norm` replaces the norms of any built model (uniform across
      architectures; timm's ``BatchNormAct2d`` keeps its activation).
    * The domain of each sample is a bool mask (True = synthetic) set on the model before
      the forward pass with :func:`set_synthetic_mask`; ``None`` means all real. The mask
      lives on the layers (not in ``forward``'s signature) so that unmodified timm models
      can carry it through their own ``forward``.

Semantics in training mode
    The batch is split by the mask; each part is normalised by its own layer (running
    statistics move only for the domain that was seen) and the results are put back in the
    original order. An empty part is skipped (its layer is not called at all). A part that
    batch-norm cannot normalise -- one value per channel, e.g. ``AuxBatchNorm1d`` with a
    single sample of one domain -- raises ``ValueError`` naming the domain, instead of
    PyTorch's generic message. In eval mode every sample uses the main layer, whatever the
    mask says.

LayerNorm (ViTs): a documented choice, ``convert_to_aux_norm(model, layernorm=...)``
    * ``"shared"`` (default) leaves LayerNorms alone. LayerNorm has no batch statistics, so
      the failure the auxiliary BN guards against (synthetic statistics leaking into the
      running statistics used at test time) cannot happen; sharing is the plain reading.
      A model without any BatchNorm (a ViT) then has nothing to convert, and the converter
      refuses rather than silently training without an auxiliary norm.
    * ``"aux"`` wraps every ``nn.LayerNorm`` into :class:`AuxLayerNorm`: a second LayerNorm
      with its own affine parameters chosen per sample by the mask -- the closest analogue
      of the auxiliary BN for a norm without batch statistics. It is an option of this
      project, not a setting taken from the paper.
    Only LayerNorms over the last dimension (``nn.LayerNorm`` and timm's ``LayerNorm``) are
    wrapped; channel-first variants such as timm's ``LayerNorm2d`` are refused by name.

Cost of the split (the trainer's layout)
    :func:`lib.training.loop.train_classifier` builds every batch (and every rank's share of it
    under DDP) as all real samples, then all synthetic ones. :class:`DomainSplit` notices
    that layout, and the split is then ``torch.split`` (two views, whose backward is a
    single ``cat``) followed by one ``cat`` of the two normalised parts: two copies of the
    activations per layer and step, no gather, scatter or zero-filled gradient buffers. An
    interleaved mask (any other caller) is reordered with one ``index_select`` and put back
    with another.

Distributed training (DDP)
    * Default: per-process BN, as in timm's ImageNet recipes and AdvProp. Under DDP each
      process normalises its own share of the batch, which the trainer splits per domain,
      so each process's main BN sees its real samples and its auxiliary BN its synthetic
      ones (``1 / world_size`` of each domain's global count).
    * Option: :func:`synced_batchnorm` makes every BN of a model -- both branches of the
      auxiliary layers and any plain BN -- normalise with the statistics of the whole
      distributed batch (per domain for the auxiliary layers), so ``N`` processes compute
      what one process computes on the global batch. It works with gloo on CPU as well as
      NCCL on GPUs. ``nn.SyncBatchNorm.convert_sync_batchnorm`` must not be used instead:
      it would replace the auxiliary layers by plain synced BNs (losing the routing), and
      PyTorch's version refuses CPU tensors.
    * Under DDP a batch without one of the domains leaves that branch without gradients;
      use ``find_unused_parameters=True`` or keep both domains in every batch (the trainer
      does the former when a run never draws one of the domains).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LN_TENSORS = ("weight", "bias")
_AUX_KEY_SUFFIXES = tuple(f".aux.{name}" for name in _BN_TENSORS)
LAYERNORM_MODES = ("shared", "aux")  # convert_to_aux_norm's ``layernorm`` (lib.choices)


@dataclass(frozen=True)
class DomainSplit:
    """Indices of the real and synthetic samples of one batch, computed once per mask."""

    size: int
    real_idx: torch.Tensor
    synthetic_idx: torch.Tensor
    inverse: torch.Tensor  # puts ``cat([real, synthetic])`` back into batch order
    # the number of real samples when the batch is all real then all synthetic (the trainer's
    # layout): the parts are then slices and no gather/scatter copies are needed
    n_real_first: int | None = None
    order: torch.Tensor | None = None  # ``cat([real_idx, synthetic_idx])``, computed once

    @classmethod
    def from_mask(cls, mask: Any) -> DomainSplit:
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.ndim != 1:
            raise ValueError(
                f"synthetic mask must be a 1-D bool tensor (True = synthetic); "
                f"got dtype {mask.dtype} with shape {tuple(mask.shape)}"
            )
        real_idx = torch.nonzero(~mask).flatten()
        synthetic_idx = torch.nonzero(mask).flatten()
        order = torch.cat([real_idx, synthetic_idx])
        inverse = torch.argsort(order)
        n_real = len(real_idx)
        blocks = not bool(mask[:n_real].any()) and bool(mask[n_real:].all())
        return cls(len(mask), real_idx, synthetic_idx, inverse, n_real if blocks else None, order)


def _split_apply(
    x: torch.Tensor,
    split: DomainSplit | None,
    main: Callable[[torch.Tensor], torch.Tensor],
    aux: Callable[[torch.Tensor], torch.Tensor],
    layer: str,
) -> torch.Tensor:
    """Apply ``main`` to the real samples and ``aux`` to the synthetic ones, in batch order."""
    if split is None:
        return main(x)
    if x.shape[0] != split.size:
        raise ValueError(
            f"{layer} got a batch of {x.shape[0]} samples but the synthetic mask has "
            f"{split.size}; call set_synthetic_mask(model, mask) with the current batch"
        )
    if len(split.synthetic_idx) == 0:
        return main(x)
    if len(split.real_idx) == 0:
        return aux(x)
    n = len(split.real_idx)
    if split.n_real_first is not None:
        # views whose backward is one cat (slicing twice would zero-fill two full-size
        # gradient buffers and add them)
        real, synthetic = torch.split(x, [n, split.size - n])
        return torch.cat([main(real), aux(synthetic)])
    device = x.device
    order = split.order if split.order is not None else torch.cat([split.real_idx,
                                                                   split.synthetic_idx])
    real, synthetic = torch.split(x.index_select(0, order.to(device)), [n, split.size - n])
    return torch.cat([main(real), aux(synthetic)]).index_select(0, split.inverse.to(device))


@dataclass(frozen=True)
class _Sync:
    """The process group a synced BN reduces over (``None``: the default group)."""

    group: Any = None

    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized() and (
            dist.get_world_size(self.group) > 1
        )


class _AllReduceSum(torch.autograd.Function):
    """A differentiable all-reduce (sum): the gradient of each input is the all-reduced sum
    of the gradients of the output on every process."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _synced_batch_norm(bn: _BatchNorm, x: torch.Tensor, group: Any) -> torch.Tensor:
    """Training-mode ``bn(x)`` (no activation) with the statistics of every process's batch.

    Two differentiable all-reduces (:class:`_AllReduceSum`): the sum and count, then the
    sum of squared deviations from the global mean (two passes, as batch-norm computes
    them). The backward pass all-reduces the gradients of those sums, so under DDP the
    gradients are those of one process normalising the concatenated batch. Statistics are
    computed in float32 (float64 for the sum), the output has ``x``'s dtype. Running
    statistics move as ``F.batch_norm`` moves them (unbiased variance, ``momentum`` or the
    cumulative average when it is None), identically on every process.
    """
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    dims = [0, *range(2, x.ndim)]
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    xf = x.float()
    count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64, device=x.device)
    sums = _AllReduceSum.apply(torch.cat([count, xf.sum(dims, dtype=torch.float64)]), group)
    n = sums[0].detach()  # no check on the host: that would stall a GPU at every layer
    mean = (sums[1:] / n).float()
    centered = xf - mean.view(shape)
    var = _AllReduceSum.apply(centered.square().sum(dims), group) / n.float()
    y = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.weight is not None:
        y = y * bn.weight.view(shape)
    if bn.bias is not None:
        y = y + bn.bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            unbiased = var.detach() * (n / (n - 1).clamp(min=1)).float()
            bn.running_mean.mul_(1 - factor).add_(mean.detach().to(bn.running_mean.dtype),
                                                  alpha=factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype),
                                                 alpha=factor)
    return y.to(x.dtype)


def _synced_plain_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """The ``forward`` :func:`synced_batchnorm` gives a plain BN (or timm BatchNormAct2d)."""
    sync: _Sync = self._synced
    if not (self.training and sync.active()):
        return type(self).forward(self, x)
    self._check_input_dim(x)
    x = _synced_batch_norm(self, x, sync.group)
    if "drop" in self._modules:  # timm BatchNormAct2d
        x = self.drop(x)
    if "act" in self._modules:
        x = self.act(x)
    return x


@contextmanager
def synced_batchnorm(model: nn.Module, group: Any = None) -> Iterator[int]:
    """Within the block, every BN of ``model`` normalises training batches over all processes.

    Both branches of the auxiliary BNs (each over its own domain's samples of every
    process) and every plain ``nn.BatchNorm1d``/``nn.BatchNorm2d``/timm ``BatchNormAct2d``
    use :func:`_synced_batch_norm` while a process group of more than one process (``group``,
    default: the default group) is initialised; alone, or in eval mode, they are plain BNs.
    Nothing is replaced: parameters, buffers, state-dict keys and optimizer references stay
    as they are, and the previous behaviour is restored on exit. Yields the number of
    batch-norm layers (aux branches counted) that were synced. Every process must run the
    same layers in the same order (collectives), which holds when each has both domains or
    each lacks the same one. Refuses BN types it does not know (e.g. ``nn.SyncBatchNorm``).
    """
    sync = _Sync(group)
    aux_layers: list[_AuxBatchNorm] = []
    plain: list[_BatchNorm] = []
    for name, module in model.named_modules():
        if isinstance(module, _AuxBatchNorm):
            aux_layers.append(module)
        elif isinstance(module, _BatchNorm):
            if type(module) not in (nn.BatchNorm1d, nn.BatchNorm2d) and not _is_timm_bn_act(
                module
            ):
                raise ValueError(
                    f"cannot sync {type(module).__name__} at {name!r}: only nn.BatchNorm1d, "
                    f"nn.BatchNorm2d, timm BatchNormAct2d and the auxiliary BNs are supported"
                )
            if "forward" in module.__dict__:
                raise ValueError(f"the BN at {name!r} is already synced (or patched)")
            plain.append(module)
    try:
        for layer in aux_layers:
            layer.sync = sync
        for module in plain:
            module._synced = sync
            module.forward = types.MethodType(_synced_plain_forward, module)
        yield len(aux_layers) + len(plain)
    finally:
        for layer in aux_layers:
            layer.sync = None
        for module in plain:
            del module.forward
            del module._synced


class _AuxBatchNorm(_BatchNorm):
    """Shared logic of the auxiliary batch-norms; the subclasses fix the dimensionality."""

    _plain: type[_BatchNorm]

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        **kwargs: Any,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, **kwargs)
        self.aux = self._plain(num_features, eps, momentum, affine, track_running_stats, **kwargs)
        self.domain_split: DomainSplit | None = None
        self.sync: _Sync | None = None  # set by synced_batchnorm (the main branch's)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = _split_apply(x, self.domain_split, self._main, self._aux, self._name())
        else:
            x = self._plain.forward(self, x)
        return self._post(x)

    def _main(self, x: torch.Tensor) -> torch.Tensor:
        self._check_normalisable(x, "real")
        if self.sync is not None and self.sync.active():
            self._check_input_dim(x)
            return _synced_batch_norm(self, x, self.sync.group)
        return self._plain.forward(self, x)

    def _aux(self, x: torch.Tensor) -> torch.Tensor:
        self._check_normalisable(x, "synthetic")
        return self.aux(x)

    def _check_normalisable(self, x: torch.Tensor, domain: str) -> None:
        """Refuse a part with one value per channel: its batch variance is undefined."""
        values_per_channel = x.numel() // x.shape[1] if x.ndim > 1 and x.shape[1] else 0
        if values_per_channel <= 1:
            raise ValueError(
                f"{self._name()}: the {domain} part of the batch has {x.shape[0]} sample(s) "
                f"and one value per channel, which batch-norm cannot normalise in training; "
                f"draw at least 2 {domain} samples per batch (or none)"
            )

    def _post(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout + activation kept from a converted timm ``BatchNormAct2d``."""
        if "drop" in self._modules:
            x = self.drop(x)
        if "act" in self._modules:
            x = self.act(x)
        return x

    def _name(self) -> str:
        return f"{type(self).__name__}({self.num_features})"


class AuxBatchNorm2d(_AuxBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (the main branch) with an auxiliary BN ``aux`` for synthetic samples."""

    _plain = nn.BatchNorm2d


class AuxBatchNorm1d(_AuxBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` (the main branch) with an auxiliary BN ``aux`` for synthetic samples."""

    _plain = nn.BatchNorm1d


class AuxLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (the main branch) with an auxiliary LayerNorm ``aux`` chosen per sample.

    LayerNorm has no batch statistics, so routing is per sample: only the affine parameters
    differ between the domains. Eval mode uses the main branch for every sample.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        **kwargs: Any,
    ):
        super().__init__(normalized_shape, eps, elementwise_affine, bias, **kwargs)
        self.aux = nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias, **kwargs)
        self.domain_split: DomainSplit | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = super().forward
        if not self.training:
            return main(x)
        name = f"AuxLayerNorm{tuple(self.normalized_shape)}"
        return _split_apply(x, self.domain_split, main, self.aux, name)


_AUX_TYPES = (_AuxBatchNorm, AuxLayerNorm)


def _is_timm_bn_act(module: nn.Module) -> bool:
    from timm.layers import BatchNormAct2d

    return type(module) is BatchNormAct2d


def _plain_layernorm_types() -> tuple[type[nn.Module], ...]:
    from timm.layers import LayerNorm as TimmLayerNorm

    return (nn.LayerNorm, TimmLayerNorm)


def _copy_tensors(src: nn.Module, dst: nn.Module, names: tuple[str, ...]) -> None:
    """Copy parameters/buffers (values and ``requires_grad``) from ``src`` into ``dst``."""
    with torch.no_grad():
        for name in names:
            value = getattr(src, name, None)
            if value is None:
                continue
            target = getattr(dst, name)
            target.copy_(value)
            if isinstance(target, nn.Parameter):
                target.requires_grad_(value.requires_grad)


def _aux_batchnorm_from(bn: _BatchNorm) -> _AuxBatchNorm:
    cls = AuxBatchNorm1d if isinstance(bn, nn.BatchNorm1d) else AuxBatchNorm2d
    ref = next(iter(bn.buffers()), None) if bn.weight is None else bn.weight
    factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, **factory)
    _copy_tensors(bn, new, _BN_TENSORS)
    _copy_tensors(bn, new.aux, _BN_TENSORS)
    if _is_timm_bn_act(bn):
        new.drop, new.act = bn.drop, bn.act
    return new.train(bn.training)


def _aux_layernorm_from(ln: nn.LayerNorm) -> AuxLayerNorm:
    ref = ln.weight
    factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    has_bias = getattr(ln, "bias", None) is not None
    new = AuxLayerNorm(ln.normalized_shape, ln.eps, ln.elementwise_affine, has_bias, **factory)
    _copy_tensors(ln, new, _LN_TENSORS)
    _copy_tensors(ln, new.aux, _LN_TENSORS)
    return new.train(ln.training)


def _convert_one(module: nn.Module, layernorm: str, path: str) -> nn.Module | None:
    """The replacement of one module, or None when it stays as it is."""
    if isinstance(module, _AUX_TYPES):
        return None
    if isinstance(module, _BatchNorm):
        if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d) or _is_timm_bn_act(module):
            return _aux_batchnorm_from(module)
        raise ValueError(
            f"cannot convert {type(module).__name__} at {path!r}: only nn.BatchNorm1d, "
            f"nn.BatchNorm2d and timm BatchNormAct2d have an auxiliary version"
        )
    if layernorm == "aux" and isinstance(module, nn.LayerNorm):
        if type(module) in _plain_layernorm_types():
            return _aux_layernorm_from(module)
        raise ValueError(
            f"cannot convert {type(module).__name__} at {path!r} with layernorm='aux': only "
            f"last-dimension LayerNorms (nn.LayerNorm, timm LayerNorm) are supported; "
            f"use layernorm='shared'"
        )
    return None


def _convert_children(module: nn.Module, layernorm: str, prefix: str) -> int:
    """Convert the norms below ``module``; an auxiliary layer is left whole (idempotence)."""
    if isinstance(module, _AUX_TYPES):
        return 0
    converted = 0
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        new = _convert_one(child, layernorm, path)
        if new is None:
            converted += _convert_children(child, layernorm, f"{path}.")
        else:
            setattr(module, name, new)
            converted += 1
    return converted


def convert_to_aux_norm(
    model: nn.Module, layernorm: Literal["shared", "aux"] = "shared"
) -> nn.Module:
    """Replace every BatchNorm1d/2d (and, with ``layernorm="aux"``, every LayerNorm) in place.

    Both branches of each new layer start as copies of the old layer's weights and running
    statistics, so the converted model computes exactly what the original did until the
    branches are trained apart. Returns ``model`` (or its replacement when ``model`` itself is
    a norm layer). Raises ``ValueError`` when there is nothing to convert, because asking for
    an auxiliary norm and silently getting none would invalidate an ablation.
    """
    if layernorm not in LAYERNORM_MODES:
        raise ValueError(f"layernorm must be 'shared' or 'aux', got {layernorm!r}")
    new = _convert_one(model, layernorm, "<root>")
    if new is not None:
        return new
    if _convert_children(model, layernorm, "") == 0 and not has_aux_norm(model):
        if layernorm == "aux":
            raise ValueError(f"{type(model).__name__} has no BatchNorm or LayerNorm to convert")
        raise ValueError(
            f"{type(model).__name__} has no BatchNorm to convert; for LayerNorm models such "
            f"as ViTs pass layernorm='aux' (see lib.nn.aux_norm)"
        )
    return model


def aux_norm_layers(model: nn.Module) -> list[nn.Module]:
    """All auxiliary-norm layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, _AUX_TYPES)]


def has_aux_norm(model: nn.Module) -> bool:
    """Whether ``model`` contains at least one auxiliary-norm layer."""
    return any(isinstance(m, _AUX_TYPES) for m in model.modules())


def set_synthetic_mask(model: nn.Module, mask: torch.Tensor | None) -> int:
    """Tell every auxiliary norm of ``model`` which samples of the next batch are synthetic.

    ``mask`` is a 1-D bool tensor (True = synthetic), ideally on the model's device; ``None``
    means all real. Returns the number of layers set. Setting a mask on a model without
    auxiliary norms raises ``ValueError`` (the mask would be silently ignored).
    """
    layers = aux_norm_layers(model)
    if mask is not None and not layers:
        raise ValueError(
            f"{type(model).__name__} has no auxiliary norm layers; convert it with "
            f"convert_to_aux_norm(model) before setting a synthetic mask"
        )
    split = None if mask is None else DomainSplit.from_mask(mask)
    for layer in layers:
        layer.domain_split = split
    return len(layers)


def strip_aux(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the auxiliary branches so the state dict loads into the plain architecture.

    Only keys ending in ``.aux.<weight|bias|running_mean|running_var|num_batches_tracked>``
    are dropped, so unrelated modules whose names merely contain "aux" survive.
    """
    return {k: v for k, v in state_dict.items() if not f".{k}".endswith(_AUX_KEY_SUFFIXES)}
