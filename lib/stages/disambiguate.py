"""Stage ``disambiguate``: everything the study asks of the LLM and the captioner, and the
class names CLIP picks.

1. senses: per class the LLM proposes candidate descriptions (with the WordNet gloss and
   hypernym in the request); CLIP scores them against real training images (mode ``clip``:
   candidate texts; mode ``generate``: images generated from each candidate) and the winner
   becomes the class's prompt name (lib/disambiguate.py has the rule).
2. the texts the prompt strategies are built from: CD contexts per class and axis, SD styles
   (global), word2sen sentences per class, and captions of real training images (written
   by an image-to-text model, or, with the ``retrieval`` captioner, the caption of a
   collection that CLIP finds closest: picked, not written).

The LLM requests themselves are :func:`lib.llm.requests.study_requests`.

Every LLM call goes through the persistent cache (``llm_cache``); malformed answers are
retried ``max_retries`` times, then logged to ``failures.jsonl`` and counted in the metrics
(``failed.<task>``; ``classes_without_text.<task>``: classes left with no usable text). The
stage fails, before scoring anything, when for some LLM task the share of classes without
usable text exceeds ``max_missing_fraction`` (default 0.0: none may lack text), naming the
tasks and classes (lib/llm/coverage.py); the cache keeps every answer for the rerun.
The ``openai`` backend waits ``llm_timeout`` seconds per request and re-sends
``llm_http_retries`` times after HTTP 5xx/429, a timeout or a dropped connection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lib import disambiguate as dis
from lib import paths, provenance
from lib.backends.captioner import create_captioner
from lib.backends.clip import create_clip
from lib.backends.llm import create_llm
from lib.backends.t2i import create_t2i
from lib.config import DisambiguateConfig
from lib.io import write_parquet
from lib.llm.asking import ask
from lib.llm.cache import CachedLLM, LLMCache
from lib.llm.coverage import LLM_TASKS, check_missing, classes_without_text
from lib.llm.failures import FailureLog
from lib.llm.requests import study_requests
from lib.metrics import write_metrics
from lib.seeding import seed_for

MODES = ("clip", "generate")


def make_llm(cfg: DisambiguateConfig) -> CachedLLM:
    """The configured chat backend behind the persistent answer cache."""
    if cfg.llm_backend == "openai":
        kwargs: dict[str, Any] = {"model": cfg.llm_model, "base_url": cfg.llm_base_url,
                                  "timeout": cfg.llm_timeout, "retries": cfg.llm_http_retries}
    elif cfg.llm_backend == "recorded":
        if not cfg.llm_recorded:
            raise ValueError("disambiguate.llm_backend=recorded needs llm_recorded (a JSONL file)")
        kwargs = {"model": cfg.llm_model, "path": str(cfg.root / cfg.llm_recorded)}
    else:
        kwargs = {"model": cfg.resolve_model(cfg.llm_model), "device": cfg.common.device}
    backend = create_llm(cfg.llm_backend, **kwargs)
    # Cache keys name the model as params.yaml does, not by this machine's absolute path.
    backend.model_id = cfg.llm_model
    return CachedLLM(backend, LLMCache(cfg.root / cfg.llm_cache))


def ask_all(cfg: DisambiguateConfig, classes: pd.DataFrame, llm: CachedLLM,
            failures: FailureLog) -> pd.DataFrame:
    """All LLM answers as rows (task, class_id, axis, index, text, failed)."""
    rows = []
    reqs = list(study_requests(cfg, classes))
    for class_id, axis, r in tqdm(reqs, desc="LLM", disable=not cfg.common.progress):
        answer = ask(llm, r.task, r.fields, n=r.n, sampling=r.sampling,
                     max_retries=r.max_retries, failures=failures)
        if answer.failed:
            rows.append((r.task, class_id, axis, -1, "", True))
        rows += [(r.task, class_id, axis, i, t, False) for i, t in enumerate(answer.value)]
    return pd.DataFrame(rows, columns=["task", "class_id", "axis", "index", "text", "failed"])


def checked_answers(cfg: DisambiguateConfig, classes: pd.DataFrame, llm: CachedLLM,
                    failures: FailureLog) -> tuple[pd.DataFrame, dict[str, int]]:
    """:func:`ask_all`, then fail past ``max_missing_fraction`` (lib/llm/coverage.py).

    Returns the answers and, per LLM task, the number of classes left without usable text.
    """
    answers = ask_all(cfg, classes, llm, failures)
    missing = classes_without_text(answers, classes["class_id"].tolist())
    if failures.count():
        print(f"[disambiguate] {failures.count()} LLM answer(s) stayed malformed after "
              f"{cfg.max_retries} retries; logged in {failures.path}")
    check_missing(missing, dict(zip(classes["class_id"], classes["name"])),
                  cfg.max_missing_fraction, failures.path)
    return answers, {t: len(missing.get(t, [])) for t in LLM_TASKS}


def real_images(cfg: DisambiguateConfig, images: pd.DataFrame, n: int) -> dict[str, list[Image.Image]]:
    train = images[images["split"] == "train"].sort_values("path")
    out: dict[str, list[Image.Image]] = {}
    for r in train.groupby("class_id", sort=True).head(n).itertuples():
        with Image.open(cfg.root / r.path) as im:
            out.setdefault(r.class_id, []).append(im.convert("RGB"))
    return out


def candidate_embeddings(cfg: DisambiguateConfig, clip: Any, texts: list[str]) -> np.ndarray:
    """Text embeddings (mode clip) or mean embeddings of images generated from each text."""
    if cfg.mode == "clip":
        return clip.encode_texts(texts).numpy()
    t2i = create_t2i(cfg.gen_backend, model=cfg.resolve_model(cfg.gen_model), device=cfg.common.device)
    k = cfg.gen_images_per_candidate
    out = []
    for text in tqdm(texts, desc="generate candidates", disable=not cfg.common.progress):
        seeds = [seed_for(cfg.common.seed, "disambiguate", text, i) for i in range(k)]
        images, _ = t2i.generate([text] * k, None, seeds, steps=cfg.gen_steps,
                                 guidance_scale=cfg.gen_guidance, height=cfg.gen_size,
                                 width=cfg.gen_size)
        emb = clip.encode_images(images).numpy().mean(axis=0)
        out.append(emb / max(np.linalg.norm(emb), 1e-12))
    return np.stack(out)


def choose_names(cfg: DisambiguateConfig, classes: pd.DataFrame, answers: pd.DataFrame,
                 per_class: dict[str, list[Image.Image]], clip: Any) -> pd.DataFrame:
    senses = answers[(answers["task"] == "senses") & ~answers["failed"]]
    rows = []
    for c in classes.itertuples():
        rows.append((c.class_id, c.name, "class name", c.name))
        proposed = senses[senses["class_id"] == c.class_id]["text"]
        rows += [(c.class_id, c.name, "llm", t) for t in proposed if t.lower() != c.name.lower()]
    candidates = pd.DataFrame(rows, columns=["class_id", "name", "source", "text"])
    image_emb = {cid: clip.encode_images(ims).numpy() for cid, ims in
                 tqdm(per_class.items(), desc="CLIP real images", disable=not cfg.common.progress)}
    cand_emb = candidate_embeddings(cfg, clip, candidates["text"].tolist())
    return dis.pick_winners(dis.score_candidates(image_emb, candidates, cand_emb,
                                                 cfg.distinct_weight))


def make_captioner(cfg: DisambiguateConfig) -> Any:
    """The configured captioner; ``retrieval`` also gets its caption collection."""
    kwargs: dict[str, Any] = {"model": cfg.resolve_model(cfg.captioner_model),
                              "device": cfg.common.device}
    if cfg.captioner_backend == "retrieval":
        if not cfg.captioner_captions:
            raise ValueError("disambiguate.captioner_backend=retrieval needs "
                             "captioner_captions (the caption collection it picks from)")
        kwargs["captions"] = str(paths.resolve(cfg.captioner_captions, cfg.root))
    elif cfg.captioner_captions:
        raise ValueError(f"disambiguate.captioner_captions is read by the retrieval captioner "
                         f"only; set it to null for captioner_backend={cfg.captioner_backend}")
    return create_captioner(cfg.captioner_backend, **kwargs)


def captions(cfg: DisambiguateConfig, images: pd.DataFrame) -> pd.DataFrame:
    """Captions of real training images per class (none when no captioner is configured)."""
    cols = ["task", "class_id", "axis", "index", "text", "failed"]
    if not cfg.captioner_model or cfg.captions_per_class == 0:
        return pd.DataFrame(columns=cols)
    captioner = make_captioner(cfg)
    rows = []
    per_class = real_images(cfg, images, cfg.captions_per_class)
    for class_id, ims in tqdm(per_class.items(), desc="captions", disable=not cfg.common.progress):
        texts = captioner.caption(ims, seed=cfg.common.seed)
        kept = [t.strip() for t in texts if t.strip() and t.isprintable() and "\ufffd" not in t]
        rows += [("captions", class_id, "", i, t, False) for i, t in enumerate(kept)]
        rows += [("captions", class_id, "", -1, "", True)] * (len(texts) - len(kept))
    return pd.DataFrame(rows, columns=cols)


def run(cfg: DisambiguateConfig) -> dict[str, Any]:
    if cfg.mode not in MODES:
        raise ValueError(f"disambiguate.mode={cfg.mode!r}; valid: {', '.join(MODES)}")
    inputs = provenance.begin(cfg, "disambiguate")
    classes = pd.read_parquet(cfg.path("classes") / "classes.parquet")
    images = pd.read_parquet(cfg.path("classes") / "images.parquet")
    if classes.empty:
        raise ValueError("the class set is empty")
    out = cfg.path("disambiguate")
    failures = FailureLog(out / "failures.jsonl")
    failures.clear()
    llm = make_llm(cfg)
    answers, without_text = checked_answers(cfg, classes, llm, failures)
    per_class = real_images(cfg, images, cfg.images_per_class)
    missing = sorted(set(classes["class_id"]) - set(per_class))
    if missing:
        raise ValueError(f"no real training images for class(es): {', '.join(missing)}")
    clip = create_clip(cfg.clip_backend, model=cfg.resolve_model(cfg.clip_model),
                       pretrained=cfg.clip_pretrained, device=cfg.common.device)
    table = choose_names(cfg, classes, answers, per_class, clip)
    names = table[table["winner"]][["class_id", "text"]].rename(columns={"text": "prompt_name"})
    names = classes.merge(names, on="class_id", how="left")
    texts = pd.concat([answers[answers["task"] != "senses"], captions(cfg, images)],
                      ignore_index=True)
    write_parquet(out / "candidates.parquet", table)
    write_parquet(out / "prompt_names.parquet", names)
    write_parquet(out / "texts.parquet", texts)
    all_rows = pd.concat([answers, texts[texts["task"] == "captions"]])
    is_failed = all_rows["failed"].astype(bool)  # object dtype when there are no captions
    failed = all_rows[is_failed].groupby("task").size().to_dict()
    kept = all_rows[~is_failed].groupby("task").size().to_dict()
    metrics = {
        "num_candidates": len(table),
        "renamed_classes": int((names["prompt_name"] != names["name"]).sum()),
        "texts": {t: int(kept.get(t, 0)) for t in ("senses", "contexts", "styles", "word2sen",
                                                   "captions")},
        "failed": {t: int(failed.get(t, 0)) for t in ("senses", "contexts", "styles",
                                                      "word2sen", "captions")},
        "llm_failures_logged": failures.count(),
        "classes_without_text": without_text,
    }
    write_metrics(cfg.path("metrics"), "disambiguate", metrics)
    provenance.finish(cfg, "disambiguate", inputs)
    llm_use = {"cache_hits": llm.hits, "llm_calls": llm.misses}  # varies with the cache: not a metric
    return {"candidates": table, "prompt_names": names, "texts": texts, "metrics": metrics,
            "llm": llm_use}
