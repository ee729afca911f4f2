"""A dataset that can crash mid-training (imported by the training tests and their torchrun
worker; not a test module)."""

from __future__ import annotations

from torch.utils.data import Dataset


class CrashingItems(Dataset):
    """A generic dataset (no fast batch path) that can crash after some item reads."""

    def __init__(self, inner: Dataset, crash_after: int | None = None):
        self.inner, self.crash_after, self.reads = inner, crash_after, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        self.reads += 1
        if self.crash_after is not None and self.reads > self.crash_after:
            raise RuntimeError("simulated crash")
        return self.inner[i]
