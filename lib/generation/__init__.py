"""Text-to-image generation of the prompt manifest into resumable WebDataset shards.

- :mod:`~lib.generation.core`: the generation loop (:func:`~lib.generation.core.generate`):
  seeds, fixed-shape batches, blank/NSFW retries, shard roll-over.
- :mod:`~lib.generation.runs`: what a run takes, pins and leaves behind: the prompt table,
  ``run.json``, the resume checks, ``manifest.parquet`` and ``dropped.parquet``.
- :mod:`~lib.generation.repair`: before a rank resumes, its damaged shards are set aside
  (:func:`lib.shards.verify`) so their ids are generated again, byte for byte.
- :mod:`~lib.generation.worker`: one process of a run (rank, device, model, its share).
- ``python -m lib.generation`` (:mod:`~lib.generation.__main__`): the worker's command line,
  alone, under torchrun or under srun.
- :mod:`~lib.generation.launch`: the stage's way to run the workers (in process or under
  torchrun) and combine their summaries.
- :mod:`~lib.generation.samples`: the selection of stored samples the notebook shows.

The shard format itself (tars, completion markers, reading back) is :mod:`lib.shards`.
"""
