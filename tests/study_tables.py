"""Small synthetic study runs tables for the analysis tests (no pipeline runs): curves with
known scaling exponents, and accuracy points with known means."""

from __future__ import annotations

import numpy as np
import pandas as pd

SIZES = (40, 80, 160, 320, 640)


def curve_rows(curve: str, k: float, seeds: int = 3, sizes=SIZES, noise: float = 0.02,
               k_ood: float | None = None, study: str = "scaling", rng_seed: int = 0,
               **cols) -> pd.DataFrame:
    """Runs of one curve: val loss ``3 N^-k``, top-1 error ``0.8 N^-k`` (log-normal noise),
    OOD sets ``thicken`` and ``blur`` scaling with ``k_ood`` (default k)."""
    rng = np.random.default_rng(rng_seed)
    k_ood = k if k_ood is None else k_ood
    rows = []
    for seed in range(seeds):
        for n in sizes:
            def draw(b: float, kk: float, n: float = n) -> float:
                return b * n ** (-kk) * float(np.exp(rng.normal(0, noise)))
            rows.append({"study": study, "curve": curve, "setting": curve.split("/")[-1],
                         "kind": "real" if curve == "real" else "synthetic", "arch": "mini_cnn",
                         "aux_norm": True, "real_per_class": -1, "multiplier": 1.0,
                         "seed": seed, "n_images": n, "val.loss": draw(3.0, k),
                         "val.top1": 1 - draw(0.8, k), "ood_thicken.loss": draw(4.0, k_ood),
                         "ood_blur.loss": draw(5.0, k_ood),
                         "ood_thicken.top1": 1 - draw(0.9, k_ood),
                         "ood_blur.top1": 1 - draw(0.9, k_ood)} | cols)
    return pd.DataFrame(rows)


def point_rows(curve: str, top1: float, seeds: int = 3, spread: float = 0.005,
               study: str = "diversify", ood_top1: float | None = None, **cols) -> pd.DataFrame:
    """Runs of one accuracy point: val top-1 ``top1 + spread * (seed - mean seed)``, exactly
    known mean and standard deviation; the OOD top-1 likewise around ``ood_top1``."""
    offsets = spread * (np.arange(seeds) - (seeds - 1) / 2)
    ood = top1 - 0.2 if ood_top1 is None else ood_top1
    return pd.DataFrame([{"study": study, "curve": curve, "setting": curve.split("/")[-1],
                          "kind": "mixed", "arch": "mini_cnn", "aux_norm": True,
                          "real_per_class": -1, "multiplier": 1.0, "seed": s,
                          "n_images": 1000, "val.loss": 1.0, "val.top1": top1 + o,
                          "ood_noise.top1": ood + o, "ood_rotate.top1": ood - o} | cols
                         for s, o in enumerate(offsets)])
