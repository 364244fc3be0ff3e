"""Training: the loop (``train``), its augmentation and losses, resumable checkpoints, the device
and kernels it runs on (``runtime``), the run folder (``runs``) and the batched inference loop
that scores the test patients and new ones alike."""
