"""Backends behind one registry per kind of component.

Each kind has its own module holding its registry and factory, which imports (and so
registers) only the backends of that kind: :mod:`lib.backends.t2i` (``create_t2i``),
:mod:`lib.backends.clip` (``create_clip``), :mod:`lib.backends.llm` (``create_llm``),
:mod:`lib.backends.classifier` (``create_classifier``) and :mod:`lib.backends.captioner`
(``create_captioner``). A stage imports the kinds it uses, so it loads no other backend.
An unknown backend name fails with the list of valid ones. Loading helpers shared by the
backends are in :mod:`lib.backends.loading`.
"""

# TEMPORARY (issue 11): re-exports so that call sites not yet moved to the per-kind modules
# keep working while the branches merge. Remove once every caller imports
# lib.backends.<kind>; nothing new may use them.
from lib.backends.captioner import CAPTIONER, create_captioner  # noqa: E402,F401
from lib.backends.classifier import CLASSIFIER, create_classifier  # noqa: E402,F401
from lib.backends.clip import CLIP, create_clip  # noqa: E402,F401
from lib.backends.llm import LLM, create_llm  # noqa: E402,F401
from lib.backends.t2i import T2I, create_t2i  # noqa: E402,F401
