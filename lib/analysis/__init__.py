"""The study's analysis: what the ``analyze`` stage computes from the other stages' outputs.

* :mod:`lib.analysis.recognizability`: the real-only judge and the share of synthetic images
  it recognises, per prompt strategy and class;
* :mod:`lib.analysis.sweep`: the sweep's runs as one table, aggregated over seeds, and the
  headline numbers (``metrics/headline.json``).
"""
