"""A run's folder (tcl.training.runs): its layout, a finished run kept, other settings refused,
a retrain that resumes its own checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
from conftest import LONGER, SMOKE, read_run_predictions, train_tiny

from tcl.training.runs import draw_of, predictions_file, run_dir, runs_of
from tcl.utils import TclError


def test_finished_run_is_kept_and_other_settings_are_refused(tiny_draws, tmp_path):
    done = train_tiny(tiny_draws, tmp_path / "done")
    stamp = (done / "predictions.csv").stat().st_mtime_ns
    train_tiny(tiny_draws, done)  # already complete: nothing is retrained
    assert (done / "predictions.csv").stat().st_mtime_ns == stamp
    with pytest.raises(TclError, match="--force"):
        train_tiny(tiny_draws, done, seed=5)


def test_retrain_replaces_a_finished_run_but_resumes_its_own_checkpoint(
    tiny_draws, tmp_path, capsys
):
    out = train_tiny(tiny_draws, tmp_path / "run")
    stamp = (out / "predictions.csv").stat().st_mtime_ns
    train_tiny(tiny_draws, out, seed=5, retrain=True)  # other settings: replaced, not refused
    assert (out / "predictions.csv").stat().st_mtime_ns != stamp
    assert json.loads((out / "run.json").read_text())["seed"] == 5
    stamp = (out / "predictions.csv").stat().st_mtime_ns
    train_tiny(tiny_draws, out, seed=5, retrain=True)  # same settings: trained again, not skipped
    assert (out / "predictions.csv").stat().st_mtime_ns != stamp

    whole = train_tiny(tiny_draws, tmp_path / "whole", profile=LONGER)
    killed = tmp_path / "killed"
    every_step = replace(LONGER, checkpoint_minutes=0.0)
    train_tiny(tiny_draws, killed, profile=every_step, max_epochs=3)
    capsys.readouterr()
    train_tiny(tiny_draws, killed, profile=LONGER, retrain=True)  # its own checkpoint: resumed
    assert "resuming" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_run_predictions(killed), read_run_predictions(whole))
    train_tiny(tiny_draws, tmp_path / "other", profile=every_step, max_epochs=3)
    capsys.readouterr()
    train_tiny(
        tiny_draws, tmp_path / "other", retrain=True
    )  # another profile's checkpoint: start over
    assert "resuming" not in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "other" / "history.csv")) == SMOKE.epochs


def test_the_layout_is_one_folder_per_configuration_and_draw_and_make_asks_for_it(tmp_path):
    assert run_dir(tmp_path, "mmoe", 2) == tmp_path / "mmoe" / "draw2"
    assert predictions_file(tmp_path, "mmoe", 2) == tmp_path / "mmoe" / "draw2" / "predictions.csv"
    assert runs_of(tmp_path) == tmp_path / "runs"
    assert [draw_of(name) for name in ("draw0", "draw12", "draw", "draw1x", "old")] == [
        0, 12, None, None, None
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tcl.training.runs", "make-pattern"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "runs/@config@/draw@draw@/predictions.csv"
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, tcl.training.runs; print(list(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
