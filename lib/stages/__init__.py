"""One module per DVC stage: ``run(cfg)`` does the stage's work and returns what the notebook
shows. The notebooks call these; the stages' files are their declared outputs.

Importing a stage in a notebook kernel started by ``python -m lib.runner`` ties the kernel's
life to the runner's (:func:`lib.processes.die_with_runner`): the kernel runs in its own
session, so a killed stage would otherwise leave it, and what it started, running."""

from lib.processes import die_with_runner

die_with_runner()
