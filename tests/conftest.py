"""Shared fixtures: tiny random-initialised models of the real classes, built once per run."""

from __future__ import annotations

import os

import pytest

from lib.seeding import torch_threads

# Never wait on the hub: without this a load by hub name fails only after ~50 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Folders of the tiny text-to-image, CLIP and LLM models: {"t2i", "clip", "llm"}."""
    from lib.zoo import build_tiny_zoo

    return build_tiny_zoo(tmp_path_factory.mktemp("zoo"), seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    CPU bytes depend on the thread count, and on a shared 2-core machine two threads wait on
    each other."""
    with torch_threads(1):
        yield
