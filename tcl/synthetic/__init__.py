"""The built-in synthetic cohort: its latent model and renderer (``cohort``), how much of the
labels its images can carry (``ceilings``), and the pointing game that checks where a network's
explanation maps point against the signs the renderer planted (``pointing``)."""
