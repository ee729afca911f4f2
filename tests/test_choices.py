"""The allowed values of each choice (lib.choices) are exactly what the implementing modules
provide: registries of backends, tables of strategies, corruptions, augmentations, dtypes."""

from __future__ import annotations

import yaml

from lib import choices, classsets, data, prompts
from lib.backends import loading
from lib.backends.captioner import CAPTIONER
from lib.backends.classifier import CLASSIFIER
from lib.backends.clip import CLIP
from lib.backends.finetune import FINETUNERS
from lib.backends.llm import LLM
from lib.backends.t2i import T2I
from lib.llm.templates import TEMPLATES_PATH
from lib.nn.augment import AUGMENTATIONS
from lib.nn.aux_norm import LAYERNORM_MODES
from lib.shards import IMAGE_FORMATS
from lib.training.loop import AMP_DTYPES

values = choices.values


def test_backend_choices_are_the_registered_backends() -> None:
    assert set(values(choices.T2IBackend)) == set(T2I.names())
    assert set(values(choices.ClipBackend)) == set(CLIP.names())
    assert set(values(choices.LLMBackend)) == set(LLM.names())
    assert set(values(choices.CaptionerBackend)) == set(CAPTIONER.names())
    assert set(values(choices.ClassifierBackend)) == set(CLASSIFIER.names())
    # "none": the finetune stage fine-tunes nothing (no fine-tuner is created)
    assert set(values(choices.FinetuneBackend)) == {*FINETUNERS.names(), "none"}


def test_data_choices_are_the_implemented_tables() -> None:
    assert values(choices.Strategy) == tuple(prompts.STRATEGIES)
    assert set(values(choices.Corruption)) == set(data.CORRUPTIONS)
    assert set(values(choices.ClassSet)) == set(classsets.SUBSET_SIZES)
    assert values(choices.Augmentation) == AUGMENTATIONS
    assert values(choices.AuxLayerNormMode) == LAYERNORM_MODES
    assert set(values(choices.Dtype)) == set(loading.DTYPES)
    assert set(values(choices.ImageFormat)) == set(IMAGE_FORMATS)
    assert set(values(choices.Amp)) == set(AMP_DTYPES)
    cd_axes = yaml.safe_load(TEMPLATES_PATH.read_text(encoding="utf-8"))["cd_axes"]
    assert set(values(choices.CDAxis)) == set(cd_axes)


def test_sources_are_the_real_ones_and_every_strategy() -> None:
    assert choices.SOURCES == (*choices.REAL_SOURCES, *choices.STRATEGIES)
    assert choices.REAL_SOURCES == ("real", "real-noaug")


def test_every_mini_denoiser_has_a_zoo_folder_and_metrics_key() -> None:
    from lib.stages import zoo

    assert set(choices.T2I_FOLDERS) == set(values(choices.T2IArch)) == set(zoo.T2I_KEYS)
    assert {zoo.T2I_KEYS[a] for a in choices.T2I_FOLDERS} <= set(zoo.MEASURED)


def test_values_refuses_what_is_not_a_choice() -> None:
    import pytest

    with pytest.raises(TypeError, match="not a Literal choice"):
        values(str)
