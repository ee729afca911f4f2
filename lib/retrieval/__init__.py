"""The retrieval baseline: a class's images retrieved from the corpus instead of generated.

The Diversify study's retrieval baseline (docs/studies.md): per class, the corpus images the
CLIP model finds most similar to the class's query, each image given to one class at most,
written in exactly the format of a generation run so that training reads them as it reads
generated images.

- :mod:`~lib.retrieval.corpus`: the corpus folder (``images.npy``, ``captions.parquet``);
- :mod:`~lib.retrieval.select`: the queries, the embeddings, the assignment rule, precision;
- :mod:`~lib.retrieval.sets`: :func:`retrieve_set`, the folder (shards, manifest, run.json,
  ``retrieval.json``: the summary), resumable;
- ``python -m lib.retrieval --out DIR --multiplier M`` (:mod:`~lib.retrieval.__main__`): the
  active profile's classes, corpus and CLIP from params.yaml.
"""

from lib.retrieval.corpus import RetrievalCorpus, load_retrieval_corpus
from lib.retrieval.select import RetrievalShortfall, assign, class_queries
from lib.retrieval.sets import STRATEGY, retrieve_set, sample_id

__all__ = ["RetrievalCorpus", "load_retrieval_corpus", "RetrievalShortfall", "assign",
           "class_queries", "STRATEGY", "retrieve_set", "sample_id"]
