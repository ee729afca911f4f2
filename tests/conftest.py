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


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A project root for running stages: params.yaml (the repository's, with the ``smoke``
    profile and no progress bars) and a two-class ImageFolder of 16 random 8x8 PNGs per class
    under data/digits; ``SYNTHSCALE_ROOT`` points at it. Returns the root."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from lib import paths

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "params.yaml").read_text()
    for old, new in (("\n  profile: mini ", "\n  profile: smoke "),
                     ("\n  progress: true ", "\n  progress: false ")):
        assert old in text, f"params.yaml no longer has {old!r}"
        text = text.replace(old, new)
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    rng = np.random.default_rng(0)
    for label in ("0", "1"):
        folder = tmp_path / "data/digits" / label
        folder.mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"img-{i:02d}.png")
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    return tmp_path
