"""Tests that fail when nothing is learned: the training loop and the radiomics reference must
rank test patients on a tiny cohort with an unmistakable signal, where predicting the prior
cannot pass; and gradient accumulation must give the unaccumulated gradient.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_tiny_cache
from sklearn.metrics import roc_auc_score
from torch import nn

from tcl.config import get_profile
from tcl.data.splits import read_splits
from tcl.evaluation.metrics import TASKS
from tcl.perf import learning
from tcl.synthetic.ceilings import cache_input_ceiling

# Smoke sizes, long enough to learn: 16 epochs of 4 steps (32 training patients, batch 8) at a
# decaying LR, without dropout or augmentation, so that the test measures learning, not luck.
# Width 8, not smoke's 4: at width 4 a dead hidden unit can silence a head for good. Measured
# over seeds 0-9 (signal 3): the lowest test AUC of either task was 0.979, about 7 s a run.
LEARNING = replace(
    get_profile("smoke"),
    width=8,
    epochs=16,
    lr=5e-3,
    dropout=0.0,
    augment_p=0.0,
    warmup_epochs=1,
    step_size=1,
    gamma=0.85,
    contrastive_from_epoch=8,
    checkpoint_minutes=1000.0,
)
HIGH_AUC = 0.9


def stratified_draw(cache: Path) -> Path:
    """One draw: every other patient of each (invasion, high_grade) class trains, the rest test."""
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    train: list[str] = []
    for _, group in index.groupby(["invasion", "high_grade"]):
        train += list(group["patient_id"])[::2]
    test = sorted(set(index["patient_id"]) - set(train))
    path = cache.parent / "splits.json"
    path.write_text(json.dumps({"draws": [{"train": sorted(train), "test": test}]}))
    return path


def assert_learned(predictions: pd.DataFrame, threshold: float = HIGH_AUC) -> None:
    """Test AUC of both tasks at least ``threshold`` (p_<task> scores, <task> labels)."""
    for task in TASKS:
        auc = roc_auc_score(predictions[task], predictions[f"p_{task}"])
        assert auc >= threshold, f"{task}: test AUC {auc:.3f} < {threshold}"


@pytest.fixture(scope="module")
def learning_cohort(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("learning")
    # 64 patients: 16 invasive (all high grade) and 16 more high grade; signal 3 noise SDs
    cache = write_tiny_cache(root / "cache", n_patients=64, size=LEARNING.size, signal=3.0)
    return cache, stratified_draw(cache)


def test_proposed_network_learns_a_planted_signal_and_the_prior_would_fail(
    learning_cohort, tmp_path
):
    from tcl.training.train import train_run

    cache, splits = learning_cohort
    out = train_run("proposed", 0, LEARNING, cache, splits, tmp_path / "run", device="cpu",
                    quiet=True, threads=1)  # fmt: skip
    predictions = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert len(predictions) == 32 and predictions["invasion"].sum() == 8
    assert_learned(predictions)
    # The training loss fell well below the class-prior entropy (0.56 invasion, 0.69 grade).
    last = pd.read_csv(out / "history.csv").iloc[-1]
    assert last["cls_invasion"] < 0.3 and last["cls_grade"] < 0.3
    # A model that predicts the training prior for everybody fails the same check.
    prior = predictions.assign(p_invasion=0.25, p_high_grade=0.5)
    with pytest.raises(AssertionError, match="invasion: test AUC 0.500"):
        assert_learned(prior)
    # So does one that learned only one task.
    with pytest.raises(AssertionError, match="high_grade: test AUC 0.500"):
        assert_learned(predictions.assign(p_high_grade=0.5))


def test_learning_curve_tool_records_rising_auc_and_the_input_yardstick_reads_the_cache(
    learning_cohort, tmp_path
):
    """tcl.perf.learning on the planted signal: one row per evaluated epoch with train and test
    AUC of both tasks, the last one high, and a refit row; the input yardstick of the same
    cache (tcl.synthetic.ceilings) reads the planted signal too."""
    cache, splits = learning_cohort
    profile = learning.override(LEARNING, ["epochs=8", "head_steps=3"])
    assert (profile.epochs, profile.head_steps, profile.size) == (8, 3, LEARNING.size)
    out = tmp_path / "curve.csv"
    status = learning.main(
        ["--config", "efmt", "--profile", "smoke", "--cache", str(cache), "--splits", str(splits),
         "--every", "4", "--threads", "1", "--out", str(out), "--set", "epochs=8",
         "--set", "width=8", "--set", "lr=0.005", "--set", "dropout=0", "--set", "augment_p=0",
         "--set", f"size={'x'.join(map(str, LEARNING.size))}"]
    )  # fmt: skip
    assert status == 0
    table = pd.read_csv(out)
    assert list(table["epoch"]) == [3, 7, -1]  # epochs 4 and 8, then after the refit
    for column in ("train_auc_invasion", "test_auc_invasion", "test_auc_grade_noninv"):
        assert table[column].between(0, 1).all()
    assert table["test_auc_invasion"].iloc[-1] >= HIGH_AUC
    assert table["test_auc_grade"].iloc[-1] >= HIGH_AUC
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["profile"]["epochs"] == 8 and "--set" not in record["overrides"]
    assert learning.main(["--config", "efmt", "--set", "nonsense=1", "--out", str(out)]) == 2

    yardstick = cache_input_ceiling(cache, read_splits(splits)).set_index("task")["auc"]
    assert (yardstick >= HIGH_AUC).all(), yardstick


# The reversed split (--reverse) and the yardstick of the split a curve trained on.
def both_classes_in_both_parts(cache: Path, path: Path) -> Path:
    """One draw whose training and test parts each hold both classes of both tasks (the
    yardstick's logistic regression needs them on whichever part it trains on)."""
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    ids = index.sort_values(["invasion", "high_grade", "patient_id"])["patient_id"].tolist()
    train = ids[::3]  # 8 of 24: parts of unequal size, so a swap shows in their counts
    test = [p for p in ids if p not in train]
    path.write_text(json.dumps({"draws": [{"train": train, "test": test}]}))
    return path


@pytest.mark.parametrize("reverse", [False, True])
def test_curve_reads_against_the_yardstick_of_the_split_it_trained_on(
    tiny_draws, tmp_path, reverse
):
    cache = tiny_draws[0]
    splits = both_classes_in_both_parts(cache, tmp_path / "splits.json")
    out = tmp_path / "curve.csv"
    argv = ["--config", "efmt", "--profile", "smoke", "--cache", str(cache)]
    argv += ["--splits", str(splits), "--threads", "1", "--out", str(out)]
    assert learning.main(argv + (["--reverse"] if reverse else [])) == 0

    draw = read_splits(splits)[0]
    split = {"train": draw["test"], "test": draw["train"]} if reverse else draw
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["reversed"] is reverse
    assert (record["n_train"], record["n_test"]) == (len(split["train"]), len(split["test"]))
    expected = cache_input_ceiling(cache, [split]).set_index("task")["auc"].to_dict()
    assert record["input_yardstick"] == pytest.approx(expected)
    # one row per epoch (smoke: 2) and the row after the classifier refit
    table = pd.read_csv(out)
    assert table["epoch"].tolist() == [0, 1, -1]
    assert table["test_auc_grade"].between(0, 1).all()


def test_a_draw_the_splits_do_not_hold_is_refused(tiny_draws, tmp_path, capsys):
    cache, splits = tiny_draws
    argv = ["--config", "efmt", "--profile", "smoke", "--cache", str(cache), "--draw", "7"]
    assert learning.main(argv + ["--splits", str(splits), "--out", str(tmp_path / "c.csv")]) == 2
    assert "--draw 7" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()


# ---------------------------------------------------------------------------- radiomics


@pytest.fixture(scope="module")
def radiomics_cohort(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """160 synthetic patients at 64×64×12 (131 WHO I, 29 high grade of which 12 invasive)."""
    from tcl.data.manifest import read_manifest
    from tcl.radiomics import reference as radiomics
    from tcl.synthetic import cohort as synth

    out = tmp_path_factory.mktemp("radiomics")
    manifest = read_manifest(
        synth.synthesize_cohort(out, 160, seed=5, shape=(64, 64, 12), workers=1, progress=False)
    )
    return manifest, radiomics.extract_features(manifest, workers=1)


def test_radiomics_reference_beats_chance_clearly(radiomics_cohort):
    from tcl.radiomics import reference as radiomics

    manifest, features = radiomics_cohort
    classes = manifest.groupby(["who_grade", "invasion"])["patient_id"].apply(sorted)
    draws = []
    for k in range(3):  # half of each class trains, a different half per draw
        rng = np.random.default_rng(k)
        train = [pid for ids in classes for pid in rng.permutation(ids)[: len(ids) // 2]]
        test = sorted(set(manifest.patient_id) - set(train))
        draws.append({"train": sorted(train), "test": test})
    predictions = radiomics.predict_draws(features, manifest, draws)
    aucs = radiomics.auc_table(predictions)
    # Measured: invasion 0.74, 0.82, 0.93; grade 0.86, 0.82, 0.91. Chance is 0.5.
    assert (aucs.mean() >= 0.75).all(), aucs
    assert (aucs.min() >= 0.65).all(), aucs
    constant = predictions.assign(p_invasion=0.5, p_high_grade=0.5)
    assert (radiomics.auc_table(constant) == 0.5).all().all()


# ---------------------------------------------------------------------------- grad accumulation


class NoBatchNorm(nn.Module):
    """A small network without BatchNorm or dropout, so the micro-batches of gradient
    accumulation see exactly the function the whole batch sees. Float64 weights: summation
    order then moves a gradient by ~1e-7 relative instead of ~1e-4 (float32 convolution over
    16·16·8 voxels), far below what a wrongly weighted micro-batch does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1, dtype=torch.float64)
        self.invasion = nn.Linear(4, 2, dtype=torch.float64)
        self.grade = nn.Linear(4, 2, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.conv(x.double())).mean(dim=(2, 3, 4))
        return {"invasion": self.invasion(h), "grade": self.grade(h)}


class RecordingSGD(torch.optim.SGD):
    """Plain SGD (linear in the gradient, unlike Adam, which hides a wrongly scaled gradient)
    that keeps a copy of every gradient it is asked to apply."""

    steps: list[list[torch.Tensor]] = []

    def __init__(self, params, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)

    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        grads = [p.grad.detach().clone() for g in self.param_groups for p in g["params"]]
        RecordingSGD.steps.append(grads)
        return super().step(closure)


@pytest.mark.parametrize("grad_accum", [2, 4])
def test_accumulated_micro_batches_give_the_whole_batch_gradient(
    learning_cohort, tmp_path, monkeypatch, grad_accum
):
    import tcl.training.train

    monkeypatch.setattr(tcl.training.train, "build_model", lambda *args: NoBatchNorm())
    monkeypatch.setattr(torch.optim, "Adam", RecordingSGD)
    cache, splits = learning_cohort
    profile = replace(LEARNING, epochs=2, augment_p=0.0, head_steps=0)  # no classifiers here
    runs = {}
    for accum in (1, grad_accum):
        RecordingSGD.steps = []
        out = tcl.training.train.train_run(
            "efmt", 0, profile, cache, splits, tmp_path / f"a{accum}",
            device="cpu", quiet=True, threads=1, grad_accum=accum,
        )  # fmt: skip
        runs[accum] = RecordingSGD.steps, pd.read_csv(out / "predictions.csv")
    (whole, whole_pred), (accumulated, accumulated_pred) = runs[1], runs[grad_accum]
    assert len(whole) == len(accumulated) == 2 * 4  # 2 epochs of 4 steps
    # Equal up to summation order; a micro-batch weighted wrongly would be off by a factor of
    # up to grad_accum.
    for step_whole, step_accumulated in zip(whole, accumulated, strict=True):
        for a, b in zip(step_whole, step_accumulated, strict=True):
            assert torch.linalg.vector_norm(b - a) <= 1e-6 * torch.linalg.vector_norm(a)
    assert all(torch.linalg.vector_norm(g) > 1e-3 for g in whole[0])  # gradients worth comparing
    np.testing.assert_allclose(accumulated_pred["p_invasion"], whole_pred["p_invasion"], rtol=1e-5)


def test_proposed_network_gradient_is_the_sum_of_scaled_micro_batch_gradients():
    # The real network (BatchNorm in eval mode, so a micro-batch is normalised as the whole
    # batch is) and every loss term of Eq. 4, contrastive ones included: each term must be a
    # batch mean for the trainer's len(part) / len(batch) weights to be right.
    from tcl.models import build
    from tcl.training.train import forward_backward

    torch.manual_seed(0)
    model = build("proposed", width=4, dropout=0.0).eval()
    x = torch.randn(6, 3, *LEARNING.size)
    invasion, high_grade = torch.tensor([1, 0, 0, 1, 0, 0]), torch.tensor([1, 1, 0, 1, 0, 0])
    profile = replace(LEARNING, contrastive_from_epoch=0)
    whole = forward_backward(model, x, invasion, high_grade, "proposed", profile, epoch=0)
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    parts = [slice(0, 2), slice(2, 6)]  # unequal micro-batches: weights 2/6 and 4/6
    summed = {}
    for part in parts:
        terms = forward_backward(model, x[part], invasion[part], high_grade[part], "proposed",
                                 profile, epoch=0, scale=(part.stop - part.start) / 6)  # fmt: skip
        summed = {k: summed.get(k, 0) + v for k, v in terms.items()}
    assert set(whole) >= {"con_invasion", "aux_grade"}
    for name, value in whole.items():
        torch.testing.assert_close(summed[name], value, rtol=1e-5, atol=1e-6)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
