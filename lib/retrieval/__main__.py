"""The retrieval baseline's command line: the active profile's set for one multiplier.

    python -m lib.retrieval --out outputs/retrieval/x2 --multiplier 2

Reads params.yaml (the active profile): the classes and their prompt names from the
disambiguate stage's ``prompt_names.parquet``, per class ``round(M x n)`` images with ``n``
its real train count (``images.parquet`` of the classes stage; as the prompts stage sizes a
generation), the corpus ``<common.dirs.zoo>/corpus``, the CLIP model of
``disambiguate.clip_model``, and as query template ``finetune.caption_template`` (the
profile's caption of a class: ``"the digit {name}"`` in mini) unless ``--template`` is given.
Relative paths are taken from the project root. Prints the summary as JSON; a folder that
already holds this complete set is left as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lib import config, paths
from lib.retrieval.sets import profile_set


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lib.retrieval",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write (a generation-format "
                        "folder; relative to the project root)")
    parser.add_argument("--multiplier", type=float, required=True,
                        help="images per class as a multiple of its real train count")
    parser.add_argument("--template", default=None, help="the query of a class, with {name} "
                        "and/or {prompt_name} (default: finetune.caption_template)")
    parser.add_argument("--batch-size", type=int, default=256, help="corpus images per CLIP batch")
    parser.add_argument("--params", default=None, help="params.yaml (default: the project's)")
    args = parser.parse_args(argv)
    summary = run(args.out, args.multiplier, template=args.template,
                  batch_size=args.batch_size, params_path=args.params)
    print(json.dumps(summary, indent=1))
    return 0


def run(out: str, multiplier: float, *, template: str | None = None, batch_size: int = 256,
        params_path: str | None = None) -> dict[str, Any]:
    """The active profile's retrieved set at ``multiplier`` into ``out`` (module docstring)."""
    params = config.load_params(params_path)
    dis = config.build("disambiguate", config.stage_section(params, "disambiguate"))
    if template is None:
        fin = config.build("finetune", config.stage_section(params, "finetune"))
        template = fin.caption_template
    return profile_set(dis, template, paths.resolve(out, dis.root), multiplier,
                       batch_size=batch_size)


if __name__ == "__main__":
    sys.exit(main())
