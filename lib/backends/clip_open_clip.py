"""CLIP scoring with open_clip: any architecture + pretrained tag, or a local folder.

``model`` is an open_clip architecture name (``"ViT-L-14"`` with ``pretrained="openai"``) or
``"local-dir:<folder>"`` holding ``open_clip_config.json`` and weights (open_clip's hub
format, as written by :func:`lib.zoo.build_tiny_open_clip`); a plain path to such a folder is
read the same way. Embeddings are L2-normalised, so similarities are cosines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lib.backends import CLIP
from lib.backends.t2i_diffusers import looks_like_path

if TYPE_CHECKING:
    from PIL import Image

LOCAL_PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"


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


@CLIP.register("open_clip")
class OpenClipScorer:
    """An open_clip model in eval mode with its eval transform and tokenizer."""

    def __init__(
        self, model: str, pretrained: str | None = None, device: str = "cpu", batch_size: int = 64
    ):
        import open_clip

        name = open_clip_name(model)
        net, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device
        )
        self.model = net.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
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

    def similarity(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """Cosine similarities, shape (len(images), len(texts))."""
        return self.encode_images(images).float() @ self.encode_texts(texts).float().T

    def _cat(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)
