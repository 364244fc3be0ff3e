"""The paper's eight metrics per task, per draw, and their mean ± SD over draws.

Definitions (label 1 = positive: invasive / high grade; thresholded metrics use the model's
predicted class ``pred_<task>`` (argmax of the softmax, p > 0.5); score metrics use ``p_<task>``):

==================  ======================================================================
sensitivity         TP / (TP + FN)
specificity         TN / (TN + FP)
accuracy            (TP + TN) / N
g_mean              sqrt(sensitivity * specificity)
balanced_accuracy   (sensitivity + specificity) / 2  (= sklearn balanced_accuracy_score(y_true,
                    y_pred); the released code passed (y_pred, y_true) for grade, which gives
                    (PPV + NPV) / 2 instead)
mcc                 Matthews correlation coefficient (0 when a margin of the table is empty)
auprc               average precision of the *scores* (sklearn average_precision_score)
auc                 area under the ROC curve of the scores (ties count 1/2)
auprc_hard          average precision of the hard 0/1 predictions: what the released code
                    computed and the paper's AUPRC column reports; kept only to compare like
                    for like, not a metric to report as AUPRC
==================  ======================================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from tcl.evaluation.stats import check_labels, check_labels_any, check_scores
from tcl.tasks import PREDICTION_COLUMNS, TASKS
from tcl.utils import TclError

# The paper's eight metrics, in its column order; names match the `metric` column of
# tcl/reference/paper_table{2,3}.csv.
PAPER_METRICS: tuple[str, ...] = (
    "sensitivity",
    "specificity",
    "accuracy",
    "g_mean",
    "balanced_accuracy",
    "mcc",
    "auprc",
    "auc",
)
METRICS: tuple[str, ...] = PAPER_METRICS + ("auprc_hard",)


def task_metrics(y_true: object, score: object, y_pred: object) -> dict[str, float]:
    """All metrics of one task on one test set.

    ``y_true`` [n] 0/1 labels (both classes present), ``score`` [n] p(class 1), finite,
    ``y_pred`` [n] the predicted class 0/1. Returns ``{metric: value}`` for every name in
    ``METRICS``.
    """
    # imported here: tcl.training.train (and so tcl predict) needs this module's column names, not
    # scikit-learn, whose import costs most of a second
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = check_labels(y_true)
    s = check_scores(score, y.size, "score")
    pred = check_labels_any(y_pred, y.size, "y_pred")
    tp = float(np.sum((y == 1) & (pred == 1)))
    tn = float(np.sum((y == 0) & (pred == 0)))
    fp = float(np.sum((y == 0) & (pred == 1)))
    fn = float(np.sum((y == 1) & (pred == 0)))
    sensitivity = tp / (tp + fn)
    specificity = tn / (tn + fp)
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    mcc = (tp * tn - fp * fn) / math.sqrt(denominator) if denominator > 0 else 0.0
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "accuracy": (tp + tn) / y.size,
        "g_mean": math.sqrt(sensitivity * specificity),
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "mcc": mcc,
        "auprc": float(average_precision_score(y, s)),
        "auc": float(roc_auc_score(y, s)),
        "auprc_hard": float(average_precision_score(y, pred)),
    }


def check_predictions(predictions: pd.DataFrame, what: str = "predictions") -> None:
    """Raise TclError naming ``what`` unless the table has every predictions.csv column."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise TclError(f"{what}: missing column(s) {', '.join(missing)}")
    if predictions.empty:
        raise TclError(f"{what}: no rows")
    dup = predictions.duplicated(["draw", "patient_id"])
    if dup.any():
        ids = predictions.loc[dup, "patient_id"].astype(str)
        raise TclError(f"{what}: patient(s) listed twice in one draw: {', '.join(ids[:5])}")


def run_metrics(predictions: pd.DataFrame, what: str = "predictions") -> pd.DataFrame:
    """Metrics of one run's predictions table, long format.

    ``predictions`` has the predictions.csv columns (one or several draws). Returns a frame
    with columns ``draw, task, metric, value``: one row per draw × task × metric in ``METRICS``.
    ``what`` (e.g. the file path) names the table in error messages.
    """
    check_predictions(predictions, what)
    rows = []
    for draw, table in predictions.groupby("draw", sort=True):
        for task in TASKS:
            try:
                values = task_metrics(table[task], table[f"p_{task}"], table[f"pred_{task}"])
            except TclError as error:
                raise TclError(f"{what}, draw {draw}, task {task}: {error}") from None
            rows += [(int(draw), task, metric, values[metric]) for metric in METRICS]
    return pd.DataFrame(rows, columns=["draw", "task", "metric", "value"])


def summarize_draws(
    per_draw: pd.DataFrame,
    expected_draws: Iterable[int] = (0, 1, 2),
    by: tuple[str, ...] = ("config", "task", "metric"),
) -> pd.DataFrame:
    """Mean ± SD over draws of a long per-draw table (columns ``*by, draw, value``).

    A group is ``complete`` only when it has a value for every draw in ``expected_draws``. An
    incomplete group is *not* averaged over fewer draws: its ``mean`` and ``sd`` are NaN and
    ``note`` names the missing draws (and the mean of the draws present, for information).
    SD is the sample SD (ddof 1) over draws. Columns: ``*by, mean, sd, n_draws, complete, note``.
    """
    expected = sorted(set(int(d) for d in expected_draws))
    rows = []
    for key, group in per_draw.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        present = sorted(int(d) for d in group["draw"].unique())
        values = group.sort_values("draw")["value"].to_numpy(dtype=np.float64)
        missing = [d for d in expected if d not in present]
        if missing:
            mean = sd = math.nan
            note = (
                f"missing draw(s) {', '.join(map(str, missing))}; mean of the "
                f"{len(present)} present = {np.mean(values):.4f} (not reported as the mean)"
            )
        else:
            mean = float(np.mean(values))
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            note = ""
        rows.append((*key, mean, sd, len(present), not missing, note))
    return pd.DataFrame(rows, columns=[*by, "mean", "sd", "n_draws", "complete", "note"])
