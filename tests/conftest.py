"""Shared fixtures: tiny random-initialised models of the real classes, built once per run."""

from __future__ import annotations

import os

import pytest

# Never wait on the hub: a load by name must fail at once (see ENVIRONMENT.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Folders of the tiny text-to-image, CLIP and LLM models: {"t2i", "clip", "llm"}."""
    from lib.zoo import build_tiny_zoo

    return build_tiny_zoo(tmp_path_factory.mktemp("zoo"), seed=0)
