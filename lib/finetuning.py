"""The fine-tuned generator of the Diversify study: its training set, its training, its samples.

"Diversify, Don't Fine-Tune" (Yu et al., arXiv 2312.02253) sets its diversified prompts
against a generator fine-tuned on the real training images with captions that name the
class. This module is that baseline, generic over models:

* :func:`finetune_set`: the real **train** split of the ``classes`` stage (never val: the
  val images, and the OOD sets made from them, judge the classifiers), one caption per image
  from a template naming its class ("the digit {name}" -> "the digit three");
* :func:`finetune_generator`: decode those images and fine-tune the base model with the
  fine-tuner the profile names (:mod:`lib.backends.finetune`), which writes a pipeline folder
  that a text-to-image backend serves;
* :func:`sample_models`: the same prompts and seeds through several models (off-the-shelf
  and fine-tuned), for :func:`lib.plots.images.model_grid_figure`;
* ``python -m lib.finetuning imagefolder DEST``: the captions as an image folder with
  ``metadata.jsonl``, the input of diffusers' ``train_text_to_image.py`` (the paper-scale
  step, README "The fine-tuned generator").
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib import data
from lib.io import atomic_path

#: The columns of the fine-tuning set (``captions.parquet``).
COLUMNS = ["image_id", "path", "class_id", "label", "caption", "sha256"]
#: The metrics of a fine-tuner that ``metrics/finetune.json`` keeps.
MEASURED = ("loss_start", "final_loss", "steps", "steps_per_s", "train_seconds",
            "off_grid_images")


def caption(template: str, name: str) -> str:
    """``template`` with ``{name}`` replaced by a class name; any other field is an error."""
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if fields != {"name"}:
        raise ValueError(f"finetune.caption_template={template!r} must name the class with "
                         f"{{name}} and nothing else (fields found: {sorted(fields)})")
    return template.format(name=name)


def class_prompts(classes: pd.DataFrame, template: str) -> list[str]:
    """One caption per class, in label order: the prompts of the comparison grid."""
    ordered = classes.sort_values("label")
    return [caption(template, n) for n in ordered["name"]]


def finetune_set(classes: pd.DataFrame, images: pd.DataFrame, template: str) -> pd.DataFrame:
    """The real train split (``images.parquet`` rows with ``split == "train"``), each image
    captioned by ``template`` with its class's name; columns :data:`COLUMNS`.

    A train image of a class that ``classes`` lacks, or no train image at all, is an error.
    """
    train = images[images["split"] == "train"]
    if train.empty:
        raise ValueError(f"the classes stage's images.parquet has no train split (splits: "
                         f"{sorted(images['split'].unique())}): rerun `python -m lib.runner "
                         "classes`")
    names = dict(zip(classes["class_id"], classes["name"]))
    unknown = sorted(set(train["class_id"]) - set(names))
    if unknown:
        raise ValueError(f"{len(unknown)} class id(s) of the train images are not in "
                         f"classes.parquet, e.g. {unknown[:5]}: rerun the classes stage")
    captions = {c: caption(template, names[c]) for c in train["class_id"].unique()}
    out = train.assign(caption=train["class_id"].map(captions))
    return out[COLUMNS].sort_values("image_id").reset_index(drop=True)


def finetune_generator(
    root: Path,
    train_set: pd.DataFrame,
    backend: str,
    base: str,
    folder: Path,
    *,
    settings: Mapping[str, Any],
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Fine-tune ``base`` with the fine-tuner ``backend`` on the images of ``train_set``
    (paths relative to ``root``) and their captions; the model goes to ``folder``.

    ``settings``: ``steps``, ``batch_size``, ``lr``, ``cond_dropout``, ``seed``,
    ``checkpoint_every`` (an interrupted run resumes). Returns ``metrics`` (the fine-tuner's),
    ``losses`` (every step's, when the fine-tuner writes ``training.json``), ``t2i_backend``
    (what serves ``folder``) and ``size`` (the images' height).
    """
    from lib.backends.finetune import create_finetuner

    tuner = create_finetuner(backend, base=base, device=device, progress=progress)
    pixels = data.load_images(train_set["path"].tolist(), root, mode=tuner.image_mode)
    metrics = tuner.finetune(pixels, train_set["caption"].tolist(), folder, **settings)
    record = folder / "training.json"
    losses = json.loads(record.read_text(encoding="utf-8"))["losses"] if record.is_file() else []
    return {"metrics": metrics, "losses": losses, "t2i_backend": tuner.t2i_backend,
            "size": int(pixels.shape[1])}


@dataclass(frozen=True)
class ModelSamples:
    """The same prompts and seeds through several models, for
    :func:`lib.plots.images.model_grid_figure`.

    ``images``: uint8 pixels 0..255, ``[prompts, models, seeds, H, W]`` (grey).
    """

    images: np.ndarray
    prompts: list[str]
    models: list[str]
    seeds: list[int]
    steps: int
    guidance: float


def sample_models(
    backend: str,
    models: Mapping[str, str],
    prompts: Sequence[str],
    *,
    n: int,
    steps: int,
    guidance: float,
    size: int,
    device: str = "cpu",
) -> ModelSamples:
    """``n`` images per prompt from each model (label -> folder or hub id) of the
    text-to-image ``backend``; the k-th image of every prompt and model starts from seed k,
    so the models differ in their weights alone."""
    from lib.backends.t2i import create_t2i

    seeds = list(range(n))
    batch = [p for p in prompts for _ in seeds]
    per_model = []
    for ref in models.values():
        t2i = create_t2i(backend, model=ref, device=device)
        images, _ = t2i.generate(batch, None, seeds * len(prompts), steps=steps,
                                 guidance_scale=guidance, height=size, width=size)
        grey = np.stack([np.asarray(im.convert("L")) for im in images])
        per_model.append(grey.reshape(len(prompts), n, *grey.shape[1:]))
    return ModelSamples(np.stack(per_model, axis=1), list(prompts), list(models), seeds,
                        steps, float(guidance))


# -- the paper-scale step: an image folder for diffusers' train_text_to_image.py ----------

def write_imagefolder(train_set: pd.DataFrame, root: Path, dest: Path) -> int:
    """Link each image of ``train_set`` into ``dest`` (as ``<image_id><suffix>``) and write
    ``dest/metadata.jsonl`` (``file_name``, ``text``): the layout of ``datasets``'
    ``imagefolder``, which ``train_text_to_image.py --train_data_dir`` reads. Symbolic links,
    so ImageNet is not copied; ``dest`` must lie outside DVC's outputs. Returns the count."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = [p for p in train_set["path"] if not (root / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} train image(s) are missing, e.g. "
                                f"{missing[0]}: is the data under {root}?")
    lines = []
    for image_id, path, text in zip(train_set["image_id"], train_set["path"],
                                    train_set["caption"]):
        name = f"{image_id}{Path(path).suffix}"
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink((root / path).resolve(), link)
        lines.append(json.dumps({"file_name": name, "text": text}))
    with atomic_path(dest / "metadata.jsonl") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    from lib import paths
    from lib.config import load

    parser = argparse.ArgumentParser(prog="python -m lib.finetuning",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    folder = sub.add_parser("imagefolder", help="the fine-tuning set as an image folder with "
                            "metadata.jsonl (diffusers' train_text_to_image.py --train_data_dir)")
    folder.add_argument("dest", type=Path, help="a folder outside outputs/ (symbolic links)")
    args = parser.parse_args(argv)
    cfg = load("finetune")
    captions = cfg.path("finetune") / "captions.parquet"
    if not captions.is_file():
        print(f"error: {captions} does not exist: run `dvc repro finetune` first",
              file=sys.stderr)
        return 2
    n = write_imagefolder(pd.read_parquet(captions), cfg.root, paths.resolve(args.dest))
    print(f"{n} images and their captions in {args.dest}/metadata.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
