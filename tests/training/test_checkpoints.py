"""Resumable training (tcl.training.checkpoints): a checkpoint at any step, by interval, by time
or on a signal, and a resumed run identical to an uninterrupted one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import LONGER, train_tiny

from tcl.utils import TclError


@pytest.fixture(scope="module")
def uninterrupted(tiny_draws, tmp_path_factory) -> Path:
    """LONGER trained in one go (no checkpoint written): what every resumed run must equal."""
    return train_tiny(tiny_draws, tmp_path_factory.mktemp("whole") / "run", profile=LONGER)


def assert_same_run(resumed: Path, whole: Path) -> None:
    """Byte-identical predictions, the same loss history, and no checkpoint left."""
    assert (resumed / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
    ours, theirs = pd.read_csv(resumed / "history.csv"), pd.read_csv(whole / "history.csv")
    assert len(ours) == LONGER.epochs
    pd.testing.assert_frame_equal(ours.drop(columns=TIMES), theirs.drop(columns=TIMES))
    assert not (resumed / "checkpoint.pt").exists()


TIMES = ["seconds", "samples_per_s"]


def checkpoint_position(run_dir: Path) -> tuple[int, int]:
    """(epoch in progress, steps of it done) of a run's checkpoint.pt."""
    from tcl.training.checkpoints import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoint.pt")
    return state["epoch"], state["step"]


def test_checkpoint_after_every_step_at_interval_zero_and_resume(
    tiny_draws, uninterrupted, tmp_path
):
    out = tmp_path / "killed"
    every_step = replace(LONGER, checkpoint_minutes=0.0)
    train_tiny(tiny_draws, out, profile=every_step, max_epochs=3)  # "killed" right after epoch 3
    assert not (out / "predictions.csv").exists()
    assert checkpoint_position(out) == (3, 0) and len(pd.read_csv(out / "history.csv")) == 3
    # the interval is no part of the run's identity: another one resumes this checkpoint
    train_tiny(tiny_draws, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


class _Planted:
    """What a stranger could pickle into a checkpoint: unpickling it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_without_running_it(tiny_draws, tmp_path):
    import torch

    from tcl.training.checkpoints import load_checkpoint

    out = tmp_path / "run"
    train_tiny(tiny_draws, out, profile=replace(LONGER, checkpoint_minutes=0.0), max_epochs=1)
    state = load_checkpoint(out / "checkpoint.pt")  # what tcl writes loads safely
    marker = tmp_path / "code-ran"
    state["history"].append(_Planted(marker))
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(
        TclError, match=r"checkpoint\.pt holds more than tensors and plain values \(it refers to "
    ):
        train_tiny(tiny_draws, out, profile=LONGER)
    assert not marker.exists() and not (out / "predictions.csv").exists()


def test_checkpoint_by_time_mid_epoch_and_resume(tiny_draws, uninterrupted, tmp_path, monkeypatch):
    import tcl.training.checkpoints
    import tcl.training.train

    now = [0.0]  # a clock that advances one minute per optimiser step, and only then
    step = tcl.training.train.train_step

    def one_minute_step(*args, **kwargs):
        row = step(*args, **kwargs)
        now[0] += 60.0
        return row

    monkeypatch.setattr(tcl.training.checkpoints, "clock", lambda: now[0])
    monkeypatch.setattr(tcl.training.train, "train_step", one_minute_step)
    out = tmp_path / "killed"
    # every 3.5 minutes: after steps 4 and 8 (epoch 1 step 1, epoch 2 step 2), not at step 9,
    # where max_epochs "kills" the run: the work of step 9 is lost and redone
    train_tiny(tiny_draws, out, profile=replace(LONGER, checkpoint_minutes=3.5), max_epochs=3)
    assert checkpoint_position(out) == (2, 2)
    assert len(pd.read_csv(out / "history.csv")) == 3  # written after each epoch, kept
    monkeypatch.undo()
    train_tiny(tiny_draws, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


def signalling_step(monkeypatch, at_step: int, *signals: int) -> None:
    """Make optimiser step ``at_step`` (1-based) send this process ``signals`` mid-step."""
    import os

    import tcl.training.train

    calls = [0]
    step = tcl.training.train.train_step

    def step_then_signal(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at_step:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return step(*args, **kwargs)

    monkeypatch.setattr(tcl.training.train, "train_step", step_then_signal)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_checkpoints_stops_and_resumes_identically(
    tiny_draws, uninterrupted, tmp_path, monkeypatch, name
):
    import signal

    from tcl.training.checkpoints import RunInterrupted

    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    signalling_step(monkeypatch, 5, signum)  # epoch 1, its second step
    out = tmp_path / "stopped"
    with pytest.raises(RunInterrupted) as stopped:
        train_tiny(tiny_draws, out, profile=LONGER)
    message = str(stopped.value)
    assert stopped.value.status == 128 + signum and "\n" not in message
    assert f"by {name} in epoch 2 of 4 after step 2/3" in message and "rerun" in message
    assert checkpoint_position(out) == (1, 2) and not (out / "predictions.csv").exists()
    assert signal.getsignal(signum) is before  # the run's handler is gone
    monkeypatch.undo()
    train_tiny(tiny_draws, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


def test_resuming_with_another_thread_count_says_it_is_not_bit_identical(
    tiny_draws, tmp_path, capsys
):
    out = tmp_path / "killed"
    train_tiny(tiny_draws, out, profile=replace(LONGER, checkpoint_minutes=0.0), max_epochs=1)
    capsys.readouterr()
    train_tiny(tiny_draws, out, profile=LONGER, threads=2)
    said = capsys.readouterr().out
    assert "resuming" in said and "cpu with 1 thread(s)" in said and "not be bit-identical" in said


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_second_signal_aborts_at_once_without_checkpoint(tiny_draws, tmp_path, monkeypatch, name):
    import signal

    from tcl.utils import StopSignals

    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    # a second SIGTERM counts once it comes later than a scheduler's duplicate would
    monkeypatch.setattr(StopSignals, "SAME_REQUEST_S", 0.0)
    signalling_step(monkeypatch, 2, signum, signum)
    out = tmp_path / "aborted"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tiny_draws, out, profile=LONGER)
    assert not (out / "checkpoint.pt").exists() and not (out / "predictions.csv").exists()
    assert signal.getsignal(signum) is before


def test_two_sigterms_at_once_are_one_request_as_when_slurm_stops_a_notebook(
    tiny_draws, uninterrupted, tmp_path, monkeypatch
):
    """scancel reaches a notebook's kernel twice (Slurm signals every process of the job, and
    tcl.pipeline.run_notebook forwards its own): the run must still checkpoint, not abort."""
    import signal

    from tcl.training.checkpoints import RunInterrupted

    signalling_step(monkeypatch, 5, signal.SIGTERM, signal.SIGTERM)
    out = tmp_path / "stopped"
    with pytest.raises(RunInterrupted, match="by SIGTERM in epoch 2 of 4 after step 2/3"):
        train_tiny(tiny_draws, out, profile=LONGER)
    assert checkpoint_position(out) == (1, 2)
    monkeypatch.undo()
    train_tiny(tiny_draws, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


def test_train_command_exits_on_sigterm_with_one_line_and_a_checkpoint(tiny_draws, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cache, splits = tiny_draws
    out = tmp_path / "run"
    # `python -m tcl train` with a smoke profile long enough to be still training when the
    # signal arrives (the CLI only takes profile names)
    script = (
        "import sys; from dataclasses import replace; import tcl.config as c; "
        "c.PROFILES['smoke'] = replace(c.PROFILES['smoke'], epochs=100000); "
        "from tcl.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", script, "train", "--config", "efmt", "--profile", "smoke",
               "--draw", "0", "--cache", str(cache), "--splits", str(splits), "--out", str(out),
               "--device", "cpu", "--threads", "1", "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "history.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # the signal was ignored: do not leave it training
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: efmt draw0 stopped by SIGTERM") and "rerun" in last
    assert "Traceback" not in stderr
    assert (out / "checkpoint.pt").exists() and not (out / "predictions.csv").exists()
