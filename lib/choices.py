"""The allowed values of every choice-valued parameter, defined once.

Each choice is a ``typing.Literal``; the stage configurations (:mod:`lib.config`) use them as
type hints, so a wrong value fails at validation naming the key and listing the choices, before
anything runs. The modules that implement a choice (a registry of backends, a table of prompt
strategies or corruptions) are checked against these lists by ``tests/test_choices.py``.
``values(Choice)`` gives the tuple of allowed values.
"""

from __future__ import annotations

import typing
from typing import Literal

Profile = Literal["smoke", "mini", "imagenet100", "imagenet"]
ZooBuild = Literal["mini", "tiny-random", "none"]  # what the zoo stage builds locally
T2IArch = Literal["unet", "dit"]  # denoisers of the mini text-to-image model (lib.mini.denoisers)
# The folder (under common.dirs.zoo) each denoiser's pipeline is written to by the zoo stage.
T2I_FOLDERS = {"unet": "t2i", "dit": "t2i-dit"}
ClassSet = Literal["imagenet1k", "imagenet100", "imagenet-r", "imagenet-a"]  # lib.classsets
Corruption = Literal["thicken", "rotate", "invert", "noise", "blur"]  # lib.data: OOD sets

# Backends (one registry per kind, lib.backends).
T2IBackend = Literal["diffusers", "mini"]
ClipBackend = Literal["open_clip"]
LLMBackend = Literal["transformers", "openai", "recorded"]
CaptionerBackend = Literal["transformers", "retrieval"]  # retrieval: picks, not writes
ClassifierBackend = Literal["timm"]
# Text-to-image fine-tuners (lib.backends.finetune); "none" fine-tunes nothing (the profile's
# fine-tuned model, if any, is made outside the pipeline: README, "The fine-tuned generator").
FinetuneBackend = Literal["mini", "none"]

DisambiguationMode = Literal["clip", "generate"]  # score candidate texts, or images made from them
CDAxis = Literal["foreground", "background", "lighting", "viewpoint"]  # llm_prompts.yaml cd_axes
Embedder = Literal["minilm"]  # sentence encoder of the prompt-diversity measure

# Prompt strategies (lib.prompts) of both papers.
Strategy = Literal["classname", "description", "hypernym", "templates", "word2sen", "captions",
                   "cd", "sd", "cdsd"]
# Sweep data sources: real images only (with / without the profile's augmentation), or real
# images plus the generated images of one prompt strategy.
RealSource = Literal["real", "real-noaug"]
Source = Literal[RealSource, Strategy]
Regime = Literal["full", "limited", "none"]  # how much real data a sweep run keeps
# The studies (lib/study): which class names a generation setting prompts with (the names
# disambiguation chose, or the raw class names: the ablation's "naive" row), and the two
# studies whose runs the `study` stages train.
ClassNames = Literal["chosen", "raw"]
StudyName = Literal["scaling", "diversify"]

Dtype = Literal["float32", "float16", "bfloat16"]
ImageFormat = Literal["png", "jpg", "jpeg"]
Epoch = Literal["real", "all"]  # what one epoch passes over
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["cosine", "constant"]
Amp = Literal["bf16", "bfloat16", "fp16", "float16"]
Augmentation = Literal["rrc", "crop", "flip", "jitter"]  # lib.nn.augment
# What the auxiliary norm does to LayerNorms (lib.nn.aux_norm.convert_to_aux_norm): "shared"
# leaves them alone, "aux" gives each domain its own affine parameters (a project option).
AuxLayerNormMode = Literal["shared", "aux"]
ClipSource = Literal["real", "synthetic", "combined"]  # image-text pairs the clip stage trains on


def values(choice: typing.Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` choice, in their declared order."""
    if typing.get_origin(choice) is not Literal:
        raise TypeError(f"{choice!r} is not a Literal choice")
    return typing.get_args(choice)


PROFILES = values(Profile)
STRATEGIES = values(Strategy)
REAL_SOURCES = values(RealSource)
SOURCES = values(Source)
REGIMES = values(Regime)
