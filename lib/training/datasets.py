"""Datasets of image arrays for the classifier trainer, and batch fetching from any dataset.

Items of every training dataset are ``(x, label, is_synthetic)``. :class:`ImageArrayDataset`
keeps its images as one uint8 array and converts a whole batch at a time; :func:`fetch_batch`
stacks the items of any other dataset.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")


class ImageArrayDataset(Dataset):
    """Images held as one uint8 array, served as normalised float tensors.

    Items are ``(x, label, is_synthetic)`` with ``x`` of shape ``(channels, image_size,
    image_size)`` scaled to mean 0.5 / std 0.5 (values in [-1, 1]). RGB is converted to gray
    (BT.601 luma) when ``channels == 1`` and gray is repeated when ``channels == 3``; images
    are resized (bilinear, antialiased, aspect not kept) to ``image_size``. Conversion happens
    per batch (:meth:`batch`), so the array stays uint8 in memory.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        image_size: int,
        channels: int,
        synthetic: bool,
    ):
        _check_images(images, labels, image_size, channels)
        arr = images if images.ndim == 4 else images[..., None]
        self.images = torch.from_numpy(np.ascontiguousarray(arr))  # (N, H, W, C) uint8
        self.labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.synthetic = bool(synthetic)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        x, y, _ = self.batch(np.array([i]))
        return x[0], int(y[0]), self.synthetic

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The items at ``idx`` as stacked tensors ``(x, labels, is_synthetic)``."""
        idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        x = self.images[idx_t].permute(0, 3, 1, 2).float().div_(255.0)
        x = _convert_channels(x, self.channels)
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = (x - 0.5) / 0.5
        synthetic = torch.full((len(idx_t),), self.synthetic, dtype=torch.bool)
        return x.contiguous(), self.labels[idx_t], synthetic


def _check_images(images: np.ndarray, labels: np.ndarray, image_size: int, channels: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images))}"
        )
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(
            f"images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3); got {images.shape}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({len(images)},); "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray <-> RGB for a float batch ``(N, C, H, W)``."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    weights = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def fetch_batch(
    dataset: Dataset, idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items ``idx`` of any dataset of ``(x, label, is_synthetic)`` items, stacked."""
    if isinstance(dataset, ImageArrayDataset):
        return dataset.batch(idx)
    items = [dataset[int(i)] for i in idx]
    x = torch.stack([item[0] for item in items])
    labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
    synthetic = torch.tensor([bool(item[2]) for item in items], dtype=torch.bool)
    return x, labels, synthetic
