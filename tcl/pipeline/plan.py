"""How ``make all`` spreads its 27 trainings over the machine: how many at once, with how many
CPU threads each (:func:`parallel_plan`). ``python -m tcl.pipeline.plan plan …`` is what the
Makefile asks.
"""

from __future__ import annotations

import os
import re
import sys

from tcl.config import CONFIGS, get_profile
from tcl.utils import TclError, available_cpus

# How `make all` runs the 27 trainings when nobody says (its JOBS and THREADS knobs, and make's
# own -j). Measured on the 2-core development machine (quick profile, proposed): one training
# with 2 threads took 3.5 s per epoch; two side by side with 1 thread each 6.4 s per epoch each,
# i.e. 3.2 s per epoch of either, 9 % faster, and each training's single-threaded start-up,
# prediction and notebook overhead overlaps the other's epochs. Two OpenMP threads also slow
# down many times whenever anything else needs a core
# (tcl.training.runtime.configure_backend). Hence one thread per training, one training per
# core, up to MAX_CPU_JOBS at once (a quick training holds about 1 GB, its kernel included).
#
# On one GPU, two trainings side by side when the card holds two: measured on an H200
# (docs/performance.md, commit 66ca081) three `tcl bench` processes at once reach 231
# samples/s in sum against 255 for one alone, so sharing the card costs about a tenth of the
# kernel rate, while each run's start-up, cache load, prediction and notebook (seconds of CPU
# work during which one training alone leaves the GPU idle) overlap the other's epochs. Each
# training gets half the cores. GPU_JOB_GIB is the peak memory a paper training may take (the
# issue's budget for proposed's step; MMoE's measured 13.3 GB is below it), so a 24 GB card
# runs one at a time. Whether two beat one on a given card is for `make gpu-check` to measure.
MAX_CPU_JOBS = 4
GPU_JOBS = 2
GPU_JOB_GIB = 16.0


def parallel_plan(
    cores: int,
    cuda: bool,
    jobs: int | None = None,
    threads: int | None = None,
    make_jobs: int | None = None,
    gpu_memory_gib: float | None = None,
) -> tuple[int, int]:
    """``(trainings at once, CPU threads each; 0 = all cores)`` for ``make all``.

    Args:
        cores: CPU cores of the machine.
        cuda: whether the trainings run on a GPU.
        jobs: the JOBS knob if given.
        threads: the THREADS knob if given.
        make_jobs: N of ``make -j N all`` if given (make then shares its own job slots).
        gpu_memory_gib: memory of the (first) GPU; None if unknown (one training at a time).
    Raises TclError for a JOBS or THREADS below 1 (THREADS 0 means all cores).
    """
    if jobs is not None and jobs < 1:
        raise TclError(f"JOBS must be 1 or more, got {jobs}")
    if threads is not None and threads < 0:
        raise TclError(f"THREADS must be 0 (all cores) or more, got {threads}")
    cores = max(int(cores), 1)
    n = jobs or make_jobs
    if cuda:
        if n is None:
            fits = gpu_memory_gib is not None and gpu_memory_gib >= GPU_JOBS * GPU_JOB_GIB
            n = GPU_JOBS if fits else 1
        if threads is None:
            threads = 0 if n == 1 else max(cores // n, 1)
        return n, threads
    if n is None:
        n = min(cores, MAX_CPU_JOBS) if threads in (None, 0) else max(cores // threads, 1)
    return n, max(cores // n, 1) if threads is None else threads


def _make_jobs(makeflags: str) -> int | None:
    """N of the ``-jN`` in make's MAKEFLAGS (the cores for a bare ``-j``), None without one."""
    match = re.search(r"(?:^|\s)-j(\d*)(?:\s|$)", f" {makeflags} ")
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else available_cpus()


# A GPU driver leaves these behind (NVIDIA's, and ROCm's, which torch.cuda also reports): where
# none exists there is no GPU for torch to find, and make need not wait 2 s for torch's import.
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")


def _gpu() -> tuple[bool, float | None]:
    """Whether torch finds a CUDA (or ROCm) GPU, and the first one's memory in GiB."""
    if not any(os.path.exists(path) for path in GPU_DRIVER_FILES):
        return False, None
    # torch only here: every `make` call plans through this module, and neither a launched plan
    # nor a machine without a GPU driver should spend 2 s importing it
    import torch

    if not torch.cuda.is_available():
        return False, None
    return True, torch.cuda.get_device_properties(0).total_memory / 2**30


def main(argv: list[str] | None = None) -> int:
    """``python -m tcl.pipeline.plan plan PROFILE JOBS THREADS MAKEFLAGS [--launched]`` prints what
    ``make all`` runs with: ``PROFILE JOBS THREADS JFLAG`` (PROFILE auto resolved: paper on CUDA,
    else quick; JOBS/THREADS ``auto`` or a number; JFLAG the -j option for the inner make, ``-``
    when the user's own ``make -jN`` already shares job slots).

    ``--launched``: the trainings run elsewhere (``make all LAUNCH="srun ..."``), so this
    machine's cores and GPUs decide nothing. PROFILE must be named, not auto; the trainings at
    once are JOBS, else make's -jN, else all of them (the scheduler queues what does not fit);
    THREADS defaults to 0, all the CPUs the job is given."""
    args = sys.argv[1:] if argv is None else argv
    launched = "--launched" in args
    args = [arg for arg in args if arg != "--launched"]
    if len(args) != 5 or args[0] != "plan":
        print(
            "usage: python -m tcl.pipeline.plan plan PROFILE JOBS THREADS MAKEFLAGS [--launched]",
            file=sys.stderr,
        )
        return 2
    profile, jobs, threads, makeflags = args[1:]

    def number(name: str, value: str) -> int | None:
        if value == "auto":
            return None
        try:
            return int(value)
        except ValueError:
            raise TclError(f"{name} must be auto or a whole number, got {value!r}") from None

    make_jobs = _make_jobs(makeflags)
    if launched:
        if profile == "auto":
            raise TclError(
                "PROFILE=auto chooses by whether this machine has CUDA, but with LAUNCH the "
                "trainings run on other machines: name it, e.g. PROFILE=paper"
            )
        get_profile(profile)
        n = number("JOBS", jobs) or make_jobs or len(CONFIGS) * 3  # all 27 trainings
        k = number("THREADS", threads) or 0
        print(profile, n, k, "-" if make_jobs else f"-j{n}")
        return 0

    cuda, gpu_memory_gib = _gpu()
    if profile == "auto":
        profile = "paper" if cuda else "quick"
    get_profile(profile)
    n, k = parallel_plan(
        available_cpus(),
        cuda,
        number("JOBS", jobs),
        number("THREADS", threads),
        make_jobs,
        gpu_memory_gib,
    )
    print(profile, n, k, "-" if make_jobs else f"-j{n}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TclError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
