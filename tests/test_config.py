"""Validated stage configurations (lib.config) and path resolution (lib.paths).

Every case starts from the repository's own ``params.yaml``, read as a dict and changed in
memory, so the tests follow the real file.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lib import paths
from lib.config import (
    CONFIGS,
    PROFILES,
    SECTIONS,
    STAGES,
    ClassesConfig,
    ConfigError,
    TrainConfig,
    build,
    from_namespace,
    load,
    stage_keys,
    stage_section,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params() -> dict[str, Any]:
    """params.yaml with the smoke profile selected (the tests edit its keys)."""
    with open(ROOT / "params.yaml", encoding="utf-8") as fh:
        params = yaml.safe_load(fh)
    params["common"]["profile"] = "smoke"
    return params


def test_the_default_profile_is_the_mini_world() -> None:
    with open(ROOT / "params.yaml", encoding="utf-8") as fh:
        assert yaml.safe_load(fh)["common"]["profile"] == "mini"


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $SYNTHSCALE_ROOT: the root is found from the working directory, the checkout."""
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    monkeypatch.chdir(ROOT)


def config(params: dict[str, Any], stage: str) -> Any:
    return build(stage, stage_section(params, stage))


def raises(message: str) -> Any:
    return pytest.raises(ConfigError, match=re.escape(message))


# -- loading -----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", SECTIONS)
def test_every_stage_loads(params: dict[str, Any], stage: str) -> None:
    cfg = config(params, stage)
    assert type(cfg) is CONFIGS[stage]
    assert cfg.common.profile == "smoke" and cfg.common.seed == 0
    assert cfg.common.dirs.train == "outputs/train"
    assert list(cfg.as_params()) == stage_keys(stage)
    assert build(stage, cfg.as_params()) == cfg  # flat papermill values round-trip


def test_values_from_section_and_overlay(params: dict[str, Any]) -> None:
    train = config(params, "train")
    assert isinstance(train, TrainConfig)
    assert (train.steps, train.lr, train.weight_decay, train.aux_norm) == (20, 0.001, 0.05, True)
    classes = config(params, "classes")
    assert isinstance(classes, ClassesConfig)
    assert (classes.dataset_dir, classes.train_per_class, classes.val_per_class) == (
        "digits",
        20,
        10,
    )
    assert classes.ood == ("thicken", "rotate", "invert", "noise", "blur")
    assert classes.as_params()["ood"] == ["thicken", "rotate", "invert", "noise", "blur"]
    assert config(params, "generate").scheduler is None


@pytest.mark.parametrize("profile", ["smoke", "mini", "imagenet100", "imagenet"])
def test_every_built_profile_loads(params: dict[str, Any], profile: str) -> None:
    params["common"]["profile"] = profile
    for stage in SECTIONS:
        assert config(params, stage).common.profile == profile


def test_paper_profile_values(params: dict[str, Any]) -> None:
    params["common"]["profile"] = "imagenet100"
    assert config(params, "classes").train_per_class is None
    assert config(params, "train").steps == 100000
    assert config(params, "generate").model == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_load_reads_the_project_params(at_root: None, params: dict[str, Any]) -> None:
    params["common"]["profile"] = "mini"
    assert load("train") == config(params, "train")
    assert load("train", ROOT / "params.yaml") == config(params, "train")


def test_from_namespace_ignores_other_globals(params: dict[str, Any]) -> None:
    namespace = stage_section(params, "analyze") | {"np": object(), "_": 3}
    assert from_namespace("analyze", namespace) == config(params, "analyze")


def test_unknown_stage(params: dict[str, Any]) -> None:
    with raises("unknown section 'trian'; valid: " + ", ".join(SECTIONS)):
        stage_section(params, "trian")
    assert set(SECTIONS) == {*STAGES, "sweep", "study"}


def test_a_profile_extends_another_with_yaml_merge_keys() -> None:
    with open(ROOT / "params.yaml", encoding="utf-8") as fh:
        text = fh.read()
    assert "<<: *imagenet100" in text  # imagenet states only what differs from imagenet100
    params = yaml.safe_load(text)
    big, small = params["profiles"]["imagenet"], params["profiles"]["imagenet100"]
    assert set(big) == set(small)
    differ = {(s, k) for s in small for k in small[s] if small[s][k] != big[s].get(k)}
    assert differ == {("classes", "subset")}
    for profile in ("imagenet100", "imagenet"):
        params["common"]["profile"] = profile
        assert config(params, "train").arch == "resnet50"
    assert config(params, "classes").subset is None


def test_keys_equal_in_every_profile_live_in_the_base_section() -> None:
    with open(ROOT / "params.yaml", encoding="utf-8") as fh:
        profiles = yaml.safe_load(fh)["profiles"]
    same = []
    for section in profiles["mini"]:
        overlays = [profiles[p].get(section) or {} for p in PROFILES]
        for key in set.intersection(*(set(o) for o in overlays)):
            if all(o[key] == overlays[0][key] for o in overlays):
                same.append(f"{section}.{key}")
    assert same == []


def test_the_sweep_is_its_own_section(params: dict[str, Any]) -> None:
    sweep = config(params, "sweep")
    assert sweep.sources == ("real", "real-noaug", "classname", "cd", "sd", "cdsd")
    assert sweep.run_seeds == sweep.seeds and sweep.run_multipliers == sweep.multipliers
    params["sweep"]["large"] = True
    large = config(params, "sweep")
    assert (large.run_seeds, large.run_multipliers) == (large.large_seeds,
                                                        large.large_multipliers)
    assert not any(k.startswith("grid") for k in stage_keys("train"))
    assert stage_keys("analyze")[-2:] == ["batch_size", "dpi"]  # analyze reads no train key


# -- unknown, missing and mistyped keys -------------------------------------------------


def test_unknown_key_in_stage_section(params: dict[str, Any]) -> None:
    params["train"]["learning_rate"] = 0.1
    with raises("[train] unknown parameter(s): learning_rate; valid: profile, seed"):
        config(params, "train")


def test_unknown_key_in_profile_overlay(params: dict[str, Any]) -> None:
    params["profiles"]["smoke"]["generate"]["stepz"] = 3
    with raises("[generate] unknown parameter(s): stepz"):
        config(params, "generate")


def test_unknown_key_in_common_dirs(params: dict[str, Any]) -> None:
    params["common"]["dirs"]["cache"] = "cache"
    with raises("[prompts] unknown parameter(s): dirs.cache"):
        config(params, "prompts")


def test_missing_key(params: dict[str, Any]) -> None:
    del params["train"]["weight_decay"]
    with raises("[train] missing parameter(s): weight_decay"):
        config(params, "train")


def test_missing_key_in_profile(params: dict[str, Any]) -> None:
    del params["profiles"]["smoke"]["classes"]["val_per_class"]
    with raises("[classes] missing parameter(s): val_per_class"):
        config(params, "classes")


def test_missing_common_dir(params: dict[str, Any]) -> None:
    del params["common"]["dirs"]["metrics"]
    with raises("[analyze] missing parameter: dirs.metrics"):
        config(params, "analyze")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20", "[train] steps must be int, got str '20'"),
        (True, "[train] steps must be int, got bool True"),
        (20.0, "[train] steps must be int, got float 20.0"),
        (None, "[train] steps must be int, got NoneType None"),
    ],
)
def test_wrong_type_for_int(params: dict[str, Any], value: Any, message: str) -> None:
    params["profiles"]["smoke"]["train"]["steps"] = value
    with raises(message):
        config(params, "train")


def test_int_accepted_for_float(params: dict[str, Any]) -> None:
    params["profiles"]["smoke"]["train"]["lr"] = 1
    cfg = config(params, "train")
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    params["profiles"]["smoke"]["train"]["lr"] = False
    with raises("[train] lr must be float, got bool False"):
        config(params, "train")


def test_none_only_where_optional(params: dict[str, Any]) -> None:
    params["profiles"]["smoke"]["classes"]["train_per_class"] = None
    assert config(params, "classes").train_per_class is None
    params["profiles"]["smoke"]["classes"]["train_per_class"] = "all"
    with raises("[classes] train_per_class must be int, got str 'all'"):
        config(params, "classes")
    params["profiles"]["smoke"]["classes"]["train_per_class"] = 20
    params["classes"]["val_fraction"] = None
    with raises("[classes] val_fraction must be float, got NoneType None"):
        config(params, "classes")


@pytest.mark.parametrize(
    ("section", "where", "key", "value", "valid"),
    [
        ("train", "train", "optimizer", "adam", "adamw, sgd"),
        ("train", "train", "schedule", "linear", "cosine, constant"),
        ("train", "train", "epoch", "synthetic", "real, all"),
        ("train", "profile", "augment", ["crop", "mirror"], "rrc, crop, flip, jitter"),
        ("train", "profile", "synthetic_strategy", "cdsdx", "classname, description"),
        ("train", "profile", "amp", "fp8", "bf16, bfloat16, fp16, float16"),
        ("generate", "profile", "backend", "diffuser", "diffusers, mini"),
        ("disambiguate", "profile", "gen_backend", "minis", "diffusers, mini"),
        ("generate", "profile", "dtype", "float64", "float32, float16, bfloat16"),
        ("generate", "generate", "image_format", "webp", "png, jpg, jpeg"),
        ("disambiguate", "disambiguate", "mode", "images", "clip, generate"),
        ("disambiguate", "profile", "llm_backend", "vllm", "transformers, openai, recorded"),
        ("disambiguate", "profile", "captioner_backend", "blip", "transformers, retrieval"),
        ("disambiguate", "disambiguate", "cd_axes", ["scene"], "foreground, background"),
        ("prompts", "profile", "strategies", ["classname", "caption"], "captions, cd, sd"),
        ("sweep", "sweep", "sources", ["real", "synthetic"], "real, real-noaug, classname"),
        ("sweep", "profile", "regimes", ["half"], "full, limited, none"),
        ("classes", "classes", "ood", ["fog"], "thicken, rotate, invert, noise, blur"),
        ("classes", "profile", "subset", "imagenet10", "imagenet1k, imagenet100"),
        ("clip", "clip", "sources", ["both"], "real, synthetic, combined"),
        ("zoo", "profile", "build", "tiny", "mini, tiny-random, none"),
    ],
)
def test_a_wrong_choice_names_the_key_and_the_choices(
    params: dict[str, Any], section: str, where: str, key: str, value: Any, valid: str
) -> None:
    target = params["profiles"]["smoke"][section] if where == "profile" else params[section]
    assert key in target
    target[key] = value
    with pytest.raises(ConfigError, match=rf"\[{section}\] {re.escape(key)}.* is not a valid "
                       rf"choice; valid: .*{re.escape(valid)}"):
        config(params, section)


def test_a_choice_refuses_other_types(params: dict[str, Any]) -> None:
    params["train"]["optimizer"] = 1
    with raises("[train] optimizer=1 is not a valid choice"):
        config(params, "train")
    params["train"]["optimizer"] = "sgd"
    assert config(params, "train").optimizer == "sgd"


def test_other_wrong_types(params: dict[str, Any]) -> None:
    params["common"]["progress"] = "yes"
    with raises("[train] progress must be bool, got str 'yes'"):
        config(params, "train")
    params["common"]["progress"] = True
    params["classes"]["ood"] = ["invert", 3]
    with raises("[classes] ood[1]=3 is not a valid choice"):
        config(params, "classes")
    params["disambiguate"]["cd_axes"] = "foreground"
    with raises("[disambiguate] cd_axes must be a list, got str 'foreground'"):
        config(params, "disambiguate")
    params["classes"]["ood"] = "invert"
    with raises("[classes] ood must be a list, got str 'invert'"):
        config(params, "classes")
    params["common"]["dirs"] = "outputs"
    with raises("[classes] dirs must be a mapping, got 'outputs'"):
        config(params, "classes")


# -- sections and profiles ----------------------------------------------------------------


def test_key_in_section_and_overlay_refused(params: dict[str, Any]) -> None:
    params["train"]["steps"] = 5
    with raises("[train] steps set both in 'train' and in 'profiles.smoke.train'"):
        config(params, "train")


def test_key_in_section_and_another_profile_refused(params: dict[str, Any]) -> None:
    """A key any profile sets must not stay in the base, even if the active one omits it."""
    del params["profiles"]["smoke"]["train"]["steps"]
    params["train"]["steps"] = 5
    with raises("[train] steps set both in 'train' and in 'profiles.mini.train'"):
        config(params, "train")


def test_stage_key_shadowing_common_refused(params: dict[str, Any]) -> None:
    params["analyze"]["seed"] = 1
    with raises("[analyze] seed is a common key and cannot be a stage key"):
        config(params, "analyze")


def test_unknown_profile_lists_valid(params: dict[str, Any]) -> None:
    params["common"]["profile"] = "huge"
    with raises("[train] common.profile='huge'; valid profiles: " + ", ".join(PROFILES)):
        config(params, "train")


def test_empty_profile_is_a_clear_error(params: dict[str, Any]) -> None:
    params["profiles"]["mini"] = {}
    params["common"]["profile"] = "mini"
    with raises("[zoo] profile 'mini' has no settings yet (params.yaml: profiles.mini)"):
        config(params, "zoo")


def test_missing_section(params: dict[str, Any]) -> None:
    del params["clip"]
    with raises("[clip] params.yaml has no 'clip' section"):
        config(params, "clip")


# -- build() with flat values -------------------------------------------------------------


def test_build_rejects_unknown_and_missing(params: dict[str, Any]) -> None:
    values = stage_section(params, "analyze")
    with raises(
        "[analyze] unknown parameter(s): colour, extra; valid: "
        "profile, seed, device, progress, dirs, batch_size, dpi"
    ):
        build("analyze", values | {"extra": 1, "colour": "red"})
    del values["dpi"]
    with raises("[analyze] missing parameter(s): dpi"):
        build("analyze", values)


def test_configs_are_frozen(params: dict[str, Any]) -> None:
    cfg = config(params, "train")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.common.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.common.dirs.train = "elsewhere"  # type: ignore[misc]
    assert cfg.steps == 20 and cfg.common.dirs.train == "outputs/train"


# -- paths -------------------------------------------------------------------------------


def test_path_resolves_against_root_not_cwd(
    params: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = config(params, "train")
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert cfg.root == ROOT
    assert cfg.path("train") == ROOT / "outputs" / "train"
    assert cfg.path("metrics") == ROOT / "metrics"

    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    assert cfg.root == tmp_path.resolve()
    assert cfg.path("train") == tmp_path.resolve() / "outputs" / "train"

    monkeypatch.chdir(tmp_path)  # outside any checkout: the variable still names the root
    assert cfg.path("data") == tmp_path.resolve() / "data"
    monkeypatch.delenv(paths.ROOT_ENV)
    with pytest.raises(FileNotFoundError, match=paths.ROOT_ENV):
        cfg.path("data")


def test_absolute_dir_passes_through(params: dict[str, Any], tmp_path: Path) -> None:
    params["common"]["dirs"]["train"] = str(tmp_path / "runs")
    assert config(params, "train").path("train") == tmp_path / "runs"


def test_resolve_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("'./missing'")) as err:
        paths.resolve_model("./missing", tmp_path)
    assert str(tmp_path / "missing") in str(err.value)
    assert paths.resolve_model("org/name", tmp_path) == "org/name"
    (tmp_path / "models" / "clip").mkdir(parents=True)
    local = str(tmp_path / "models" / "clip")
    assert paths.resolve_model("./models/clip", tmp_path) == local
    assert paths.resolve_model("models/clip", tmp_path) == local  # an existing folder


def test_stage_resolve_model_uses_root(
    params: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(params, "generate")
    (tmp_path / "outputs" / "zoo" / "t2i").mkdir(parents=True)
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(ROOT)  # another checkout under the cwd must not matter
    assert cfg.resolve_model(cfg.model) == str(tmp_path.resolve() / "outputs" / "zoo" / "t2i")
    assert cfg.resolve_model("stable-diffusion-v1-5/stable-diffusion-v1-5") == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
