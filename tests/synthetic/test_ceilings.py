"""The ceilings of the synthetic cohort (tcl.synthetic.ceilings) and the generator's calibration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from tcl.cli import run
from tcl.data.splits import make_draws
from tcl.synthetic import ceilings
from tcl.synthetic import cohort as synth
from tcl.utils import TclError


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0, 3.0])
def test_bayes_ceiling_of_two_gaussians_is_the_closed_form(d):
    """Two unit-covariance Gaussians whose means are d apart: the Bayes AUC is Phi(d / sqrt 2)."""
    model = {"neg": [(1.0, np.zeros(3))], "pos": [(1.0, np.array([d, 0.0, 0.0]))]}
    rng = np.random.default_rng(5)
    z, groups = ceilings.sample_factors(model, {"neg": 100_000, "pos": 100_000}, rng)
    score = ceilings.bayes_log_odds(z, model, {"neg": 0.5, "pos": 0.5}, ["pos"])
    auc = ceilings._auc((groups == "pos").astype(int), score)
    assert abs(auc - ndtr(d / np.sqrt(2))) < 0.005


def test_bayes_ranking_does_not_depend_on_the_prior_of_a_two_class_problem():
    model = {"neg": [(1.0, np.zeros(3))], "pos": [(0.5, np.ones(3)), (0.5, -np.ones(3))]}
    z = np.random.default_rng(0).standard_normal((500, 3))
    a = ceilings.bayes_log_odds(z, model, {"neg": 0.5, "pos": 0.5}, ["pos"])
    b = ceilings.bayes_log_odds(z, model, {"neg": 0.9, "pos": 0.1}, ["pos"])
    np.testing.assert_allclose(a - b, np.log(9.0), atol=1e-9)  # a constant shift
    with pytest.raises(ValueError, match="proper subset"):
        ceilings.bayes_log_odds(z, model, {"neg": 0.5, "pos": 0.5}, ["neg", "pos"])


def test_latent_model_follows_the_generator():
    """The densities the Bayes ceiling assumes are those sample_latents draws from."""
    params = synth.SynthParams()
    model = ceilings.latent_model(params)
    for group in synth.CLASSES:
        rng = np.random.default_rng(np.random.SeedSequence(4, spawn_key=(len(group),)))
        z = np.array(
            [[synth.sample_latents(rng, group, params)[f] for f in "AGI"] for _ in range(3000)]
        )
        expected = sum(w * m for w, m in model[group])
        np.testing.assert_allclose(z.mean(axis=0), expected, atol=0.08)


def test_bayes_curve_rises_with_kappa_and_matches_sampling():
    curve = ceilings.bayes_curve([0.5, 1.0, 2.0], per_cohort=20)
    assert list(curve.columns) == ["kappa", "invasion", "high_grade"]
    for task in ("invasion", "high_grade"):
        assert curve[task].is_monotonic_increasing
        assert 0.5 < curve[task].iloc[0] < curve[task].iloc[-1] < 1.0


def test_sampled_sign_values_equal_the_rendered_manifest(tmp_path):
    """sample_cohort_signs draws what synthesize_cohort writes, without rendering."""
    path = synth.synthesize_cohort(
        tmp_path, 9, seed=4, shape=(32, 32, 8), workers=1, progress=False
    )
    manifest = pd.read_csv(path)
    sampled = synth.sample_cohort_signs(9, seed=4)
    columns = [c for c in sampled.columns if c.startswith("latent_")]
    assert set(columns) <= set(manifest.columns)
    assert {"latent_tumour_ml", "latent_oedema_ml"} <= set(manifest.columns) - set(columns)
    for column in columns:
        if pd.api.types.is_numeric_dtype(sampled[column]):
            np.testing.assert_allclose(manifest[column], sampled[column], rtol=1e-5, err_msg=column)
        else:
            assert manifest[column].astype(str).tolist() == sampled[column].tolist(), column
    stored = json.loads((tmp_path / "synth.json").read_text())
    assert stored["seed"] == 4 and stored["params"]["kappa"] == synth.SynthParams().kappa
    assert ceilings.read_synth_params(path) == synth.SynthParams()


def test_ceilings_of_a_small_rendered_cohort(tmp_path):
    """Every ceiling, task and draw, from a rendered cohort's manifest, in [0.5, 1] where the
    labels are carried, and the linear learners below the Bayes rule on average."""
    path = synth.synthesize_cohort(
        tmp_path, 60, seed=2, shape=(32, 32, 8), workers=2, progress=False
    )
    manifest = pd.read_csv(path)
    draws = make_draws(manifest, 3, seed=666)
    tidy = ceilings.cohort_ceilings(manifest, draws, synth.SynthParams())
    from_manifest = [c for c in ceilings.CEILINGS if c != "input_lr"]  # input_lr: the cache's
    assert len(tidy) == len(from_manifest) * 2 * 3
    assert tidy.auc.between(0.3, 1.0).all()
    summary = ceilings.summarise(tidy)
    assert list(summary.index.get_level_values(0).unique()) == from_manifest
    assert list(summary.columns) == ["mean", "draw0", "draw1", "draw2"]
    assert (summary.loc["bayes", "mean"] > 0.8).all()
    # the full sign set holds the shared one's columns and more
    full = ceilings.sign_features(manifest)
    shared = ceilings.sign_features(manifest, shared_only=True)
    assert set(shared.columns) < set(full.columns)
    assert "latent_tumour_ml" in shared.columns and "latent_oedema_ml" in full.columns


def test_defaults_reach_the_calibration_targets():
    """The default cohort (800 patients, seed 0, the standard draws): the signs carry more than
    the paper's best row (invasion 0.9787, grade 0.8870) with margin, the tasks are not
    separable, and the task-specific signs matter (sign values as the manifest holds them,
    without the two rendered volumes)."""
    params = synth.SynthParams()
    table = synth.sample_cohort_signs(800, 0, params)
    draws = make_draws(table, 3, seed=666)
    mean = ceilings.summarise(ceilings.cohort_ceilings(table, draws, params))["mean"]
    assert mean["sign_lr", "invasion"] >= 0.975
    assert mean["sign_lr", "high_grade"] >= 0.91
    assert mean["bayes", "invasion"] < 0.999 and mean["bayes", "high_grade"] < 0.999
    for task in ("invasion", "high_grade"):
        assert mean["shared_sign_lr", task] < mean["sign_lr", task] - 0.03
        assert mean["sign_lr", task] <= mean["bayes", task]


def test_a_manifest_without_ground_truth_is_refused(tmp_path):
    table = pd.DataFrame({"patient_id": ["a", "b"], "who_grade": [1, 2], "invasion": [0, 1]})
    with pytest.raises(TclError, match="latent_aggressiveness.*synthetic"):
        ceilings.cohort_ceilings(table, [{"train": ["a"], "test": ["b"]}])
    bad = tmp_path / "synth.json"
    bad.write_text("{not json")
    with pytest.raises(TclError, match="synth.json"):
        ceilings.read_synth_params(tmp_path / "manifest.csv")


def test_cli_prints_and_writes_the_table(tmp_path, capsys):
    from tcl.data.splits import write_splits

    path = synth.synthesize_cohort(
        tmp_path, 40, seed=1, shape=(32, 32, 8), workers=1, progress=False
    )
    splits = tmp_path / "splits.json"
    write_splits(make_draws(pd.read_csv(path), 3, seed=666), splits, seed=666)
    out = tmp_path / "ceilings.csv"
    status = run(
        "ceilings",
        ["--manifest", str(path), "--splits", str(splits), "--out", str(out), "--kappa", "1", "2"],
    )
    text = capsys.readouterr().out
    assert status == 0 and "SYNTHETIC" in text and "sign_lr" in text and "against kappa" in text
    written = pd.read_csv(out)
    assert list(written.columns) == ["ceiling", "task", "draw", "auc"] and len(written) == 24


def test_input_features_are_the_documented_statistics():
    """42 columns in input_feature_names' order; each one checked against a direct computation
    on a volume whose values are known."""
    rng = np.random.default_rng(3)
    volumes = rng.standard_normal((5, 3, 16, 16, 4)).astype(np.float16)
    volumes[2, 1] = 0.0  # a constant sequence: percentiles 0, SD 0, gradient 0
    features = ceilings.input_features(volumes, chunk=2)
    names = ceilings.input_feature_names()
    assert features.shape == (5, 42) == (5, len(names))
    table = pd.DataFrame(features, columns=names)
    x = volumes.astype(np.float32)
    np.testing.assert_allclose(table["whole_adc_p50"], np.median(x[:, 2].reshape(5, -1), axis=1),
                               rtol=1e-6)  # fmt: skip
    centre = x[:, 0, 4:12, 4:12, :].reshape(5, -1)
    np.testing.assert_allclose(table["centre_t1c_sd"], centre.std(axis=1), rtol=1e-5)
    np.testing.assert_allclose(table["centre_t1c_p95"], np.percentile(centre, 95, axis=1),
                               rtol=1e-6)  # fmt: skip
    gradient = np.sqrt(sum(g**2 for g in np.gradient(x[:, 1], axis=(1, 2, 3))))
    np.testing.assert_allclose(table["whole_flairc_gradient"],
                               gradient.reshape(5, -1).mean(axis=1), rtol=1e-5)  # fmt: skip
    constant = table.filter(like="_flairc_").iloc[2]
    assert (constant == 0).all()


def test_input_ceiling_reads_a_sign_carried_by_the_input_and_not_noise():
    """A label that brightens the centre of T1C is found (AUC near 1); a label the volumes do
    not carry is not (AUC near 0.5)."""
    rng = np.random.default_rng(0)
    n = 240
    volumes = rng.standard_normal((n, 3, 16, 16, 4)).astype(np.float32)
    invasion = rng.integers(0, 2, n)
    high_grade = rng.integers(0, 2, n)
    volumes[invasion == 1, 0, 6:10, 6:10, :] += 1.5
    ids = [f"P{i:03d}" for i in range(n)]
    labels = pd.DataFrame({"invasion": invasion, "high_grade": high_grade}, index=ids)
    draws = [{"train": ids[:120], "test": ids[120:]}]
    tidy = ceilings.input_ceiling(volumes, ids, labels, draws)
    auc = tidy.set_index("task")["auc"]
    assert set(tidy["ceiling"]) == {"input_lr"}
    assert auc["invasion"] > 0.95 and abs(auc["high_grade"] - 0.5) < 0.15
    with pytest.raises(TclError, match="not in the cache"):
        ceilings.input_ceiling(volumes, ids, labels, [{"train": ["nobody"], "test": ids}])
