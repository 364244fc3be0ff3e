"""`python -m tcl evaluate` on a synthetic runs tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_runs_tree

from tcl.cli import main
from tcl.evaluation.evaluate import evaluate_runs, paper_values
from tcl.evaluation.metrics import METRICS, TASKS, run_metrics
from tcl.evaluation.stats import delong_test, holm
from tcl.utils import TclError


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """A fresh runs tree a test may alter: proposed and efmt × 3 draws, mmoe without draw 1."""
    return write_runs_tree(tmp_path)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The runs tree evaluated once, for the tests that only read the outputs."""
    root = tmp_path_factory.mktemp("evaluated")
    runs = write_runs_tree(root)
    return runs, evaluate_runs(runs, root / "eval")


def test_evaluate_writes_every_output_with_its_columns(evaluated):
    runs, paths = evaluated
    out = paths["delong"].parent
    assert sorted(p.name for p in out.iterdir()) == [
        "delong.csv", "metrics_per_draw.csv", "metrics_summary.csv", "provenance.json",
    ]  # fmt: skip
    assert set(paths) == {"metrics_per_draw", "metrics_summary", "delong", "provenance"}

    per_draw = pd.read_csv(paths["metrics_per_draw"])
    assert list(per_draw.columns) == ["config", "draw", "task", "metric", "value"]
    assert len(per_draw) == (3 + 3 + 2) * len(TASKS) * len(METRICS)
    recomputed = run_metrics(pd.read_csv(runs / "efmt" / "draw1" / "predictions.csv"))
    got = per_draw[(per_draw.config == "efmt") & (per_draw.draw == 1)].reset_index(drop=True)
    np.testing.assert_allclose(got["value"], recomputed["value"], rtol=1e-9)

    summary = pd.read_csv(paths["metrics_summary"])
    assert list(summary.columns)[:7] == [
        "config", "task", "metric", "mean", "sd", "n_draws", "paper",
    ]  # fmt: skip
    assert {"complete", "note"} <= set(summary.columns)
    assert len(summary) == 3 * len(TASKS) * len(METRICS)
    auc = summary[summary.metric == "auc"].set_index(["config", "task"])
    # the paper's numbers, with "grade" mapped to high_grade
    assert auc.loc[("proposed", "invasion"), "paper"] == 0.9787
    assert auc.loc[("proposed", "high_grade"), "paper"] == 0.8870
    assert auc.loc[("efmt", "high_grade"), "paper"] == 0.8137
    assert auc.loc[("mmoe", "invasion"), "paper"] == 0.9425
    complete = auc.loc[("proposed", "invasion")]
    values = per_draw.query("config == 'proposed' and task == 'invasion' and metric == 'auc'")
    assert complete["complete"] and complete["n_draws"] == 3
    assert complete["mean"] == pytest.approx(values["value"].mean())
    assert complete["sd"] == pytest.approx(values["value"].std(ddof=1))
    hard = summary.query("config == 'efmt' and task == 'invasion' and metric == 'auprc_hard'")
    assert hard["paper"].item() == 0.3607 and "like for like" in hard["note"].item()


def test_a_missing_draw_is_flagged_not_averaged(evaluated):
    _, paths = evaluated
    summary = pd.read_csv(paths["metrics_summary"])
    mmoe = summary[summary.config == "mmoe"]
    assert (mmoe["n_draws"] == 2).all() and (~mmoe["complete"]).all()
    assert mmoe["mean"].isna().all() and mmoe["sd"].isna().all()
    assert mmoe["note"].str.contains("missing draw\\(s\\) 1").all()
    assert summary[summary.config != "mmoe"]["complete"].all()
    record = json.loads(paths["provenance"].read_text())
    assert record["missing_runs"] == ["mmoe/draw1"]
    assert "notes" in record["ignored_entries"] and "radiomics" in record["absent_configs"]
    assert len(record["runs"]) == 8 and all(len(r["sha256"]) == 64 for r in record["runs"].values())
    assert "task, draw" in record["holm_family"] or "(task, draw)" in record["holm_family"]


def test_delong_table_pairs_by_patient_and_holm_adjusts_per_task_and_draw(evaluated):
    runs, paths = evaluated
    delong = pd.read_csv(paths["delong"])
    assert list(delong.columns) == [
        "task", "draw", "config", "auc_proposed", "auc_other", "diff", "ci_low", "ci_high",
        "z", "p_value", "p_holm", "family_size", "note",
    ]  # fmt: skip
    # 2 tasks × (draws 0 and 2: efmt, mmoe; draw 1: efmt only)
    assert len(delong) == 2 * (2 + 1 + 2)
    assert set(delong["config"]) == {"efmt", "mmoe"}
    assert (delong["p_holm"] >= delong["p_value"] - 1e-15).all()
    for (_, _), family in delong.groupby(["task", "draw"]):
        np.testing.assert_allclose(family["p_holm"], holm(family["p_value"].to_numpy()))
        assert (family["family_size"] == len(family)).all()
    assert (delong.query("draw == 1")["family_size"] == 1).all()
    # one row recomputed from the files by hand (rows are shuffled differently in each file)
    ref = pd.read_csv(runs / "proposed" / "draw2" / "predictions.csv").sort_values("patient_id")
    other = pd.read_csv(runs / "mmoe" / "draw2" / "predictions.csv").sort_values("patient_id")
    expected = delong_test(ref["high_grade"], ref["p_high_grade"], other["p_high_grade"])
    row = delong.query("task == 'high_grade' and draw == 2 and config == 'mmoe'").iloc[0]
    assert row["z"] == pytest.approx(expected.z) and row["p_value"] == pytest.approx(
        expected.p_value
    )
    assert row["diff"] == pytest.approx(row["auc_proposed"] - row["auc_other"])
    assert row["ci_low"] < row["diff"] < row["ci_high"]


def test_paper_values_hold_both_tables_once():
    paper = paper_values()
    assert set(paper["config"]) == {
        "efmt", "mfmt", "mmoe", "maml", "baseline1", "baseline2", "baseline3", "baseline4",
        "proposed",
    }  # fmt: skip
    assert len(paper) == 9 * 2 * 8 and not paper.duplicated(["config", "task", "metric"]).any()
    assert (paper.loc[paper.config == "proposed", "paper_table"] == "2+3").all()
    assert set(paper["task"]) == {"invasion", "high_grade"}


def test_cli_writes_outputs_and_reports_errors(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["evaluate", str(runs), "--out", str(out)]) == 0
    assert (out / "metrics_summary.csv").is_file()
    # default output folder: the parent of RUNS_DIR (results/<profile>)
    assert main(["evaluate", str(runs)]) == 0
    assert (runs.parent / "delong.csv").is_file()

    empty = tmp_path / "empty_runs"
    empty.mkdir()
    assert main(["evaluate", str(empty), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no runs found" in err and str(empty) in err
    assert not (tmp_path / "none").exists()


def test_patient_mismatch_between_runs_is_an_error_and_writes_nothing(runs, tmp_path):
    path = runs / "efmt" / "draw0" / "predictions.csv"
    table = pd.read_csv(path)
    table.loc[0, "patient_id"] = "P9999"
    table.to_csv(path, index=False)
    out = tmp_path / "eval"
    with pytest.raises(TclError, match="patient mismatch between proposed/draw0 and efmt/draw0"):
        evaluate_runs(runs, out)
    assert not out.exists() or not any(out.iterdir())


def test_draw_column_must_match_its_folder(runs, tmp_path):
    path = runs / "efmt" / "draw2" / "predictions.csv"
    table = pd.read_csv(path)
    table["draw"] = 1
    table.to_csv(path, index=False)
    with pytest.raises(TclError, match="draw2.*folder says draw 2"):
        evaluate_runs(runs, tmp_path / "eval")


def test_a_test_set_with_one_positive_is_reported_not_tested(runs, tmp_path):
    # smoke cohorts can leave a single invasive patient in a draw's test set
    for config in ("proposed", "efmt"):
        path = runs / config / "draw1" / "predictions.csv"
        table = pd.read_csv(path)
        table["invasion"] = (table["patient_id"] == "P1000").astype(int)
        table.to_csv(path, index=False)
    delong = pd.read_csv(evaluate_runs(runs, tmp_path / "eval")["delong"])
    row = delong.query("task == 'invasion' and draw == 1").iloc[0]
    assert np.isnan(row["z"]) and np.isnan(row["p_holm"]) and row["family_size"] == 0
    assert "1 positive / 59 negative" in row["note"]
    assert delong.query("task == 'high_grade' and draw == 1")["z"].notna().all()


def test_summary_is_the_mean_and_sd_of_hand_computed_per_draw_values(tmp_path):
    # Two positives (A, B) and two negatives (C, D) per draw, the same for both tasks.
    # proposed's scores give AUC 1, 3/4 and 1/2 (pairs won: 4, 3 and 2 of 4) and, at p > 0.5,
    # sensitivity 1, 1/2 and 1/2; efmt is perfect in every draw.
    scores = {
        "proposed": ([0.9, 0.8, 0.2, 0.1], [0.9, 0.3, 0.4, 0.1], [0.9, 0.1, 0.4, 0.2]),
        "efmt": ([0.9, 0.8, 0.2, 0.1],) * 3,
    }
    runs = tmp_path / "runs"
    for config, per_draw in scores.items():
        for draw, p in enumerate(per_draw):
            table = pd.DataFrame({"patient_id": ["A", "B", "C", "D"], "draw": draw})
            for task in TASKS:
                table[f"p_{task}"], table[task] = p, [1, 1, 0, 0]
                table[f"pred_{task}"] = (np.array(p) > 0.5).astype(int)
            path = runs / config / f"draw{draw}" / "predictions.csv"
            path.parent.mkdir(parents=True)
            table.to_csv(path, index=False)
    summary = pd.read_csv(evaluate_runs(runs, tmp_path / "eval")["metrics_summary"])
    summary = summary.set_index(["config", "task", "metric"])
    for task in TASKS:
        auc = summary.loc[("proposed", task, "auc")]
        assert (auc["mean"], auc["sd"]) == pytest.approx((0.75, 0.25))
        sensitivity = summary.loc[("proposed", task, "sensitivity")]
        # mean 2/3; deviations 1/3, −1/6, −1/6 → sd √((1/9 + 2/36) / 2) = √(1/12)
        assert (sensitivity["mean"], sensitivity["sd"]) == pytest.approx((2 / 3, (1 / 12) ** 0.5))
        specificity = summary.loc[("proposed", task, "specificity")]
        assert (specificity["mean"], specificity["sd"]) == pytest.approx((1.0, 0.0))
        assert summary.loc[("efmt", task, "auc"), "mean"] == 1.0


def test_auc_intervals_of_one_network_delong_and_bootstrap_agree():
    """Notebook 05's table: per task and draw the AUC inside both intervals, and the two
    intervals close to each other at ~100 test patients (the normal approximation holds)."""
    from tcl.evaluation.evaluate import auc_intervals
    from tcl.evaluation.stats import mann_whitney_auc

    rng = np.random.default_rng(0)
    predictions = {}
    for draw in (0, 1):
        n = 120
        table = pd.DataFrame(
            {"invasion": rng.integers(0, 2, n), "high_grade": rng.integers(0, 2, n)}
        )
        for task in ("invasion", "high_grade"):
            table[f"p_{task}"] = 1 / (1 + np.exp(-(1.5 * table[task] + rng.normal(size=n))))
        predictions[draw] = table
    intervals = auc_intervals(predictions, n_boot=500)
    assert len(intervals) == 4 and set(intervals.task) == {"invasion", "high_grade"}
    for row in intervals.itertuples():
        table = predictions[row.draw]
        assert row.auc == pytest.approx(mann_whitney_auc(table[row.task], table[f"p_{row.task}"]))
        assert row.delong_low < row.auc < row.delong_high
        assert row.bootstrap_low < row.auc < row.bootstrap_high
        assert abs(row.delong_low - row.bootstrap_low) < 0.03
        assert abs(row.delong_high - row.bootstrap_high) < 0.03


def test_auc_intervals_leave_a_task_with_one_positive_patient_empty_and_say_why():
    from tcl.evaluation.evaluate import auc_intervals

    table = pd.DataFrame({"invasion": [1, 0, 0, 0], "high_grade": [1, 1, 0, 0],
                          "p_invasion": [0.9, 0.2, 0.3, 0.1],
                          "p_high_grade": [0.8, 0.6, 0.4, 0.1]})  # fmt: skip

    intervals = auc_intervals({0: table}, n_boot=50).set_index("task")
    assert np.isnan(intervals.loc["invasion", "auc"])
    assert intervals.loc["invasion", "note"] == "1 positive and 3 negative test patients"
    assert intervals.loc["high_grade", "auc"] == 1.0 and intervals.loc["high_grade", "note"] == ""
