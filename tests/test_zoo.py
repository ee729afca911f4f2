"""The tiny model zoo: deterministic builders whose folders load through production loaders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from lib import zoo


def _weights_digest(folder: str | Path) -> str:
    """sha256 over every weight file of a model folder (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".safetensors", ".bin"))
    assert files, f"no weights in {folder}"
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("build", [zoo.build_tiny_sd, zoo.build_tiny_open_clip, zoo.build_tiny_llm])
def test_builders_are_deterministic_and_leave_global_rng_alone(build, tmp_path):
    state = torch.random.get_rng_state()
    a = _weights_digest(build(tmp_path / "a", seed=1))
    b = _weights_digest(build(tmp_path / "b", seed=1))
    c = _weights_digest(build(tmp_path / "c", seed=2))
    assert a == b
    assert a != c
    assert torch.equal(state, torch.random.get_rng_state())


def test_build_tiny_zoo_layout(tiny_zoo):
    assert set(tiny_zoo) == {"t2i", "clip", "llm", "captioner"}
    for name, folder in tiny_zoo.items():
        assert Path(folder).name == name and Path(folder).is_dir()


def test_tiny_sd_loads_with_auto_pipeline(tiny_zoo):
    from diffusers import AutoPipelineForText2Image, DDIMScheduler, StableDiffusionPipeline

    pipe = AutoPipelineForText2Image.from_pretrained(tiny_zoo["t2i"])
    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.steps_offset == 1
    assert pipe.safety_checker is None
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    # Default size of the pipeline is 32 px: sample_size times the VAE's downscale.
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 32


def test_tiny_sd_tokenizer_covers_any_text(tiny_zoo):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(Path(tiny_zoo["t2i"]) / "tokenizer")
    ids = tok("Ünïcode ✓ photo of a cat!").input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "ünïcode ✓ photo of a cat !"


def test_tiny_open_clip_loads_its_weights(tiny_zoo):
    import open_clip
    from safetensors.torch import load_file

    folder = Path(tiny_zoo["clip"])
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert set(config) == {"model_cfg", "preprocess_cfg"}
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    saved = load_file(folder / "open_clip_model.safetensors")
    loaded = model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert preprocess.transforms[0].size == 32


def test_tiny_llm_round_trip_gives_identical_logits(tiny_zoo, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_zoo["llm"])
    model = AutoModelForCausalLM.from_pretrained(tiny_zoo["llm"]).eval()
    ids = tok("a photo of a dog", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path / "copy")
    tok.save_pretrained(tmp_path / "copy")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "copy").eval()
    with torch.no_grad():
        after = again(
            AutoTokenizer.from_pretrained(tmp_path / "copy")(
                "a photo of a dog", return_tensors="pt"
            ).input_ids
        ).logits
    assert before.shape == (1, ids.shape[1], len(tok))
    assert torch.equal(before, after)


def test_tiny_llm_tokenizer_and_chat_template(tiny_zoo):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_zoo["llm"])
    text = "Ünïcode ✓ styles: origami"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<s><|user|>\nhi</s>\n<|assistant|>\n"
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
