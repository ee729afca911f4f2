"""One module per DVC stage: ``run(cfg)`` does the stage's work and returns what the notebook
shows. The notebooks call these; the stages' files are their declared outputs."""
