"""The radiomics reference (tcl.radiomics.reference): features, per-draw predictions, command
line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write_nifti

from tcl.cli import run
from tcl.data.manifest import read_manifest
from tcl.radiomics import ibsi
from tcl.radiomics import reference as radiomics
from tcl.synthetic import cohort as synth
from tcl.utils import TclError

N_PATIENTS = 24  # 19 WHO I, 2 invasive and 3 non-invasive high grade


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    return synth.synthesize_cohort(
        out, N_PATIENTS, seed=5, shape=(64, 64, 12), workers=2, progress=False
    )


@pytest.fixture(scope="module")
def features(cohort) -> pd.DataFrame:
    return radiomics.extract_features(read_manifest(cohort), workers=2)


def _draws(manifest: pd.DataFrame, n_draws: int = 2) -> list[dict[str, list[str]]]:
    """Hand-made draws with both classes of both tasks in every training set."""
    draws = []
    for k in range(n_draws):
        train = []
        for _, group in manifest.groupby(["who_grade", "invasion"]):
            ids = sorted(group.patient_id)
            rotated = ids[k % len(ids) :] + ids[: k % len(ids)]
            train += rotated[: max(1, len(ids) // 2)]
        test = sorted(set(manifest.patient_id) - set(train))
        draws.append({"train": sorted(train), "test": test})
    return draws


# Features that are undefined for some patients and left NaN for the classifier's imputer.
MAY_BE_MISSING = {"oedema_flairc_mean", "oedema_adc_mean"}


def test_features_are_finite_one_row_per_patient(cohort, features):
    manifest = read_manifest(cohort)
    assert list(features.patient_id) == list(manifest.patient_id)
    values = features.drop(columns=["patient_id", *MAY_BE_MISSING]).to_numpy()
    assert values.dtype == float and np.isfinite(values).all()
    # oedema intensities are missing exactly where there is no oedema, never filled in here
    no_oedema = features.oedema_ml == 0
    assert no_oedema.any() and (~no_oedema).any()
    assert (features.oedema_adc_mean.isna() == no_oedema).all()
    expected = {
        *radiomics.MORPHOLOGY,
        "oedema_ml",
        "oedema_ratio",
        "flairc_ring_ratio",
        "t1c_edge_sharpness",
    }
    for modality in ("t1c", "flairc", "adc"):
        expected |= {f"{modality}_stat_{name}" for name in radiomics.STATISTICS}
        expected |= {f"{modality}_{name}_2_5D_comb" for name in radiomics.TEXTURE}
    assert expected <= set(features.columns)
    # the features measure what they say: tumour volume follows the generator's ground truth
    truth = manifest.set_index("patient_id").loc[features.patient_id, "latent_tumour_ml"]
    assert np.corrcoef(truth, features.morph_vol_approx)[0, 1] > 0.9
    assert np.corrcoef(features.morph_volume, features.morph_vol_approx)[0, 1] > 0.99


def test_features_do_not_depend_on_worker_count(cohort, features):
    again = radiomics.extract_features(read_manifest(cohort), workers=1)
    pd.testing.assert_frame_equal(again, features)


def test_predict_draws_format(cohort, features):
    manifest = read_manifest(cohort)
    draws = _draws(manifest)
    predictions = radiomics.predict_draws(features, manifest, draws)
    assert list(predictions.columns) == list(radiomics.PREDICTION_COLUMNS)
    for k, draw in enumerate(draws):
        part = predictions[predictions.draw == k]
        assert sorted(part.patient_id) == draw["test"]
    assert predictions[["p_invasion", "p_high_grade"]].stack().between(0, 1).all()
    for task in radiomics.TASKS:
        assert (predictions[f"pred_{task}"] == (predictions[f"p_{task}"] > 0.5)).all()
    truth = manifest.set_index("patient_id")
    assert (
        predictions.invasion.to_numpy() == truth.loc[predictions.patient_id, "invasion"].to_numpy()
    ).all()
    assert (
        predictions.high_grade.to_numpy()
        == (truth.loc[predictions.patient_id, "who_grade"] >= 2).to_numpy()
    ).all()
    # seeded and deterministic
    pd.testing.assert_frame_equal(predictions, radiomics.predict_draws(features, manifest, draws))


def test_predict_draws_rejects_unknown_patients(cohort, features):
    manifest = read_manifest(cohort)
    draws = [{"train": ["NOPE"], "test": list(manifest.patient_id)}]
    with pytest.raises(TclError, match="NOPE"):
        radiomics.predict_draws(features, manifest, draws)


def test_mask_without_tumour_names_the_patient(cohort, tmp_path):
    manifest = read_manifest(cohort)
    row = manifest.iloc[0]
    empty = tmp_path / "mask.nii.gz"
    image = nib.load(row["mask"])
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(empty))
    paths = {c: row[c] for c in ("t1c", "flairc", "adc")} | {"mask": str(empty)}
    with pytest.raises(TclError, match=row["patient_id"]):
        radiomics.patient_features(paths, row["patient_id"])


def test_cli_writes_predictions_per_draw(cohort, tmp_path, capsys):
    manifest = read_manifest(cohort)
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"draws": _draws(manifest, 3)}))
    out = tmp_path / "radiomics"
    status = run("radiomics", ["--manifest", str(cohort), "--splits", str(splits),
                            "--out", str(out), "--workers", "1"])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "invasion" in printed and "mean" in printed
    for k in range(3):
        table = pd.read_csv(out / f"draw{k}" / "predictions.csv")
        assert list(table.columns) == list(radiomics.PREDICTION_COLUMNS) and (table.draw == k).all()


# ----------------------------------------------------------------------------- shape


def test_patient_features_report_the_shape_and_texture_of_a_ball_tumour(tmp_path):
    spacing = (1.0, 1.0, 3.0)
    # 11 mm ball in a 64×64×17 volume: tissue all around, as patient_features expects
    r = np.arange(-11, 12)
    x, y, z = np.meshgrid(r, r, np.arange(-4, 5) * 3.0, indexing="ij")
    ball = np.pad(x**2 + y**2 + z**2 <= 11**2, ((17, 17), (17, 17), (4, 4)))
    affine = np.diag([*spacing, 1.0])
    rng = np.random.default_rng(0)
    paths = {"mask": str(write_nifti(tmp_path / "mask.nii.gz", ball.astype(np.float32), affine))}
    for name, (tissue, lesion) in {
        "t1c": (300, 900),
        "flairc": (400, 700),
        "adc": (800, 600),
    }.items():
        image = np.where(ball, lesion, tissue) + rng.normal(0, 10, ball.shape)
        paths[name] = str(write_nifti(tmp_path / f"{name}.nii.gz", image, affine))
    values = radiomics.patient_features(paths, "BALL")
    shape = ibsi.morphology(ball, ball * 1.0, spacing)
    for (
        name
    ) in radiomics.MORPHOLOGY:  # IBSI's morphology of the tumour mask, as tcl.radiomics.ibsi has it
        assert values[name] == pytest.approx(shape[name]), name
    assert values["morph_vol_approx"] == pytest.approx(4 / 3 * math.pi * 11**3, rel=0.05)
    # T1C: the tumour is one value plus noise: 32 bins of noise, no spatial correlation
    assert abs(values["t1c_cm_corr_2_5D_comb"]) < 0.2
    assert values["adc_stat_mean"] == pytest.approx(600, abs=2)  # ADC keeps its units
    assert values["t1c_stat_mean"] == pytest.approx(3.0, rel=0.02)  # 900 / its tissue's 300


# ----------------------------------------------------------------------------- classifier


def _fake_cohort(monkeypatch, n: int = 40):
    """A manifest of ``n`` patients whose features come from a dict the test can edit:
    ``signal`` tracks invasion, ``oedema`` tracks grade and is missing for every third one."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(n)]
    invasion = np.array([int(i % 4 == 0) for i in range(n)])
    high_grade = np.array([int(i % 4 in (0, 1)) for i in range(n)])
    values = {
        pid: {
            "signal": float(invasion[i] + rng.normal(0, 0.7)),
            "oedema": math.nan if i % 3 == 0 else float(high_grade[i] + rng.normal(0, 0.7)),
        }
        for i, pid in enumerate(ids)
    }
    monkeypatch.setattr(radiomics, "patient_features", lambda paths, pid: dict(values[pid]))
    manifest = pd.DataFrame({
        "patient_id": ids, "who_grade": 1 + high_grade, "invasion": invasion,
        "t1c": "t1c", "flairc": "flairc", "adc": "adc", "mask": "mask",
    })  # fmt: skip
    return manifest, values


def test_missing_features_are_filled_from_the_training_patients_only(monkeypatch):
    manifest, values = _fake_cohort(monkeypatch)
    ids = list(manifest.patient_id)
    train, test = ids[::2], ids[1::2]
    draws = [{"train": train, "test": test}]
    features = radiomics.extract_features(manifest, workers=1)
    before = radiomics.predict_draws(features, manifest, draws).set_index("patient_id")
    # Move every test patient's known oedema far up: a cohort-wide median would move with it
    # and change the value filled in for the training patients, hence the fitted model.
    for pid in test:
        values[pid]["oedema"] += 100.0
    moved = radiomics.extract_features(manifest, workers=1)
    after = radiomics.predict_draws(moved, manifest, draws).set_index("patient_id")
    untouched = [pid for pid in test if math.isnan(values[pid]["oedema"])]
    assert len(untouched) == 7
    pd.testing.assert_frame_equal(after.loc[untouched], before.loc[untouched])
    # and the feature table itself leaves them missing: no statistic of the cohort in it
    assert features.oedema.isna().sum() == 14


def test_hard_label_is_class_one_only_above_one_half(monkeypatch):
    # The paper's rule, as the networks apply it: argmax of a two-class softmax, p > 0.5.
    manifest, _ = _fake_cohort(monkeypatch, n=8)
    ids = list(manifest.patient_id)
    scores = np.array([0.5, 0.5 + 1e-9, 0.5 - 1e-9, 0.9])

    class Fixed:
        def fit(self, x, y):
            return self

        def predict_proba(self, x):
            return np.column_stack((1 - scores, scores))

    monkeypatch.setattr(radiomics, "_model", lambda seed, folds: Fixed())
    features = radiomics.extract_features(manifest, workers=1)
    draws = [{"train": ids[:4], "test": ids[4:]}]
    predictions = radiomics.predict_draws(features, manifest, draws)
    for task in radiomics.TASKS:
        assert list(predictions[f"pred_{task}"]) == [0, 1, 0, 1]


def test_a_sequence_on_a_larger_grid_is_read_on_the_t1c_grid(cohort, tmp_path):
    """What validate accepts, radiomics reads: ADC stored with a wider field of view (3 more
    voxels on each in-plane side, same spacing) is resampled onto the T1C grid, which here
    reproduces it exactly, so the features are the original ones (an IndexError before)."""
    row = read_manifest(cohort).iloc[0]
    paths = {c: row[c] for c in ("t1c", "flairc", "adc", "mask")}
    image = nib.load(paths["adc"])
    data = np.pad(np.asanyarray(image.dataobj), ((3, 3), (3, 3), (0, 0)), constant_values=0)
    affine = image.affine.copy()
    affine[:3, 3] -= image.affine[:3, :3] @ [3, 3, 0]  # voxel (3, 3, 0) is the old (0, 0, 0)
    wider = str(tmp_path / "adc.nii.gz")
    nib.save(nib.Nifti1Image(data, affine, image.header), wider)
    original = radiomics.patient_features(paths, row["patient_id"])
    again = radiomics.patient_features(paths | {"adc": wider}, row["patient_id"])
    for name, value in original.items():
        assert again[name] == pytest.approx(value, rel=1e-4, abs=1e-4, nan_ok=True), name


def test_the_regularisation_is_chosen_within_the_training_patients():
    """C comes from an inner cross-validation on the training patients (strong signal, so a
    weakly regularised model wins); with a class of one training patient there are no folds
    and C stays at DEFAULT_C."""
    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 20)
    x = np.column_stack([y + rng.normal(0, 0.3, 40), rng.normal(0, 1, (40, 3))])
    chosen = radiomics._model(0, 5).fit(x, y).best_params_["logisticregression__C"]
    assert chosen in radiomics.REGULARISATION_GRID and chosen >= 0.1
    single = radiomics._model(0, 1).fit(x[:21], np.r_[np.zeros(20, int), 1])
    assert single[-1].C == radiomics.DEFAULT_C
