"""The paper's random draws."""

import json

import numpy as np
import pandas as pd
import pytest

from tcl.data.splits import (
    CLASSES,
    make_draws,
    patient_class,
    read_splits,
    train_counts,
    write_splits,
)
from tcl.utils import TclError


def cohort(n_low: int, n_inv: int, n_noninv: int) -> pd.DataFrame:
    grades = [1] * n_low + [2] * (n_inv + n_noninv)
    invasion = [0] * n_low + [1] * n_inv + [0] * n_noninv
    ids = [f"P{i:04d}" for i in range(len(grades))]
    return pd.DataFrame({"patient_id": ids, "who_grade": grades, "invasion": invasion})


def test_paper_cohort_gives_paper_counts():
    table = cohort(652, 62, 86)
    draws = make_draws(table, n_draws=3, seed=666)
    assert len(draws) == 3
    labels = table.set_index("patient_id")
    for draw in draws:
        train = labels.loc[draw["train"]]
        classes = [
            patient_class(g, i) for g, i in zip(train.who_grade, train.invasion, strict=True)
        ]
        assert classes.count("low_grade") == 145
        assert classes.count("high_grade_invasive") == 44
        assert classes.count("high_grade_noninvasive") == 25
        assert len(draw["test"]) == 586
        assert not set(draw["train"]) & set(draw["test"])
        assert set(draw["train"]) | set(draw["test"]) == set(table.patient_id)
    # Every pair differs, draw 0 and draw 2 included: the released split script wrote its second
    # draw over its first, and a chained a != b != c never compares a with c.
    trains = [frozenset(draw["train"]) for draw in draws]
    assert len(set(trains)) == 3


def test_draws_are_reproducible_and_seed_dependent():
    table = cohort(65, 6, 9)
    assert make_draws(table, seed=1) == make_draws(table, seed=1)
    assert make_draws(table, seed=1) != make_draws(table, seed=2)


def test_proportional_counts_for_other_sizes():
    counts = train_counts({"low_grade": 65, "high_grade_invasive": 6, "high_grade_noninvasive": 9})
    assert counts == {
        "low_grade": round(145 / 652 * 65),
        "high_grade_invasive": round(44 / 62 * 6),
        "high_grade_noninvasive": round(25 / 86 * 9),
    }
    tiny = train_counts({"low_grade": 2, "high_grade_invasive": 2, "high_grade_noninvasive": 2})
    assert all(v == 1 for v in tiny.values())
    with pytest.raises(TclError, match="high_grade_invasive"):
        train_counts({"low_grade": 10, "high_grade_invasive": 1, "high_grade_noninvasive": 5})


def test_round_trip_and_bad_files(tmp_path):
    draws = make_draws(cohort(20, 4, 6), n_draws=2, seed=0)
    path = tmp_path / "splits.json"
    write_splits(draws, path, seed=0)
    assert read_splits(path) == draws
    assert json.loads(path.read_text())["seed"] == 0
    with pytest.raises(TclError, match="python -m tcl splits"):
        read_splits(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"draws": [{"train": ["a"], "test": ["a"]}]}))
    with pytest.raises(TclError, match="disjoint"):
        read_splits(bad)
    assert np.all([isinstance(i, str) for i in draws[0]["train"]])


def test_distinct_training_sets_is_what_many_draws_actually_produce():
    from tcl.data.splits import distinct_training_sets

    for sizes in [(2, 2, 2), (3, 2, 2), (5, 3, 2)]:
        table = cohort(*sizes)
        seen = {tuple(d["train"]) for d in make_draws(table, n_draws=400, seed=3)}
        named = dict(zip(CLASSES, sizes, strict=True))
        assert distinct_training_sets(named) == len(seen), sizes


def test_every_class_too_small_is_named_at_once():
    with pytest.raises(TclError) as caught:
        train_counts({"low_grade": 1, "high_grade_invasive": 0, "high_grade_noninvasive": 5})
    message = str(caught.value)
    assert "low_grade has 1 patient(s)" in message
    assert "high_grade_invasive has 0 patient(s)" in message
    assert "high_grade_noninvasive" not in message
