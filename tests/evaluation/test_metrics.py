"""The eight metrics on hand-computed examples; the released code's two defects made visible."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from tcl.evaluation.metrics import (
    METRICS,
    PAPER_METRICS,
    TASKS,
    run_metrics,
    summarize_draws,
    task_metrics,
)
from tcl.tasks import PAPER_TASK
from tcl.utils import TclError

# 3 positives, 5 negatives. Predicted class = score > 0.5 (argmax of a two-class softmax):
#   positives 0.9 -> 1, 0.8 -> 1, 0.3 -> 0      TP = 2, FN = 1
#   negatives 0.7 -> 1, 0.6 -> 1, 0.2, 0.1, 0.05 -> 0   FP = 2, TN = 3
Y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
SCORE = np.array([0.9, 0.8, 0.3, 0.7, 0.6, 0.2, 0.1, 0.05])
PRED = (SCORE > 0.5).astype(int)


def test_metrics_on_a_hand_computed_example():
    values = task_metrics(Y, SCORE, PRED)
    assert set(values) == set(METRICS)
    assert values["sensitivity"] == pytest.approx(2 / 3)
    assert values["specificity"] == pytest.approx(3 / 5)
    assert values["accuracy"] == pytest.approx(5 / 8)
    assert values["g_mean"] == pytest.approx(math.sqrt(2 / 3 * 3 / 5))
    assert values["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 5) / 2)
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2) / sqrt(4*3*5*4)
    assert values["mcc"] == pytest.approx(4 / math.sqrt(240))
    # AUC: 0.9 and 0.8 beat all 5 negatives, 0.3 beats 3 -> 13 / 15
    assert values["auc"] == pytest.approx(13 / 15)
    # AP of the scores: positives at ranks 1, 2, 5 -> (1/1 + 2/2 + 3/5) / 3
    assert values["auprc"] == pytest.approx((1 + 1 + 3 / 5) / 3)
    # AP of hard labels (released code): one step at recall 2/3, precision 2/4, then recall 1 at
    # precision 3/8 -> 2/3 * 1/2 + 1/3 * 3/8
    assert values["auprc_hard"] == pytest.approx(2 / 3 * 1 / 2 + 1 / 3 * 3 / 8)
    assert values["auprc_hard"] < values["auprc"]


def test_balanced_accuracy_argument_order():
    values = task_metrics(Y, SCORE, PRED)
    assert values["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y, PRED))
    # the released code's grade call, balanced_accuracy_score(pred, label), is (PPV + NPV) / 2:
    # PPV = 2/4, NPV = 3/4 -> 0.625, not (2/3 + 3/5) / 2 = 0.6333
    swapped = balanced_accuracy_score(PRED, Y)
    assert swapped == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert abs(values["balanced_accuracy"] - swapped) > 0.005


def test_auprc_from_scores_differs_from_hard_labels_when_ranking_beats_threshold():
    # every positive outranks every negative, but the threshold misses two positives
    y = np.array([1, 1, 1, 0, 0, 0])
    score = np.array([0.45, 0.4, 0.9, 0.3, 0.2, 0.1])
    pred = (score > 0.5).astype(int)
    values = task_metrics(y, score, pred)
    assert values["auprc"] == 1.0 and values["auc"] == 1.0
    assert values["auprc_hard"] == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 6)


def test_mcc_is_zero_when_nothing_is_predicted_positive():
    values = task_metrics(Y, SCORE, np.zeros_like(Y))
    assert values["mcc"] == 0.0 and values["sensitivity"] == 0.0 and values["specificity"] == 1.0


@pytest.mark.parametrize(
    "y, score, pred, message",
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], [0, 0, 0], "single class"),
        ([1, 0, 1], [0.1, np.nan, 0.3], [0, 0, 0], "NaN/inf"),
        ([1, 0, 1], [0.1, 0.2], [0, 0, 0], "length mismatch"),
        ([1, 0, 1], [0.1, 0.2, 0.3], [0, 2, 0], "y_pred must hold only 0/1"),
    ],
)
def test_task_metrics_refuses_bad_input(y, score, pred, message):
    with pytest.raises(TclError, match=message):
        task_metrics(np.array(y), np.array(score), np.array(pred))


def test_metric_and_task_names_match_the_packaged_paper_tables():
    for name in ("paper_table2.csv", "paper_table3.csv"):
        with resources.as_file(resources.files("tcl") / "reference" / name) as path:
            table = pd.read_csv(path)
        assert tuple(dict.fromkeys(table["metric"])) == PAPER_METRICS
        assert set(table["task"]) == set(PAPER_TASK.values())
    assert set(PAPER_TASK) == set(TASKS)


def predictions(draw: int, seed: int, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    high_grade = (rng.random(n) < 0.4).astype(int)
    high_grade[:2], high_grade[2:4] = 1, 0
    invasion = high_grade * (rng.random(n) < 0.5)
    invasion[0] = 1
    p_inv = np.clip(0.6 * invasion + rng.uniform(0, 0.5, n), 0, 1)
    p_grade = np.clip(0.5 * high_grade + rng.uniform(0, 0.6, n), 0, 1)
    return pd.DataFrame({
        "patient_id": [f"P{i:04d}" for i in range(n)], "draw": draw,
        "p_invasion": p_inv, "p_high_grade": p_grade, "invasion": invasion,
        "high_grade": high_grade, "pred_invasion": (p_inv > 0.5).astype(int),
        "pred_high_grade": (p_grade > 0.5).astype(int),
    })  # fmt: skip


def test_run_metrics_long_format_per_draw_and_task():
    table = pd.concat([predictions(0, 1), predictions(1, 2)], ignore_index=True)
    long = run_metrics(table)
    assert list(long.columns) == ["draw", "task", "metric", "value"]
    assert len(long) == 2 * len(TASKS) * len(METRICS)
    one = long[(long["draw"] == 1) & (long["task"] == "high_grade")].set_index("metric")["value"]
    expected = task_metrics(
        table.high_grade[40:], table.p_high_grade[40:], table.pred_high_grade[40:]
    )
    assert one.to_dict() == pytest.approx(expected)


def test_run_metrics_names_the_table_and_draw_on_error():
    table = predictions(2, 3)
    table["high_grade"] = 0
    with pytest.raises(TclError, match="runs/efmt/draw2.*draw 2, task high_grade.*single class"):
        run_metrics(table, what="runs/efmt/draw2/predictions.csv")
    with pytest.raises(TclError, match="missing column.*p_invasion"):
        run_metrics(table.drop(columns="p_invasion"))


def test_summary_is_mean_sd_over_draws_and_flags_a_missing_draw():
    per_draw = pd.DataFrame({
        "config": ["proposed"] * 3 + ["efmt"] * 2, "task": "invasion", "metric": "auc",
        "draw": [0, 1, 2, 0, 2], "value": [0.90, 0.92, 0.94, 0.80, 0.82],
    })  # fmt: skip
    summary = summarize_draws(per_draw, expected_draws=(0, 1, 2)).set_index("config")
    assert summary.loc["proposed", "mean"] == pytest.approx(0.92)
    assert summary.loc["proposed", "sd"] == pytest.approx(0.02)
    assert summary.loc["proposed", "complete"] and summary.loc["proposed", "n_draws"] == 3
    assert not summary.loc["efmt", "complete"] and summary.loc["efmt", "n_draws"] == 2
    assert np.isnan(summary.loc["efmt", "mean"]) and np.isnan(summary.loc["efmt", "sd"])
    assert "missing draw(s) 1" in summary.loc["efmt", "note"]
