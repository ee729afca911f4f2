"""Prompt strategies: pure functions from a class's prompt name (and an item id) to a prompt.

Each strategy takes ``(name, item_seed)`` and returns ``(prompt, parts)``, where ``parts``
records what the prompt was built from. The item seed is derived from the item id, so a
prompt never depends on the order in which the manifest is built.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from lib.seeding import seed_for

Strategy = Callable[[str, int], tuple[str, str]]


def classname(name: str, item_seed: int) -> tuple[str, str]:
    """The scaling paper's simplest strategy: the class name alone."""
    return name, ""


def templates(name: str, item_seed: int) -> tuple[str, str]:
    """One of CLIP's 80 ImageNet templates ("a bad photo of a {}." ...), chosen per item."""
    index = item_seed % len(OPENAI_IMAGENET_TEMPLATES)
    return OPENAI_IMAGENET_TEMPLATES[index](name), f"template:{index}"


STRATEGIES: dict[str, Strategy] = {"classname": classname, "templates": templates}


def item_id(class_id: str, strategy: str, k: int) -> str:
    return f"{class_id}-{strategy}-{k:06d}"


def targets_per_class(train_counts: pd.Series, multiplier: float) -> pd.Series:
    """Synthetic images per class: ``multiplier`` x the class's real train count (1x = as many).

    Rounded half to even (2.5 -> 2, 3.5 -> 4), deterministically.
    """
    if multiplier < 0:
        raise ValueError(f"synthetic_multiplier must be >= 0, got {multiplier}")
    return (train_counts * multiplier).round().astype(int)


def build_manifest(
    classes: pd.DataFrame,
    targets: pd.Series,
    strategies: list[str],
    *,
    seed: int,
    negative_prompt: str = "",
) -> pd.DataFrame:
    """The prompt manifest: per class ``targets[class_id]`` rows, strategies round-robin.

    ``classes`` has class_id, label, name and prompt_name. Columns: id, class_id, label,
    class_name, prompt_name, strategy, prompt, negative_prompt, parts.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(
            f"unknown prompt strategies {unknown or strategies}; valid: {', '.join(STRATEGIES)}"
        )
    missing = sorted(set(classes["class_id"]) - set(targets.index))
    if missing:
        raise ValueError(
            f"no target count for class id(s) {', '.join(map(str, missing))} "
            "(a class with no real training images has none)"
        )
    rows = []
    for c in classes.itertuples(index=False):
        n = int(targets[c.class_id])
        for k in range(n):
            strategy = strategies[k % len(strategies)]
            iid = item_id(c.class_id, strategy, k)
            prompt, parts = STRATEGIES[strategy](c.prompt_name, seed_for(seed, "prompt", iid))
            rows.append((iid, c.class_id, c.label, c.name, c.prompt_name, strategy, prompt,
                         negative_prompt, parts))
    cols = ["id", "class_id", "label", "class_name", "prompt_name", "strategy", "prompt",
            "negative_prompt", "parts"]
    return pd.DataFrame(rows, columns=cols)
