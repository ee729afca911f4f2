"""Train the runs of one study (:mod:`lib.study.runs`).

    python -m lib.study --study scaling
    python -m lib.study --study diversify --workers 1
"""

from __future__ import annotations

import argparse
import sys

from lib import config, provenance
from lib.study.runs import run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.study",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, choices=["scaling", "diversify"])
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at a time (default: study.workers)")
    args = parser.parse_args(argv)
    try:
        table = run_study(args.study, workers=args.workers)
    except (config.ConfigError, provenance.ProvenanceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[study {args.study}] {table['run'].nunique()} runs, {len(table)} curve points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
