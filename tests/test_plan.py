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
    mini["zoo"]["build"] = "none"
    found = problems(params, "mini")
    assert any("has 'captions' but the profile has no captioner" in p for p in found)
    zoo = next(p for p in found if p.startswith("zoo.build is 'none'"))
    assert "generate.model" in zoo and "disambiguate.clip_model" in zoo


def test_a_mini_generator_the_zoo_does_not_train_is_refused(params: dict[str, Any]) -> None:
    params["zoo"]["t2i_archs"] = ["unet"]
    params["profiles"]["mini"]["generate"]["model"] = "./outputs/zoo/t2i-dit"
    assert problems(params, "mini") == [
        "generate.model names outputs/zoo/t2i-dit, which zoo.t2i_archs=['unet'] does not "
        "train: add 'dit'"]
    params["zoo"]["t2i_archs"] = ["dit"]
    (found,) = problems(params, "mini")
    assert found.startswith("disambiguate.gen_model names outputs/zoo/t2i, which ")
    assert found.endswith("zoo.t2i_archs=['dit'] does not train: add 'unet'")
    params["zoo"]["t2i_archs"] = ["dit", "unet"]
    assert problems(params, "mini") == []


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
    assert mini["work"]["zoo"]["seconds"] == pytest.approx(812 + 1000 * 0.406)  # UNet + DiT
    params["zoo"]["t2i_archs"] = ["unet"]
    only_unet = plan.make_plan(plan.profile_params(params, "mini"), root=tmp_path)
    assert only_unet["work"]["zoo"]["seconds"] == 812
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
