"""The shards' command line: check a generation folder, or copy its images to an ImageFolder.

    python -m lib.shards verify outputs/generate            # report; exit 1 on damage
    python -m lib.shards verify outputs/generate --json     # the report as JSON
    python -m lib.shards to-imagefolder outputs/generate /data/synthetic   # DEST/class/id.png

``verify`` exits 0 when every shard is intact and the manifest agrees, 1 on any damage (the
report names the shards, the reason and their ids, and how to repair), 2 when the folder
holds no shard at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lib.shards.integrity import verify
from lib.shards.reading import completed_shards, to_imagefolder


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lib.shards",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("verify", help="check markers, tar hashes, members and the manifest")
    check.add_argument("out_dir", help="a generation output folder")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    conv = sub.add_parser("to-imagefolder", help="copy the images to DEST/<class>/<id>.<ext>")
    conv.add_argument("out_dir", help="a generation output folder (completed shards)")
    conv.add_argument("dest", help="the ImageFolder root to write")
    conv.add_argument("--class-key", default="class_name",
                      help="the metadata field naming the folder (default: class_name)")
    args = parser.parse_args(argv)
    if args.cmd == "verify":
        return _verify(Path(args.out_dir), args.json)
    if not completed_shards(args.out_dir):
        print(f"error: no completed shards in {args.out_dir}", file=sys.stderr)
        return 2
    counts = to_imagefolder(args.out_dir, args.dest, class_key=args.class_key)
    print(f"{sum(counts.values())} images in {len(counts)} class folders under {args.dest}")
    return 0


def _verify(out_dir: Path, as_json: bool) -> int:
    if not out_dir.is_dir() or not any(out_dir.glob("shard-*")):
        print(f"error: no shards in {out_dir}", file=sys.stderr)
        return 2
    report = verify(out_dir)
    print(json.dumps(report.as_dict(), indent=1) if as_json else report.describe())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
