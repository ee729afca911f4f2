"""``python -m lib.mini.corpus``: see :mod:`lib.mini.corpus.cli`."""

from lib.mini.corpus.cli import main

main()
