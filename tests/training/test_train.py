"""The training engine: runs end to end, resumes identically, is deterministic, schedules LR."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE, read_run_predictions, train_tiny

from tcl.config import CONFIGS, get_profile
from tcl.utils import TclError

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def smoke_runs(tiny_draws, tmp_path_factory) -> dict[str, Path]:
    """Each configuration's smoke run, trained once (on first use) and shared by the tests."""
    root = tmp_path_factory.mktemp("runs")

    class Runs(dict):
        def __missing__(self, config: str) -> Path:
            self[config] = train_tiny(tiny_draws, root / config, config)
            return self[config]

    return Runs()


@pytest.mark.parametrize("config", CONFIGS)
def test_every_configuration_trains_two_smoke_epochs(tiny_draws, smoke_runs, config):
    from tcl.evaluation.metrics import PREDICTION_COLUMNS
    from tcl.training.train import lr_at_epoch

    out = smoke_runs[config]
    table = read_run_predictions(out)
    test_ids = json.loads(tiny_draws[1].read_text())["draws"][0]["test"]
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


def test_same_seed_gives_identical_predictions(tiny_draws, smoke_runs, tmp_path):
    again = train_tiny(tiny_draws, tmp_path / "again")
    pd.testing.assert_frame_equal(
        read_run_predictions(again), read_run_predictions(smoke_runs["proposed"])
    )
    other = train_tiny(tiny_draws, tmp_path / "seed", seed=1)
    assert not np.allclose(
        read_run_predictions(other)["p_invasion"], read_run_predictions(again)["p_invasion"]
    )


def test_gradient_accumulation_and_saved_weights(tiny_draws, tmp_path):
    out = train_tiny(tiny_draws, tmp_path / "accum", grad_accum=2, save_weights=True)
    assert (out / "model.safetensors").exists() and (out / "model.json").exists()
    assert not (out / "model.pt").exists() and len(read_run_predictions(out)) == 12
    assert json.loads((out / "run.json").read_text())["grad_accum"] == 2


def test_classifier_refit_trains_only_the_classifiers_once(tiny_draws):
    """refit_classifiers (Profile.head_steps) changes each task's classifier and nothing else,
    lowers its training loss, is recorded, and a state that has it is not refitted again."""
    import torch

    from tcl.data.draw import load_draw
    from tcl.models import classifiers
    from tcl.training.train import refit_classifiers, start_training

    profile = replace(SMOKE, head_steps=60)
    cache, splits = tiny_draws
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
    from tcl.training.train import lr_at_epoch

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
    from tcl.training.train import lr_at_epoch

    profile = replace(SMOKE, warmup_epochs=0, step_size=2, gamma=0.5, lr=1.0)
    assert [lr_at_epoch(profile, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]


# ---------------------------------------------------------------------------- bad input


def test_bad_input_names_the_fix(tiny_draws, tmp_path):
    from tcl.cli import run as cli
    from tcl.training.runtime import oom_error

    cache, splits = tiny_draws
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
        train_tiny((cache, tmp_path / "missing.json"), tmp_path / "x")
    with pytest.raises(TclError, match="python -m tcl preprocess"):
        train_tiny((tmp_path / "no-cache", splits), tmp_path / "x")
    with pytest.raises(TclError, match="divisor"):
        train_tiny(tiny_draws, tmp_path / "x", grad_accum=3)
    message = str(oom_error(32, 1, 32))
    assert "32 samples" in message and "--grad-accum 2" in message and "batch still 32" in message
