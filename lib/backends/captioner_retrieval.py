"""A retrieval captioner: for each image, the caption of a fixed collection that a CLIP model
finds most similar to it.

This captioner writes nothing: it *picks* an existing caption (for the mini world, a caption
of the rendered corpus that the mini CLIP was trained on), the way CLIP-retrieval picks
alt texts. It stands in for a generative captioner (BLIP, the ``transformers`` backend) where
none exists, and is named for what it is: its captions can only be as close to an image as
the nearest caption in the collection, and they describe other images.

``model`` is anything the ``open_clip`` CLIP backend loads (a local folder such as the mini
CLIP ``./outputs/zoo/clip``, an architecture with ``pretrained``, or ``hf-hub:...``);
``captions`` is the collection (:func:`read_captions`: a parquet file with a ``caption``
column, a folder holding ``captions.parquet``, or a text file with one caption a line).

The text embeddings of the distinct captions are computed once, when the captioner is built,
and kept. For each image the answer is the caption with the highest cosine similarity to
the image's embedding; ties go to the caption that comes first in the collection. Images
are embedded in batches of exactly ``image_batch_size`` (the last one padded by repeating
its last image) and each image is scored against the captions on its own, so a caption
depends on neither the seed nor the image's batch companions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lib.backends.captioner import CAPTIONER
from lib.backends.clip import create_clip

if TYPE_CHECKING:
    from PIL import Image

CAPTION_COLUMN = "caption"
FOLDER_FILE = "captions.parquet"  # what a folder of captions holds (the mini corpus's layout)


def read_captions(path: str | Path) -> list[str]:
    """The captions of a collection, in file order, each stripped of surrounding blanks.

    ``path`` is a parquet file with a ``caption`` column, a folder holding
    ``captions.parquet``, or a text file with one caption a line (blank lines separate
    nothing and are not captions). A missing file, a parquet file without the column, a
    missing or empty caption in a parquet file, or a collection without any caption fails
    naming the file and saying what it needs.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FOLDER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"caption collection {str(path)!r} does not exist: give a parquet file with a "
            f"{CAPTION_COLUMN!r} column, a folder holding {FOLDER_FILE}, or a text file with "
            "one caption a line (disambiguate.captioner_captions)")
    if path.suffix == ".parquet":
        captions = _parquet_captions(path)
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        captions = [line.strip() for line in lines if line.strip()]
    if not captions:
        raise ValueError(f"caption collection {str(path)!r} holds no caption")
    return captions


def _parquet_captions(path: Path) -> list[str]:
    """The ``caption`` column of a parquet file; empty or missing entries fail, named."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if CAPTION_COLUMN not in names:
        raise ValueError(f"caption collection {str(path)!r} has no {CAPTION_COLUMN!r} column "
                         f"(columns: {', '.join(names)})")
    values = pq.read_table(path, columns=[CAPTION_COLUMN]).column(0).to_pylist()
    captions = [v.strip() if isinstance(v, str) else "" for v in values]
    empty = [i for i, c in enumerate(captions) if not c]
    if empty:
        raise ValueError(f"caption collection {str(path)!r}: {len(empty)} of {len(captions)} "
                         f"captions are missing or empty (rows {empty[:5]}...); remove them")
    return captions


@CAPTIONER.register("retrieval")
class RetrievalCaptioner:
    """A CLIP model and the unit-norm text embeddings of a caption collection."""

    def __init__(
        self,
        model: str,
        captions: str,
        pretrained: str | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        image_batch_size: int = 16,
    ):
        if batch_size < 1 or image_batch_size < 1:
            raise ValueError(f"batch_size and image_batch_size must be >= 1, got "
                             f"{batch_size}, {image_batch_size}")
        every = read_captions(captions)
        #: The distinct captions in order of first appearance: the candidates, in tie order.
        self.texts: list[str] = list(dict.fromkeys(every))
        self.num_captions = len(every)
        self.captions_source = str(captions)
        self.clip = create_clip("open_clip", model=model, pretrained=pretrained, device=device,
                                batch_size=batch_size)
        self.model_id = self.clip.model_id
        self.image_batch_size = image_batch_size
        #: [len(texts), embed_dim] float32, unit norm: computed once, kept.
        self.text_embeddings: np.ndarray = self.clip.encode_texts(self.texts).numpy()

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Unit-norm image embeddings [len(images), embed_dim], in fixed-shape batches."""
        rgb = [im.convert("RGB") for im in images]
        b = self.image_batch_size
        chunks = []
        for start in range(0, len(rgb), b):
            batch = rgb[start : start + b]
            padded = batch + [batch[-1]] * (b - len(batch))
            chunks.append(self.clip.encode_images(padded).numpy()[: len(batch)])
        dim = self.text_embeddings.shape[1]
        return np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)

    def retrieve(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(index into :attr:`texts`, cosine similarity) of the best caption of each image.

        Each image is scored on its own (one matrix-vector product of a fixed shape);
        ``np.argmax`` takes the first of equal maxima, so ties go to the earlier caption.
        """
        best, sims = [], []
        for v in self.embed_images(images):
            scores = self.text_embeddings @ v
            i = int(np.argmax(scores))
            best.append(i)
            sims.append(float(scores[i]))
        return np.asarray(best, dtype=np.int64), np.asarray(sims, dtype=np.float32)

    def caption(self, images: list[Image.Image], seed: int = 0) -> list[str]:
        """The best-matching caption of each image, in order (``seed`` changes nothing:
        retrieval draws no random numbers; the argument keeps the captioner interface)."""
        best, _ = self.retrieve(images)
        return [self.texts[i] for i in best]
