"""A local transformers chat model (hub id or folder written by ``save_pretrained``).

Greedy decoding when ``temperature == 0``; otherwise sampling seeded per call. ``generate``
takes no ``torch.Generator``, so the seed is applied inside ``torch.random.fork_rng``: the
global RNG of the caller is left as it was.
"""

from __future__ import annotations

from typing import Any

import torch

from lib.backends.llm import LLM
from lib.backends.loading import check_local_model, torch_dtype


@LLM.register("transformers")
class TransformersChat:
    """A causal LM with a chat template; ``chat`` returns only the newly generated text."""

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_local_model(model, "LLM")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if not self.tokenizer.chat_template:
            raise ValueError(f"tokenizer of LLM {model!r} has no chat_template")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype(dtype))
        self.model.to(device).eval()
        self.device = device
        self.model_id = model

    def chat(
        self,
        messages: list[dict],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int = 0,
    ) -> str:
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        n_prompt = inputs["input_ids"].shape[1]
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                **_decoding(temperature, top_p, self.tokenizer),
            )
        return self.tokenizer.decode(out[0, n_prompt:], skip_special_tokens=True)


def _decoding(temperature: float, top_p: float, tokenizer: Any) -> dict[str, Any]:
    """generate() options: greedy at temperature 0 (sampling options would only warn)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if temperature == 0:
        return {"do_sample": False, "pad_token_id": pad}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "pad_token_id": pad}
