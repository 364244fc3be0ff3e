"""checkpoint.pt: what a resumable training writes, how it is read back safely, and the one
policy that decides when it is written.

A checkpoint stores model, optimiser, scheduler, history, the position in the epoch and every
RNG state (:func:`rng_states`), as tensors and plain values only, so that
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``. The training decides
what goes in (tcl.training.train.TrainingState.checkpoint); :class:`CheckpointPolicy` decides when.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tcl.utils import StopSignals, TclError, atomic_path

CHECKPOINT = "checkpoint.pt"


def rng_states(shuffle: torch.Generator, augment_gen: torch.Generator) -> dict[str, Any]:
    """Every random state a resumed run needs to continue identically, as tensors and plain
    values only (NumPy's state as a tensor too), so that :func:`load_checkpoint` can read it
    without unpickling any class."""
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(key.astype(np.int64)),  # MT19937: 624 × uint32
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "augment": augment_gen.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(
    states: dict[str, Any], shuffle: torch.Generator, augment_gen: torch.Generator
) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state((
        numpy_state["bit_generator"],
        numpy_state["key"].numpy().astype(np.uint32),
        numpy_state["pos"],
        numpy_state["has_gauss"],
        numpy_state["cached_gaussian"],
    ))  # fmt: skip
    torch.set_rng_state(states["torch"])
    shuffle.set_state(states["shuffle"])
    augment_gen.set_state(states["augment"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint.pt without running code from it.

    A results folder on a shared filesystem can be written by others, and unpickling a file
    can run any code its writer chose. ``weights_only=True`` makes torch's unpickler accept
    tensors, state dicts and plain Python values (str, int, float, bool, None, list, tuple,
    dict) and nothing else; that is all tcl.training.train.TrainingState.checkpoint writes, so no
    class needs allow-listing. Anything more (a pickled object, the NumPy arrays of checkpoints from
    before this rule) is refused with TclError, naming the file and what it held.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"it refers to {found.group(1)}" if found else str(error).splitlines()[0]
        raise TclError(
            f"{path} holds more than tensors and plain values ({what}); tcl does not unpickle "
            "it, since that could run code from whoever wrote the file. Delete it (or pass "
            "--force) to start this run over"
        ) from None


class RunInterrupted(TclError):
    """A training stopped on SIGTERM or SIGINT after saving its checkpoint.

    ``status`` is the shell's exit status for that signal (128 + its number: 143, 130), which
    ``python -m tcl train`` exits with after printing the message, one line.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.status = 128 + signum


class Resumable(Protocol):
    """What :class:`CheckpointPolicy` needs of a training's state
    (tcl.training.train.TrainingState)."""

    epoch: int  # the epoch in progress, 0-based
    step: int  # its optimiser steps done

    def checkpoint(self, key: dict[str, Any]) -> dict[str, Any]: ...


# What the policy's timer reads; a test may replace it to make time pass.
clock = time.monotonic


class CheckpointPolicy:
    """When a run writes checkpoint.pt: the one place that decides it.

    - every ``minutes`` of wall-clock time (``Profile.checkpoint_minutes``; 0 = after every
      optimiser step), counted from the start of training or the last checkpoint. An interval,
      not every N epochs: a checkpoint of the paper network is 2.5 GB (3 s on an H200), and a
      paper epoch lasts 0.75 s on that GPU but 17 minutes on a 2-core CPU;
    - when the process receives SIGTERM or SIGINT (while :meth:`watching_signals` is active):
      the step in progress finishes, the checkpoint is written and the run stops
      (:class:`RunInterrupted`). A second signal before that aborts at once, without a
      checkpoint (KeyboardInterrupt), for whoever really means it.

    The run calls :meth:`between_steps` after every optimiser step, where the state is
    complete, and once more after predicting (a signal during prediction keeps the finished
    training). Nothing else writes checkpoint.pt.
    """

    def __init__(self, path: Path, key: dict[str, Any], minutes: float, label: str) -> None:
        self.path, self.key, self.label = path, key, label
        self.interval_s = float(minutes) * 60.0
        self.last = clock()
        self.signals = StopSignals(_announce_stop)

    @property
    def signum(self) -> int | None:
        """The signal that asked the run to stop, if one came."""
        return self.signals.signum

    def due(self, training_done: bool) -> bool:
        """Whether to write a checkpoint now: a signal came, or the interval has passed and
        training is not over (a finished training needs none unless it must stop)."""
        if self.signum is not None:
            return True
        return not training_done and clock() - self.last >= self.interval_s

    def between_steps(self, state: Resumable, epochs: int, steps: int) -> None:
        """Write ``state`` if :meth:`due`; after a signal, then stop: raise RunInterrupted
        with one line that says where the run stopped and how to continue."""
        if not self.due(training_done=state.epoch >= epochs):
            return
        start = clock()
        save_checkpoint(self.path, state.checkpoint(self.key))
        self.last = clock()
        if self.signum is None:
            return
        where = (
            f"after epoch {state.epoch} of {epochs}" if state.step == 0 else
            f"in epoch {state.epoch + 1} of {epochs} after step {state.step}/{steps}"
        )  # fmt: skip
        raise RunInterrupted(
            f"{self.label} stopped by {signal.Signals(self.signum).name} {where}; checkpoint "
            f"written in {self.last - start:.1f} s to {self.path}; rerun the same command to "
            "continue",
            self.signum,
        )

    @contextlib.contextmanager
    def watching_signals(self) -> Iterator[CheckpointPolicy]:
        """Catch SIGTERM and SIGINT meanwhile (tcl.utils.StopSignals: only in the main thread;
        elsewhere, e.g. a run started from a worker thread, signals keep their usual effect)."""
        with self.signals:
            yield self


def _announce_stop(signum: int) -> None:
    print(
        f"received {signal.Signals(signum).name}: finishing the step, then saving a "
        "checkpoint (send it again to stop at once, without one)",
        file=sys.stderr,
        flush=True,
    )
