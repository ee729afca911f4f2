"""Classifier training: datasets of image arrays, training, evaluation, checkpoints, and the
study's classifier runs built on them.

The core is pure except for what is passed in (device, paths); only
:mod:`~lib.training.inputs` and :mod:`~lib.training.classifier_run` read the stages' files
and write outputs. Every random choice is derived from the seed and the step number
(:mod:`lib.seeding`), never from a global stream, so

* two runs with the same seed give identical weights (on CPU), and
* a run interrupted and resumed from its checkpoint ends with exactly the weights of an
  uninterrupted run: batches are drawn from ``numpy_rng(seed, "batch", step)`` and the
  forward pass (dropout, drop-path) runs under a torch seed derived from ``(seed, step)``.

Batches mix real and synthetic images in a fixed ratio; when the model has auxiliary norms
(:mod:`lib.nn.aux_norm`) the synthetic ones are routed through them. Augmentation
(:mod:`lib.nn.augment`) is applied per batch on tensors with a generator seeded from
``(seed, "augment", step)``.

Modules, by concept:

* :mod:`~lib.training.datasets`: ``ImageArrayDataset`` (uint8 images served as normalised
  tensors) and ``fetch_batch``;
* :mod:`~lib.training.recipe`: ``RunConfig`` (the settings a checkpoint must agree with),
  their checks, ``steps_for_epochs``;
* :mod:`~lib.training.batches`: the real and synthetic samples of each step;
* :mod:`~lib.training.loop`: ``train_classifier``;
* :mod:`~lib.training.history`: the rows of the training curve;
* :mod:`~lib.training.checkpoints`: the resumable run state, ``save_checkpoint``,
  ``load_plain_timm``;
* :mod:`~lib.training.evaluation`: ``predict``, ``evaluate``, ``score_logits``;
* :mod:`~lib.training.distributed`: data-parallel training under torchrun (how it works, and
  its helpers);
* :mod:`~lib.training.inputs`: ``load_inputs``, the images a run of the study trains and is
  evaluated on (selected from the classes stage's manifests and the generated shards);
* :mod:`~lib.training.classifier_run`: ``train_and_evaluate``, one run of the study (the
  ``train`` stage and each point of the ablation grid);
* :mod:`~lib.training.group_loop`, :mod:`~lib.training.group_batches`,
  :mod:`~lib.training.group_run`: training groups, several runs of the small CNNs trained
  together in one loop, each bit for bit as alone (``train_group``,
  ``train_and_evaluate_group``; the sweep's ``sweep.group_size``).
"""
