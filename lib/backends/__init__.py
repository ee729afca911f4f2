"""Backends behind one registry per kind of component.

Each kind has its own module holding its registry and factory, which imports (and so
registers) only the backends of that kind: :mod:`lib.backends.t2i` (``create_t2i``),
:mod:`lib.backends.clip` (``create_clip``), :mod:`lib.backends.llm` (``create_llm``),
:mod:`lib.backends.classifier` (``create_classifier``), :mod:`lib.backends.captioner`
(``create_captioner``) and :mod:`lib.backends.finetune` (``create_finetuner``: text-to-image
fine-tuners). A stage imports the kinds it uses, so it loads no other backend.
An unknown backend name fails with the list of valid ones. Loading helpers shared by the
backends are in :mod:`lib.backends.loading`.
"""
