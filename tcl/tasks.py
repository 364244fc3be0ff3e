"""What a prediction is, in one place: the two tasks, the paper's decision rule and the columns
of both predictions tables (``predictions.csv`` of a training run and of the radiomics
reference; ``python -m tcl predict``'s output). NumPy only, so that every command can import
it without the start-up cost of scipy.stats (tcl.evaluation.metrics re-exports it).
"""

from __future__ import annotations

import numpy as np

# Our column names for the two tasks ("grade" in the paper = "high_grade" here).
TASKS: tuple[str, ...] = ("invasion", "high_grade")
# The paper's name for each task, which is also the key of its logits in the networks' outputs
# (tcl.models): the one place the mapping lives.
PAPER_TASK: dict[str, str] = {"invasion": "invasion", "high_grade": "grade"}
TASK_FROM_PAPER: dict[str, str] = {paper: ours for ours, paper in PAPER_TASK.items()}

# The paper's rule, the argmax of a two-class softmax: class 1 when its probability exceeds 0.5,
# so p = 0.5 exactly is class 0. Recorded in model.json and predict.json as text.
DECISION_RULE = "p > 0.5"

# A test patient's row in predictions.csv (training runs, radiomics), in this order.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "draw",
    "p_invasion",
    "p_high_grade",
    "invasion",
    "high_grade",
    "pred_invasion",
    "pred_high_grade",
)

# A patient's row in the output of ``python -m tcl predict``: no draw, and the labels only where
# the manifest has them (added after these columns).
PREDICT_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "p_invasion",
    "p_high_grade",
    "pred_invasion",
    "pred_high_grade",
)


def decide(probability: np.ndarray) -> np.ndarray:
    """The paper's classes (:data:`DECISION_RULE`) of probabilities [N] → int [N] of 0/1."""
    return (np.asarray(probability) > 0.5).astype(int)
