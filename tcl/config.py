"""Profiles and configuration names: the one place that decides every number of a run.

A *profile* is a protocol (input size, network width, epochs, optimiser, schedule, loss weights,
augmentation). ``paper`` is the paper's protocol (docs/paper.md); ``quick``
shrinks it so all 27 trainings fit in 45 minutes on a 2-core CPU; ``smoke`` runs in
seconds for tests.
A *configuration* is one of the nine trained networks of Tables 2 and 3.
Also how ``make all`` spreads the trainings over the machine (:func:`parallel_plan`;
``python -m tcl.config plan`` is what the Makefile asks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from tcl.utils import TclError, available_cpus

# Table 2's compared multi-task methods, Table 3's ablations, and the proposed network.
COMPARED = ("efmt", "mfmt", "mmoe", "maml")
ABLATIONS = ("baseline1", "baseline2", "baseline3", "baseline4")
CONFIGS = COMPARED + ABLATIONS + ("proposed",)


@dataclass(frozen=True)
class Profile:
    """Every setting of a training protocol. Defaults are the paper's (docs/paper.md)."""

    name: str
    size: tuple[int, int, int] = (128, 128, 24)  # H, W, D the cache is preprocessed to
    width: int = 64  # ResNet stem width (64 = paper)
    batch_size: int = 32
    drop_last: bool = True
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-3
    dropout: float = 0.5
    warmup_epochs: int = 5  # linear warm-up: epoch e < warmup_epochs trains at lr·(e+1)/warmup
    step_size: int = 5  # then StepLR: ×gamma every step_size epochs (see tcl.train.lr_at_epoch)
    gamma: float = 0.8
    zero_lr_epochs: int = 0  # leading epochs at LR 0; 2 reproduces the released schedule as run
    contrastive_from_epoch: int = 30  # 0-based epoch at which L_con switches on
    alpha: float = 1.0  # weight of the contrastive terms
    beta: float = 0.7  # weight of the auxiliary terms
    tau: float = 0.07  # contrastive temperature
    augment_p: float = 0.5  # probability of each augmentation
    crop_min: int = 100  # smallest in-plane crop side in voxels of size[0] (100 of 128 = paper)
    seed: int = 666
    # Optimiser steps for each task's classifier alone after the last epoch, on the trained
    # network's features of the training patients (tcl.train.refit_classifiers); 0 = none, as
    # in the paper. Why the CPU profiles take some: see QUICK.
    head_steps: int = 0
    # Minutes of training between resumable checkpoints (tcl.checkpoints.CheckpointPolicy); a run
    # also checkpoints when it receives SIGTERM or SIGINT, then stops. Not part of a run's key:
    # when a run saves its state does not change what it computes (resumes are exact on CPU).
    checkpoint_minutes: float = field(default=15.0, metadata={"in_key": False})
    n_patients: int = 800  # size of the synthetic cohort this profile builds
    synth_shape: tuple[int, int, int] = (256, 256, 24)  # its raw volumes (paper: 256×256×24)

    def to_dict(self) -> dict[str, object]:
        """Every setting (what run.json and model.json record)."""
        return asdict(self)

    def key_dict(self) -> dict[str, object]:
        """The settings that can change a run's results: :meth:`to_dict` without the fields
        marked ``in_key: False`` (the checkpoint interval). tcl.train compares this part of two
        runs' settings to decide whether a finished run or a checkpoint is the same run."""
        out = self.to_dict()
        for f in fields(self):
            if not f.metadata.get("in_key", True):
                del out[f.name]
        return out

    def __post_init__(self) -> None:
        if not self.checkpoint_minutes >= 0:  # also refuses NaN
            raise TclError(
                f"checkpoint_minutes must be 0 or more (0 = after every step), got "
                f"{self.checkpoint_minutes!r}"
            )


# paper: every setting of docs/paper.md. Two choices are ours, both documented in tcl.train:
# the LR schedule drops the released run's two leading zero-LR epochs (zero_lr_epochs=2 restores
# them), and L_con switches on at 0-based epoch 30 ("after 30 epochs", the paper's words; the
# released code's 1-based "epoch 30" would be 0-based 29).
# Checkpoints every 15 minutes: a paper run takes about 80 s of training on an H200 (no periodic
# checkpoint at all: its 2.5 GB cost 3 s each, and 19 of them were a third of the run), and 9 to
# 35 hours on the 2-core CPU, where a 2.5 GB write every 15 minutes costs well under 1 % and a
# hard kill (SIGKILL, power loss, which no handler sees) loses at most 15 minutes.
PAPER = Profile(name="paper")

# quick: the paper's protocol shrunk to fit 27 runs (9 configurations × 3 draws) in about 45
# minutes on a 2-core CPU: half the in-plane and slice resolution (64×64×12, a clean 2×
# downscale; crop_min 50 = 100/128 of 64), width 8 (channels 8-16-32-64 instead of 64-…-512),
# 22 epochs instead of 100. The schedule keeps its shape: 1 warm-up epoch, then ×0.9 every
# epoch, so the last epoch runs at 0.9^21 ≈ 11 % of the peak LR (paper: 1.8 % after 100);
# L_con switches on after 6 of 22 epochs (paper: 30 of 100). Batch 32, Adam, weight decay, loss
# weights, τ and the augmentations are the paper's.
#
# How it was chosen (python -m tcl.perf.learning: per-epoch train and test AUC; proposed, draw 0
# only, draws 1 and 2 held out; one thread each, two runs side by side on the 2-core CPU). The
# networks do not underfit: the training AUC (eval mode, unaugmented) reaches 0.98 invasion /
# 0.92 grade after 4 epochs, while the test grade AUC stays at 0.70-0.77. What they fail to do
# is generalise on grade. Among the non-invasive patients alone (high grade without invasion
# against low grade, where invasion's signs cannot stand in for grade's own) the test AUC is
# 0.62-0.73 against 0.82 for the input yardstick (tcl.ceilings, input_lr), while the training
# patients of that kind are memorised (0.94-0.99): grade is learnt from invasion's and the
# shared factor's signs, which the training set, 44 of whose 69 high-grade patients are
# invasive (18 of 79 in the test set), rewards. Final test AUC invasion / grade, 14 epochs
# unless said (the old quick profile 0.953 / 0.735; seeds 1 and 2 0.942 / 0.759 and
# 0.956 / 0.737, so about ±0.015 from the seed alone, ±0.03 from one epoch to the next):
#   28 epochs ×0.92 0.941 / 0.802 · 42 epochs ×0.95 0.947 / 0.776 · width 16 0.915 / 0.782 ·
#   width 4 0.884 / 0.692 · dropout 0.5 0.957 / 0.739 · batch 16 0.951 / 0.754 ·
#   LR 3e-4 0.948 / 0.677 · weight decay 1e-2 0.939 / 0.736 · no augmentation 0.971 / 0.699 ·
#   every augmentation always (p = 1) 0.955 / 0.723 · residual blocks starting as the
#   identity (last BN scale 0) 0.952 / 0.722 · the paper's schedule shape at 42 epochs
#   (warm-up 2, ×0.8 every 2, dropout 0.5) 0.955 / 0.752 · the noise augmentation scaled to
#   the 2× coarser voxels (SD/2/√8) 0.916 / 0.790, the same at 28 epochs 0.904 / 0.764, no
#   noise 0.951 / 0.776.
# Only more optimiser steps helped grade beyond the seed's spread, and only by 0.03-0.05.
# 22 epochs is what the budget pays for: a fresh-clone `make all` at 28 epochs was on course
# for about 51 minutes here (per run: EFMT 90 s, MFMT 175 s, MMoE 378 s, two at a time),
# against 45 (channels_last_3d, tcl.train, pays 15 % of a step). Nothing tried reached the
# input yardstick minus 0.03 on grade (0.82): see the README's summary.
#
# Two departures, both because 22 epochs of 6 steps (214 training patients, batch 32,
# drop_last) are 132 optimiser steps against the paper's 600:
# - dropout 0.2 instead of 0.5: at width 8 the heads' last hidden layer has 8 units (32 at paper
#   width), and dropping half of them every step kept the training loss above the class-prior
#   entropy at 14 epochs (the networks predicted the prior); at 14 epochs and 0.5 the test AUC
#   was 0.957 / 0.739 against 0.953 / 0.735, at 42 epochs with the paper's schedule 0.955 / 0.752.
# - ×0.9 instead of ×0.8 every 5 epochs, so the LR does not vanish before the steps run out.
# A third departure, because the classifiers do not reach the paper's rule (p > 0.5) in 132
# steps:
# - head_steps 468: after the last epoch, each task's classifier (the layers that turn the
#   task's feature vector into its logits) trains alone for 468 more steps on the trained
#   network's features of the training patients (tcl.train.refit_classifiers), so that the
#   classifiers get the paper's 600 steps in all. Same optimiser, LR, weight decay, batch and
#   dropout; no class weighting or resampling; the network below them does not change, so
#   the AUCs barely move, but the probabilities the p > 0.5 rule reads do. It costs 1–2 s.
#   Measured (proposed, draw 0) at 28 epochs without it: test AUC 0.941 / 0.802, but no
#   invasive test patient reaches p > 0.5 (sensitivity 0.00) and 39 % of the high-grade ones
#   do; at 14 epochs neither task had any. The classifier has not fitted its bias: every
#   invasive patient sits just under 0.5, where its input carries no evidence for the class
#   (with 14 epochs a logistic regression on the very same classifier inputs found 16 of the
#   18 invasive test patients at p > 0.5, and so did 200–600 further steps of the classifier
#   alone; 40 epochs found 15 of 18, at 2.5× the time).
QUICK = replace(
    PAPER,
    name="quick",
    size=(64, 64, 12),
    width=8,
    epochs=22,
    dropout=0.2,
    warmup_epochs=1,
    step_size=1,
    gamma=0.9,
    contrastive_from_epoch=6,
    crop_min=50,
    head_steps=468,
    # A quick run takes 1-6 minutes: a hard kill loses at most 5; SIGTERM / SIGINT still
    # checkpoint it.
    checkpoint_minutes=5.0,
)
# smoke: seconds per configuration, for tests and the pipeline's smoke run; it checks plumbing,
# not learning. 16×16×8 is about the smallest input every network's strides accept.
SMOKE = replace(
    PAPER,
    name="smoke",
    size=(16, 16, 8),
    width=4,
    batch_size=8,
    epochs=2,
    warmup_epochs=1,
    step_size=1,
    gamma=0.9,
    contrastive_from_epoch=1,
    crop_min=12,
    head_steps=4,  # the quick profile's last stage, exercised
    checkpoint_minutes=1.0,  # runs take seconds: only signals checkpoint them
    n_patients=40,
    synth_shape=(64, 64, 12),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (PAPER, QUICK, SMOKE)}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise TclError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}") from None


def check_config(name: str) -> str:
    """Return ``name`` if it is one of the nine configurations, else raise listing them."""
    if name not in CONFIGS:
        raise TclError(
            f"unknown configuration {name!r}; valid configurations: {', '.join(CONFIGS)}"
        )
    return name


# How `make all` runs the 27 trainings when nobody says (its JOBS and THREADS knobs, and make's
# own -j). Measured on the 2-core development machine (quick profile, proposed): one training
# with 2 threads took 3.5 s per epoch; two side by side with 1 thread each 6.4 s per epoch each,
# i.e. 3.2 s per epoch of either, 9 % faster, and each training's single-threaded start-up,
# prediction and notebook overhead overlaps the other's epochs. Two OpenMP threads also slow
# down many times whenever anything else needs a core (tcl.runtime.configure_backend). Hence one
# thread per training, one training per core, up to MAX_CPU_JOBS at once (a quick training
# holds about 1 GB, its kernel included).
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
    import re

    match = re.search(r"(?:^|\s)-j(\d*)(?:\s|$)", f" {makeflags} ")
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else available_cpus()


def main(argv: list[str] | None = None) -> int:
    """``python -m tcl.config plan PROFILE JOBS THREADS MAKEFLAGS [--launched]`` prints what
    ``make all`` runs with: ``PROFILE JOBS THREADS JFLAG`` (PROFILE auto resolved: paper on CUDA,
    else quick; JOBS/THREADS ``auto`` or a number; JFLAG the -j option for the inner make, ``-``
    when the user's own ``make -jN`` already shares job slots).

    ``--launched``: the trainings run elsewhere (``make all LAUNCH="srun ..."``), so this
    machine's cores and GPUs decide nothing. PROFILE must be named, not auto; the trainings at
    once are JOBS, else make's -jN, else all of them (the scheduler queues what does not fit);
    THREADS defaults to 0, all the CPUs the job is given."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    launched = "--launched" in args
    args = [arg for arg in args if arg != "--launched"]
    if len(args) != 5 or args[0] != "plan":
        print(
            "usage: python -m tcl.config plan PROFILE JOBS THREADS MAKEFLAGS [--launched]",
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

    import torch

    cuda = torch.cuda.is_available()
    gpu_memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None
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
    import sys

    try:
        sys.exit(main())
    except TclError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
