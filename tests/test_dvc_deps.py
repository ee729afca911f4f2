"""DVC knows exactly what each stage runs: a stage's `lib` dependencies in dvc.yaml are the
Python files its command imports, directly or not (its import closure inside `lib`, with the
packages whose ``__init__`` runs on the way), no more and no fewer. An edit to any of them
re-runs the stage; an edit elsewhere re-runs nothing.

A notebook stage runs ``python -m lib.runner STAGE``, which executes the notebook: its closure
starts from the runner and every `lib` module the notebook imports. A CLI stage starts from
the module its command runs (``python -m lib.sweep``).
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
STAGES = [name for name in DVC if name != "strip"]


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("lib", exclude_type_checking_imports=True)


def notebook_imports(stage: str) -> set[str]:
    """The `lib` modules a stage's notebook imports."""
    nb = json.loads((ROOT / "notebooks" / f"{stage}.ipynb").read_text(encoding="utf-8"))
    found = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lib":
                for a in node.names:  # `from lib import plots` imports the module lib.plots
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in graph().modules else node.module)
    return found


def entry_modules(stage: str) -> set[str]:
    cmd = DVC[stage]["cmd"]
    assert isinstance(cmd, str), f"{stage}: one command expected"
    module = re.match(r"python -m (lib(?:\.\w+)*)", cmd)
    assert module, f"{stage}: cannot tell which module `{cmd}` runs"
    if module.group(1) == "lib.runner":
        return {"lib.runner", *notebook_imports(stage)}
    if (ROOT / Path(*module.group(1).split(".")) / "__main__.py").is_file():
        return {f"{module.group(1)}.__main__"}  # `python -m package` runs its __main__
    return {module.group(1)}


def module_file(module: str) -> str:
    path = ROOT / Path(*module.split("."))
    return str((path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
               .relative_to(ROOT))


def closure(stage: str) -> set[str]:
    """The `lib` files that run when the stage's command runs."""
    modules = set(entry_modules(stage))
    for m in list(modules):
        modules |= graph().find_upstream_modules(m)
    for m in list(modules):  # importing lib.a.b runs lib/__init__.py and lib/a/__init__.py
        parts = m.split(".")
        modules |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return {module_file(m) for m in modules}


def declared(stage: str) -> set[str]:
    """The Python files under lib/ that the stage's dvc.yaml deps name (folders expanded)."""
    files = set()
    for dep in DVC[stage].get("deps", []):
        if not dep.startswith("lib/"):
            continue
        path = ROOT / dep
        if path.is_dir():
            files |= {str(p.relative_to(ROOT)) for p in path.rglob("*.py")}
        elif path.suffix == ".py":
            files.add(dep)
        else:
            assert path.exists(), f"{stage}: dependency {dep} does not exist"
    return files


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_depends_on_exactly_the_code_it_runs(stage: str) -> None:
    runs, deps = closure(stage), declared(stage)
    assert sorted(runs - deps) == [], f"{stage} runs these files but dvc.yaml does not list them"
    assert sorted(deps - runs) == [], f"{stage} lists these files but never imports them"


def test_dependencies_name_files_that_exist() -> None:
    for stage in STAGES:
        for dep in DVC[stage].get("deps", []):
            if dep.startswith("lib/"):
                assert (ROOT / dep).exists(), f"{stage}: {dep} does not exist"
