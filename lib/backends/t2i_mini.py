"""Text-to-image with the mini world's own pipeline, registered as the backend ``mini``.

:class:`lib.mini.t2i.MiniT2IPipeline` is a diffusers ``DiffusionPipeline`` that
``AutoPipelineForText2Image`` does not know, so the profile selects this backend by name
(``generate.backend: mini``). The folder (written by the ``zoo`` stage) is read with the
pipeline's own ``from_pretrained``; everything else is the ``diffusers`` backend's
:class:`~lib.backends.t2i_diffusers.DiffusersT2I`: dtype, scheduler swap, device placement and
one CPU ``torch.Generator`` per image, so an image depends on its seed only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lib.backends.t2i import T2I

if TYPE_CHECKING:
    from lib.backends.t2i_diffusers import DiffusersT2I


@T2I.register("mini")
def create_mini_t2i(
    model: str,
    device: str = "cpu",
    dtype: str = "float32",
    scheduler: str | None = None,
    compile: bool = False,
    cpu_offload: bool = False,
) -> DiffusersT2I:
    """The mini text-to-image model in folder ``model``, with ``DiffusersT2I``'s options."""
    # Imported here: lib.backends.t2i imports this module while lib.backends.t2i_diffusers may
    # still be half-imported, and lib.mini.t2i is slow to import.
    from lib.backends.t2i_diffusers import DiffusersT2I
    from lib.mini.t2i import MiniT2IPipeline

    return DiffusersT2I.from_pretrained(
        MiniT2IPipeline, model, device=device, dtype=dtype, scheduler=scheduler,
        compile=compile, cpu_offload=cpu_offload,
    )  # fmt: skip
