"""The disambiguate stage's scoring modes and the ImageNet-1k uniqueness guarantee."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import classsets, config
from lib.backends.clip import create_clip
from lib.disambiguate import pick_winners, score_candidates
from lib.stages.disambiguate import candidate_embeddings

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**changes) -> config.DisambiguateConfig:
    values = config.stage_section(config.load_params(ROOT / "params.yaml"), "disambiguate")
    values.update(progress=False, **changes)
    return config.build("disambiguate", values)


def test_clip_mode_embeds_texts(tiny_zoo) -> None:
    clip = create_clip("open_clip", model=tiny_zoo["clip"])
    emb = candidate_embeddings(_cfg(mode="clip"), clip, ["the digit 1", "the letter l"])
    assert np.allclose(emb, clip.encode_texts(["the digit 1", "the letter l"]).numpy())


def test_generate_mode_embeds_images_made_from_each_candidate(tiny_zoo) -> None:
    cfg = _cfg(mode="generate", gen_backend="diffusers", gen_model=tiny_zoo["t2i"], gen_size=32,
               gen_steps=2, gen_images_per_candidate=2)
    clip = create_clip("open_clip", model=tiny_zoo["clip"])
    emb = candidate_embeddings(cfg, clip, ["the digit 1", "the letter l", "the digit 1"])
    assert emb.shape == (3, clip.embed_dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb[0], emb[2])  # same text, same per-image seeds, same images
    assert not np.allclose(emb[0], emb[1])
    text = clip.encode_texts(["the digit 1"]).numpy()[0]
    assert not np.allclose(emb[0], text)  # image embeddings, not the text's


def test_imagenet1k_ends_with_distinct_prompt_names() -> None:
    """Raw WordNet names collide ("crane" twice) and so do CLIP's ("missile"); the winners
    never do, whatever the scores."""
    table = classsets.load("imagenet1k")
    assert table["name"].str.lower().duplicated().any()
    rows = [(r.wnid, r.name, "class name", r.name) for r in table.itertuples()]
    rows += [(r.wnid, r.name, "llm", r.clip_name) for r in table.itertuples()]
    candidates = pd.DataFrame(rows, columns=["class_id", "name", "source", "text"])
    gen = torch.Generator().manual_seed(0)
    unit = lambda x: (x / x.norm(dim=1, keepdim=True)).numpy()  # noqa: E731
    image_emb = {w: unit(torch.randn(2, 16, generator=gen)) for w in table["wnid"]}
    cand_emb = unit(torch.randn(len(candidates), 16, generator=gen))
    winners = pick_winners(score_candidates(image_emb, candidates, cand_emb, 0.5))
    names = winners[winners["winner"]]
    assert len(names) == 1000 and names["class_id"].is_unique
    assert not names["text"].str.strip().str.lower().duplicated().any()
