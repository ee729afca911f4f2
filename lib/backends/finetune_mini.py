"""Fine-tuning the mini world's text-to-image model, registered as the fine-tuner ``mini``.

The images arrive as pixels 0..255 (the real digits' PNGs are the levels 0..16 scaled by
255/16) and are converted back to the model's 17 levels; images with a pixel off those
values are rounded to the nearest level and counted (``off_grid_images``). The training is
:func:`lib.mini.t2i_finetuning.finetune_mini_t2i`; the saved folder is a
:class:`lib.mini.t2i.MiniT2IPipeline`, served by the text-to-image backend ``mini``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lib.backends.finetune import FINETUNERS
from lib.backends.loading import check_local_model


@FINETUNERS.register("mini")
class MiniFinetuner:
    """Fine-tunes the mini pipeline in folder ``base`` (the ``zoo`` stage's ``t2i``).

    One torch thread by default: on a machine whose cores other jobs also use, the mini UNet
    trained 3-4x faster on one thread than on two that wait on each other (measured for
    pretraining, :mod:`lib.mini.t2i_pretraining`, and again for this stage), and the bytes
    of the result do not depend on the machine's core count.
    """

    image_mode = "L"
    t2i_backend = "mini"

    def __init__(self, base: str, device: str = "cpu", progress: bool = True,
                 num_threads: int | None = 1):
        check_local_model(base, "mini text-to-image model")
        self.base, self.device, self.progress = base, device, progress
        self.num_threads = num_threads

    def finetune(self, pixels: np.ndarray, captions: list[str], folder: str | os.PathLike,
                 **settings: Any) -> dict[str, Any]:
        """Fine-tune on ``pixels`` (uint8 ``[N, H, W]``) captioned by ``captions``; the
        ``settings`` of :func:`lib.mini.t2i_finetuning.finetune_mini_t2i`."""
        # Imported here: lib.mini is slow to import and only this backend needs it.
        from lib.mini.t2i import pixels_to_levels
        from lib.mini.t2i_finetuning import finetune_mini_t2i

        levels, off_grid = pixels_to_levels(pixels)
        metrics = finetune_mini_t2i(self.base, levels, captions, folder, device=self.device,
                                    progress=self.progress, num_threads=self.num_threads,
                                    **settings)
        return {**metrics, "off_grid_images": off_grid}
