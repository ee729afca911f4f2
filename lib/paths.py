"""The project root and path resolution.

Every path in ``params.yaml`` is relative to the project root (the folder holding
``dvc.yaml`` and ``params.yaml``), never to the working directory: a notebook opened in
JupyterLab from ``notebooks/`` and a stage run by DVC from the root read the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "SYNTHSCALE_ROOT"
_MARKERS = ("dvc.yaml", "params.yaml")


def project_root(start: str | os.PathLike | None = None) -> Path:
    """``$SYNTHSCALE_ROOT`` if set, else the nearest folder upwards holding dvc.yaml and params.yaml."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / m).is_file() for m in _MARKERS):
            return folder
    raise FileNotFoundError(
        f"no project root above {here}: no folder holds both {' and '.join(_MARKERS)}; "
        f"run from inside the synthscale checkout or set {ROOT_ENV}"
    )


def resolve(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``path`` made absolute against the project root (absolute paths pass through)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(root) if root else project_root()) / p


def resolve_model(ref: str, root: str | os.PathLike | None = None) -> str:
    """A model reference: a local folder under the root if one exists there, else a hub id.

    Paper-scale profiles name hub ids (``org/model``); the smoke and mini profiles name
    folders built by the ``zoo`` stage. A reference that looks like a relative path
    (starts with ``.`` or names an existing folder) is resolved against the root.
    """
    local = resolve(ref, root)
    if local.exists() or ref.startswith((".", "/", "~")):
        if not local.exists():
            raise FileNotFoundError(f"model folder {ref!r} does not exist (resolved to {local})")
        return str(local)
    return ref
