"""Prompt strategies of both papers: pure functions from a class's texts to one prompt.

Every strategy takes the class's :class:`ClassTexts` (its prompt name and what the LLM, the
captioner and WordNet gave for it) and a NumPy generator seeded from the item id, and
returns ``(prompt, parts)``: the prompt and a JSON record of what it was built from. The
manifest therefore never depends on the order in which it is built.

Strategies (S = "Scaling Laws of Synthetic Images", D = "Diversify, Don't Fine-Tune"):

- ``classname`` (S): the class name alone.
- ``description`` (S): ``"{name}, {gloss}"`` with the WordNet gloss.
- ``hypernym`` (S): ``"{name}, a type of {hypernym}"`` with the nearest WordNet hypernym.
- ``templates`` (S): one of CLIP's 80 ImageNet templates (``"a bad photo of a {name}."``).
- ``word2sen`` (S): an LLM-written sentence describing a scene with the class.
- ``captions`` (S): ``"{name}, {caption}"`` with a caption of a real training image.
- ``cd`` (D, contextualized diversification): ``"a photo of {name}, {c1}, {c2}"`` with LLM
  contexts from ``CD_AXES_PER_PROMPT`` different axes (foreground, background, lighting, ...).
- ``sd`` (D, stylized diversification): ``"{style} of {name}"`` with an LLM-written style.
- ``cdsd`` (D): per item, ``sd`` with probability ``sd_ratio``, else ``cd``.

The exact prompt forms are this project's choice where the papers leave them open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from lib.seeding import numpy_rng

CD_AXES_PER_PROMPT = 2


@dataclass(frozen=True)
class ClassTexts:
    """What a class's prompts are built from."""

    class_id: str
    name: str
    gloss: str = ""
    hypernym: str = ""
    sentences: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    contexts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    styles: tuple[str, ...] = ()


class MissingInput(ValueError):
    """A strategy lacks what it is built from for a class (e.g. no gloss)."""


Strategy = Callable[[ClassTexts, np.random.Generator, float], tuple[str, dict]]


def _need(values, what: str, texts: ClassTexts):
    if not values:
        raise MissingInput(f"class {texts.class_id!r} ({texts.name}) has no {what}")
    return values


def _pick(rng: np.random.Generator, values):
    index = int(rng.integers(len(values)))
    return index, values[index]


def classname(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    return t.name, {}


def description(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    return f"{t.name}, {_need(t.gloss, 'gloss', t)}", {"gloss": t.gloss}


def hypernym(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    return f"{t.name}, a type of {_need(t.hypernym, 'hypernym', t)}", {"hypernym": t.hypernym}


def templates(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    index = int(rng.integers(len(OPENAI_IMAGENET_TEMPLATES)))
    return OPENAI_IMAGENET_TEMPLATES[index](t.name), {"template": index}


def word2sen(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    index, sentence = _pick(rng, _need(t.sentences, "LLM sentences (word2sen)", t))
    return sentence, {"sentence": index}


def captions(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    index, caption = _pick(rng, _need(t.captions, "captions", t))
    return f"{t.name}, {caption}", {"caption": index}


def cd(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    axes = sorted(a for a, phrases in t.contexts.items() if phrases)
    _need(axes, "LLM contexts (cd)", t)
    chosen = sorted(rng.choice(len(axes), size=min(CD_AXES_PER_PROMPT, len(axes)), replace=False))
    parts, phrases = {}, []
    for i in chosen:
        index, phrase = _pick(rng, t.contexts[axes[i]])
        parts[axes[i]] = index
        phrases.append(phrase)
    return f"a photo of {t.name}, {', '.join(phrases)}", {"contexts": parts}


def sd(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    index, style = _pick(rng, _need(t.styles, "LLM styles (sd)", t))
    return f"{style} of {t.name}", {"style": index}


def cdsd(t: ClassTexts, rng: np.random.Generator, sd_ratio: float) -> tuple[str, dict]:
    if rng.random() < sd_ratio:
        prompt, parts = sd(t, rng, sd_ratio)
        return prompt, {"mode": "sd", **parts}
    prompt, parts = cd(t, rng, sd_ratio)
    return prompt, {"mode": "cd", **parts}


STRATEGIES: dict[str, Strategy] = {
    "classname": classname,
    "description": description,
    "hypernym": hypernym,
    "templates": templates,
    "word2sen": word2sen,
    "captions": captions,
    "cd": cd,
    "sd": sd,
    "cdsd": cdsd,
}
COLUMNS = ["id", "class_id", "label", "class_name", "prompt_name", "strategy", "prompt",
           "negative_prompt", "parts"]


def item_id(class_id: str, strategy: str, k: int) -> str:
    return f"{class_id}-{strategy}-{k:06d}"


def train_counts(images: pd.DataFrame) -> pd.Series:
    """Real train images per class id, from the classes stage's ``images.parquet`` table."""
    return images[images["split"] == "train"].groupby("class_id").size()


def targets_per_class(train_counts: pd.Series, multiplier: float) -> pd.Series:
    """Synthetic images per class: ``multiplier`` x the class's real train count (1x = as many).

    Rounded half to even (2.5 -> 2, 3.5 -> 4), deterministically.
    """
    if multiplier < 0:
        raise ValueError(f"synthetic_multiplier must be >= 0, got {multiplier}")
    return (train_counts * multiplier).round().astype(int)


def check_strategies(strategies) -> None:
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(
            f"unknown prompt strategies {unknown or list(strategies)}; valid: {', '.join(STRATEGIES)}"
        )


def build_prompt_manifest(
    classes: pd.DataFrame,
    targets: pd.Series,
    strategies,
    *,
    seed: int,
    negative_prompt: str = "",
    texts: Mapping[str, ClassTexts] | None = None,
    sd_ratio: float = 0.5,
) -> pd.DataFrame:
    """The prompt manifest: per class ``targets[class_id]`` rows, strategies in turn.

    ``classes`` has class_id, label, name and prompt_name; ``texts`` maps class_id to its
    :class:`ClassTexts` (default: the prompt name alone, enough for classname/templates).
    A strategy that lacks its inputs for some class fails, naming the classes.
    """
    check_strategies(strategies)
    if not 0.0 <= sd_ratio <= 1.0:
        raise ValueError(f"sd_ratio must be in [0, 1], got {sd_ratio}")
    missing = sorted(set(classes["class_id"]) - set(targets.index))
    if missing:
        raise ValueError(
            f"no target count for class id(s) {', '.join(map(str, missing))} "
            "(a class with no real training images has none)"
        )
    rows, lacking = [], {}
    for c in classes.itertuples(index=False):
        t = (texts or {}).get(c.class_id) or ClassTexts(c.class_id, c.prompt_name)
        for k in range(int(targets[c.class_id])):
            strategy = strategies[k % len(strategies)]
            iid = item_id(c.class_id, strategy, k)
            try:
                prompt, parts = STRATEGIES[strategy](t, numpy_rng(seed, "prompt", iid), sd_ratio)
            except MissingInput as err:
                lacking.setdefault(strategy, []).append(str(err))
                continue
            rows.append((iid, c.class_id, c.label, c.name, c.prompt_name, strategy, prompt,
                         negative_prompt, json.dumps(parts, sort_keys=True)))
    if lacking:
        detail = "; ".join(f"{s}: {sorted(set(v))[0]} (+{len(set(v)) - 1} more)" for s, v in lacking.items())
        raise ValueError(f"prompt strategies lack their inputs: {detail}")
    return pd.DataFrame(rows, columns=COLUMNS)


def class_texts(names: pd.DataFrame, texts: pd.DataFrame) -> dict[str, ClassTexts]:
    """Each class's :class:`~lib.ClassTexts` from the disambiguate stage's outputs."""
    ok = texts[~texts["failed"]].sort_values(["task", "class_id", "axis", "index"])
    styles = tuple(ok[ok["task"] == "styles"]["text"])
    out = {}
    for c in names.itertuples():
        mine = ok[ok["class_id"] == c.class_id]
        ctx = mine[mine["task"] == "contexts"]
        out[c.class_id] = ClassTexts(
            class_id=c.class_id,
            name=c.prompt_name,
            gloss=c.gloss,
            hypernym=c.hypernyms.split(";")[0] if c.hypernyms else "",
            sentences=tuple(mine[mine["task"] == "word2sen"]["text"]),
            captions=tuple(mine[mine["task"] == "captions"]["text"]),
            contexts={a: tuple(g["text"]) for a, g in ctx.groupby("axis", sort=True)},
            styles=styles,
        )
    return out
