"""Where a stage's inputs came from: a provenance record in every stage's output folder.

A stage that has finished writes ``provenance.json`` into its output folder (:func:`finish`):
the stage, the profile, the settings it ran with (its validated configuration less
:data:`IGNORED`, which does not change results) and the digest of each upstream record it
read. Before it reads another stage's outputs, a stage checks that folder's record
(:func:`begin`): made by the profile this run uses, with the settings params.yaml gives that
stage now, and from the upstream records that are there now. Anything else is refused,
naming the difference and the command that rebuilds the folder, and so is a folder without
a record (never finished, interrupted, or made by an older version): :func:`begin` removes
the stage's own record before it writes anything.

``dvc repro`` keeps the folders consistent on its own; the records catch what it does not
see: stages run directly (``python -m lib.runner``, a notebook in JupyterLab, torchrun) after
``params.yaml`` changed, e.g. a ``smoke`` train reading the images a ``mini`` run generated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lib import config, paths
from lib.io import read_json, write_json

RECORD = "provenance.json"
# Settings that do not change what a stage computes.
IGNORED = ("progress", "device")
# The stages whose outputs each stage reads: the ${common.dirs.*} deps of dvc.yaml
# (tests/test_provenance.py checks). "sweep" stands for one folder per sweep source; "zoo" is
# checked only when a model of the stage's settings lives in the zoo's folder.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "zoo": (),
    "classes": (),
    "finetune": ("classes", "zoo"),
    "disambiguate": ("classes", "zoo"),
    "prompts": ("classes", "disambiguate"),
    "generate": ("prompts", "zoo"),
    "train": ("classes", "generate"),
    "sweep": ("classes", "generate"),
    "clip": ("classes", "disambiguate", "generate", "zoo"),
    "analyze": ("classes", "generate", "disambiguate", "train", "sweep", "clip"),
    # The studies' folders (synth/<setting>, study/<study>) are checked by lib.study and the
    # report stage against the records lib.study.synth and lib.study.runs write.
    "report": ("classes", "zoo"),
}


class ProvenanceError(RuntimeError):
    """Outputs of another stage that this run must not read: another profile, other
    settings, other inputs, or no record at all. The message says what to run."""


def settings(cfg: config.StageConfig) -> dict[str, Any]:
    """A configuration's settings as recorded: its flat parameters less :data:`IGNORED`."""
    return _plain({k: v for k, v in cfg.as_params().items() if k not in IGNORED})


def sweep_settings(train: config.TrainConfig, sweep: config.SweepConfig,
                   source: str) -> dict[str, Any]:
    """The settings of one sweep source's folder: the train and sweep sections, the source."""
    return {"train": settings(train), "sweep": settings(sweep), "source": source}


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read(folder: Path) -> dict[str, Any] | None:
    """The record of ``folder``, or None when it has none."""
    path = folder / RECORD
    return read_json(path) if path.is_file() else None


def begin(cfg: config.StageConfig, stage: str, out: Path | None = None) -> dict[str, str]:
    """Check the records of every folder ``stage`` reads (:data:`UPSTREAM`) against
    params.yaml and this run's profile, then remove the record of ``out`` (default: the
    stage's folder), which this run is about to rewrite. Returns the digests of the records
    read, for :func:`finish`. Raises :class:`ProvenanceError`."""
    params = config.load_params(cfg.root / "params.yaml")
    params = {**params, "common": {**params["common"], "profile": cfg.common.profile}}
    inputs = {}
    for name in _upstream(cfg, stage, params):
        inputs[name] = digest(check_folder(cfg, name, expected_settings(params, name)))
    (out or cfg.path(stage)).joinpath(RECORD).unlink(missing_ok=True)
    return inputs


def finish(cfg: config.StageConfig, stage: str, inputs: Mapping[str, str],
           out: Path | None = None, recorded: Mapping[str, Any] | None = None,
           content: Mapping[str, str] | None = None) -> Path:
    """Write the record of a finished run of ``stage`` into ``out`` (default: its folder):
    the profile, ``recorded`` settings (default: :func:`settings` of ``cfg``), the upstream
    ``inputs`` (:func:`begin`) and optional ``content`` digests of what it wrote."""
    record = {"stage": stage, "profile": cfg.common.profile,
              "settings": _plain(recorded) if recorded is not None else settings(cfg),
              "inputs": dict(sorted(inputs.items()))}
    if content:
        record["content"] = dict(content)
    return write_json((out or cfg.path(stage)) / RECORD, record)


def expected_settings(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What params.yaml (with its profile) gives the folder ``name``: a stage, or
    ``sweep/<source>``."""
    def load(section: str) -> Any:
        return config.build(section, config.stage_section(params, section))

    if name.startswith("sweep/"):
        return sweep_settings(load("train"), load("sweep"), name.split("/", 1)[1])
    return settings(load(name))


def check_folder(cfg: config.StageConfig, name: str,
                 expected: Mapping[str, Any]) -> dict[str, Any]:
    """The record of the folder ``name``, if it was made by this profile with ``expected``
    settings from the upstream records there now; else :class:`ProvenanceError`."""
    folder = folder_of(cfg, name)
    shown, redo = _shown(cfg, folder), _remedy(cfg, name)
    record = read(folder)
    if record is None:
        raise ProvenanceError(
            f"{shown} has no {RECORD}: it is not a finished run of `{name}` (never run, "
            f"interrupted, or made by an older version); {redo}")
    if record.get("profile") != cfg.common.profile:
        raise ProvenanceError(
            f"{shown} was made by profile {record.get('profile')!r} (stage "
            f"`{record.get('stage')}`); this run uses profile {cfg.common.profile!r}: {redo}")
    differ = _differences(record.get("settings", {}), _plain(expected))
    if differ:
        raise ProvenanceError(
            f"{shown} was made with other settings than params.yaml's (profile "
            f"{cfg.common.profile!r}): {'; '.join(differ)}: {redo}")
    for up, made_from in sorted(record.get("inputs", {}).items()):
        now = read(folder_of(cfg, up))
        if now is None or digest(now) != made_from:
            raise ProvenanceError(
                f"{shown} was made from other outputs of `{up}` than "
                f"{_shown(cfg, folder_of(cfg, up))} holds now: {redo}")
    return record


def folder_of(cfg: config.StageConfig, name: str) -> Path:
    """The output folder of a stage, of ``sweep/<source>``, or of a study's
    ``synth/<setting>`` and ``study/<study>`` (:mod:`lib.study`)."""
    if name.startswith("sweep/"):
        return cfg.path("sweep") / name.split("/", 1)[1]
    if name.startswith("synth/"):
        return cfg.path("study") / "synth" / name.split("/", 1)[1]
    if name.startswith("study/"):
        return cfg.path("study") / "runs" / name.split("/", 1)[1]
    return cfg.path(name)


def uses_zoo(cfg: config.StageConfig) -> bool:
    """Whether a model reference of ``cfg`` (a setting naming a path) lies in the zoo's
    folder: only then does the stage read the ``zoo`` stage's outputs."""
    zoo = cfg.path("zoo").resolve()
    for key, value in settings(cfg).items():
        if key != "dirs" and isinstance(value, str) and value:
            if paths.resolve(value, cfg.root).resolve().is_relative_to(zoo):
                return True
    return False


# -- helpers ------------------------------------------------------------------------------

def _upstream(cfg: config.StageConfig, stage: str, params: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for name in UPSTREAM[stage]:
        if name == "sweep":
            sources = config.build("sweep", config.stage_section(params, "sweep")).sources
            names += [f"sweep/{s}" for s in sources]
        elif name != "zoo" or uses_zoo(cfg):
            names.append(name)
    return names


def _plain(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples as lists), for comparisons with a read record."""
    return json.loads(json.dumps(obj, allow_nan=False))


def _differences(made: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "",
                 limit: int = 5) -> list[str]:
    """Up to ``limit`` settings that differ, as 'key: X there, Y in params.yaml'."""
    out = []
    for key in sorted(set(made) | set(now)):
        a, b = made.get(key, "(unset)"), now.get(key, "(unset)")
        if isinstance(a, Mapping) and isinstance(b, Mapping) and key != "dirs":
            out += _differences(a, b, f"{prefix}{key}.", limit)
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} there, {_short(b)} in params.yaml")
    return out[:limit]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown(cfg: config.StageConfig, folder: Path) -> str:
    """``folder`` relative to the project root where it lies under it."""
    try:
        return folder.resolve().relative_to(cfg.root.resolve()).as_posix()
    except ValueError:
        return str(folder)


def _remedy(cfg: config.StageConfig, name: str) -> str:
    if name.startswith("sweep/"):
        source = name.split("/", 1)[1]
        command = (f"python -m lib.sweep --source {source} --out "
                   f"{cfg.common.dirs.sweep}/{source}")
    elif name.startswith("synth/"):
        command = f"python -m lib.study.synth --setting {name.split('/', 1)[1]}"
    elif name.startswith("study/"):
        command = f"python -m lib.study --study {name.split('/', 1)[1]}"
    else:
        command = f"python -m lib.runner {name}"
    return f"run `dvc repro` (or `{command}`) first"

