"""tcl.perf.learning: a learning curve, its input yardstick, and the reversed split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tcl.data.splits import read_splits
from tcl.perf import learning
from tcl.synthetic.ceilings import cache_input_ceiling


def both_classes_in_both_parts(cache: Path, path: Path) -> Path:
    """One draw whose training and test parts each hold both classes of both tasks (the
    yardstick's logistic regression needs them on whichever part it trains on)."""
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    ids = index.sort_values(["invasion", "high_grade", "patient_id"])["patient_id"].tolist()
    train = ids[::3]  # 8 of 24: parts of unequal size, so a swap shows in their counts
    test = [p for p in ids if p not in train]
    path.write_text(json.dumps({"draws": [{"train": train, "test": test}]}))
    return path


@pytest.mark.parametrize("reverse", [False, True])
def test_curve_reads_against_the_yardstick_of_the_split_it_trained_on(
    tiny_draws, tmp_path, reverse
):
    cache = tiny_draws[0]
    splits = both_classes_in_both_parts(cache, tmp_path / "splits.json")
    out = tmp_path / "curve.csv"
    argv = ["--config", "efmt", "--profile", "smoke", "--cache", str(cache)]
    argv += ["--splits", str(splits), "--threads", "1", "--out", str(out)]
    assert learning.main(argv + (["--reverse"] if reverse else [])) == 0

    draw = read_splits(splits)[0]
    split = {"train": draw["test"], "test": draw["train"]} if reverse else draw
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["reversed"] is reverse
    assert (record["n_train"], record["n_test"]) == (len(split["train"]), len(split["test"]))
    expected = cache_input_ceiling(cache, [split]).set_index("task")["auc"].to_dict()
    assert record["input_yardstick"] == pytest.approx(expected)
    # one row per epoch (smoke: 2) and the row after the classifier refit
    table = pd.read_csv(out)
    assert table["epoch"].tolist() == [0, 1, -1]
    assert table["test_auc_grade"].between(0, 1).all()


def test_a_draw_the_splits_do_not_hold_is_refused(tiny_draws, tmp_path, capsys):
    cache, splits = tiny_draws
    argv = ["--config", "efmt", "--profile", "smoke", "--cache", str(cache), "--draw", "7"]
    assert learning.main(argv + ["--splits", str(splits), "--out", str(tmp_path / "c.csv")]) == 2
    assert "--draw 7" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()
