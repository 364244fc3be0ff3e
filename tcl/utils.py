"""Small shared helpers: the user-facing error type, atomic writes, provenance, seeding."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import numpy as np


class TclError(Exception):
    """An error caused by the user's input (bad file, option or cohort).

    ``python -m tcl`` prints its message (which names the patient, file or option) and exits
    with status 2 instead of showing a traceback.
    """


_UMASK = os.umask(0)  # read the process umask (os.umask can only set it) ...
os.umask(_UMASK)  # ... and put it back


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    Readers therefore never see a half-written file: an interrupted or failed write leaves the
    old file (or nothing) in place. ``suffix`` keeps an extension that writers dispatch on
    (e.g. ``.nii.gz`` for nibabel); it defaults to the final name's suffixes.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file readable by its owner only; give it the mode an ordinary write
    # would (0666 less the umask), so results and saved models can be shared and copied.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def refuse_existing_folder(out: Path) -> None:
    """TclError unless ``out`` is free: absent, or an empty folder (checked before any work)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TclError(f"--out {out} already exists and is not an empty folder; choose another")


@contextlib.contextmanager
def new_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; it becomes ``out`` only on success, so a failed
    or interrupted command leaves nothing there. ``out`` must be free
    (:func:`refuse_existing_folder`); an empty folder there is replaced."""
    out = Path(out)
    refuse_existing_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield staging
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace needs the name free
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The current git commit of the project (``+dirty`` if the tree has changes), or 'unknown'."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


PROVENANCE_PACKAGES = (
    "tcl",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "scikit-learn",
    "statsmodels",
    "SimpleITK",  # registration onto T1C (tcl.data.registration)
)


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux), which
    is what Slurm's task binding, ``taskset`` or a container limit leaves it, capped by
    ``SLURM_CPUS_PER_TASK`` where Slurm says so without binding; else all the machine's."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(per_task)) if per_task.isdigit() and int(per_task) > 0 else cpus


# What Slurm tells a job's processes about where they run (sbatch/srun output variables).
SLURM_VARIABLES = {
    "job_id": "SLURM_JOB_ID",
    "step_id": "SLURM_STEP_ID",
    "job_name": "SLURM_JOB_NAME",
    "node": "SLURMD_NODENAME",
    "cluster": "SLURM_CLUSTER_NAME",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "gpus": "SLURM_STEP_GPUS",  # the GPU indices of the step (--gres=gpu:N), if any
    "job_gpus": "SLURM_JOB_GPUS",
}


def slurm_job() -> dict[str, str] | None:
    """The Slurm job, step, node and GPUs this process runs in; None outside Slurm."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return {name: os.environ[var] for name, var in SLURM_VARIABLES.items() if var in os.environ}


def provenance() -> dict[str, object]:
    """What made an output: commit, package versions, machine (host name, Slurm job if any)
    and command line."""
    return {
        "commit": git_commit(),
        "versions": package_versions(),
        "machine": platform.platform(),
        "host": platform.node(),
        "slurm": slurm_job(),
        "command": " ".join(sys.argv),
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


@contextlib.contextmanager
def exit_on_sigterm(message: str) -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, a container stop) ends the run like an error
    does: the exception unwinds, so temporary files are removed and workers stopped, then the
    process prints ``message`` and exits with status 143 (128 + 15)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def terminate(signum: int, frame: object) -> None:
        print(message, file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopSignals:
    """SIGTERM and SIGINT as a request to stop, while the context is active.

    The first signal is recorded in ``signum`` and passed to ``on_first`` (say what happens,
    pass it on); the caller stops at its next safe point. A second signal restores the previous
    handlers and raises KeyboardInterrupt at once, for whoever really means it. Handlers can
    only be installed in the main thread; elsewhere signals keep their usual effect. On exit
    the previous handlers are back.

    A SIGTERM that follows the first within ``SAME_REQUEST_S`` is that same request, not a
    second one: a scheduler stopping a job (Slurm's ``scancel``, a time limit, preemption)
    signals every process of the job, so a notebook's kernel receives Slurm's SIGTERM and the
    one tcl.pipeline.run_notebook passes on to it, milliseconds apart. A person who means it sends
    the second signal later, or presses Ctrl-C (SIGINT), which always counts.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    SAME_REQUEST_S = 1.0

    def __init__(self, on_first: Callable[[int], None]) -> None:
        self.on_first = on_first
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            repeat = signum == signal.SIGTERM and self.signum == signal.SIGTERM
            if repeat and time.monotonic() - self._first_at < self.SAME_REQUEST_S:
                return
            self._restore()
            raise KeyboardInterrupt
        self.signum, self._first_at = signum, time.monotonic()
        self.on_first(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
