"""Notebook utilities: the parameters cell contract and output stripping.

Stages depend on output-stripped copies of the notebooks, so opening, running and saving a
notebook in JupyterLab changes the stage's dependency only when its code changes.

    python -m lib.notebooks strip notebooks/train.ipynb reports/source/train.ipynb
    python -m lib.notebooks strip --check notebooks/*.ipynb   # fail if any has outputs
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

from lib.io import write_text

# Notebook-level metadata kept by `strip`; the rest (widgets, language_info versions, ...)
# changes on every save in JupyterLab and would invalidate stages for nothing.
_KEEP_METADATA = ("kernelspec",)


def read(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        nb = json.load(fh)
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"{path} is not a Jupyter notebook (no 'cells')")
    return nb


def strip(nb: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``nb`` without outputs, execution counts or volatile metadata."""
    cells = []
    for cell in nb["cells"]:
        out = {
            "cell_type": cell["cell_type"],
            "metadata": {k: v for k, v in cell.get("metadata", {}).items() if k == "tags"},
            "source": "".join(cell.get("source", "")),
        }
        if "id" in cell:
            out["id"] = cell["id"]
        if cell["cell_type"] == "code":
            out["execution_count"] = None
            out["outputs"] = []
        cells.append(out)
    metadata = {k: nb.get("metadata", {})[k] for k in _KEEP_METADATA if k in nb.get("metadata", {})}
    return {
        "cells": cells,
        "metadata": metadata,
        "nbformat": nb.get("nbformat", 4),
        "nbformat_minor": nb.get("nbformat_minor", 5),
    }


def dumps(nb: dict[str, Any]) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def has_outputs(nb: dict[str, Any]) -> bool:
    return any(
        c.get("outputs") or c.get("execution_count")
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )


def parameters_cell(nb: dict[str, Any], path: str | Path = "notebook") -> str:
    """The source of the one cell tagged ``parameters``."""
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return "".join(cells[0]["source"])


def parameter_values(nb: dict[str, Any], path: str | Path = "notebook") -> dict[str, Any]:
    """Names and literal values assigned in the parameters cell, in order."""
    tree = ast.parse(parameters_cell(nb, path))
    values: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            raise ValueError(f"{path}: the parameters cell may only hold `name = literal` lines")
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            raise ValueError(f"{path}: the parameters cell may only assign plain names")
        try:
            values[target.id] = ast.literal_eval(node.value)
        except ValueError as err:
            raise ValueError(f"{path}: parameter {target.id} is not a literal") from err
    return values


def check_parameters(nb: dict[str, Any], expected: list[str], path: str | Path) -> None:
    """Fail unless the parameters cell names exactly ``expected``."""
    names = list(parameter_values(nb, path))
    missing = [k for k in expected if k not in names]
    extra = [k for k in names if k not in expected]
    if missing or extra:
        raise ValueError(
            f"{path}: parameters cell does not match params.yaml; "
            f"missing: {', '.join(missing) or '-'}; not in params.yaml: {', '.join(extra) or '-'}"
        )


def render_parameters(values: dict[str, Any]) -> str:
    """The source of a parameters cell holding ``values`` (one ``name = literal`` per line)."""
    head = "# Parameters: papermill overrides these from params.yaml (python -m lib.runner).\n"
    head += "# The defaults are the default profile's values: `python -m lib.notebooks sync`.\n"
    return head + "".join(f"{k} = {v!r}\n" for k, v in values.items())


def sync_parameters(root: Path | None = None) -> list[Path]:
    """Rewrite every stage notebook's parameters cell from params.yaml; return those changed."""
    from lib import config, paths

    root = root or paths.project_root()
    changed = []
    for stage in config.STAGES:
        path = root / "notebooks" / f"{stage}.ipynb"
        nb = read(path)
        values = config.load(stage, root / "params.yaml").as_params()
        for cell in nb["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                new = render_parameters(values)
                if "".join(cell["source"]) != new:
                    cell["source"] = new
                    changed.append(path)
        write_text(path, dumps(strip(nb)))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.notebooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("strip", help="write an output-stripped copy, or check notebooks")
    s.add_argument("paths", nargs="+")
    s.add_argument("--check", action="store_true", help="fail if any notebook has outputs")
    sub.add_parser("sync", help="rewrite the parameters cells from params.yaml")
    args = parser.parse_args(argv)
    if args.cmd == "sync":
        for p in sync_parameters():
            print(f"updated {p}")
        return 0
    if args.check:
        dirty = [p for p in args.paths if has_outputs(read(p))]
        for p in dirty:
            print(f"notebook has outputs: {p}", file=sys.stderr)
        return 1 if dirty else 0
    if len(args.paths) != 2:
        parser.error("strip takes SOURCE DEST (or --check PATHS...)")
    src, dest = args.paths
    write_text(dest, dumps(strip(read(src))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
