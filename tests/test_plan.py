"""The profile check and the plan (lib.plan): every profile asks only for what it produces,
inconsistencies are refused naming the keys, and the plan counts the work without models or
data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lib import plan
from lib.choices import PROFILES
from lib.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params() -> dict[str, Any]:
    with open(ROOT / "params.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def problems(params: dict[str, Any], profile: str) -> list[str]:
    return plan.check_profile(plan.load_sections(plan.profile_params(params, profile)))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_asks_only_for_what_it_produces(params: dict[str, Any],
                                                      profile: str) -> None:
    assert problems(params, profile) == []


@pytest.mark.parametrize("profile", ["smoke", "mini"])
def test_the_larger_sweep_of_the_cpu_profiles_is_generated_too(params: dict[str, Any],
                                                                profile: str) -> None:
    params["sweep"]["large"] = True
    assert problems(params, profile) == []


def test_the_paper_profiles_name_what_their_larger_sweep_needs(params: dict[str, Any]) -> None:
    params["sweep"]["large"] = True
    found = problems(params, "imagenet")
    assert len(found) == 1
    assert "sweep.large_multipliers goes up to 6x but each strategy is generated at 2x" in found[0]
    assert "set prompts.synthetic_multiplier >= 24" in found[0]


def test_a_sweep_strategy_that_is_not_generated_is_refused(params: dict[str, Any]) -> None:
    params["profiles"]["mini"]["prompts"]["strategies"] = ["classname", "cd", "sd"]
    params["profiles"]["mini"]["prompts"]["synthetic_multiplier"] = 1.5
    found = problems(params, "mini")
    assert any("sweep.sources asks for 'cdsd', which is not generated" in p for p in found)
    assert any("train.synthetic_strategy='cdsd' is not generated" in p for p in found)
    with pytest.raises(ConfigError, match="profile 'mini' is inconsistent"):
        plan.check(plan.profile_params(params, "mini"))


def test_a_multiplier_beyond_the_generation_is_refused(params: dict[str, Any]) -> None:
    params["profiles"]["mini"]["sweep"]["multipliers"] = [0.25, 1.0]
    (found,) = problems(params, "mini")
    assert "sweep.multipliers goes up to 1x but each strategy is generated at 0.5x" in found
    params["profiles"]["mini"]["sweep"]["multipliers"] = [0.5]
    params["profiles"]["mini"]["train"]["synthetic_strategy"] = None
    params["train"]["synthetic_multiplier"] = 3.0
    (found,) = problems(params, "mini")
    assert "train.synthetic_multiplier=3 but only 2x is generated" in found


def test_captions_need_a_captioner_and_a_zoo_model_needs_the_zoo(params: dict[str, Any]) -> None:
    mini = params["profiles"]["mini"]
    mini["prompts"]["strategies"] = ["classname", "cd", "sd", "cdsd", "captions"]
    mini["prompts"]["synthetic_multiplier"] = 2.5
    mini["disambiguate"]["captioner_model"] = None
    mini["zoo"]["build"] = "none"
    found = problems(params, "mini")
    assert any("has 'captions' but the profile has no captioner" in p for p in found)
    zoo = next(p for p in found if p.startswith("zoo.build is 'none'"))
    assert "generate.model" in zoo and "disambiguate.clip_model" in zoo


def test_a_mini_generator_the_zoo_does_not_train_is_refused(params: dict[str, Any]) -> None:
    params["zoo"]["t2i_archs"] = ["unet"]
    assert problems(params, "mini") == [  # the study's generator factor samples both
        "study.settings.dit names outputs/zoo/t2i-dit, which zoo.t2i_archs=['unet'] does not "
        "train: add 'dit'"]
    params["profiles"]["mini"]["study"]["generator_settings"] = ["classname"]
    assert problems(params, "mini") == []  # a setting no run samples is not made
    params["profiles"]["mini"]["generate"]["model"] = "./outputs/zoo/t2i-dit"
    assert problems(params, "mini") == [
        "generate.model names outputs/zoo/t2i-dit, which zoo.t2i_archs=['unet'] does not "
        "train: add 'dit'"]
    params["zoo"]["t2i_archs"] = ["dit"]
    assert problems(params, "mini") == [  # main's fine-tuner reads the UNet's folder too
        "finetune.base_model, disambiguate.gen_model name outputs/zoo/t2i, which "
        "zoo.t2i_archs=['dit'] does not train: add 'unet'"]
    params["zoo"]["t2i_archs"] = ["dit", "unet"]
    assert problems(params, "mini") == []


def test_the_mini_finetuner_refuses_the_transformers_pipeline(params: dict[str, Any]) -> None:
    """The fine-tuned generator stays a UNet: a base model naming the transformer's folder is
    refused even when the zoo trains it."""
    params["zoo"]["t2i_archs"] = ["unet", "dit"]
    params["profiles"]["mini"]["finetune"]["base_model"] = "./outputs/zoo/t2i-dit"
    assert problems(params, "mini") == [
        "finetune.backend is 'mini' but finetune.base_model='./outputs/zoo/t2i-dit' is the "
        "'dit' denoiser's pipeline; the mini fine-tuner fine-tunes the UNet: name "
        "./outputs/zoo/t2i"]


def test_a_bad_value_fails_validation_before_the_consistency_check(params) -> None:
    params["train"]["optimizer"] = "lamb"
    with pytest.raises(ConfigError, match=r"\[train\] optimizer='lamb' is not a valid choice"):
        plan.check(plan.profile_params(params, "imagenet"))


def test_the_plan_counts_the_work(params: dict[str, Any], tmp_path: Path) -> None:
    mini = plan.make_plan(plan.profile_params(params, "mini"), root=tmp_path)  # no data here
    assert mini["real_train_images"] == 1344 and mini["classes"] == 10
    assert "known size" in mini["counted"]
    assert mini["images"] == 2688 and mini["images_per_strategy"] == 672
    assert mini["sweep_runs"] == {"real": 6, "real-noaug": 6, "classname": 30, "cd": 30,
                                  "sd": 30, "cdsd": 30}
    assert mini["work"]["sweep"]["device"] == "cpu"
    assert mini["work"]["sweep"]["seconds"] == pytest.approx(132 * 200 * 0.0175)
    assert "sweep@cdsd" in mini["stages"]
    # the default: the UNet and the transformer (the study's generator factor)
    assert mini["work"]["zoo"]["seconds"] == pytest.approx(812 + 1000 * 0.406)
    params["zoo"]["t2i_archs"] = ["unet"]
    params["profiles"]["mini"]["study"]["generator_settings"] = ["classname"]
    unet = plan.make_plan(plan.profile_params(params, "mini"), root=tmp_path)
    assert unet["work"]["zoo"]["seconds"] == 812
    text = plan.format_plan(mini)
    assert "132 training runs" in text and "core-minutes" in text
    paper = plan.make_plan(plan.profile_params(params, "imagenet"), root=tmp_path)
    assert paper["real_train_images"] == 1281167 and paper["classes"] == 1000
    assert paper["images"] == round(1281167 * 8.0)


def test_the_plan_counts_real_images_when_data_is_there(params, tmp_path: Path) -> None:
    for c in range(3):
        folder = tmp_path / "data" / "digits" / str(c)
        folder.mkdir(parents=True)
        for i in range(8):
            (folder / f"digit-{i}.png").write_bytes(b"")
    params["profiles"]["mini"]["classes"]["train_per_class"] = None
    found = plan.make_plan(plan.profile_params(params, "mini"), root=tmp_path)
    assert (found["real_train_images"], found["classes"]) == (18, 3)  # 24 x (1 - 0.25)
    assert found["counted"] == "counted in data/digits"


def test_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan.main(["--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("profile smoke:") and "sweep: 10 training runs" in out
    assert plan.main(["--profile", "laptop"]) == 2
    assert "common.profile='laptop'; valid profiles: smoke, mini" in capsys.readouterr().err


def test_nothing_may_use_a_finetuned_model_that_is_not_made(params: dict[str, Any]) -> None:
    params["profiles"]["smoke"]["generate"]["model"] = "./outputs/finetune/t2i"
    (found,) = problems(params, "smoke")  # smoke: finetune.backend none
    assert found == ("finetune.backend is 'none' (nothing is fine-tuned) but generate.model "
                     "names the fine-tuned model's folder")
    params["profiles"]["mini"]["generate"]["model"] = "./outputs/finetune/t2i"
    assert problems(params, "mini") == []  # mini fine-tunes: the study may generate with it


def test_the_mini_finetuner_needs_the_mini_model(params: dict[str, Any]) -> None:
    params["profiles"]["smoke"]["finetune"]["backend"] = "mini"
    (found,) = problems(params, "smoke")
    assert "finetune.base_model='./outputs/zoo/t2i' is a model of zoo.build='tiny-random'" in found


def test_the_plan_counts_the_finetuning(params: dict[str, Any], tmp_path: Path) -> None:
    mini = plan.make_plan(plan.profile_params(params, "mini"), root=tmp_path)
    assert mini["stages"][:3] == ["zoo", "classes", "finetune"]
    assert mini["work"]["finetune"]["seconds"] == pytest.approx(300 * 0.156 + 38)
    paper = plan.make_plan(plan.profile_params(params, "imagenet"), root=tmp_path)
    assert paper["work"]["finetune"] == {"device": None, "seconds": 0.0}  # backend none


def test_the_mini_world_captions_real_images_by_retrieval(params: dict[str, Any]) -> None:
    """The mini profile has a captioner (the retrieval one over the zoo's corpus) without
    generating the captions strategy: a fifth strategy would divide the generation among
    five and leave the sweep's 0.5x ungenerated."""
    cfgs = plan.load_sections(plan.profile_params(params, "mini"))
    dis = cfgs["disambiguate"]
    assert (dis.captioner_backend, dis.captioner_model, dis.captioner_captions) == (
        "retrieval", "./outputs/zoo/clip", "./outputs/zoo/corpus")
    assert dis.captions_per_class == 8
    assert "captions" not in cfgs["prompts"].strategies
    mini = params["profiles"]["mini"]
    mini["prompts"]["strategies"] = [*mini["prompts"]["strategies"], "captions"]
    (found,) = problems(params, "mini")
    assert "sweep.multipliers goes up to 0.5x but each strategy is generated at 0.4x" in found


def test_the_retrieval_captioner_needs_its_captions_and_only_it_reads_them(
        params: dict[str, Any]) -> None:
    mini, smoke = params["profiles"]["mini"], params["profiles"]["smoke"]
    mini["disambiguate"]["captioner_captions"] = None
    (found,) = problems(params, "mini")
    assert "captioner_backend is 'retrieval' but captioner_captions" in found
    mini["disambiguate"]["captions_per_class"] = 0  # no captions asked for: nothing needed
    assert problems(params, "mini") == [  # but the study's captions setting needs them
        "study.settings.captions prompts with captions but the profile has no captioner "
        "(disambiguate.captioner_model / captions_per_class)"]
    smoke["disambiguate"]["captioner_captions"] = "./outputs/zoo/corpus"
    (found,) = problems(params, "smoke")
    assert "captioner_captions is set but only the retrieval captioner reads it" in found
    # The collection counts as a zoo output: a profile without a zoo cannot name it.
    mini["disambiguate"]["captions_per_class"] = 8
    mini["disambiguate"]["captioner_captions"] = "./outputs/zoo/corpus"
    mini["zoo"]["build"] = "none"
    zoo = next(p for p in problems(params, "mini") if p.startswith("zoo.build is 'none'"))
    assert "disambiguate.captioner_captions" in zoo and "disambiguate.captioner_model" in zoo
