"""The ablation grid's points: which training runs a sweep of one data source makes.

A point is a (source, regime, multiplier, aux norm, seed); its run is the ``train`` stage's
configuration with the point's settings replaced (:func:`point_config`), identified by a
digest of that configuration (:func:`config_hash`) so that a finished run can be recognised
and kept. The sweep runner (:mod:`lib.sweep`) trains them; ``python -m lib.plan`` counts them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lib import config
from lib.choices import REAL_SOURCES
from lib.training.many import config_hash

__all__ = ["GridPoint", "config_hash", "grid_points", "point_config"]


@dataclasses.dataclass(frozen=True)
class GridPoint:
    source: str
    regime: str
    multiplier: float | None  # None for real-only runs
    aux_norm: bool
    seed: int

    @property
    def name(self) -> str:
        mult = "na" if self.multiplier is None else f"{self.multiplier:g}"
        return f"{self.regime}-{self.source}-m{mult}-aux{int(self.aux_norm)}-s{self.seed}"

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "regime": self.regime,
                "multiplier": 0.0 if self.multiplier is None else self.multiplier,
                "aux_norm": self.aux_norm, "seed": self.seed,
                "synthetic": self.source not in REAL_SOURCES}


def grid_points(sweep: config.SweepConfig, source: str) -> list[GridPoint]:
    """Every run of ``source`` in the grid of ``sweep`` (see the module docstring)."""
    if sweep.limited_per_class < 1:
        raise ValueError(f"sweep.limited_per_class must be positive, got "
                         f"{sweep.limited_per_class}")
    points = []
    for regime in sweep.regimes:
        for seed in sweep.run_seeds:
            if source in REAL_SOURCES:
                if regime != "none":
                    points.append(GridPoint(source, regime, None, False, seed))
                continue
            for mult in sweep.run_multipliers:
                if mult <= 0:
                    raise ValueError(f"sweep multipliers must be positive (the real-only runs "
                                     f"are the sources {', '.join(REAL_SOURCES)}), got {mult}")
                for aux in (False,) if regime == "none" else sweep.aux_norm:
                    points.append(GridPoint(source, regime, float(mult), aux, seed))
    return points


def point_config(cfg: config.TrainConfig, sweep: config.SweepConfig,
                 point: GridPoint) -> config.TrainConfig:
    """The ``train`` configuration ``cfg`` with one grid point's settings."""
    real = point.source in REAL_SOURCES
    values: dict[str, Any] = {
        "use_synthetic": not real, "aux_norm": point.aux_norm,
        "synthetic_multiplier": point.multiplier,
        "synthetic_strategy": None if real else point.source,
        "real_fraction": 0.0 if point.regime == "none" else 1.0,
        "real_per_class": sweep.limited_per_class if point.regime == "limited" else None,
        "common": dataclasses.replace(cfg.common, seed=int(point.seed), progress=False),
    }
    if point.source == "real-noaug":
        values["augment"] = ()
    return dataclasses.replace(cfg, **values)
