"""The device check's own logic (tcl/perf/gpu_check.py, tcl/perf/gpu_wheels.py), without a GPU: the
AUC it reports, reading a run, which carried wheels it installs, the carried make for a machine
without one, the time budget (a phase out of time is skipped, a command out of time is stopped
with its children), the summary."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tcl" / "perf" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check")
gpu_wheels = _load("gpu_wheels")


def test_auc_counts_pairs_and_half_ties(tmp_path):
    # The check's AUCs come from tcl.evaluation.stats in a worker process (the check itself imports
    # only the standard library): 2 positives, 2 negatives: pairs (0.8>0.3), (0.8>0.5),
    # (0.5=0.5 → ½), (0.5>0.3); then many ties against scikit-learn.
    from sklearn.metrics import roc_auc_score

    def run_with(scores, labels, name):
        run = tmp_path / name
        run.mkdir()
        rows = "".join(
            f"p{i},0,{s},{s},{y},{y}\n" for i, (s, y) in enumerate(zip(scores, labels, strict=True))
        )
        (run / "predictions.csv").write_text(
            "patient_id,draw,p_invasion,p_high_grade,invasion,high_grade\n" + rows
        )
        return run

    rng = random.Random(0)
    labels = [rng.randint(0, 1) for _ in range(200)]
    scores = [round(rng.random(), 1) for _ in range(200)]  # many ties
    runs = [
        run_with([0.8, 0.5, 0.5, 0.3], [1, 1, 0, 0], "four"),
        run_with([0.1, 0.2], [1, 1], "one_class"),
        run_with(scores, labels, "ties"),
    ]
    aucs = gpu_check.run_aucs(runs)
    assert aucs[str(runs[0])]["auc_invasion"] == pytest.approx(3.5 / 4)
    assert aucs[str(runs[1])]["auc_grade"] is None
    assert aucs[str(runs[2])]["auc_invasion"] == pytest.approx(roc_auc_score(labels, scores))


def test_run_summary_reads_seconds_and_aucs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"train_seconds": 12.5, "eval_seconds": 1.0,
                                              "wall_seconds_this_session": 20.0}))  # fmt: skip
    (run / "predictions.csv").write_text(
        "patient_id,draw,p_invasion,p_high_grade,invasion,high_grade\n"
        "a,0,0.9,0.2,1,0\nb,0,0.1,0.8,0,1\nc,0,0.4,0.7,0,1\n"
    )
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"metadata": {"papermill": {"duration": 33.3}}}))
    row = gpu_check.run_summary(run, notebook)
    assert row["finished"] and row["n_test"] == 3
    assert row["auc_invasion"] == 1.0 and row["auc_grade"] == 1.0
    assert row["train_seconds"] == 12.5 and row["notebook_seconds"] == 33.3
    (run / "predictions.csv").unlink()
    assert gpu_check.run_summary(run, None)["finished"] is False


def test_only_missing_wheels_are_installed(tmp_path):
    assert gpu_check.wheel_name("jupyter_client-8.10.0-py3-none-any.whl") == "jupyter-client"
    for name in ("pytest-8.0.0-py3-none-any.whl", "no_such_dist_xyz-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert [w.name for w in gpu_check.missing_wheels(tmp_path)] == [
        "no_such_dist_xyz-1.0-py3-none-any.whl"
    ]


def test_wheel_list_follows_requirements_and_leaves_out_the_images_packages():
    wanted, _ = gpu_wheels.closure(["nibabel", "papermill"], "3.12")
    assert {"nibabel", "papermill", "nbclient", "nbformat", "jupyter-client"} <= set(wanted)
    assert not set(wanted) & gpu_wheels.PROVIDED  # numpy, torch, ... are never carried
    roots = gpu_wheels.runtime_roots()
    assert "nibabel" in roots and "torch" not in roots and "numpy" not in roots


def _check(tmp_path, *extra: str):
    args = gpu_check.parse_args(["--out", str(tmp_path), "--profile", "smoke",
                                 "--wheels", str(tmp_path / "none"), *extra])  # fmt: skip
    return gpu_check.Check(args)


def test_a_command_out_of_time_is_stopped_with_its_children(tmp_path):
    check = _check(tmp_path)
    marker = tmp_path / "child-alive"
    # a child that would outlive its parent's kill if only the parent were killed
    script = f"(sleep 3; touch {marker}) & sleep 60"
    start = time.monotonic()
    code, seconds = check.run(["bash", "-c", script], timeout=1)
    assert code is None and seconds < 30 and time.monotonic() - start < 30
    time.sleep(4)
    assert not marker.exists()
    assert "out of time" in (tmp_path / "log.txt").read_text()


def test_phases_out_of_budget_are_skipped_and_summarised(tmp_path):
    check = _check(tmp_path, "--budget-s", "20", "--phases", "env,stem,pipeline")
    assert check.main() == 1  # skipped phases count as not done
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["phases"]["env"]["status"] == "ok"
    assert summary["env"]["torch"] and summary["env"]["missing_imports"] == []
    assert summary["phases"]["stem"]["status"] == "skipped: out of time"
    assert summary["phases"]["pipeline"]["status"] == "skipped: out of time"
    assert "| stem | skipped: out of time | 0 |" in (tmp_path / "summary.md").read_text()


def test_unknown_phase_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--phases", "env,warp"])


def test_markdown_shows_every_table():
    bench = {"stem_impl": "s2d_depth", "train_samples_per_s": 450.0,
             "inference_samples_per_s": 1300.0, "train_tflops_per_s": 240.0,
             "fraction_of_peak": 0.24, "stem_share_estimate": 0.05, "peak_memory_gib": 9.1,
             "setup_seconds": 5.0, "first_step_seconds": 3.0}  # fmt: skip
    summary = {
        "profile": "paper", "budget_s": 480, "started": "now", "wall_seconds": 470.0,
        "env": {"gpu": "NVIDIA H200"},
        "phases": {
            "stem": {"status": "ok", "seconds": 9.0, "batch": 32, "device": "NVIDIA H200",
                     "rows": [{"in_channels": 1, "impl": "conv", "forward_ms": 9.8,
                               "train_ms": 22.0, "train_speedup_vs_conv": 1.0,
                               "peak_memory_mb": 300.0, "max_abs_diff": 0.0}]},
            "bench": {"status": "ok", "seconds": 100.0, "rows": {"proposed": bench}},
            "pipeline": {"status": "out of time", "seconds": 300.0, "command": "make all",
                         "wall_seconds": 300.0, "trainings_finished": 1,
                         "trainings_expected": 9,
                         "runs": {"proposed/draw0": {"finished": True, "auc_invasion": 0.83,
                                                     "auc_grade": 0.75}}},
        },
    }  # fmt: skip
    text = gpu_check.markdown(summary)
    assert "| 1 | conv | 9.8 | 22 | 1 | 300 | 0 |" in text
    assert "| proposed | s2d_depth | 450 | 1,300 | 240 | 0.24 | 0.05 |" in text
    assert "1 of 9 trainings finished" in text
    assert "| proposed/draw0 | True | – | – | – | 0.83 | 0.75 |" in text


def test_script_help_runs_without_the_project_installed():
    # only the standard library and tcl.config (numpy) at start-up
    result = subprocess.run([sys.executable, str(ROOT / "tcl" / "perf" / "gpu_check.py"), "--help"],
                            capture_output=True, text=True, cwd="/")  # fmt: skip
    assert result.returncode == 0 and "--budget-s" in result.stdout


def test_the_fastest_stem_is_chosen_for_later_phases():
    rows = [
        {"in_channels": 1, "impl": "conv", "train_ms": 22.0},
        {"in_channels": 1, "impl": "s2d_depth", "train_ms": 6.0},
        {"in_channels": 1, "impl": "s2d_2d", "train_ms": 5.5},
        {"in_channels": 3, "impl": "conv", "train_ms": 1.0},  # other channel counts ignored
    ]
    choice = gpu_check.fastest_stem(rows, in_channels=1)
    assert choice["impl"] == "s2d_2d" and "conv 22 ms" in choice["why"]
    assert gpu_check.fastest_stem(rows, in_channels=2) is None
    summary = {"profile": "paper", "budget_s": 480, "started": "now", "phases": {},
               "stem_choice": choice}  # fmt: skip
    assert "Later phases ran stem `s2d_2d`" in gpu_check.markdown(summary)


def _fake_make_deb(path: Path) -> None:
    """A Debian package laid out as make's (ar: debian-binary, control.tar.xz, data.tar.xz
    holding ./usr/bin/make), whose make is a script that says who it is."""

    def tar(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", tar({"./control": b"Package: make\n"})),
        ("data.tar.xz", tar({"./usr/share/doc/make/README": b"odd length!",
                             "./usr/bin/make": b"#!/bin/sh\necho carried make $@\n"})),
    ]  # fmt: skip
    blob = b"!<arch>\n"
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
        blob += header.encode() + data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(blob)


def test_a_machine_without_make_gets_the_carried_one(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_make_deb(wheels / "make_4.3-4.1_amd64.deb")
    args = gpu_check.parse_args(["--out", str(tmp_path / "out"), "--wheels", str(wheels),
                                 "--site", str(tmp_path / "site")])  # fmt: skip
    check = gpu_check.Check(args)
    check.env["PATH"] = str(tmp_path / "empty")  # a machine with no make on its PATH
    found = check.ensure_make()
    assert found == str(tmp_path / "site" / "bin" / "make")
    assert check.env["PATH"].split(os.pathsep)[0] == str(tmp_path / "site" / "bin")
    out = subprocess.run(["make", "-v"], env=check.env, capture_output=True, text=True)
    assert out.stdout.strip() == "carried make -v"
    # a machine with its own make keeps it, and nothing is unpacked
    check = gpu_check.Check(gpu_check.parse_args(
        ["--out", str(tmp_path / "out2"), "--wheels", str(wheels), "--site", str(tmp_path / "s2")]
    ))  # fmt: skip
    assert check.ensure_make() == shutil.which("make") and not (tmp_path / "s2").exists()
    not_a_deb = tmp_path / "make_0_amd64.deb"
    not_a_deb.write_text("a text file, not an ar archive\n")
    with pytest.raises(ValueError, match="not a Debian package"):
        gpu_check.unpack_make(not_a_deb, tmp_path / "x")
