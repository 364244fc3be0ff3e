"""tcl: joint prediction of meningioma grade and brain invasion via task-aware contrastive learning.

The reproducible artifact of Liu et al., MICCAI 2022 (arXiv:2209.01517). The package holds all the
logic; the numbered notebooks in ``notebooks/`` narrate and plot; ``python -m tcl`` is the
command line.
"""

__version__ = "0.1.0"
