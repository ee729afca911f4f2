"""Tiny random-initialised models of the real classes, built locally.

No weights can be downloaded here, so tests and the smoke profile use models of the very
classes the paper-scale runs use (StableDiffusionPipeline, an open_clip CLIP, a Llama causal
LM), only tiny. Each builder saves in the library's own format so that the production loaders
(``AutoPipelineForText2Image.from_pretrained``, ``open_clip.create_model_and_transforms(
"local-dir:...")``, ``AutoModelForCausalLM.from_pretrained``) read them from the folder.
Builders are deterministic given ``seed`` and leave the global RNG untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from lib.seeding import seeded

# Text for the tiny LLM's tokenizer; any short English text with the chat markers will do.
_LLM_CORPUS = [
    "a photo of a dog on the grass",
    "a sketch of a cat in the snow",
    "the digit one, the letter l and the capital I look alike",
    "contexts: foreground, background, scene, lighting, viewpoint",
    "styles: painting, cartoon, sketch, origami, embroidery, pixel art",
    "You are a helpful assistant. Answer in one short line.",
    "user: describe the class. assistant: a small printed digit.",
]
_LLM_SPECIALS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
# ChatML-like template: each turn starts with a role marker and ends with eos.
_LLM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_clip_bpe_vocab(folder: str | os.PathLike) -> Path:
    """Write a byte-level CLIP vocab.json/merges.txt (no merges) that covers any text."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def _tiny_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    # transformers 5 silently ignores vocab_file=/merges_file= in the constructor (a 2-token
    # vocabulary that fails later); from_pretrained reads them.
    write_clip_bpe_vocab(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def _tiny_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    # 16x16 latents (32 px images with a 2x VAE); attention only after one downsample (8x8).
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,  # legacy name: the number of heads
        norm_num_groups=8,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def build_tiny_sd(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny StableDiffusionPipeline (32 px images) saved with ``save_pretrained``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    with seeded(seed), tempfile.TemporaryDirectory() as bpe:
        tokenizer = _tiny_clip_tokenizer(Path(bpe))
        pipe = StableDiffusionPipeline(
            vae=_tiny_vae(),
            text_encoder=_tiny_text_encoder(tokenizer),
            tokenizer=tokenizer,
            unet=_tiny_unet(),
            scheduler=DDIMScheduler(
                beta_schedule="scaled_linear",
                beta_start=0.00085,
                beta_end=0.012,
                clip_sample=False,
                set_alpha_to_one=False,
                steps_offset=1,
            ),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(folder)
    return folder


TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    # The default SimpleTokenizer ships its BPE inside open_clip, hence the full vocab size.
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_tiny_open_clip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny open_clip CLIP saved as open_clip's hub format (config JSON + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with seeded(seed):
        model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    config = {
        "model_cfg": TINY_OPEN_CLIP_CFG,
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")
    return folder


def _byte_bpe_tokenizer(corpus: list[str], specials: list[str], **kwargs):
    """A byte-level BPE (vocab 320) trained on ``corpus``, as a PreTrainedTokenizerFast.

    Byte-level, so it encodes any text; trained locally, so nothing is downloaded.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", **kwargs
    )


def build_tiny_llm(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM with a locally trained byte-level BPE and a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = _byte_bpe_tokenizer(_LLM_CORPUS, _LLM_SPECIALS, chat_template=_LLM_CHAT_TEMPLATE)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with seeded(seed):
        model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_zoo(root: str | os.PathLike, seed: int = 0) -> dict[str, str]:
    """Build the tiny models under ``root/{t2i,clip,llm,captioner}``; map names to folders."""
    root = Path(root)
    builders = {"t2i": build_tiny_sd, "clip": build_tiny_open_clip, "llm": build_tiny_llm,
                "captioner": build_tiny_captioner}
    return {name: str(build(root / name, seed=seed)) for name, build in builders.items()}


# Captions for the tiny captioner's tokenizer: the kind of text a captioner writes.
_CAPTION_CORPUS = [
    "a photo of a handwritten digit on a dark background",
    "a close up of a bird standing in the water",
    "a large crane lifting steel beams at a construction site",
    "a cat sitting on a wooden table next to a cup",
    "a blurry picture of a white number on black paper",
    "two people walking a dog along the beach at sunset",
]
_CAPTION_SPECIALS = ["<s>", "</s>", "<pad>"]


def build_tiny_captioner(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny VisionEncoderDecoderModel (ViT encoder + GPT-2 decoder) for image captioning.

    Saved with its image processor (32 px RGB) and a locally trained byte-level BPE tokenizer,
    so that ``AutoModelForImageTextToText`` / ``AutoImageProcessor`` / ``AutoTokenizer``
    load it from the folder like a real captioner (e.g. a ViT-GPT2 or BLIP checkpoint).
    """
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    folder = Path(folder)
    tokenizer = _byte_bpe_tokenizer(_CAPTION_CORPUS, _CAPTION_SPECIALS)
    encoder = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    # Generation starts from bos and stops at eos, as in released ViT-GPT2 captioners.
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    with seeded(seed):
        model = VisionEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id = tokenizer.bos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor.save_pretrained(folder)
    return folder
