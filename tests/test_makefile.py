"""The Makefile's pipeline wiring, checked with ``make -n`` (prints the commands, runs nothing)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(*variables: str) -> list[str]:
    """The commands ``make pipeline`` would run from scratch, one per line."""
    result = subprocess.run(
        ["make", "-n", "-B", "pipeline", f"PYTHON={sys.executable}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def training_command(lines: list[str]) -> str:
    return next(line for line in lines if "02_train_proposed_draw0" in line)


def test_own_cohort_by_absolute_path_reaches_notebooks_unchanged_and_outputs_apart(tmp_path):
    manifest = tmp_path / "mycohort" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.touch()
    lines = dry_run("PROFILE=smoke", f"DATA={manifest}")
    command = training_command(lines)
    cohort = _cohort_of(command)
    assert cohort.startswith("mycohort-")
    assert f"-p manifest {manifest} " in command
    assert f"-p cache ../data/{cohort}/16x16x8 " in command
    assert f"-p results ../results/smoke-{cohort} " in command
    assert f"-p figures ../figures/smoke-{cohort}" in command
    assert any(f"tcl validate {manifest}" in line for line in lines)
    assert not any("tcl synth" in line for line in lines)


def test_make_data_runs_the_data_steps_only_into_the_paths_notebooks_read(tmp_path):
    # what notebook 01 asks for (tcl.pipeline.chapters.prepare_cohort): the same data steps as
    # the pipeline's, into the folders the training notebooks are given, and nothing more
    manifest = tmp_path / "mycohort" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.touch()
    for knobs in (("PROFILE=smoke",), ("PROFILE=smoke", f"DATA={manifest}")):
        data = subprocess.run(
            ["make", "-n", "-B", "data", f"PYTHON={sys.executable}", *knobs],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        inner = next(line for line in data.splitlines() if " cohort PROFILE=" in line)
        assert "plan plan smoke" in data
        steps = subprocess.run(
            ["make", "-n", "-B", "cohort", f"PYTHON={sys.executable}", *knobs],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        pipeline = dry_run(*knobs)
        command = training_command(pipeline)
        cache = command.split("-p cache ../")[1].split()[0]
        splits = command.split("-p splits ../")[1].split()[0]
        assert [line for line in steps if "python" in line and "tcl " in line] == [
            line for line in pipeline if " -m tcl synth" in line or " -m tcl validate" in line
            or " -m tcl preprocess" in line or " -m tcl splits" in line
        ]  # fmt: skip
        assert any(f"--out {cache}" in line for line in steps), (cache, steps)
        assert any(f"--out {splits}" in line for line in steps), (splits, steps)
        assert not any("02_train" in line or "radiomics" in line for line in steps)
        assert (f'DATA="{manifest}"' in inner) == (len(knobs) == 2)


def _cohort_of(command: str) -> str:
    return command.split("-p cohort ")[1].split()[0]


def test_two_manifests_in_folders_of_one_name_never_share_outputs(tmp_path):
    """A cohort is its manifest: registered/ here and registered/ there are two cohorts, with
    their own cache, splits and results; the same manifest always gets the same folders."""
    manifests = [tmp_path / site / "registered" / "manifest.csv" for site in ("a", "b")]
    for manifest in manifests:
        manifest.parent.mkdir(parents=True)
        manifest.touch()
    cohorts = [
        _cohort_of(training_command(dry_run("PROFILE=smoke", f"DATA={m}"))) for m in manifests
    ]
    assert cohorts[0] != cohorts[1] and all(c.startswith("registered-") for c in cohorts)
    again = _cohort_of(training_command(dry_run("PROFILE=smoke", f"DATA={manifests[0]}")))
    assert again == cohorts[0]


def test_synthetic_default_paths_and_gpu_sharing():
    command = training_command(dry_run("PROFILE=smoke"))
    assert "-p manifest ../data/synthetic-smoke/raw/manifest.csv " in command
    assert "-p results ../results/smoke " in command and "--gpus" not in command
    assert "--gpus 0,1 " in training_command(dry_run("PROFILE=smoke", "GPUS=0,1"))


def test_the_proposed_network_is_always_kept_and_others_on_request():
    def saved(lines: list[str], config: str) -> bool:
        command = next(line for line in lines if f"02_train_{config}_draw1" in line)
        assert "-p save_weights " in command
        return "-p save_weights True" in command

    default = dry_run("PROFILE=smoke")
    assert saved(default, "proposed") and not saved(default, "efmt")
    chosen = dry_run("PROFILE=smoke", "SAVE_WEIGHTS=efmt mmoe")
    assert saved(chosen, "efmt") and saved(chosen, "mmoe") and not saved(chosen, "maml")
    assert saved(chosen, "proposed")
    every = dry_run("PROFILE=smoke", "SAVE_WEIGHTS=all")
    assert all(saved(every, c) for c in ("efmt", "mfmt", "mmoe", "maml", "baseline1"))
    assert any("07_predict_explain.ipynb" in line for line in default)


def trainings(lines: list[str]) -> list[str]:
    """``config_drawK`` of every training notebook make would run."""
    return [line.split("02_train_")[1].split(".ipynb")[0] for line in lines if "02_train_" in line]


def test_draws_restricts_trainings_evaluation_and_the_one_draw_notebooks():
    everything = dry_run("PROFILE=smoke")
    assert len(trainings(everything)) == 27
    assert any(
        "tcl evaluate" in line and "--draw 0 --draw 1 --draw 2" in line for line in everything
    )
    assert any("tcl splits" in line and "--draws 3" in line for line in everything)

    only0 = dry_run("PROFILE=smoke", "DRAWS=0")
    assert sorted(trainings(only0)) == sorted(f"{c}_draw0" for c in CONFIGS)
    evaluate = next(line for line in only0 if "tcl evaluate" in line)
    assert evaluate.rstrip().endswith("--draw 0")
    assert any("tcl splits" in line and "--draws 3" in line for line in only0)  # still three
    assert any("tcl radiomics" in line for line in only0)
    for notebook in ("06_representations", "07_predict_explain"):
        assert "-p draw 0" in next(line for line in only0 if f"{notebook}.ipynb" in line)

    later = dry_run("PROFILE=quick", "DRAWS=1 2")
    assert {t.split("_")[-1] for t in trainings(later)} == {"draw1", "draw2"}
    assert len(trainings(later)) == 18
    assert (
        next(line for line in later if "tcl evaluate" in line)
        .rstrip()
        .endswith("--draw 1 --draw 2")
    )
    assert "-p draw 1" in next(line for line in later if "06_representations.ipynb" in line)
    # the README's results block shows all three draws of a full run, never a partial one
    assert not any("tcl report readme" in line for line in later)
    assert any("tcl report readme" in line for line in dry_run("PROFILE=quick"))


CONFIGS = ("efmt", "mfmt", "mmoe", "maml", "baseline1", "baseline2", "baseline3", "baseline4",
           "proposed")  # fmt: skip


@pytest.mark.parametrize("draws", ["3", "0 5", "x", " "])
def test_a_draw_outside_the_splits_is_refused_naming_draws(draws):
    result = subprocess.run(
        ["make", "-n", "pipeline", f"PYTHON={sys.executable}", "PROFILE=smoke", f"DRAWS={draws}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "DRAWS must list draws among 0 1 2" in result.stderr


def test_all_runs_trainings_side_by_side_with_one_thread_each_on_cpu():
    import os

    import torch

    from tcl.pipeline.plan import parallel_plan

    def plan(*variables: str, flags: tuple[str, ...] = ()) -> list[str]:
        # make -n still runs the recipe that calls $(MAKE), which then only prints; -B: as
        # from scratch, whatever results/ already holds
        result = subprocess.run(
            ["make", "-n", "-B", *flags, "all", f"PYTHON={sys.executable}", "PROFILE=smoke",
             *variables],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return result.stdout.splitlines()

    jobs, threads = parallel_plan(os.cpu_count() or 1, torch.cuda.is_available())
    lines = plan()
    assert f"tcl: {jobs} training(s) at once, {threads} CPU thread(s) each" in "\n".join(lines)
    assert f"-p threads {threads} " in training_command(lines)
    lines = plan("THREADS=1", "DRAWS=0")  # the user's THREADS and DRAWS reach the pipeline
    assert "-p threads 1 " in training_command(lines) and len(trainings(lines)) == 9
    lines = plan("JOBS=1")
    assert "tcl: 1 training(s) at once" in "\n".join(lines)


def test_launch_runs_each_training_through_the_scheduler_named_and_data_steps_on_request():
    lines = dry_run("PROFILE=smoke", "LAUNCH=srun --gres=gpu:1 -c 8", "LAUNCH_CPU=srun -c 16")
    commands = [line for line in lines if "02_train_" in line]
    assert len(commands) == 27
    for command in commands:
        config, draw = trainings([command])[0].rsplit("_", 1)  # e.g. proposed, draw0
        name = f"SLURM_JOB_NAME=tcl-smoke-{config}-{draw} srun --gres=gpu:1 -c 8 "
        assert command.startswith(name + f"{sys.executable} -m tcl.pipeline.run_notebook"), command
    for step in ("tcl synth", "tcl preprocess", "tcl radiomics"):
        line = next(line for line in lines if step in line)
        assert line.startswith(f"SLURM_JOB_NAME=tcl-{step.split()[1]} srun -c 16 "), line
    # the evaluation and the report notebooks stay where make runs
    assert not any("srun" in line for line in lines if "tcl evaluate" in line or "05_" in line)
    # LAUNCH alone: data steps run locally
    lines = dry_run("PROFILE=smoke", "LAUNCH=srun")
    assert not any("srun" in line for line in lines if "tcl preprocess" in line)
    assert all(line.startswith("SLURM_JOB_NAME=") for line in lines if "02_train_" in line)


def test_launch_with_gpus_is_refused_since_slurm_chooses_the_gpu():
    result = subprocess.run(
        ["make", "-n", "pipeline", f"PYTHON={sys.executable}", "PROFILE=smoke", "GPUS=0,1",
         "LAUNCH=srun --gres=gpu:1"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "GPUS and LAUNCH were both given" in result.stderr


def test_all_with_launch_needs_a_named_profile_and_queues_every_training():
    def all_(*variables: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "-n", "-B", *flags, "all", f"PYTHON={sys.executable}", "LAUNCH=srun",
             *variables],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip

    refused = all_()  # PROFILE=auto would look for CUDA on this machine, not the nodes
    assert refused.returncode != 0 and "PROFILE=auto chooses by whether this machine" in (
        refused.stderr
    )
    planned = all_("PROFILE=paper")
    assert planned.returncode == 0, planned.stderr
    assert "tcl: 27 training(s) at once, 0 CPU thread(s) each" in planned.stdout
    assert "through: srun" in planned.stdout
    planned = all_("PROFILE=smoke", "THREADS=4", flags=("-j", "5"))
    assert "tcl: 5 training(s) at once, 4 CPU thread(s) each" in planned.stdout


def _make_database() -> dict[str, list[str]]:
    """Every explicit rule of ``make pipeline PROFILE=smoke``: target -> prerequisites."""
    result = subprocess.run(
        ["make", "-pn", "pipeline", "PROFILE=smoke", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rules: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        target, sep, rest = line.partition(": ")
        if sep and not line.startswith(("#", "\t", " ")) and " " not in target and "=" not in line:
            rules.setdefault(target, []).extend(rest.split("|")[0].split())
    return rules


def _upstream(rules: dict[str, list[str]], target: str) -> set[str]:
    """The target's prerequisites, theirs, and so on."""
    seen: set[str] = set()
    todo = [target]
    while todo:
        for prerequisite in rules.get(todo.pop(), []):
            if prerequisite not in seen:
                seen.add(prerequisite)
                todo.append(prerequisite)
    return seen


@pytest.mark.parametrize(
    "target, module",
    [
        ("results/smoke/runs/proposed/draw0/predictions.csv", "tcl.training.train"),
        ("results/smoke/runs/radiomics/draw0/predictions.csv", "tcl.radiomics.reference"),
        ("results/smoke/evaluation/metrics_summary.csv", "tcl.evaluation.evaluate"),
    ],
)
def test_every_module_a_step_imports_is_among_its_makefile_prerequisites(target, module):
    """Editing any module a step runs (the p > 0.5 rule in tcl/tasks.py, the seeding in
    tcl/utils.py) must make that step run again."""
    imported = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(*sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = {name.replace(".", "/") + ".py" for name in imported if name.startswith("tcl.")} | {
        name.replace(".", "/") + "/__init__.py" for name in imported if name.startswith("tcl.")
    }
    needed = {path for path in files if (ROOT / path).is_file()}
    missing = needed - _upstream(_make_database(), target)
    assert not missing, f"{target} does not depend on {sorted(missing)}"


def test_a_cohort_of_ones_own_stops_at_misregistration_unless_accepted(tmp_path):
    """validate exits 1 when series seem misregistered, which stops make before preprocess;
    ACCEPT_MISREGISTRATION=1 passes the knob that lets it go on."""
    manifest = tmp_path / "mycohort" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.touch()
    validate = [line for line in dry_run("PROFILE=smoke", f"DATA={manifest}") if "validate" in line]
    assert validate and "--accept-misregistration" not in validate[0]
    lines = dry_run("PROFILE=smoke", f"DATA={manifest}", "ACCEPT_MISREGISTRATION=1")
    validate = [line for line in lines if "tcl validate" in line]
    assert validate[0].endswith(f"tcl validate {manifest} --accept-misregistration")
