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
    assert f"-p manifest {manifest} " in command
    assert "-p cache ../data/mycohort/16x16x8 " in command
    assert "-p results ../results/smoke-mycohort " in command
    assert "-p figures ../figures/smoke-mycohort" in command
    assert any(f"tcl validate {manifest}" in line for line in lines)
    assert not any("tcl synth" in line for line in lines)


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
