"""Stage ``disambiguate``: an LLM proposes senses per class, CLIP picks the prompt name."""

from __future__ import annotations

from typing import Any

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lib import disambiguate as dis
from lib.backends import create_clip, create_llm
from lib.backends.llm_cache import CachedLLM, LLMCache
from lib.config import DisambiguateConfig
from lib.io import write_parquet
from lib.metrics import write_metrics


def make_llm(cfg: DisambiguateConfig) -> CachedLLM:
    """The configured chat backend behind the persistent answer cache."""
    kwargs: dict[str, Any] = {"model": cfg.resolve_model(cfg.llm_model)}
    if cfg.llm_backend == "openai":
        kwargs = {"model": cfg.llm_model, "base_url": cfg.llm_base_url}
    elif cfg.llm_backend == "recorded":
        kwargs = {"model": cfg.llm_model, "path": str(cfg.root / (cfg.llm_recorded or ""))}
    else:
        kwargs["device"] = cfg.common.device
    backend = create_llm(cfg.llm_backend, **kwargs)
    # Cache keys name the model as params.yaml does, not by this machine's absolute path.
    backend.model_id = cfg.llm_model
    return CachedLLM(backend, LLMCache(cfg.root / cfg.llm_cache))


def propose(cfg: DisambiguateConfig, classes: pd.DataFrame, llm: CachedLLM) -> pd.DataFrame:
    """Candidate texts per class: the class name, then the LLM's parsed proposals."""
    sampling = {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                "seed": cfg.common.seed}
    rows = []
    for c in tqdm(classes.itertuples(), total=len(classes), desc="LLM candidates",
                  disable=not cfg.common.progress):
        answer = llm.chat(dis.request(c.name, cfg.num_candidates), **sampling)
        parsed = [t for t in dis.parse_candidates(answer, cfg.num_candidates)
                  if t.lower() != c.name.lower()]
        rows.append((c.class_id, c.name, "class name", c.name))
        rows += [(c.class_id, c.name, "llm", t) for t in parsed]
    return pd.DataFrame(rows, columns=["class_id", "name", "source", "text"])


def real_images(cfg: DisambiguateConfig, images: pd.DataFrame) -> dict[str, list[Image.Image]]:
    train = images[images["split"] == "train"].sort_values("path")
    picked = train.groupby("class_id", sort=True).head(cfg.images_per_class)
    out: dict[str, list[Image.Image]] = {}
    for r in picked.itertuples():
        with Image.open(cfg.root / r.path) as im:
            out.setdefault(r.class_id, []).append(im.convert("RGB"))
    return out


def run(cfg: DisambiguateConfig) -> dict[str, Any]:
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    if classes.empty:
        raise ValueError("the class set is empty")
    llm = make_llm(cfg)
    candidates = propose(cfg, classes, llm)
    clip = create_clip(cfg.clip_backend, model=cfg.resolve_model(cfg.clip_model),
                       pretrained=cfg.clip_pretrained, device=cfg.common.device)
    per_class = real_images(cfg, images)
    missing = sorted(set(classes["class_id"]) - set(per_class))
    if missing:
        raise ValueError(f"no real training images for class(es): {', '.join(missing)}")
    image_emb = {c: clip.encode_images(ims).numpy() for c, ims in
                 tqdm(per_class.items(), desc="CLIP images", disable=not cfg.common.progress)}
    text_emb = clip.encode_texts(candidates["text"].tolist()).numpy()
    table = dis.pick_winners(dis.score_candidates(image_emb, candidates, text_emb,
                                                  cfg.distinct_weight))
    names = table[table["winner"]][["class_id", "text"]].rename(columns={"text": "prompt_name"})
    names = classes.merge(names, on="class_id", how="left")
    out = cfg.path("disambiguate")
    write_parquet(out / "candidates.parquet", table)
    write_parquet(out / "prompt_names.parquet", names)
    llm_counts = candidates[candidates["source"] == "llm"].groupby("class_id").size()
    metrics = {
        "num_candidates": len(candidates),
        "classes_without_llm_candidates": int(len(classes) - len(llm_counts)),
        "renamed_classes": int((names["prompt_name"] != names["name"]).sum()),
    }
    write_metrics(cfg.path("metrics"), "disambiguate", metrics)
    llm_use = {"cache_hits": llm.hits, "llm_calls": llm.misses}  # varies with the cache: not a metric
    return {"candidates": table, "prompt_names": names, "metrics": metrics, "llm": llm_use}
