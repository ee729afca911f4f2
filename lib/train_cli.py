"""One run of the training ablation grid (the ``train-grid`` matrix stage of dvc.yaml).

    python -m lib.train_cli --variant combined --multiplier 0.5 --aux-norm true --seed 0 \\
        --out outputs/train-grid/combined-0.5-true-0 \\
        --metrics metrics/train-grid/combined-0.5-true-0.json

The run is the ``train`` stage's configuration (params.yaml, active profile) with four
settings replaced, so a grid run and the single ``train`` run differ only in what the grid
names. Paths come from the command line (dvc.yaml is their one source).

Variants: ``real`` (real images only: the multiplier is ignored, so a grid that crosses
``real`` with several multipliers repeats the same run) and ``combined`` (real +
synthetic at ``train.synthetic_fraction`` of each batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from lib import config, paths

VARIANTS = ("real", "combined")


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def grid_config(cfg: config.TrainConfig, variant: str, multiplier: float, aux_norm: bool,
                seed: int) -> config.TrainConfig:
    """``cfg`` with one grid point's settings."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return dataclasses.replace(
        cfg, use_synthetic=variant == "combined", synthetic_multiplier=float(multiplier),
        aux_norm=aux_norm, common=dataclasses.replace(cfg.common, seed=int(seed)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train_cli",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--multiplier", required=True, type=float)
    parser.add_argument("--aux-norm", required=True, type=_bool)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args(argv)
    from lib.stages import train  # after argument errors, which should not pay for torch

    try:
        cfg = grid_config(config.load("train"), args.variant, args.multiplier, args.aux_norm,
                          args.seed)
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = paths.project_root()
    out = paths.resolve(args.out, root)
    result = train.run(cfg, out=out, metrics_path=paths.resolve(args.metrics, root),
                       history_path=out / "history.csv",
                       extra_metrics={"variant": args.variant, "multiplier": args.multiplier,
                                      "aux_norm": args.aux_norm, "seed": args.seed})
    print(f"[train-grid] {out.name}: val top1 {result['metrics']['val']['top1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
