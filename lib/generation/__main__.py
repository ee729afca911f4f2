"""The generation worker's command line: one process of a (possibly multi-node) run.

    python -m lib.generation                                    # params.yaml, one process
    torchrun --standalone --nproc-per-node 8 -m lib.generation   # one process per GPU
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m lib.generation             # 32 ranks on 4 nodes
    srun --ntasks-per-node 8 python -m lib.generation            # Slurm, no torchrun

Each process finds its rank in the launcher's variables and writes its share of the images
(:mod:`lib.generation.worker`). The parameters are the ``generate`` stage's: from
``params.yaml`` by default, or from the JSON file the stage writes (``--config``) so the
workers run exactly the notebook's config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib import config
from lib.generation.worker import dist_env, load_config, run_worker
from lib.io import write_json
from lib.processes import die_with_launcher


def _main(argv: list[str] | None = None) -> int:
    die_with_launcher()  # torchrun starts each worker in its own session: end with torchrun
    parser = argparse.ArgumentParser(prog="python -m lib.generation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="flat JSON of the generate parameters (as the stage "
                        "writes it); default: the generate section of params.yaml")
    parser.add_argument("--params", help="params.yaml to read (default: the project's)")
    parser.add_argument("--summary-dir", help="write this rank's summary as rank-RRRRR.json here")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.params)
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rank, world, local = dist_env()
    summary = run_worker(cfg, rank, world, local)
    if args.summary_dir:
        write_json(Path(args.summary_dir) / f"rank-{rank:05d}.json", summary)
    print(f"[generate rank {rank}/{world}] " + ", ".join(
        f"{k}={summary[k]}" for k in ("generated", "skipped", "regenerated", "dropped",
                                      "repaired_shards", "repaired_ids", "images_per_s",
                                      "manifest")))
    return 0


def main(argv: list[str] | None = None) -> int:
    # torchrun's @record writes a worker's traceback where the launcher reports it.
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_main)(argv)


if __name__ == "__main__":
    sys.exit(main())
