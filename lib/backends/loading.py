"""Loading helpers shared by the backends: dtype names and local model folders.

A model reference is either a hub id (``org/name``) or an architecture name, or a local
folder; a folder that does not exist fails before any slow import or download.
"""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name``; an unknown name lists the valid ones."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def looks_like_path(model: str) -> bool:
    """True for absolute paths, ``.``/``~`` prefixes or more than one ``/``.

    Hub ids (``org/name``) and architecture names are none of these.
    """
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1


def check_local_model(model: str, what: str) -> None:
    """Fail clearly when ``model`` names a local folder that does not exist."""
    if looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(f"{what} folder {model!r} does not exist")
