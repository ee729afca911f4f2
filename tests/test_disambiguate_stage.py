"""The disambiguate stage's scoring modes, the ImageNet-1k uniqueness guarantee, and what the
stage does with LLM answers that fail (recorded and served by a real local HTTP server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from llm_server import Reply, serve, url

from lib import classsets, config, paths
from lib.backends.clip import create_clip
from lib.data import materialize_digits
from lib.disambiguate import pick_winners, score_candidates
from lib.llm.cache import LLMCache
from lib.llm.coverage import MissingTexts
from lib.llm.failures import FailureLog
from lib.stages import classes as classes_stage
from lib.stages import disambiguate as stage
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


# ---------------------------------------------------------------- failed LLM answers
RECORDED = ROOT / "lib/resources/recorded/digits.jsonl"
LLM_REQUESTS = 10 * (1 + 4 + 1) + 1  # per digit: senses, 4 CD axes, word2sen; the styles


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    """A project root holding the bundled digits and the mini profile's classes outputs."""
    root = tmp_path_factory.mktemp("root")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")  # the stages check provenance
    materialize_digits(root / "data" / "digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.ROOT_ENV, str(root))
        classes_stage.run(_mini("classes"))
    return root


def _mini(stage_name: str, **changes) -> config.StageConfig:
    params = config.load_params(ROOT / "params.yaml")
    params["common"]["profile"] = "mini"
    values = config.stage_section(params, stage_name)
    values.update(progress=False, **changes)
    return config.build(stage_name, values)


def _tiny_models(tiny_zoo: dict[str, str]) -> dict[str, str]:
    """The mini profile's zoo models replaced by the test zoo's tiny ones (and the retrieval
    captioner's corpus by a few captions), so that no test needs the mini zoo."""
    captions = Path(tiny_zoo["clip"]).parent / "captions.txt"
    captions.write_text("".join(f"the digit {d}\n" for d in range(10)))
    return {"clip_model": tiny_zoo["clip"], "gen_model": tiny_zoo["t2i"],
            "captioner_model": tiny_zoo["clip"], "captioner_captions": str(captions)}


@pytest.fixture
def at_root(digits_root, monkeypatch, tmp_path) -> Path:
    """Run in ``digits_root`` with a fresh cache and output folder for each test."""
    monkeypatch.setenv(paths.ROOT_ENV, str(digits_root))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "*")
    shutil.rmtree(digits_root / "outputs" / "disambiguate", ignore_errors=True)
    shutil.rmtree(digits_root / "cache", ignore_errors=True)
    return digits_root


def _blank(tmp_path: Path, *prompts: str) -> Path:
    """The mini profile's recorded answers with the response to each of ``prompts`` blank."""
    lines = []
    for line in RECORDED.read_text().splitlines():
        record = json.loads(line)
        if any(record["messages"][-1]["content"].startswith(p) for p in prompts):
            record["response"] = ""
        lines.append(json.dumps(record, sort_keys=True))
    out = tmp_path / "digits.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def _failures(root: Path) -> list[dict]:
    log = root / "outputs" / "disambiguate" / "failures.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_malformed_recorded_answer_is_retried_logged_and_counted(at_root, tmp_path, tiny_zoo):
    """Issue 12 case 3: a blank recorded answer (cache deleted) ended in KeyError "no recorded
    response ... seed ..." from the retry, with nothing in failures.jsonl."""
    recorded = _blank(tmp_path, "Subject: a photo of a three\nAspect: the lighting")
    cfg = _mini("disambiguate", llm_recorded=str(recorded), **_tiny_models(tiny_zoo))
    result = stage.run(cfg)
    metrics = result["metrics"]
    assert metrics["failed"]["contexts"] == 1 and metrics["llm_failures_logged"] == 1
    assert metrics["texts"]["contexts"] == 160 - 4  # the other 39 (class, axis) answers
    # Three keeps three of its four CD axes: no class is without usable text.
    assert metrics["classes_without_text"] == {"senses": 0, "contexts": 0, "word2sen": 0,
                                               "styles": 0}
    [entry] = _failures(at_root)
    assert entry["task"] == "contexts" and entry["fields"] == {"name": "three", "axis": "lighting"}
    assert entry["source"] == "recorded" and entry["raw"] == [""] and entry["attempts"] == 3
    assert entry["reason"].startswith("attempt 1: empty answer, need at least")
    assert f"no recorded answer for retry seed {entry['sampling']['seed'] + 1}" in entry["reason"]
    flat = json.loads((at_root / "metrics" / "disambiguate.json").read_text())
    assert flat["failed.contexts"] == 1 and flat["classes_without_text.contexts"] == 0


def test_class_without_usable_text_fails_the_stage_past_the_threshold(at_root, tmp_path,
                                                                      tiny_zoo):
    """Issue 12 case 4 (recorded): three's only word2sen answer is blank."""
    recorded = _blank(tmp_path, "Write 4 different natural sentences, each describing a scene "
                                "in a photo that contains a three.")
    cfg = _mini("disambiguate", llm_recorded=str(recorded), **_tiny_models(tiny_zoo))
    with pytest.raises(MissingTexts, match=r"word2sen: 1 of 10 classes \(10%\): 3 \(three\)") as err:
        stage.run(cfg)
    assert "max_missing_fraction=0.0" in str(err.value)
    assert str(at_root / "outputs" / "disambiguate" / "failures.jsonl") in str(err.value)
    assert [e["task"] for e in _failures(at_root)] == ["word2sen"]
    # One class in ten is within a threshold of 0.1 (the rule: fail when the share exceeds it).
    cfg = _mini("disambiguate", llm_recorded=str(recorded), max_missing_fraction=0.1)
    failures = FailureLog(tmp_path / "failures.jsonl")
    table = pd.read_parquet(at_root / "outputs" / "classes" / "classes.parquet")
    answers, without = stage.checked_answers(cfg, table, stage.make_llm(cfg), failures)
    assert without == {"senses": 0, "contexts": 0, "word2sen": 1, "styles": 0}
    assert failures.count() == 1 and answers["failed"].sum() == 1
    with pytest.raises(ValueError, match="max_missing_fraction must be in"):
        stage.checked_answers(_mini("disambiguate", max_missing_fraction=1.5), table,
                              stage.make_llm(cfg), failures)


def test_every_answer_blank_from_the_server_fails_the_stage_naming_tasks_and_classes(at_root,
                                                                                     tiny_zoo):
    """Issue 12 case 4: a server whose every answer is blank. The stage used to exit 0 (the
    failures logged and counted) and `prompts` failed one stage later."""
    with serve(lambda request: Reply(content="")) as httpd:
        cfg = _mini("disambiguate", llm_backend="openai", llm_base_url=url(httpd),
                    llm_recorded=None, **_tiny_models(tiny_zoo))
        with pytest.raises(MissingTexts) as err:
            stage.run(cfg)
        message = str(err.value)
        for task in ("contexts", "word2sen", "styles"):
            assert f"{task}: 10 of 10 classes (100%): 0 (zero), 1 (one)" in message
        assert "senses:" not in message  # reported in the metrics; the class name remains
        assert "failures.jsonl" in message
        assert len(_failures(at_root)) == LLM_REQUESTS
        # Nothing is lost: every attempt is cached, and the rerun asks the server nothing.
        asked = len(httpd.requests)
        assert asked == LLM_REQUESTS * (1 + cfg.max_retries)
        assert len(list(LLMCache(at_root / cfg.llm_cache).items())) == asked
        with pytest.raises(MissingTexts):
            stage.run(cfg)
        assert len(httpd.requests) == asked
    assert not (at_root / "outputs" / "disambiguate" / "prompt_names.parquet").exists()


def test_http_timeout_and_retries_reach_the_backend(at_root):
    cfg = _mini("disambiguate", llm_backend="openai", llm_base_url="http://127.0.0.1:9/v1",
                llm_recorded=None, llm_timeout=7.5, llm_http_retries=1)
    backend = stage.make_llm(cfg).backend
    assert (backend.timeout, backend.retries) == (7.5, 1)


def test_classes_without_senses_are_reported_but_keep_their_own_name(tmp_path):
    from lib.llm.coverage import check_missing

    names = {"0": "zero", "1": "one"}
    check_missing({"senses": ["0", "1"], "contexts": []}, names, 0.0, tmp_path / "f.jsonl")
    with pytest.raises(MissingTexts, match="contexts: 1 of 2 classes"):
        check_missing({"senses": ["0", "1"], "contexts": ["1"]}, names, 0.0, tmp_path / "f.jsonl")


# ---------------------------------------------------------------- captions of real images
def test_the_mini_profile_captions_real_images_by_retrieval(at_root, tiny_zoo):
    """The mini profile's captioner settings (retrieval, 8 real images per class), with the
    tiny CLIP and a ten-caption collection in place of the mini CLIP and corpus."""
    from lib.backends.captioner import create_captioner

    models = _tiny_models(tiny_zoo)
    cfg = _mini("disambiguate", llm_recorded=str(RECORDED), **models)
    assert (cfg.captioner_backend, cfg.captions_per_class) == ("retrieval", 8)
    result = stage.run(cfg)
    assert result["metrics"]["texts"]["captions"] == 80
    assert result["metrics"]["failed"]["captions"] == 0
    texts = result["texts"]
    captions = texts[texts["task"] == "captions"]
    assert captions.groupby("class_id").size().to_dict() == {str(d): 8 for d in range(10)}
    assert captions["index"].tolist() == list(range(8)) * 10
    # Each is what the retrieval captioner says of the class's first 8 images (path order).
    images = pd.read_parquet(at_root / "outputs" / "classes" / "images.parquet")
    per_class = stage.real_images(cfg, images, 8)
    captioner = create_captioner("retrieval", model=models["captioner_model"],
                                 captions=models["captioner_captions"])
    for class_id, ims in per_class.items():
        assert captions[captions["class_id"] == class_id]["text"].tolist() == \
            captioner.caption(ims)
    saved = pd.read_parquet(at_root / "outputs" / "disambiguate" / "texts.parquet")
    assert (saved["task"] == "captions").sum() == 80


def test_the_captioner_settings_are_checked(at_root, tiny_zoo):
    models = _tiny_models(tiny_zoo)
    with pytest.raises(ValueError, match="captioner_backend=retrieval needs captioner_captions"):
        stage.make_captioner(_mini("disambiguate", **{**models, "captioner_captions": None}))
    with pytest.raises(ValueError, match="captioner_captions is read by the retrieval captioner "
                                         "only; set it to null for captioner_backend=transformers"):
        stage.make_captioner(_mini("disambiguate", **models, captioner_backend="transformers"))
    missing = _mini("disambiguate", **{**models, "captioner_captions": "outputs/zoo/no-corpus"})
    with pytest.raises(FileNotFoundError, match=r"caption collection '.*outputs/zoo/no-corpus' "
                                                r"does not exist"):
        stage.make_captioner(missing)


def _mini_run() -> Path | None:
    """The outputs folder of a finished run of the mini profile: ``$SYNTHSCALE_MINI_OUTPUTS``
    (e.g. another checkout's ``outputs``) or this checkout's, if its zoo and classes are
    there."""
    import os

    folder = Path(os.environ.get("SYNTHSCALE_MINI_OUTPUTS", ROOT / "outputs"))
    for stage_name in ("zoo", "classes"):
        record = folder / stage_name / "provenance.json"
        if not record.is_file() or json.loads(record.read_text()).get("profile") != "mini":
            return None
    return folder


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_mini_world_captions_real_digits_with_corpus_captions(tmp_path, monkeypatch):
    """The disambiguate stage with the mini profile's settings, unchanged, on the mini zoo
    (CLIP and corpus) of a finished mini run: 8 corpus captions per class, and everything
    else the stage writes as that run wrote it."""
    mini = _mini_run()
    if mini is None:
        pytest.skip("no finished mini run: `dvc repro` first, or set SYNTHSCALE_MINI_OUTPUTS")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    materialize_digits(tmp_path / "data" / "digits")
    (tmp_path / "outputs").mkdir()
    for name in ("zoo", "classes"):
        (tmp_path / "outputs" / name).symlink_to(mini / name, target_is_directory=True)
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    result = stage.run(_mini("disambiguate", llm_recorded=str(RECORDED)))
    texts = result["texts"]
    captions = texts[texts["task"] == "captions"]
    assert result["metrics"]["texts"]["captions"] == 80
    assert captions.groupby("class_id").size().to_dict() == {str(d): 8 for d in range(10)}
    corpus = set(pd.read_parquet(mini / "zoo" / "corpus" / "captions.parquet")["caption"])
    assert set(captions["text"]) <= corpus
    before = mini / "disambiguate"
    if (before / "texts.parquet").is_file():  # the captions are all that changed
        old = pd.read_parquet(before / "texts.parquet")
        pd.testing.assert_frame_equal(texts[texts["task"] != "captions"].reset_index(drop=True),
                                      old[old["task"] != "captions"].reset_index(drop=True))
        for name in ("prompt_names", "candidates"):
            pd.testing.assert_frame_equal(result[name],
                                          pd.read_parquet(before / f"{name}.parquet"))
