"""A trained network put to use: the self-contained saved model (``saved``), prediction for new
patients (``predict``) and integrated-gradients maps in each patient's own grid (``explain``)."""
