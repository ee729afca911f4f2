"""The denoisers of the mini text-to-image model: a conditional UNet or a diffusion transformer.

Both are diffusers models, read the same conditioning (MiniLM's token states ``[B, L, 384]``
with their mask: pad states zeroed and masked out of the cross-attention) and predict on the
same one-channel 8x8 images, so one training loop (:mod:`lib.mini.t2i_pretraining`) and one
pipeline (:class:`lib.mini.t2i.MiniT2IPipeline`) serve either. They differ in kind:

* ``unet`` (:class:`UNetSpec`): ``UNet2DConditionModel``, convolutional residual blocks at
  8x8 and 4x4, cross-attention at 4x4 only, and MiniLM's sentence embedding (the masked mean
  of the states) added to the timestep embedding. The pipeline's component ``unet``.
* ``dit`` (:class:`DiTSpec`): ``PixArtTransformer2DModel``, a DiT: the image cut into
  ``patch_size`` x ``patch_size`` patches (16 tokens at patch 2), fixed sin-cos positions, a
  stack of transformer blocks (self-attention, cross-attention to the projected token states,
  MLP), the timestep entering every block through PixArt-alpha's shared adaLN ("adaLN-single").
  The text enters through cross-attention only (PixArt's design: no pooled embedding). The
  pipeline's component ``transformer``, as in diffusers' own PixArt and SD3 pipelines.

Why PixArt's class: diffusers 0.42's ``DiTTransformer2DModel`` is class-conditional (labels, no
cross-attention), and ``Transformer2DModel`` with patches is the same adaLN-single block with
less of the text path; ``PixArtTransformer2DModel`` is diffusers' text-conditioned DiT.

Sizes (1 thread of this project's shared 2-core CPU, batch 128, forward + backward + AdamW):
the default UNet has 1,229,729 parameters, the default DiT (width 128 = 4 heads x 32, 4
blocks, patch 2) 1,273,988, and they train at about the same speed (2.0 and 2.3 steps/s in
the same session); at patch 1 (64 tokens) the same DiT is 3-4 times slower (0.6 steps/s).
Measured runs: :mod:`lib.mini.t2i_pretraining`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import PixArtTransformer2DModel, UNet2DConditionModel

#: The pipeline component each kind of denoiser is registered as.
COMPONENTS = ("unet", "transformer")


def build_unet(
    *,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    attention_heads: int = 8,
    norm_num_groups: int = 8,
    cross_attention_dim: int = 384,
    sample_size: int = 8,
    pooled_text: bool = True,
) -> UNet2DConditionModel:
    """A one-channel ``UNet2DConditionModel`` with cross-attention below the top level only.

    The first level (full resolution) is convolutional; every lower level, the middle block
    included, has cross-attention on the text states. With ``pooled_text`` the mean of the
    text states (MiniLM's sentence embedding) is also added to the timestep embedding
    (``class_embed_type="projection"``), which conditions every residual block, the
    full-resolution ones included. Uses torch's global RNG for the initialisation (seed it
    around the call).
    """
    n = len(block_out_channels)
    if n < 2:
        raise ValueError(f"block_out_channels needs at least 2 levels, got {block_out_channels}")
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        # diffusers' legacy name: this is the number of heads.
        attention_head_dim=attention_heads,
        norm_num_groups=norm_num_groups,
        class_embed_type="projection" if pooled_text else None,
        projection_class_embeddings_input_dim=cross_attention_dim if pooled_text else None,
    )


def build_dit(
    *,
    width: int = 128,
    layers: int = 4,
    heads: int = 4,
    patch_size: int = 2,
    caption_channels: int = 384,
    sample_size: int = 8,
) -> PixArtTransformer2DModel:
    """A one-channel ``PixArtTransformer2DModel``: ``layers`` blocks of ``width`` channels.

    ``heads`` attention heads of ``width // heads`` channels; the text states
    (``caption_channels`` wide) are projected to ``width`` before the cross-attention. No
    resolution/aspect-ratio conditioning (PixArt's ``use_additional_conditions``: one size
    here). Uses torch's global RNG for the initialisation (seed it around the call).
    """
    if width % heads:
        raise ValueError(f"width {width} is not a multiple of heads {heads}")
    if sample_size % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide the image size {sample_size}")
    return PixArtTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=1,
        out_channels=1,
        num_layers=layers,
        cross_attention_dim=width,
        sample_size=sample_size,
        patch_size=patch_size,
        caption_channels=caption_channels,
        use_additional_conditions=False,
    )


@dataclass(frozen=True)
class UNetSpec:
    """The UNet denoiser's settings (:func:`build_unet`); ``config()`` goes into the training
    record with the keys the UNet's records have always had."""

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_heads: int = 8
    norm_num_groups: int = 8
    pooled_text: bool = True
    name: ClassVar[str] = "unet"
    component: ClassVar[str] = "unet"

    def config(self) -> dict[str, Any]:
        return {
            "block_out_channels": [int(c) for c in self.block_out_channels],
            "layers_per_block": int(self.layers_per_block),
            "attention_heads": int(self.attention_heads),
            "norm_num_groups": int(self.norm_num_groups),
            "pooled_text": bool(self.pooled_text),
        }

    def build(self, cross_attention_dim: int, sample_size: int) -> UNet2DConditionModel:
        return build_unet(**self.config(), cross_attention_dim=cross_attention_dim,
                          sample_size=sample_size)


@dataclass(frozen=True)
class DiTSpec:
    """The transformer denoiser's settings (:func:`build_dit`)."""

    width: int = 128
    layers: int = 4
    heads: int = 4
    patch_size: int = 2
    name: ClassVar[str] = "dit"
    component: ClassVar[str] = "transformer"

    def config(self) -> dict[str, Any]:
        return {"denoiser": self.name, "width": int(self.width), "layers": int(self.layers),
                "heads": int(self.heads), "patch_size": int(self.patch_size)}

    def build(self, cross_attention_dim: int, sample_size: int) -> PixArtTransformer2DModel:
        return build_dit(width=self.width, layers=self.layers, heads=self.heads,
                         patch_size=self.patch_size, caption_channels=cross_attention_dim,
                         sample_size=sample_size)


DenoiserSpec = UNetSpec | DiTSpec


def is_transformer(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the module ``torch.compile`` wrapped) is the transformer kind."""
    return isinstance(getattr(model, "_orig_mod", model), PixArtTransformer2DModel)


def denoise(
    model: torch.nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    states: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The denoiser's prediction for ``x`` at ``t`` given text ``states`` and their ``mask``.

    UNets built with ``pooled_text`` also get the masked mean of the states; the transformer
    gets one timestep per image (a scalar ``t`` is repeated).
    """
    if is_transformer(model):
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return model(x, encoder_hidden_states=states, timestep=t, encoder_attention_mask=mask,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    pooled = None
    if model.config.class_embed_type == "projection":
        m = mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * m).sum(1) / m.sum(1).clamp_min(1)
    return model(
        x, t, encoder_hidden_states=states, encoder_attention_mask=mask, class_labels=pooled
    ).sample
