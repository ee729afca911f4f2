"""The two studies on synthetic data (docs/studies.md): which runs they train
(:mod:`lib.study.spec`), the generations they read (:mod:`lib.study.synth`) and the training
of their runs into one results table (:mod:`lib.study.runs`)."""
