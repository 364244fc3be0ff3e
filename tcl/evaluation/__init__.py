"""Evaluation: the paper's metrics, the statistics behind them (DeLong, Holm, bootstrap), the
evaluation of a finished set of runs, the paper's tables, the notebooks' figures, and the probe of
what the disentangled features hold (``representations``)."""
