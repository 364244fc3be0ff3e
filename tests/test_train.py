"""The training engine: runs end to end, resumes identically, is deterministic, schedules LR."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_cache

from tcl.config import CONFIGS, get_profile
from tcl.utils import TclError


def write_tiny_splits(path: Path, cache: Path, n_draws: int = 2) -> Path:
    """Draws of half the cohort for training (every class represented), half for testing."""
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    draws = []
    for k in range(n_draws):
        ids = index["patient_id"].tolist()
        train = sorted(ids[k % 2 :: 2])
        draws.append({"train": train, "test": sorted(set(ids) - set(train))})
    path.write_text(json.dumps({"draws": draws}))
    return path


# ---------------------------------------------------------------------------- fixtures

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny cache at the smoke size and its splits file."""
    root = tmp_path_factory.mktemp("cohort")
    cache = write_tiny_cache(root / "cache", n_patients=24, size=SMOKE.size)
    return cache, write_tiny_splits(root / "splits.json", cache)


def run(cohort, out: Path, config: str = "proposed", profile=SMOKE, **kwargs) -> Path:
    from tcl.train import train_run

    cache, splits = cohort
    # One thread: on a shared 2-core machine a second OpenMP thread mostly spins (see
    # tcl.runtime.configure_backend); results are bit-reproducible for a given thread count.
    kwargs.setdefault("threads", 1)
    return train_run(config, 0, profile, cache, splits, out, device="cpu", quiet=True, **kwargs)


def predictions(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions.csv", dtype={"patient_id": str})


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke_runs(cohort, tmp_path_factory) -> dict[str, Path]:
    """Each configuration's smoke run, trained once (on first use) and shared by the tests."""
    root = tmp_path_factory.mktemp("runs")

    class Runs(dict):
        def __missing__(self, config: str) -> Path:
            self[config] = run(cohort, root / config, config)
            return self[config]

    return Runs()


@pytest.mark.parametrize("config", CONFIGS)
def test_every_configuration_trains_two_smoke_epochs(cohort, smoke_runs, config):
    from tcl.metrics import PREDICTION_COLUMNS
    from tcl.train import lr_at_epoch

    out = smoke_runs[config]
    table = predictions(out)
    test_ids = json.loads(cohort[1].read_text())["draws"][0]["test"]
    assert list(table.columns) == list(PREDICTION_COLUMNS)
    assert sorted(table["patient_id"]) == sorted(test_ids) and (table["draw"] == 0).all()
    assert table[["p_invasion", "p_high_grade"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["pred_invasion"] == (table["p_invasion"] > 0.5)).all()
    history = pd.read_csv(out / "history.csv")
    assert len(history) == SMOKE.epochs
    assert np.isfinite(history["total"]).all()
    assert np.allclose(history["lr"], [lr_at_epoch(SMOKE, e) for e in range(SMOKE.epochs)])
    for column in ("cls_invasion", "cls_grade", "seconds", "samples_per_s"):
        assert column in history
    info = json.loads((out / "run.json").read_text())
    assert info["config"] == config and info["profile"]["name"] == "smoke"
    assert info["parameters"] > 0 and info["flops_per_sample"]["forward"] > 0
    assert info["provenance"]["commit"] and info["cache"]["meta_hash"]
    assert info["stem_impl"] == "conv"  # auto on CPU: the plain convolution
    kernels = info["kernels"]  # what picks the floating-point kernels besides the code
    assert kernels["device"] == "cpu" and kernels["threads"] == 1 and kernels["cpu"]
    assert kernels["aten_capability"] and kernels["onednn_isa"] != ""
    assert {"ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR"} <= set(kernels)
    assert info["classifiers_refit"]["steps"] == SMOKE.head_steps
    assert not (out / "checkpoint.pt").exists() and not (out / "model.safetensors").exists()


def test_contrastive_terms_are_zero_before_their_epoch_and_present_after(smoke_runs):
    assert SMOKE.contrastive_from_epoch == 1
    for config in ("proposed", "baseline3"):
        history = pd.read_csv(smoke_runs[config] / "history.csv")
        for term in ("con_invasion", "con_grade"):
            assert history[term][0] == 0 and history[term][1] > 0
    for config in ("baseline2", "baseline4"):  # no Lcon in these configurations
        assert "con_invasion" not in pd.read_csv(smoke_runs[config] / "history.csv")


# ---------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_predictions(cohort, smoke_runs, tmp_path):
    again = run(cohort, tmp_path / "again")
    pd.testing.assert_frame_equal(predictions(again), predictions(smoke_runs["proposed"]))
    other = run(cohort, tmp_path / "seed", seed=1)
    assert not np.allclose(predictions(other)["p_invasion"], predictions(again)["p_invasion"])


# Four epochs of three steps (12 training patients, batch 4), so that a checkpoint can fall in
# the middle of an epoch; no periodic checkpoint unless a test asks for one.
LONGER = replace(SMOKE, epochs=4, batch_size=4, checkpoint_minutes=60.0)
STEPS_PER_EPOCH = 3


@pytest.fixture(scope="module")
def uninterrupted(cohort, tmp_path_factory) -> Path:
    """LONGER trained in one go (no checkpoint written): what every resumed run must equal."""
    return run(cohort, tmp_path_factory.mktemp("whole") / "run", profile=LONGER)


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
    from tcl.checkpoints import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoint.pt")
    return state["epoch"], state["step"]


def test_checkpoint_after_every_step_at_interval_zero_and_resume(cohort, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    every_step = replace(LONGER, checkpoint_minutes=0.0)
    run(cohort, out, profile=every_step, max_epochs=3)  # "killed" right after epoch 3
    assert not (out / "predictions.csv").exists()
    assert checkpoint_position(out) == (3, 0) and len(pd.read_csv(out / "history.csv")) == 3
    # the interval is no part of the run's identity: another one resumes this checkpoint
    run(cohort, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


class _Planted:
    """What a stranger could pickle into a checkpoint: unpickling it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_without_running_it(cohort, tmp_path):
    import torch

    from tcl.checkpoints import load_checkpoint

    out = tmp_path / "run"
    run(cohort, out, profile=replace(LONGER, checkpoint_minutes=0.0), max_epochs=1)
    state = load_checkpoint(out / "checkpoint.pt")  # what tcl writes loads safely
    marker = tmp_path / "code-ran"
    state["history"].append(_Planted(marker))
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(
        TclError, match=r"checkpoint\.pt holds more than tensors and plain values \(it refers to "
    ):
        run(cohort, out, profile=LONGER)
    assert not marker.exists() and not (out / "predictions.csv").exists()


def test_checkpoint_by_time_mid_epoch_and_resume(cohort, uninterrupted, tmp_path, monkeypatch):
    import tcl.checkpoints
    import tcl.train

    now = [0.0]  # a clock that advances one minute per optimiser step, and only then
    step = tcl.train.train_step

    def one_minute_step(*args, **kwargs):
        row = step(*args, **kwargs)
        now[0] += 60.0
        return row

    monkeypatch.setattr(tcl.checkpoints, "clock", lambda: now[0])
    monkeypatch.setattr(tcl.train, "train_step", one_minute_step)
    out = tmp_path / "killed"
    # every 3.5 minutes: after steps 4 and 8 (epoch 1 step 1, epoch 2 step 2), not at step 9,
    # where max_epochs "kills" the run: the work of step 9 is lost and redone
    run(cohort, out, profile=replace(LONGER, checkpoint_minutes=3.5), max_epochs=3)
    assert checkpoint_position(out) == (2, 2)
    assert len(pd.read_csv(out / "history.csv")) == 3  # written after each epoch, kept
    monkeypatch.undo()
    run(cohort, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


def signalling_step(monkeypatch, at_step: int, *signals: int) -> None:
    """Make optimiser step ``at_step`` (1-based) send this process ``signals`` mid-step."""
    import os

    import tcl.train

    calls = [0]
    step = tcl.train.train_step

    def step_then_signal(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at_step:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return step(*args, **kwargs)

    monkeypatch.setattr(tcl.train, "train_step", step_then_signal)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_checkpoints_stops_and_resumes_identically(
    cohort, uninterrupted, tmp_path, monkeypatch, name
):
    import signal

    from tcl.checkpoints import RunInterrupted

    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    signalling_step(monkeypatch, 5, signum)  # epoch 1, its second step
    out = tmp_path / "stopped"
    with pytest.raises(RunInterrupted) as stopped:
        run(cohort, out, profile=LONGER)
    message = str(stopped.value)
    assert stopped.value.status == 128 + signum and "\n" not in message
    assert f"by {name} in epoch 2 of 4 after step 2/3" in message and "rerun" in message
    assert checkpoint_position(out) == (1, 2) and not (out / "predictions.csv").exists()
    assert signal.getsignal(signum) is before  # the run's handler is gone
    monkeypatch.undo()
    run(cohort, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


def test_resuming_with_another_thread_count_says_it_is_not_bit_identical(cohort, tmp_path, capsys):
    out = tmp_path / "killed"
    run(cohort, out, profile=replace(LONGER, checkpoint_minutes=0.0), max_epochs=1)
    capsys.readouterr()
    run(cohort, out, profile=LONGER, threads=2)
    said = capsys.readouterr().out
    assert "resuming" in said and "cpu with 1 thread(s)" in said and "not be bit-identical" in said


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_second_signal_aborts_at_once_without_checkpoint(cohort, tmp_path, monkeypatch, name):
    import signal

    from tcl.utils import StopSignals

    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    # a second SIGTERM counts once it comes later than a scheduler's duplicate would
    monkeypatch.setattr(StopSignals, "SAME_REQUEST_S", 0.0)
    signalling_step(monkeypatch, 2, signum, signum)
    out = tmp_path / "aborted"
    with pytest.raises(KeyboardInterrupt):
        run(cohort, out, profile=LONGER)
    assert not (out / "checkpoint.pt").exists() and not (out / "predictions.csv").exists()
    assert signal.getsignal(signum) is before


def test_two_sigterms_at_once_are_one_request_as_when_slurm_stops_a_notebook(
    cohort, uninterrupted, tmp_path, monkeypatch
):
    """scancel reaches a notebook's kernel twice (Slurm signals every process of the job, and
    tcl.notebooks forwards its own): the run must still checkpoint, not abort."""
    import signal

    from tcl.checkpoints import RunInterrupted

    signalling_step(monkeypatch, 5, signal.SIGTERM, signal.SIGTERM)
    out = tmp_path / "stopped"
    with pytest.raises(RunInterrupted, match="by SIGTERM in epoch 2 of 4 after step 2/3"):
        run(cohort, out, profile=LONGER)
    assert checkpoint_position(out) == (1, 2)
    monkeypatch.undo()
    run(cohort, out, profile=LONGER)
    assert_same_run(out, uninterrupted)


def test_train_command_exits_on_sigterm_with_one_line_and_a_checkpoint(cohort, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cache, splits = cohort
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


def test_finished_run_is_kept_and_other_settings_are_refused(cohort, smoke_runs):
    from tcl.utils import TclError

    done = smoke_runs["proposed"]
    stamp = (done / "predictions.csv").stat().st_mtime_ns
    run(cohort, done)  # already complete: nothing is retrained
    assert (done / "predictions.csv").stat().st_mtime_ns == stamp
    with pytest.raises(TclError, match="--force"):
        run(cohort, done, seed=5)


def test_retrain_replaces_a_finished_run_but_resumes_its_own_checkpoint(cohort, tmp_path, capsys):
    out = run(cohort, tmp_path / "run")
    stamp = (out / "predictions.csv").stat().st_mtime_ns
    run(cohort, out, seed=5, retrain=True)  # other settings: replaced, not refused
    assert (out / "predictions.csv").stat().st_mtime_ns != stamp
    assert json.loads((out / "run.json").read_text())["seed"] == 5
    stamp = (out / "predictions.csv").stat().st_mtime_ns
    run(cohort, out, seed=5, retrain=True)  # same settings: trained again, not skipped
    assert (out / "predictions.csv").stat().st_mtime_ns != stamp

    whole = run(cohort, tmp_path / "whole", profile=LONGER)
    killed = tmp_path / "killed"
    every_step = replace(LONGER, checkpoint_minutes=0.0)
    run(cohort, killed, profile=every_step, max_epochs=3)
    capsys.readouterr()
    run(cohort, killed, profile=LONGER, retrain=True)  # its own checkpoint: resumed
    assert "resuming" in capsys.readouterr().out
    pd.testing.assert_frame_equal(predictions(killed), predictions(whole))
    run(cohort, tmp_path / "other", profile=every_step, max_epochs=3)
    capsys.readouterr()
    run(cohort, tmp_path / "other", retrain=True)  # another profile's checkpoint: start over
    assert "resuming" not in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "other" / "history.csv")) == SMOKE.epochs


def test_gradient_accumulation_and_saved_weights(cohort, tmp_path):
    out = run(cohort, tmp_path / "accum", grad_accum=2, save_weights=True)
    assert (out / "model.safetensors").exists() and (out / "model.json").exists()
    assert not (out / "model.pt").exists() and len(predictions(out)) == 12
    assert json.loads((out / "run.json").read_text())["grad_accum"] == 2


def test_classifier_refit_trains_only_the_classifiers_once(cohort):
    """refit_classifiers (Profile.head_steps) changes each task's classifier and nothing else,
    lowers its training loss, is recorded, and a state that has it is not refitted again."""
    import torch

    from tcl.data.draw import load_draw
    from tcl.models import classifiers
    from tcl.train import refit_classifiers, start_training

    profile = replace(SMOKE, head_steps=60)
    cache, splits = cohort
    device = torch.device("cpu")
    data = load_draw(cache, splits, 0, profile, device)
    state = start_training("proposed", profile, 0, device, None)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    heads = {id(p) for head in classifiers(state.model).values() for p in head.parameters()}
    head_names = {n for n, p in state.model.named_parameters() if id(p) in heads}
    refit_classifiers(state, data, profile, seed=0)
    after = {k: v.clone() for k, v in state.model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= head_names
    record = state.classifiers_refit
    assert record["steps"] == 60 and set(record["loss"]) == {"invasion", "grade"}
    refit_classifiers(state, data, profile, seed=0)  # already refitted: nothing happens
    assert all(torch.equal(after[k], v) for k, v in state.model.state_dict().items())
    assert state.checkpoint({})["classifiers_refit"] == record


def test_paper_protocol_has_no_classifier_refit():
    assert get_profile("paper").head_steps == 0 and get_profile("quick").head_steps > 0


# ---------------------------------------------------------------------------- schedule


def test_paper_schedule_is_the_released_one_without_its_zero_lr_epochs():
    from tcl.train import lr_at_epoch

    paper = get_profile("paper")
    lrs = [lr_at_epoch(paper, e) for e in range(paper.epochs)]
    assert np.allclose(lrs[:10], [2e-4, 4e-4, 6e-4, 8e-4] + [1e-3] * 5 + [8e-4])
    assert np.isclose(lrs[13], 8e-4) and np.isclose(lrs[14], 6.4e-4)
    assert np.isclose(lrs[97], 1e-3 * 0.8**18)  # the released run's last LR, ≈ 1.8e-5
    released = [lr_at_epoch(replace(paper, zero_lr_epochs=2), e) for e in range(100)]
    assert released[:2] == [0.0, 0.0] and np.allclose(released[2:7], [2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert np.allclose(released[7:11], 1e-3) and np.isclose(released[11], 8e-4)
    assert np.isclose(released[99], 1.8e-5, rtol=0.02)


def test_schedule_without_warmup_starts_at_peak():
    from tcl.train import lr_at_epoch

    profile = replace(SMOKE, warmup_epochs=0, step_size=2, gamma=0.5, lr=1.0)
    assert [lr_at_epoch(profile, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]


# ---------------------------------------------------------------------------- bad input


def test_bad_input_names_the_fix(cohort, tmp_path):
    from tcl.cli import run as cli
    from tcl.runtime import oom_error
    from tcl.utils import TclError

    cache, splits = cohort
    common = ["--draw", "0", "--cache", str(cache), "--splits", str(splits), "--out", str(tmp_path)]
    with pytest.raises(TclError, match="valid configurations: efmt"):
        cli("train", ["--config", "nope", "--profile", "smoke", *common])
    with pytest.raises(TclError, match="valid profiles: paper, quick, smoke"):
        cli("train", ["--config", "proposed", "--profile", "nope", *common])
    with pytest.raises(TclError, match="python -m tcl preprocess .*--size 64 64 12"):
        cli("train", ["--config", "proposed", "--profile", "quick", *common])
    with pytest.raises(TclError, match="out of range.*2 draw"):
        cli("train", ["--config", "proposed", "--profile", "smoke", "--draw", "2", *common[2:]])
    with pytest.raises(TclError, match="python -m tcl splits"):
        run((cache, tmp_path / "missing.json"), tmp_path / "x")
    with pytest.raises(TclError, match="python -m tcl preprocess"):
        run((tmp_path / "no-cache", splits), tmp_path / "x")
    with pytest.raises(TclError, match="divisor"):
        run(cohort, tmp_path / "x", grad_accum=3)
    message = str(oom_error(32, 1, 32))
    assert "32 samples" in message and "--grad-accum 2" in message and "batch still 32" in message


def test_bench_reports_throughput_flops_and_data_share(tmp_path):
    from tcl.cli import run as cli
    from tcl.perf.bench import gpu_peak_tflops

    out = tmp_path / "bench.json"
    cli("bench", ["--config", "proposed", "--profile", "smoke", "--steps", "1", "--warmup", "1",
         "--device", "cpu", "--threads", "1", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["train_samples_per_s"] > 0 and report["inference_samples_per_s"] > 0
    assert report["flops_per_sample"]["train_step"] > report["flops_per_sample"]["forward"] > 0
    assert 0 < report["fraction_of_peak"] and 0 < report["data_augmentation_share"] < 1
    assert report["peak_memory_bytes"] > 0
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_peak_tflops("Some Future GPU") is None


def test_prediction_halves_the_batch_when_memory_runs_out():
    import torch

    from tcl.inference import predict
    from tcl.utils import TclError

    class Model(torch.nn.Module):
        """Says class 1 with probability sigmoid(mean(x)); runs "out of memory" above 3."""

        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            self.batches.append(len(x))
            if len(x) > 3:
                raise torch.OutOfMemoryError("fake")
            score = x.mean(dim=(1, 2, 3, 4))
            logits = torch.stack((torch.zeros_like(score), score), dim=1)
            return {"invasion": logits, "grade": -logits}

    volumes = np.random.default_rng(0).normal(size=(10, 3, 4, 4, 2)).astype(np.float16)
    rows = np.array([9, 0, 3, 5, 7, 1, 2])
    model = Model()
    p_invasion, p_high_grade = predict(model, volumes, rows, 16, torch.device("cpu"))
    expected = 1 / (1 + np.exp(-volumes[rows].astype(np.float32).mean(axis=(1, 2, 3, 4))))
    np.testing.assert_allclose(p_invasion, expected, rtol=1e-6)
    np.testing.assert_allclose(p_high_grade, 1 - expected, rtol=1e-5)
    assert model.batches[:4] == [7, 7, 4, 2] and max(model.batches[4:]) <= 2

    class Hopeless(Model):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            raise torch.OutOfMemoryError("fake")

    with pytest.raises(TclError, match="single test patient"):
        predict(Hopeless(), volumes, rows, 4, torch.device("cpu"))


@pytest.mark.parametrize("config", ["efmt", "mmoe", "proposed"])
def test_flops_on_the_meta_twin_equal_the_real_models(config):
    """On CUDA run.json's FLOPs come from a shape-only twin (no batch-1 cudnn autotuning); they
    must be the counts of the real network, as counted on CPU."""
    import torch

    from tcl.models.cost import run_flops
    from tcl.train import build_model

    model = build_model(config, SMOKE, torch.device("cpu"))
    on_cpu = run_flops(model, config, SMOKE, torch.device("cpu"))
    # any non-CPU device takes the meta path; nothing is allocated on it
    assert run_flops(model, config, SMOKE, torch.device("cuda")) == on_cpu > 0


def test_kernels_name_the_instruction_set_onednn_uses():
    """kernel_setup (which a resumed checkpoint compares) says which instruction set the CPU
    kernels use; in a fresh process ONEDNN_MAX_CPU_ISA=AVX2 shows as oneDNN's AVX2."""
    import subprocess
    import sys

    import torch

    from tcl.runtime import kernel_setup

    assert kernel_setup(torch.device("cpu")).startswith("cpu with")
    code = "import torch; from tcl.runtime import onednn_isa; print(onednn_isa())"
    env = {**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    isa = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    from tcl.runtime import onednn_isa

    if "AVX-512" in onednn_isa():  # a cap below the CPU's own instruction set shows
        assert isa.stdout.strip().startswith("Intel AVX2"), isa.stdout
    else:
        assert "AVX-512" not in isa.stdout and isa.stdout.strip(), isa.stdout
