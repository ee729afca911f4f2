"""Per-item seeds derived from ids.

Every random choice that belongs to one item (an image, a prompt, a sample) is seeded from
``(global seed, item id)`` by a cryptographic hash, never from one global stream and never
from Python's salted ``hash()``. An item can therefore be regenerated alone, and results do
not depend on batch size, process count or resume point.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch

_MASK = (1 << 63) - 1


def seed_for(seed: int, *parts: object) -> int:
    """A 63-bit seed for the item named by ``parts`` under the global ``seed``."""
    key = "\x1f".join([str(int(seed)), *(str(p) for p in parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & _MASK


def torch_generator(seed: int, *parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for one item."""
    return torch.Generator(device=device).manual_seed(seed_for(seed, *parts))


def numpy_rng(seed: int, *parts: object) -> np.random.Generator:
    """A NumPy ``Generator`` seeded for one item."""
    return np.random.default_rng(seed_for(seed, *parts))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global CPU RNG for the block and restore it afterwards (for code that
    draws from the global generator, e.g. module initialisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch CPU threads (None or 0: leave as is), then restore.

    CPU kernels, and so the bytes of results, can depend on the thread count.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
