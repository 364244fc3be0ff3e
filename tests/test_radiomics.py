"""The radiomics reference (tcl.radiomics): features, per-draw predictions, command line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tcl import radiomics
from tcl.data import synth
from tcl.data.manifest import read_manifest
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


def test_features_are_finite_one_row_per_patient(cohort, features):
    manifest = read_manifest(cohort)
    assert list(features.patient_id) == list(manifest.patient_id)
    values = features.drop(columns="patient_id").to_numpy()
    assert values.dtype == float and np.isfinite(values).all()
    for name in (
        "tumour_ml",
        "oedema_ml",
        "oedema_ratio",
        "sphericity",
        "adc_mean",
        "t1c_glcm_contrast",
        "flairc_ring_ratio",
        "t1c_edge_sharpness",
    ):
        assert name in features.columns
    # the features measure what they say: tumour volume follows the generator's ground truth
    truth = manifest.set_index("patient_id").loc[features.patient_id, "latent_tumour_ml"]
    assert np.corrcoef(truth, features.tumour_ml)[0, 1] > 0.9
    assert (features.sphericity > 0).all() and (features.sphericity <= 1.3).all()


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
        assert (predictions[f"pred_{task}"] == (predictions[f"p_{task}"] >= 0.5)).all()
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
    status = radiomics.cli(["--manifest", str(cohort), "--splits", str(splits),
                            "--out", str(out), "--workers", "1"])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "invasion" in printed and "mean" in printed
    for k in range(3):
        table = pd.read_csv(out / f"draw{k}" / "predictions.csv")
        assert list(table.columns) == list(radiomics.PREDICTION_COLUMNS) and (table.draw == k).all()
