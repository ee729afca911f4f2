"""Many small CNNs of one shape run as one: stacked weights, one kernel call per layer.

Trained one at a time, the sweep's 8x8 classifiers (:class:`lib.nn.mini_cnn.MiniCNN`) spend
about half of every step outside their convolutions: Python, dispatch, the optimizer's loops
over 40 small tensors, small elementwise kernels. :class:`MiniCNNGroup` holds the weights and
buffers of K such models stacked along their first dimension (model ``k`` owns rows
``k*n:(k+1)*n`` of every tensor) and runs the K models in one pass: their activations side by
side along the channels, one grouped convolution (``groups=K``), one batch-norm, ReLU and
pooling call for all of them.

The same numbers, bit for bit, as each model alone, because every kernel used computes each
model's channels exactly as it computes that model alone:

* batch-norm (per channel), ReLU, max-pool and the spatial mean work channel by channel;
* a grouped convolution runs each group as its own convolution, for most shapes with the
  kernel a lone model uses, but not for all (on oneDNN one sample per batch, or one input
  channel per group, takes other paths). So before a convolution first runs grouped for a
  shape (batch, channels, size, dtype, memory format), :func:`grouped_conv_is_exact` checks
  on random data that the grouped forward and backward give the per-model bits; where they do
  not, that layer runs model by model (slower, still exact). The first convolution (one input
  channel) runs model by model, as does the linear head;
* dropout masks are drawn per model from that model's own generator, with the calls the
  lone model's ``nn.Dropout`` makes (:meth:`MiniCNNGroup.forward`).

With the auxiliary norm (:mod:`lib.nn.aux_norm`) every model of the group must lay out its
batch alike (``n_real`` real samples, then synthetic ones): the split is along the batch.
:meth:`MiniCNNGroup.state_of` gives model ``k``'s state dict (the lone model's keys and
memory formats), :meth:`MiniCNNGroup.param_groups` the optimizer groups of
:func:`lib.training.recipe.param_groups` over the stacked parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lib.nn.mini_cnn import MiniCNN

_EXACT: dict[tuple[Any, ...], bool] = {}  # grouped_conv_is_exact, per shape, per process


def grouped_conv_is_exact(conv: nn.Conv2d, groups: int, x: torch.Tensor,
                          weight: torch.Tensor) -> bool:
    """Whether ``groups`` copies of ``conv`` run as one grouped convolution on ``x`` (the
    copies' inputs side by side along the channels) with ``weight`` (theirs stacked) give,
    forward and backward, exactly the bits of each copy run alone. Checked once per shape,
    type, memory format, device and thread count on random data, and remembered for the
    process: the kernel a convolution takes depends on those, not on the values."""
    dtype = (torch.get_autocast_dtype(x.device.type)
             if torch.is_autocast_enabled(x.device.type) else x.dtype)
    key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
           conv.dilation, conv.groups, groups, tuple(x.shape), dtype, _layout(x),
           _layout(weight), x.device.type, torch.get_num_threads())
    if key not in _EXACT:
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            _EXACT[key] = _probe(conv, groups, x, weight, dtype)
    return _EXACT[key]


def _layout(t: torch.Tensor) -> torch.memory_format:
    """channels_last when ``t`` is laid out so and not also plainly contiguous."""
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) \
            and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _probe(conv: nn.Conv2d, groups: int, x: torch.Tensor, weight: torch.Tensor,
           dtype: torch.dtype) -> bool:
    gen = torch.Generator().manual_seed(0)
    args = (conv.stride, conv.padding, conv.dilation)

    def rand(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        t = torch.randn(shape, generator=gen).to(device=like.device, dtype=dtype)
        return t.contiguous(memory_format=_layout(like)).requires_grad_()

    shape_x = (x.shape[0], x.shape[1] // groups, *x.shape[2:])
    shape_w = (weight.shape[0] // groups, *weight.shape[1:])
    xs = [rand(shape_x, x) for _ in range(groups)]
    ws = [rand(shape_w, weight) for _ in range(groups)]
    alone = [F.conv2d(a, w, None, *args, conv.groups) for a, w in zip(xs, ws)]
    grads = [torch.randn(out.shape, generator=gen).to(out)
             .contiguous(memory_format=_layout(out)) for out in alone]
    torch.autograd.backward(alone, grads)
    xg = torch.cat([a.detach() for a in xs], 1).contiguous(memory_format=_layout(x))
    wg = torch.cat([w.detach() for w in ws]).contiguous(memory_format=_layout(weight))
    xg.requires_grad_(), wg.requires_grad_()
    out = F.conv2d(xg, wg, None, *args, conv.groups * groups)
    grad = torch.cat(grads, 1).contiguous(memory_format=_layout(out))
    out.backward(grad)
    return (torch.equal(out, torch.cat(alone, 1))
            and torch.equal(xg.grad, torch.cat([a.grad for a in xs], 1))
            and torch.equal(wg.grad, torch.cat([w.grad for w in ws])))


class MiniCNNGroup:
    """K :class:`~lib.nn.mini_cnn.MiniCNN` of one shape with stacked weights (module
    docstring). ``memory_format`` is the one the lone models train in (their convolution
    weights and inputs); the models passed in are read, not changed."""

    def __init__(self, models: Sequence[nn.Module],
                 memory_format: torch.memory_format = torch.contiguous_format):
        if not models:
            raise ValueError("a model group needs at least one model")
        _check_same_shape(models)
        first = models[0]
        self.size = len(models)
        self.layers = list(first.features)
        self.drop_p = float(first.drop.p)
        self.param_names = [name for name, _ in first.named_parameters()]
        states = [m.state_dict() for m in models]
        self.shapes = {name: t.shape for name, t in states[0].items()}
        self.tensors: dict[str, torch.Tensor] = {}
        for name, t in states[0].items():
            if t.ndim == 0:
                stacked = torch.stack([s[name] for s in states])
            else:
                stacked = torch.cat([s[name] for s in states])
                fmt = memory_format if t.ndim == 4 else torch.contiguous_format
                stacked = stacked.contiguous(memory_format=fmt)
            if name in self.param_names:
                stacked.requires_grad_()
            self.tensors[name] = stacked

    # ------------------------------------------------------------------ state

    def param_group_names(self) -> tuple[list[str], list[str]]:
        """The parameters of :func:`lib.training.recipe.param_groups`' two groups, by name:
        those more than 1-D in the lone model (weight decay), then the others, each in the
        lone model's ``parameters()`` order (the order of its optimizer's state)."""
        return ([n for n in self.param_names if len(self.shapes[n]) > 1],
                [n for n in self.param_names if len(self.shapes[n]) <= 1])

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """:func:`lib.training.recipe.param_groups` of the lone model, stacked."""
        decay, no_decay = self.param_group_names()
        return [{"params": [self.tensors[n] for n in decay], "weight_decay": weight_decay},
                {"params": [self.tensors[n] for n in no_decay], "weight_decay": 0.0}]

    def slice_of(self, name: str, stacked: torch.Tensor, k: int) -> torch.Tensor:
        """Model ``k``'s part of ``stacked`` (a tensor laid out as the stacked ``name``): a
        view, in the lone model's shape."""
        shape = self.shapes[name]
        if len(shape) == 0:
            return stacked[k]
        return stacked[k * shape[0]:(k + 1) * shape[0]]

    def split(self, name: str) -> list[torch.Tensor]:
        """Every model's part of the stacked ``name``, as views whose gradients flow back
        into the stacked tensor in one concatenation (slicing would zero-fill it per part)."""
        return list(torch.split(self.tensors[name], self.shapes[name][0]))

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k``'s state dict: the lone model's keys, shapes and memory formats
        (copies)."""
        return {name: self.slice_of(name, t, k).detach().clone()
                for name, t in self.tensors.items()}

    def load_into(self, models: Sequence[nn.Module]) -> None:
        """Copy every model's weights and buffers into ``models`` (the lone models)."""
        if len(models) != self.size:
            raise ValueError(f"{len(models)} models for a group of {self.size}")
        for k, model in enumerate(models):
            model.load_state_dict(self.state_of(k))

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, *, training: bool, n_real: int | None = None,
                generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Logits ``(K, B, num_classes)`` of ``x`` ``(K*B, C, H, W)``: model ``k``'s batch is
        rows ``k*B:(k+1)*B``, laid out as the lone model gets it.

        ``training``: batch statistics (running statistics updated), dropout. With
        auxiliary norms, ``n_real`` (the same for every model) is the number of real samples
        at the start of each batch; the rest go through the auxiliary branches (None: all
        real). ``generators`` (training, one per model) draw each model's dropout mask as
        its ``nn.Dropout`` would from a global generator seeded alike."""
        if len(x) % self.size:
            raise ValueError(f"a batch of {len(x)} samples cannot be split among "
                             f"{self.size} models")
        batch = len(x) // self.size
        h = x
        for i, layer in enumerate(self.layers):
            name = f"features.{i}"
            if isinstance(layer, nn.Conv2d):
                h = self._conv(h, name, layer, per_model=i == 0)
            elif isinstance(layer, _BatchNorm):
                h = self._norm(h, name, layer, training, n_real)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu_(h) if layer.inplace else torch.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding,
                                 layer.dilation, ceil_mode=layer.ceil_mode)
            else:
                raise TypeError(f"MiniCNNGroup cannot run layer {i} ({type(layer).__name__})")
        pooled = _SpatialMean.apply(h)  # (B, K*F): model k's features are columns k*F:(k+1)*F
        if training and self.drop_p > 0:
            pooled = pooled * self._dropout_noise(pooled, batch, generators)
        features = pooled.view(batch, self.size, -1).transpose(0, 1).contiguous()
        weights, biases = self.split("head.weight"), self.split("head.bias")
        return torch.stack([F.linear(features[k], weights[k], biases[k])
                            for k in range(self.size)])

    def _conv(self, h: torch.Tensor, name: str, conv: nn.Conv2d, per_model: bool) -> torch.Tensor:
        """The stacked convolution ``name``: grouped where that is exact, else per model. The
        first layer's input ``h`` holds the models' batches one after the other (rows), later
        layers' their channels side by side."""
        weight = self.tensors[f"{name}.weight"]
        bias = self.tensors.get(f"{name}.bias")
        args = (conv.stride, conv.padding, conv.dilation)
        if not per_model and grouped_conv_is_exact(conv, self.size, h, weight):
            return F.conv2d(h, weight, bias, *args, conv.groups * self.size)
        if per_model:  # the models' batches one after the other
            parts = torch.chunk(h, self.size)
        else:  # their channels side by side
            parts = [p.contiguous(memory_format=_layout(h)) for p in torch.chunk(h, self.size, 1)]
        weights = self.split(f"{name}.weight")
        biases = [None] * self.size if bias is None else self.split(f"{name}.bias")
        return _cat_channels([F.conv2d(part, w, b, *args, conv.groups)
                              for part, w, b in zip(parts, weights, biases)])

    def _norm(self, h: torch.Tensor, name: str, layer: _BatchNorm, training: bool,
              n_real: int | None) -> torch.Tensor:
        """Batch-norm ``name`` (with its auxiliary branch for the synthetic samples)."""
        aux = f"{name}.aux.weight" in self.tensors
        if not (training and aux and n_real is not None):
            return self._batch_norm(h, name, layer, training)
        if n_real == len(h):
            return self._batch_norm(h, name, layer, True)
        if n_real == 0:
            return self._batch_norm(h, f"{name}.aux", layer.aux, True)
        real, synthetic = torch.split(h, [n_real, len(h) - n_real])
        return torch.cat([self._batch_norm(real, name, layer, True),
                          self._batch_norm(synthetic, f"{name}.aux", layer.aux, True)])

    def _batch_norm(self, h: torch.Tensor, name: str, layer: _BatchNorm,
                    training: bool) -> torch.Tensor:
        """``nn.BatchNorm2d.forward`` on the stacked tensors of ``name``."""
        t = self.tensors
        factor = 0.0 if layer.momentum is None else layer.momentum
        if training:
            counts = t[f"{name}.num_batches_tracked"]
            counts.add_(1)
            if layer.momentum is None:
                factor = 1.0 / float(counts[0])
        return F.batch_norm(h, t[f"{name}.running_mean"], t[f"{name}.running_var"],
                            t[f"{name}.weight"], t[f"{name}.bias"], training, factor, layer.eps)

    def _dropout_noise(self, pooled: torch.Tensor, batch: int,
                       generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        """Every model's dropout mask, scaled, as ``F.dropout`` makes it: ``empty_like(x)
        .bernoulli_(1 - p)`` then ``div_(1 - p)``, drawn from that model's generator."""
        if generators is None or len(generators) != self.size:
            raise ValueError(f"training a group of {self.size} models with dropout needs one "
                             f"generator per model")
        keep = 1 - self.drop_p
        width = pooled.shape[1] // self.size
        noise = torch.cat([torch.empty((batch, width), dtype=pooled.dtype,
                                       device=pooled.device).bernoulli_(keep, generator=g)
                           for g in generators], 1)
        return noise.div_(keep)


class _SpatialMean(torch.autograd.Function):
    """``x.mean((2, 3))`` whose gradient is laid out as ``x`` (channels last or not).

    Autograd's own backward expands the gradient into a plainly contiguous tensor; behind a
    channels-last ReLU that sends ``threshold_backward`` down a slow mixed-layout path. Same
    values either way (each is the output gradient divided by the pixel count)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.shape, ctx.layout = x.shape, _layout(x)
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        b, c, h, w = ctx.shape
        expanded = (grad / (h * w)).view(b, c, 1, 1).expand(b, c, h, w)
        return expanded.contiguous(memory_format=ctx.layout)


def _cat_channels(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts side by side along the channels, laid out as the parts are (as the lone
    models' next layers get them)."""
    out = torch.cat(parts, 1)
    layout = _layout(parts[0])
    return out if out.is_contiguous(memory_format=layout) else out.contiguous(
        memory_format=layout)


def _check_same_shape(models: Sequence[nn.Module]) -> None:
    """Refuse models that are not MiniCNNs of one shape (same keys and tensor shapes)."""
    for k, model in enumerate(models):
        if not isinstance(model, MiniCNN):
            raise TypeError(f"model {k} is a {type(model).__name__}; MiniCNNGroup runs "
                            f"MiniCNNs (lib.nn.mini_cnn) only")
        for name, module in model.named_modules():
            if isinstance(module, _BatchNorm) and not (module.affine
                                                       and module.track_running_stats):
                raise ValueError(f"model {k}: the batch-norm {name!r} must be affine and "
                                 f"track running statistics (as MiniCNN builds them)")
    shapes = {n: t.shape for n, t in models[0].state_dict().items()}
    for k, model in enumerate(models[1:], 1):
        other = {n: t.shape for n, t in model.state_dict().items()}
        if other != shapes:
            differ = sorted(set(shapes) ^ set(other)) or sorted(
                n for n in shapes if shapes[n] != other[n])
            raise ValueError(f"model {k} differs in shape from model 0 (e.g. {differ[:3]}); "
                             f"a group holds models of one architecture and settings")
        if float(model.drop.p) != float(models[0].drop.p):
            raise ValueError(f"model {k} has dropout {model.drop.p}, model 0 {models[0].drop.p}")
