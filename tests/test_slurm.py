"""The pipeline through a real Slurm: ``make all LAUNCH="srun ..."`` on a one-node cluster that
this module starts on localhost (tools/slurm_local.py; Debian's slurm-wlm and munge, as root).

The reference is the smoke pipeline without Slurm (three draws: 27 trainings, radiomics,
evaluation, every notebook): the repository's own, which ``make test`` runs just before the
tests and names in TCL_SMOKE_REFERENCE, or, run alone, one built here.
The same command then runs with LAUNCH in a second project folder that shares its data, as nodes
share a filesystem, and holds the reference's trainings of draws 1 and 2, so that Slurm runs the
nine trainings of draw 0 and the radiomics reference. Its first attempt is stopped by
``scancel`` in the middle of a training; the rerun of the same command must resume that
training and give tables and predictions byte-identical to the reference, each training of draw
0 recorded as the Slurm job that ran it.

Where Slurm cannot start (not installed, not root) the module is skipped with one line; CI sets
TCL_REQUIRE_SLURM=1 (after tools/install_slurm.sh), which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import slurm_local  # noqa: E402

from tcl.config import CONFIGS  # noqa: E402
from tcl.training.runs import draw_of  # noqa: E402

STOPPED = "proposed"  # the training that scancel stops half-way
LAUNCH = "srun --cpus-per-task=1"
# make test's own pipeline run: make --no-print-directory -j2 pipeline PROFILE=smoke THREADS=1
MAKE = ["make", "-j2", "all", "PROFILE=smoke", "THREADS=1", f"PYTHON={sys.executable}"]

# Loaded by every IPython kernel that the test's notebooks start (IPYTHONDIR): in the one
# training scancel aims at, each optimiser step first waits a second, so that the signal lands
# mid-training. It changes when the steps happen, not what they compute.
SLOW_STEPS = f"""
import os
if os.environ.get("SLURM_JOB_NAME") == "tcl-smoke-{STOPPED}-draw0":
    import time
    import tcl.training.train

    _step = tcl.training.train.train_step

    def _slow_step(*args, **kwargs):
        time.sleep(1.0)
        return _step(*args, **kwargs)

    tcl.training.train.train_step = _slow_step
"""


def test_outside_slurm_nothing_is_recorded_inside_the_job_is(monkeypatch):
    from tcl.utils import provenance, slurm_job

    for name in [name for name in os.environ if name.startswith("SLURM")]:
        monkeypatch.delenv(name)
    assert slurm_job() is None and provenance()["slurm"] is None
    job = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURMD_NODENAME": "gpu07",
           "SLURM_STEP_GPUS": "3", "SLURM_JOB_NAME": "tcl-paper-proposed-draw0"}  # fmt: skip
    for name, value in job.items():
        monkeypatch.setenv(name, value)
    assert provenance()["slurm"] == {
        "job_id": "4242", "step_id": "0", "job_name": "tcl-paper-proposed-draw0",
        "node": "gpu07", "gpus": "3",
    }  # fmt: skip


def test_threads_default_to_the_cpus_slurm_gives_the_task(monkeypatch):
    from tcl.utils import available_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    mine = available_cpus()
    assert mine == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4096")  # never more than the process may use
    assert available_cpus() == mine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node Slurm; yields (its folder, the environment that reaches it)."""
    root = tmp_path_factory.mktemp("slurm")
    try:
        env = slurm_local.start(root)
    except slurm_local.SlurmUnavailable as error:
        if os.environ.get("TCL_REQUIRE_SLURM") == "1":
            pytest.fail(f"TCL_REQUIRE_SLURM=1 but Slurm cannot start: {error}")
        pytest.skip(f"Slurm cannot start here ({error}); tools/install_slurm.sh installs it")
    yield root, env
    slurm_local.stop(root)


def project(folder: Path, data: Path | None = None) -> Path:
    """A project folder as a user has it: the Makefile and notebooks copied (notebooks run in
    their own folder, and write beside it), the package linked; ``data`` shared if given."""
    folder.mkdir()
    shutil.copy(ROOT / "Makefile", folder)
    shutil.copytree(ROOT / "notebooks", folder / "notebooks")
    for name in ("tcl", "README.md", "pyproject.toml", "requirements.lock"):
        (folder / name).symlink_to(ROOT / name)
    if data is not None:
        (folder / "data").symlink_to(data)
    return folder


def make(folder: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MAKE, *extra], cwd=folder, env=env, capture_output=True, text=True)


def tables(folder: Path) -> dict[str, bytes]:
    """Every table the pipeline wrote and every draw-0 run's predictions, by relative path."""
    files = sorted((folder / "figures" / "smoke").glob("*.csv"))
    files += sorted((folder / "results" / "smoke" / "runs").glob("*/draw0/predictions.csv"))
    return {str(path.relative_to(folder)): path.read_bytes() for path in files}


def reference_project(folder: Path, env: dict[str, str]) -> Path:
    """The smoke pipeline without Slurm: the project folder that TCL_SMOKE_REFERENCE names
    (``make test`` names the repository, whose smoke pipeline it has just run), else one built
    in ``folder``, a project folder of its own."""
    given = os.environ.get("TCL_SMOKE_REFERENCE")
    if given:
        reference = Path(given).resolve()
        complete = reference / "results" / "smoke" / "runs" / STOPPED / "draw0" / "predictions.csv"
        assert complete.is_file() and (reference / "figures" / "smoke").is_dir(), (
            f"TCL_SMOKE_REFERENCE={given} holds no finished smoke pipeline"
        )
        return reference
    reference = project(folder)
    done = make(reference, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return reference


def copy_runs(source: Path, target: Path, draws: tuple[int, ...]) -> None:
    """The finished trainings of ``draws`` (run folders with their files' times), so that make
    in ``target`` finds them done."""
    for run in sorted((source / "results" / "smoke" / "runs").glob("*/draw*")):
        if run.parent.name != "radiomics" and draw_of(run.name) in draws:
            shutil.copytree(run, target / run.relative_to(source))


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"make ended ({process.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.05)


@pytest.mark.slurm
def test_pipeline_through_slurm_resumes_a_cancelled_training_and_matches(cluster, tmp_path):
    slurm_root, slurm_env = cluster
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}

    reference = reference_project(tmp_path / "without-slurm", plain_env)
    launched = project(tmp_path / "with-slurm", data=reference / "data")
    copy_runs(reference, launched, draws=(1, 2))
    ipython = tmp_path / "ipython"
    (ipython / "profile_default" / "startup").mkdir(parents=True)
    (ipython / "profile_default" / "startup" / "00-slow-steps.py").write_text(SLOW_STEPS)
    knobs = (f"LAUNCH={LAUNCH}", f"LAUNCH_CPU={LAUNCH}")

    # First attempt: scancel the proposed network's job once its first epoch is done.
    run_dir = launched / "results" / "smoke" / "runs" / STOPPED / "draw0"
    first = subprocess.Popen(
        [*MAKE, *knobs],
        cwd=launched,
        env={**slurm_env, "IPYTHONDIR": str(ipython)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(run_dir / "history.csv", first)
    name = f"tcl-smoke-{STOPPED}-draw0"
    subprocess.run(["scancel", "--name", name], env=slurm_env, check=True)
    output, _ = first.communicate(timeout=300)
    assert first.returncode != 0, output[-3000:]
    assert "stopped by SIGTERM" in output, output[-3000:]
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "predictions.csv").exists()

    # The same command again: it resumes that training and finishes the pipeline.
    second = make(launched, slurm_env, *knobs)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    notebook = launched / "results" / "smoke" / "notebooks" / f"02_train_{STOPPED}_draw0.ipynb"
    assert "resuming" in notebook.read_text()
    assert not (run_dir / "checkpoint.pt").exists()

    ours, theirs = tables(launched), tables(reference)
    assert len(ours) == len(CONFIGS) + 1 + 6  # 9 trainings, radiomics, 6 tables
    assert ours.keys() <= theirs.keys()
    assert [path for path in ours if ours[path] != theirs[path]] == []

    # Every training ran as a Slurm job, and run.json names the job Slurm itself records.
    jobs = slurm_local.completed_jobs(slurm_root)
    for config in CONFIGS:
        run = json.loads((launched / "results/smoke/runs" / config / "draw0/run.json").read_text())
        recorded = run["provenance"]["slurm"]
        assert recorded is not None, config
        name = f"tcl-smoke-{config}-draw0"
        finished = [job for job in jobs if job["Name"] == name and job["JobState"] == "COMPLETED"]
        assert [job["JobId"] for job in finished] == [recorded["job_id"]], (config, jobs)
        assert recorded["node"] == finished[0]["NodeList"] == slurm_local.NODE
    cancelled = [job for job in jobs if job["Name"] == f"tcl-smoke-{STOPPED}-draw0"]
    assert sorted(job["JobState"] for job in cancelled) == ["CANCELLED", "COMPLETED"]
    assert any(job["Name"] == "tcl-radiomics" for job in jobs)  # LAUNCH_CPU took it too
    # the reference ran outside Slurm and says so
    plain = json.loads((reference / "results/smoke/runs/proposed/draw0/run.json").read_text())
    assert plain["provenance"]["slurm"] is None
