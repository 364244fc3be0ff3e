"""Evaluating and reporting some of the draws (``make all DRAWS=0``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import write_runs_tree

from tcl.evaluation.evaluate import evaluate_runs
from tcl.evaluation.paper_tables import caption, draws_text, evaluated_draws


def test_evaluate_reads_only_the_chosen_draws_and_says_which(tmp_path):
    runs = write_runs_tree(tmp_path)  # proposed, efmt × draws 0-2; mmoe draws 0 and 2
    paths = evaluate_runs(runs, tmp_path / "eval", draws=(0,))
    per_draw = pd.read_csv(paths["metrics_per_draw"])
    assert set(per_draw["draw"]) == {0}
    summary = pd.read_csv(paths["metrics_summary"])
    assert summary["complete"].all() and (summary["n_draws"] == 1).all()  # mmoe too
    assert set(pd.read_csv(paths["delong"])["draw"]) == {0}
    record = json.loads(paths["provenance"].read_text())
    assert record["expected_draws"] == [0] and record["missing_runs"] == []
    assert "efmt/draw2" in record["other_draws_left_out"]
    assert evaluated_draws(tmp_path / "eval") == [0]

    every = evaluate_runs(runs, tmp_path / "all")
    assert evaluated_draws(tmp_path / "all") == [0, 1, 2]
    assert set(pd.read_csv(every["metrics_per_draw"])["draw"]) == {0, 1, 2}


def test_evaluate_command_takes_draws_by_number(tmp_path, capsys):
    from tcl.cli import main

    runs = write_runs_tree(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", str(runs), "--out", str(out), "--draw", "2", "--draw", "0"]) == 0
    assert evaluated_draws(out) == [0, 2]
    assert set(pd.read_csv(out / "metrics_per_draw.csv")["draw"]) == {0, 2}
    assert main(["evaluate", str(runs), "--out", str(out), "--draw", "-1"]) == 2
    assert "--draw must be 0 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one way of naming draws at a time
        main(["evaluate", str(runs), "--draws", "3", "--draw", "0"])


@pytest.mark.parametrize(
    ("draws", "text"),
    [
        ([0], "draw 0 only"),
        ([2, 0], "the two draws 0 and 2"),
        ([0, 1, 2], "the three draws 0, 1 and 2"),
    ],
)
def test_tables_name_the_draws_they_hold(draws, text):
    assert draws_text(draws) == text
    title = f"Table 2: mean ± SD over {draws_text(draws)}"
    assert text in caption(title, "quick", "synthetic")
