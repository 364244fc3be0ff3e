"""Using a trained network: saved models, ``tcl predict`` on new patients, explanation maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest


def _predict(*args: str, alignment: bool = False) -> int:
    """``python -m tcl predict`` on one CPU thread. The misregistration check (a registration
    per patient, most of a call's time) runs only where asked: one test below keeps it, on
    five of a run's test patients, and finds nothing to flag; the check itself is tested with
    validate in tests/data/test_register.py."""
    from tcl.cli import main

    quick = [] if alignment else ["--no-alignment-check"]
    return main(
        ["predict", *args, "--device", "cpu", "--threads", "1", "--workers", "1", "--quiet",
         *quick]
    )  # fmt: skip


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id")


# ---------------------------------------------------------------------------- saved models


# ---------------------------------------------------------------------------- predict


def test_predicting_a_runs_test_patients_from_raw_files_reproduces_its_predictions(
    trained, tmp_path
):
    out = tmp_path / "p.csv"
    assert _predict("--model", str(trained["run0"]), "--manifest", str(trained["test"]),
                    "--out", str(out)) == 0  # fmt: skip
    # the misregistration check (a registration per patient) on five of them: it only reads,
    # so the probabilities are those without it
    five = trained["test"].with_name("five.csv")  # beside it: its paths are relative
    pd.read_csv(trained["test"], dtype=str, keep_default_na=False).head(5).to_csv(five, index=False)
    checked = tmp_path / "checked.csv"
    assert _predict("--model", str(trained["run0"]), "--manifest", str(five),
                    "--out", str(checked), alignment=True) == 0  # fmt: skip
    assert "misregistered" not in checked.with_name("checked.csv.json").read_text()
    pd.testing.assert_frame_equal(_read(checked), _read(out).loc[_read(checked).index])
    ours, theirs = _read(out), _read(trained["run0"] / "predictions.csv")
    assert sorted(ours.index) == sorted(theirs.index)
    ours = ours.loc[theirs.index]
    for column in ("p_invasion", "p_high_grade"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=0, atol=1e-5)
    for column in ("pred_invasion", "pred_high_grade", "invasion", "high_grade"):
        assert (ours[column] == theirs[column]).all(), column
    assert list(pd.read_csv(out).columns[:5]) == [
        "patient_id", "p_invasion", "p_high_grade", "pred_invasion", "pred_high_grade",
    ]  # fmt: skip
    sidecar = json.loads(out.with_name("p.csv.json").read_text())
    assert sidecar["averaging"] == "one model" and sidecar["decision_rule"] == "p > 0.5"


def test_several_models_are_averaged_and_the_output_says_so(trained, tmp_path):
    out = tmp_path / "p.csv"
    assert _predict("--model", str(trained["run0"]), "--model", str(trained["run1"]),
                    "--manifest", str(trained["test"]), "--out", str(out)) == 0  # fmt: skip
    both = _read(out)
    singles = []
    for run in ("run0", "run1"):
        single = tmp_path / f"{run}.csv"
        assert _predict("--model", str(trained[run]), "--manifest", str(trained["test"]),
                        "--out", str(single)) == 0  # fmt: skip
        singles.append(_read(single).loc[both.index])
    expected = (singles[0]["p_invasion"] + singles[1]["p_invasion"]) / 2
    np.testing.assert_allclose(both["p_invasion"], expected, atol=1e-12)
    assert not np.allclose(singles[0]["p_invasion"], singles[1]["p_invasion"])
    assert (both["n_models"] == 2).all()
    assert "mean of 2 models" in json.loads(out.with_name("p.csv.json").read_text())["averaging"]


def _reoriented_patient(source: Path, target: Path, ornt_codes: tuple[str, str, str]) -> None:
    """Store every file of a patient folder in another voxel order (same anatomy)."""
    from nibabel import orientations

    target.mkdir(parents=True)
    for path in source.glob("*.nii.gz"):
        image = nib.load(str(path))
        transform = orientations.ornt_transform(
            nib.io_orientation(image.affine), orientations.axcodes2ornt(ornt_codes)
        )
        data = orientations.apply_orientation(np.asanyarray(image.dataobj), transform)
        affine = image.affine @ orientations.inv_ornt_aff(transform, image.shape)
        nib.save(nib.Nifti1Image(data, affine, image.header), str(target / path.name))


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("P", "L", "S"), ("S", "R", "A")])
def test_the_same_patient_in_another_orientation_gets_the_same_prediction(trained, tmp_path, codes):
    table = pd.read_csv(trained["test"], dtype=str, keep_default_na=False).head(2)
    raw = trained["manifest"].parent
    rows = []
    for _, row in table.iterrows():
        folder = tmp_path / "moved" / row.patient_id
        _reoriented_patient(raw / row.patient_id, folder, codes)
        assert nib.aff2axcodes(nib.load(str(folder / "t1c.nii.gz")).affine) == codes
        moved = row.copy()
        for column in ("t1c", "flairc", "adc", "mask", "signs"):
            moved[column] = str(folder / Path(row[column]).name)
        rows.append(moved)
    manifest = tmp_path / "moved.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    # the same two patients as stored (beside the test manifest: its paths are relative)
    originals = trained["test"].with_name(f"originals-{''.join(codes)}.csv")
    table.to_csv(originals, index=False)
    out, reference = tmp_path / "moved_p.csv", tmp_path / "p.csv"
    model = str(trained["run0"])
    assert _predict("--model", model, "--manifest", str(manifest), "--out", str(out)) == 0
    assert _predict("--model", model, "--manifest", str(originals), "--out", str(reference)) == 0
    columns = ["p_invasion", "p_high_grade"]
    moved_p, original = _read(out), _read(reference).loc[table.patient_id]
    np.testing.assert_allclose(moved_p[columns], original[columns], atol=1e-6)


def test_labels_are_optional(trained, tmp_path):
    table = pd.read_csv(trained["test"], dtype=str, keep_default_na=False)
    unlabelled = table.drop(columns=["who_grade", "invasion"])
    manifest = trained["test"].parent / "unlabelled.csv"
    unlabelled.to_csv(manifest, index=False)
    out = tmp_path / "p.csv"
    assert (
        _predict("--model", str(trained["run0"]), "--manifest", str(manifest), "--out", str(out))
        == 0
    )
    result = pd.read_csv(out)
    assert len(result) == len(table)
    assert "invasion" not in result.columns and "high_grade" not in result.columns


def test_bad_input_names_the_patient_and_file_and_writes_nothing(trained, tmp_path, capsys):
    table = pd.read_csv(trained["test"], dtype=str, keep_default_na=False).head(3)
    victim = table.patient_id.iloc[1]
    table.loc[1, "adc"] = f"{victim}/missing_adc.nii.gz"
    manifest = trained["test"].parent / "broken.csv"
    table.to_csv(manifest, index=False)
    out, explain = tmp_path / "p.csv", tmp_path / "maps"
    status = _predict("--model", str(trained["run0"]), "--manifest", str(manifest),
                      "--out", str(out), "--explain", str(explain))  # fmt: skip
    error = capsys.readouterr().err
    assert status != 0
    assert victim in error and "missing_adc.nii.gz" in error
    assert not out.exists() and not explain.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_a_folder_that_is_not_a_saved_model_is_refused(trained, tmp_path, capsys):
    assert _predict("--model", str(tmp_path), "--manifest", str(trained["test"]),
                    "--out", str(tmp_path / "p.csv")) == 2  # fmt: skip
    assert "not a saved tcl model" in capsys.readouterr().err


# ---------------------------------------------------------------------------- explanations


def test_explanation_maps_lie_on_each_patients_own_grid(trained, tmp_path):
    from tcl.data.nifti import load_volume

    table = pd.read_csv(trained["test"], dtype=str, keep_default_na=False).head(2)
    raw = trained["manifest"].parent
    moved_id = table.patient_id.iloc[1]  # this one stored LPS
    _reoriented_patient(raw / moved_id, tmp_path / "moved" / moved_id, ("L", "P", "S"))
    for column in ("t1c", "flairc", "adc", "mask", "signs"):
        table.loc[1, column] = str(tmp_path / "moved" / moved_id / f"{column}.nii.gz")
    table.loc[0, "t1c":"signs"] = [str(raw / v) for v in table.loc[0, "t1c":"signs"]]
    manifest = tmp_path / "two.csv"
    table.to_csv(manifest, index=False)
    maps = tmp_path / "maps"
    assert _predict("--model", str(trained["run0"]), "--manifest", str(manifest),
                    "--out", str(tmp_path / "p.csv"), "--explain", str(maps),
                    "--ig-steps", "4") == 0  # fmt: skip
    for _, row in table.iterrows():
        image = nib.load(row.t1c)
        mask = load_volume(row["mask"]).data > 0
        for task in ("invasion", "high_grade"):
            written = nib.load(str(maps / row.patient_id / f"{task}.nii.gz"))
            assert written.shape == image.shape
            np.testing.assert_allclose(written.affine, image.affine, atol=1e-5)
            canonical = load_volume(maps / row.patient_id / f"{task}.nii.gz").data
            assert np.abs(canonical).sum() > 0
            # zero outside the in-plane box of the ROI (margin 0), which holds the mask
            xs, ys = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
            outside = np.ones(mask.shape, dtype=bool)
            outside[xs[0] : xs[-1] + 1, ys[0] : ys[-1] + 1, :] = False
            assert not canonical[outside].any()
        assert (maps / row.patient_id / "overview.png").stat().st_size > 10_000
    # the same patient's maps are the same anatomy, whatever its files' orientation
    plain = tmp_path / "plain"
    table.loc[1, "t1c":"signs"] = [str(raw / moved_id / f"{c}.nii.gz") for c in
                                   ("t1c", "flairc", "adc", "mask", "signs")]  # fmt: skip
    table.iloc[[1]].to_csv(manifest, index=False)
    assert _predict("--model", str(trained["run0"]), "--manifest", str(manifest),
                    "--out", str(tmp_path / "p2.csv"), "--explain", str(plain),
                    "--ig-steps", "4") == 0  # fmt: skip
    for task in ("invasion", "high_grade"):
        np.testing.assert_allclose(
            load_volume(maps / moved_id / f"{task}.nii.gz").data,
            load_volume(plain / moved_id / f"{task}.nii.gz").data,
            atol=1e-6,
        )


def test_a_sequence_on_another_grid_is_resampled_and_said_so(trained, tmp_path, capsys):
    from tcl.data.nifti import load_volume

    table = pd.read_csv(trained["test"], dtype=str, keep_default_na=False).head(1)
    raw = trained["manifest"].parent
    pid = table.patient_id.iloc[0]
    folder = tmp_path / pid
    shutil.copytree(raw / pid, folder)
    # stored LAS (same anatomy, another voxel order) and one slice more: another grid, whose
    # voxel centres include T1C's, so linear resampling gives T1C's voxels their own values
    adc = nib.load(str(folder / "adc.nii.gz"))
    flipped = np.asanyarray(adc.dataobj)[::-1]
    flipped = np.concatenate([flipped, np.zeros_like(flipped[:, :, :1])], axis=2)
    affine = adc.affine.copy()
    affine[:, 0] *= -1
    affine[:3, 3] = adc.affine[:3, :3] @ [adc.shape[0] - 1, 0, 0] + adc.affine[:3, 3]
    affine[:3, :3] = adc.affine[:3, :3] @ np.diag([-1, 1, 1])
    nib.save(nib.Nifti1Image(flipped, affine, adc.header), str(folder / "adc.nii.gz"))
    np.testing.assert_array_equal(
        load_volume(folder / "adc.nii.gz").data[:, :, :-1],
        load_volume(raw / pid / "adc.nii.gz").data,
    )
    for column in ("t1c", "flairc", "adc", "mask", "signs"):
        table[column] = str(folder / f"{column}.nii.gz")
    manifest = tmp_path / "one.csv"
    table.to_csv(manifest, index=False)
    out, reference = tmp_path / "p.csv", tmp_path / "r.csv"
    model = str(trained["run0"])
    assert _predict("--model", model, "--manifest", str(manifest), "--out", str(out)) == 0
    error = capsys.readouterr().err
    assert f"patient {pid}, adc: resampled onto the T1C grid" in error
    assert pid in json.loads(out.with_name("p.csv.json").read_text())["warnings"][0]
    table[["t1c", "flairc", "adc", "mask", "signs"]] = [
        str(raw / pid / f"{c}.nii.gz") for c in ("t1c", "flairc", "adc", "mask", "signs")
    ]
    table.to_csv(reference.with_suffix(".in.csv"), index=False)
    assert _predict("--model", model, "--manifest", str(reference.with_suffix(".in.csv")),
                    "--out", str(reference)) == 0  # fmt: skip
    columns = ["p_invasion", "p_high_grade"]
    np.testing.assert_allclose(_read(out)[columns], _read(reference)[columns], atol=1e-6)


def test_a_patient_imported_from_dicom_gets_the_nifti_routes_prediction(trained, tmp_path):
    """Three test patients written as DICOM (int16 slices with a rescale slope, the ADC with
    rows and columns swapped, the tumour as a structure set), imported back and predicted by
    the trained network: the same probabilities as from the NIfTI files within 1e-4, the same
    decisions. The stored integers move a voxel by at most slope / 2 = max |value| / 64000, a
    relative 1.6e-5, below the float16 step (about 1e-3 relative) in which every network input
    is kept, so the inputs round to the same values almost everywhere (here the probabilities
    came out identical; the largest difference is printed). Both manifests carry the box of
    the original mask, so only the images differ (the contour's rasterised edge would move the
    box by a voxel). The ADC, stored transposed, is put in T1C's voxel order exactly: no
    resampling warning."""
    from conftest import write_dicom_patient

    from tcl.data.dicom import import_dicom
    from tcl.data.manifest import BBOX_COLUMNS
    from tcl.data.patients import roi_of_mask

    source = trained["test"]
    table = pd.read_csv(source, dtype=str, keep_default_na=False).head(3)
    for row in table.itertuples():
        images = {m: source.parent / getattr(row, m) for m in ("t1c", "flairc", "adc")}
        write_dicom_patient(images, source.parent / row.mask, tmp_path / "dicom" / row.patient_id,
                            row.patient_id)  # fmt: skip
    imported = import_dicom(
        tmp_path / "dicom", tmp_path / "imported",
        series=["t1c=*t1*", "flairc=*flair*", "adc=adc*"], roi="gtv", workers=1,
    )  # fmt: skip
    boxes = {
        row.patient_id: roi_of_mask(np.asarray(nib.load(source.parent / row.mask).dataobj))
        for row in table.itertuples()
    }
    outputs = []
    for name, rows, folder in (("nifti", table, source.parent),
                               ("dicom", imported, tmp_path / "imported")):  # fmt: skip
        manifest = pd.DataFrame({"patient_id": rows.patient_id})
        for sequence in ("t1c", "flairc", "adc"):
            manifest[sequence] = [str(folder / p) for p in rows[sequence]]
        for k, column in enumerate(BBOX_COLUMNS):
            manifest[column] = [boxes[p][k] for p in rows.patient_id]
        manifest.to_csv(tmp_path / f"{name}.csv", index=False)
        out = tmp_path / f"{name}-p.csv"
        assert _predict("--model", str(trained["run0"]), "--manifest",
                        str(tmp_path / f"{name}.csv"), "--out", str(out)) == 0  # fmt: skip
        outputs.append(_read(out))
    nifti, dicom = outputs[0], outputs[1].loc[outputs[0].index]
    difference = max(
        float((nifti[c] - dicom[c]).abs().max()) for c in ("p_invasion", "p_high_grade")
    )
    print(f"largest |p difference|, DICOM vs NIfTI route: {difference:.2e}")
    assert difference < 1e-4
    for column in ("pred_invasion", "pred_high_grade"):
        assert (nifti[column] == dicom[column]).all(), column
    assert "resampled" not in (tmp_path / "dicom-p.csv.json").read_text()
