"""make's plan (tcl.pipeline.plan): trainings at once and threads each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tcl.pipeline import plan
from tcl.utils import TclError


def test_parallel_plan_one_thread_per_training_on_cpu_two_trainings_on_a_large_gpu():
    from tcl.pipeline.plan import MAX_CPU_JOBS, parallel_plan

    assert parallel_plan(2, cuda=False) == (2, 1)  # measured: 9 % faster than (1, 2)
    assert parallel_plan(1, cuda=False) == (1, 1)
    assert parallel_plan(16, cuda=False) == (MAX_CPU_JOBS, 16 // MAX_CPU_JOBS)
    assert parallel_plan(16, cuda=True) == (1, 0)  # card memory unknown: one at a time
    assert parallel_plan(16, cuda=True, gpu_memory_gib=139.8) == (2, 8)  # H200: two, 8 cores each
    assert parallel_plan(16, cuda=True, gpu_memory_gib=79.1) == (2, 8)  # H100
    assert parallel_plan(16, cuda=True, gpu_memory_gib=23.6) == (1, 0)  # a 24 GB card: one
    assert parallel_plan(16, cuda=True, jobs=1, gpu_memory_gib=139.8) == (1, 0)
    assert parallel_plan(16, cuda=True, jobs=3, threads=2, gpu_memory_gib=139.8) == (3, 2)
    # what the user gives is kept; the rest follows from the cores
    assert parallel_plan(2, cuda=False, jobs=1) == (1, 2)
    assert parallel_plan(8, cuda=False, threads=2) == (4, 2)
    assert parallel_plan(2, cuda=False, make_jobs=1) == (1, 2)
    assert parallel_plan(8, cuda=False, make_jobs=3, threads=1) == (3, 1)
    with pytest.raises(TclError, match="JOBS"):
        parallel_plan(2, cuda=False, jobs=0)
    with pytest.raises(TclError, match="THREADS"):
        parallel_plan(2, cuda=False, threads=-1)


def test_make_jobs_are_read_from_makeflags():
    import os

    from tcl.pipeline.plan import _make_jobs

    assert _make_jobs("") is None and _make_jobs("s") is None
    assert _make_jobs("s -j3 --jobserver-auth=3,4") == 3
    assert _make_jobs(" -j --jobserver-auth=3,4") == (os.cpu_count() or 1)
    assert _make_jobs("--no-print-directory -j12") == 12


def test_without_a_gpu_driver_the_plan_does_not_import_torch(tmp_path):
    # make plans at every start: on a machine without a GPU driver it must not wait for torch
    code = (
        "import sys; from tcl.pipeline import plan; plan.GPU_DRIVER_FILES = ('/nonexistent',); "
        "print(plan._gpu(), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["(False,", "None)", "False"]


def test_with_a_gpu_driver_the_plan_asks_torch(tmp_path, monkeypatch):
    import torch

    driver = tmp_path / "version"
    driver.write_text("a driver")
    monkeypatch.setattr(plan, "GPU_DRIVER_FILES", (str(driver),))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 80 * 2**30})
    )
    assert plan._gpu() == (True, 80.0)
