"""Training augmentation applied per batch on tensors, seeded per step.

A light, documented subset of timm's training transform (``timm.data.create_transform(...,
is_training=True)``), done on the already-normalised batch ``(N, C, H, W)`` instead of on
each PIL image: one affine ``grid_sample`` per batch is far cheaper on a 2-core CPU than
per-image PIL work, and every parameter comes from one ``torch.Generator`` seeded from
``(seed, step)``, so a batch's augmentation does not depend on the data-loading order.

Operations (names used in ``train.augment``):

* ``rrc`` — timm's RandomResizedCrop: area scale in [0.08, 1], log-uniform aspect ratio in
  [3/4, 4/3], resized back to the input size (bilinear). Crops that would leave the image
  are shrunk to fit (timm retries, then falls back to a centre crop; this is the cheap
  equivalent).
* ``crop`` — the CIFAR-style "pad 1/8 and random crop": a random translation of up to 1/8
  of the side, zero (mid-grey after normalisation) padding. Suited to small images.
* ``flip`` — horizontal flip with probability 0.5 (wrong for digits and text: off there).
* ``jitter`` — timm's colour jitter 0.4 for brightness and contrast (saturation and hue are
  left out: the mini world is grey).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("rrc", "crop", "flip", "jitter")


def check_augment(names: tuple[str, ...] | list[str]) -> None:
    """Refuse unknown or repeated operation names, listing the valid ones."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {', '.join(unknown)}; valid: {', '.join(AUGMENTATIONS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"augmentations listed twice: {list(names)}")


def _affine(n: int, names: tuple[str, ...], gen: torch.Generator) -> torch.Tensor | None:
    """Per-sample affine matrices ``(n, 2, 3)`` in ``affine_grid``'s [-1, 1] coordinates."""
    sx, sy = torch.ones(n), torch.ones(n)
    tx, ty = torch.zeros(n), torch.zeros(n)
    used = False
    if "rrc" in names:
        area = torch.empty(n).uniform_(0.08, 1.0, generator=gen)
        log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
        ratio = log_r.exp()
        sx = (area * ratio).sqrt().clamp(max=1.0)  # crop width / image width
        sy = (area / ratio).sqrt().clamp(max=1.0)
        # centre anywhere that keeps the crop inside the image
        tx = (1 - sx) * (2 * torch.rand(n, generator=gen) - 1)
        ty = (1 - sy) * (2 * torch.rand(n, generator=gen) - 1)
        used = True
    if "crop" in names:
        # a translation of up to 1/8 of the side = 1/4 in [-1, 1] units
        tx = tx + 0.25 * (2 * torch.rand(n, generator=gen) - 1)
        ty = ty + 0.25 * (2 * torch.rand(n, generator=gen) - 1)
        used = True
    if "flip" in names:
        flip = torch.rand(n, generator=gen) < 0.5
        sx = torch.where(flip, -sx, sx)
        used = True
    if not used:
        return None
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    return theta


def augment_batch(
    x: torch.Tensor, names: tuple[str, ...] | list[str], gen: torch.Generator
) -> torch.Tensor:
    """The augmented batch (same shape); ``x`` is normalised to [-1, 1], on the CPU.

    Operations run in the fixed order geometry (rrc, crop, flip as one resampling), then
    jitter, whatever the order of ``names``.
    """
    return augment_batches(x, names, [gen])


def augment_batches(
    x: torch.Tensor, names: tuple[str, ...] | list[str], generators: list[torch.Generator]
) -> torch.Tensor:
    """:func:`augment_batch` of each of ``len(generators)`` equal parts of ``x`` (rows), part
    ``k`` with ``generators[k]``, in one resampling: the values of separate calls, for the
    runs of a training group (:mod:`lib.training.group_loop`)."""
    names = tuple(names)
    check_augment(names)
    if not names or len(x) == 0:
        return x
    if len(x) % len(generators):
        raise ValueError(f"{len(x)} samples cannot be split into {len(generators)} equal parts")
    n = len(x) // len(generators)
    draws = [_draws(n, names, gen) for gen in generators]  # each generator in the lone order
    if draws[0][0] is not None:
        theta = torch.cat([d[0] for d in draws])
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "jitter" in names:
        brightness = torch.cat([d[1] for d in draws])
        contrast = torch.cat([d[2] for d in draws])
        img = (x + 1) / 2 * brightness  # to [0, 1], scale brightness
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = ((img - mean) * contrast + mean).clamp(0, 1)
        x = img * 2 - 1
    return x.contiguous()


def _draws(n: int, names: tuple[str, ...], gen: torch.Generator
           ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One batch's random parameters, drawn in order: the affine matrices (None without a
    geometric operation), then the jitter's brightness and contrast factors (None without)."""
    theta = _affine(n, names, gen)
    if "jitter" not in names:
        return theta, None, None
    brightness = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    return theta, brightness, contrast
