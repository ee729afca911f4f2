"""synthscale: training visual recognition models on images from text-to-image models.

All logic of the study lives in this package; the notebooks under ``notebooks/`` are thin
records that call into it, and ``dvc.yaml`` runs them through :mod:`lib.runner`.
"""

__version__ = "0.1.0"
