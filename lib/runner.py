"""The one entry point of every DVC stage: run a stage's notebook through papermill.

    python -m lib.runner train

1. builds the stage's validated config from params.yaml (unknown/missing/mistyped keys and
   values outside a choice fail here, before a kernel starts) and checks the profile's
   consistency (:func:`lib.plan.check`: the stages ask each other only for what they produce),
2. checks that the notebook's parameters cell names exactly those keys,
3. executes the output-stripped copy (reports/source/<stage>.ipynb, made by the `strip`
   stages; notebooks/<stage>.ipynb when run by hand) with those values, from the project
   root, and
4. writes the executed notebook to reports/notebooks/<stage>.ipynb by an atomic rename; a
   failed run is kept as reports/notebooks/<stage>.failed.ipynb for inspection.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from lib import config, notebooks, paths, plan
from lib.processes import RUNNER_ENV

SOURCE_DIR = Path("reports/source")
EXECUTED_DIR = Path("reports/notebooks")


def notebook_source(root: Path, stage: str) -> Path:
    stripped = root / SOURCE_DIR / f"{stage}.ipynb"
    return stripped if stripped.exists() else root / "notebooks" / f"{stage}.ipynb"


def run_stage(stage: str, root: str | os.PathLike | None = None) -> Path:
    """Execute ``stage``'s notebook with its params; return the executed notebook's path."""
    import papermill  # imported here: `--help` and config errors should not pay for it

    root = Path(root).resolve() if root else paths.project_root()
    os.environ[paths.ROOT_ENV] = str(root)  # the kernel inherits it: paths resolve to this root
    os.environ[RUNNER_ENV] = str(os.getpid())  # the kernel dies with this process (lib.stages)
    params = config.load_params(root / "params.yaml")
    plan.check(params)
    cfg = config.build(stage, config.stage_section(params, stage))
    source = notebook_source(root, stage)
    notebooks.check_parameters(notebooks.read(source), config.stage_keys(stage), source)

    out = root / EXECUTED_DIR / f"{stage}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    running = out.with_name(f"{stage}.running.ipynb")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(running),
            parameters=cfg.as_params(),
            cwd=str(root),
            log_output=True,
            progress_bar=False,
        )
    except BaseException:
        if running.exists():
            os.replace(running, out.with_name(f"{stage}.failed.ipynb"))
        raise
    os.replace(running, out)
    print(f"[{stage}] done in {time.perf_counter() - start:.1f} s -> {out.relative_to(root)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.runner", description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=config.STAGES)
    args = parser.parse_args(argv)
    try:
        run_stage(args.stage)
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
