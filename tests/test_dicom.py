"""import-dicom (tcl.data.dicom): the IBSI's real DICOM and RTSTRUCT, and bad input."""

import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tcl.cli import main
from tcl.data.dicom import import_dicom
from tcl.utils import TclError

SERIES = "t1c=*mr_t1_image*"  # the IBSI series' description, matched case-insensitively


def _canonical(path):
    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.dataobj), image.affine


def test_the_ibsi_series_and_contours_are_reproduced(shared_data, tmp_path, capsys):
    """Against the IBSI organisers' own NIfTI of the same DICOM: the image voxel for voxel,
    the world geometry to 0.01 mm, the contour's mask to a Dice of at least 0.95 (1.000 for
    both patients when this test was written)."""
    source = shared_data("ibsi-sts-mr")
    out = tmp_path / "imported"
    command = ["import-dicom", str(source), "--out", str(out), "--series", SERIES]
    assert main([*command, "--roi", "gtv*", "--quiet"]) == 0
    assert "2 patient(s) imported" in capsys.readouterr().out
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.patient_id) == ["STS_001", "STS_002"]
    for row in manifest.itertuples():
        reference = source / row.patient_id / "ibsi-nifti"
        ours, affine = _canonical(out / row.t1c)
        theirs, their_affine = _canonical(reference / "MR_T1_image.nii.gz")
        assert np.array_equal(ours, theirs)
        assert np.abs(affine - their_affine).max() < 0.01
        mask, mask_affine = _canonical(out / row.mask)
        truth, _ = _canonical(reference / "MR_T1_mask.nii.gz")
        assert np.abs(mask_affine - their_affine).max() < 0.01
        dice = 2 * np.sum((mask > 0) & (truth > 0)) / (np.sum(mask > 0) + np.sum(truth > 0))
        assert dice >= 0.95, (row.patient_id, dice)


def test_without_rules_the_series_are_listed(shared_data, tmp_path, capsys):
    out = tmp_path / "listed"
    assert (
        main(["import-dicom", str(shared_data("ibsi-sts-mr")), "--out", str(out), "--quiet"]) == 0
    )
    table = pd.read_csv(out / "series.csv")
    assert list(table.patient_id) == ["STS_001", "STS_002"]
    assert list(table.matrix) == ["174x158x59", "115x90x35"] and list(table.files) == [59, 35]
    assert set(table.modality) == {"MR"}
    assert not (out / "manifest.csv").exists()
    assert "IBSI_1_STS_001_MR_T1_image" in capsys.readouterr().out


def test_a_rule_that_matches_nothing_names_the_patient_and_candidates(shared_data, tmp_path):
    out = tmp_path / "none"
    with pytest.raises(TclError) as error:
        import_dicom(shared_data("ibsi-sts-mr"), out, series=[SERIES, "flairc=*flair*"])
    message = str(error.value)
    assert "patient STS_001, flairc: --series flairc='*flair*' matches no series" in message
    assert "'IBSI_1_STS_001_MR_T1_image'" in message
    assert not out.exists() and not list(tmp_path.glob(".none.*"))
    with pytest.raises(TclError, match="expected SEQUENCE=PATTERN"):
        import_dicom(shared_data("ibsi-sts-mr"), out, series=["t2=*"])


def test_a_corrupt_file_or_a_missing_slice_is_named_and_nothing_is_written(shared_data, tmp_path):
    def copy() -> list:
        shutil.rmtree(tmp_path / "dicom", ignore_errors=True)
        shutil.copytree(shared_data("ibsi-sts-mr") / "STS_002" / "dicom", source / "P1" / "scan")
        files = sorted((source / "P1" / "scan" / "image").iterdir())
        for path in files:
            path.chmod(0o644)
        return files

    source, out = tmp_path / "dicom", tmp_path / "out"
    broken = copy()[3]
    broken.write_bytes(broken.read_bytes()[:300])  # the preamble and DICM, then cut short
    with pytest.raises(TclError, match=rf"patient P1: DICOM file {re.escape(str(broken))} .*trunc"):
        import_dicom(source, out, series=[SERIES])
    broken = copy()[3]
    broken.write_bytes(broken.read_bytes()[:-2000])  # the pixel data cut short
    with pytest.raises(TclError, match=rf"{re.escape(str(broken))} has no or truncated pixel"):
        import_dicom(source, out, series=[SERIES])
    copy()[10].unlink()  # a slice lost on the way
    with pytest.raises(TclError, match="patient P1, t1c .* 34 slices are not evenly spaced"):
        import_dicom(source, out, series=[SERIES])
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
