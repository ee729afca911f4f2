"""Stage ``zoo``: build the profile's local models.

``tiny-random`` builds tiny random-initialised models of the real classes (a Stable
Diffusion pipeline, an open_clip model, a causal LM with a chat template), saved so the
production loaders read them from a folder. ``none`` builds nothing: the profile names hub
models. Either way ``zoo.json`` lists what the folder holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib import zoo
from lib.config import ZooConfig
from lib.io import write_json

BUILDERS = ("tiny-random", "none")


def run(cfg: ZooConfig) -> dict[str, Any]:
    out = cfg.path("zoo")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.build == "tiny-random":
        models = zoo.build_tiny_zoo(out, seed=cfg.common.seed)
    elif cfg.build == "none":
        models = {}
    else:
        raise ValueError(f"zoo.build={cfg.build!r}; valid: {', '.join(BUILDERS)}")
    # Folders relative to the project root: the file must not depend on the checkout's place.
    info = {"build": cfg.build,
            "models": {k: str(Path(v).resolve().relative_to(cfg.root)) for k, v in models.items()}}
    write_json(out / "zoo.json", info)
    return info
