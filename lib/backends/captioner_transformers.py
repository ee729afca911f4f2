"""Image captioning with a transformers image-to-text model (hub id or local folder).

Used by the "captions of real images" prompt strategy. ``model`` is anything that
``AutoModelForImageTextToText`` loads and that captions from pixels alone: a
VisionEncoderDecoderModel (ViT-GPT2 style) or BLIP (``BlipForConditionalGeneration``). The
folder must also hold an image processor config and a tokenizer; they are loaded with
``AutoImageProcessor`` and ``AutoTokenizer`` rather than ``AutoProcessor``, which returns
only the tokenizer for vision-encoder-decoder checkpoints (they have no processor config).
Decoding is greedy, so captions depend on neither the seed nor the batch composition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lib.backends.captioner import CAPTIONER
from lib.backends.loading import check_local_model, torch_dtype

if TYPE_CHECKING:
    from PIL import Image


@CAPTIONER.register("transformers")
class TransformersCaptioner:
    """An image-to-text model in eval mode with its image processor and tokenizer."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        max_new_tokens: int = 20,
        batch_size: int = 16,
        dtype: str = "float32",
    ):
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        check_local_model(model, "captioner")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}"
            )
        self.image_processor = AutoImageProcessor.from_pretrained(model)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype(dtype))
        self.model.to(device).eval()
        self.dtype = torch_dtype(dtype)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.model_id = model

    def caption(self, images: list[Image.Image], seed: int = 0) -> list[str]:
        """One caption per image, in order; greedy decoding in batches of ``batch_size``.

        ``seed`` seeds torch's RNG inside ``fork_rng`` (the caller's RNG is left as it was) so
        that a checkpoint whose generation config asks for sampling is still reproducible;
        greedy decoding itself draws no random numbers.
        """
        captions: list[str] = []
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
                pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
                out = self.model.generate(
                    pixel_values=pixels.to(self.device, self.dtype),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                )
                texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
                captions.extend(t.strip() for t in texts)
        return captions
