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


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Three synthetic patients (64 × 56 × 12 voxels) written as DICOM, three MR series each
    (ADC with rows and columns swapped: another matrix and orientation) and a structure set
    outlining the tumour on T1C, then imported back; beside the NIfTI they came from."""
    from conftest import write_dicom_patient

    from tcl.synthetic import cohort as synth

    root = tmp_path_factory.mktemp("dicom-round-trip")
    manifest = synth.synthesize_cohort(
        root / "nifti", 3, seed=3, shape=(64, 56, 12), workers=1, progress=False
    )
    table = pd.read_csv(manifest, dtype={"patient_id": str})
    slopes = {}
    for row in table.itertuples():
        images = {m: manifest.parent / getattr(row, m) for m in ("t1c", "flairc", "adc")}
        written = write_dicom_patient(images, manifest.parent / row.mask,
                                      root / "dicom" / row.patient_id / "study", row.patient_id,
                                      roi_name="GTV tumour")  # fmt: skip
        slopes.update({(row.patient_id, m): slope for m, slope in written.items()})
    labels = table[["patient_id", "who_grade", "invasion"]]
    labels.to_csv(root / "labels.csv", index=False)
    imported = import_dicom(
        root / "dicom",
        root / "imported",
        series=["t1c=*t1*", "flairc=*flair*", "adc=adc*"],
        roi="gtv*",
        labels=root / "labels.csv",
        workers=1,
    )
    return manifest, root / "imported" / "manifest.csv", imported, slopes


def test_the_dicom_route_equals_the_nifti_route_up_to_integer_storage(round_trip):
    """Geometry to 0.01 mm and voxels within half the rescale slope (the stored int16 is
    round(value / slope)); the tumour mask back from its contours with a Dice ≥ 0.95."""
    manifest, imported_manifest, imported, slopes = round_trip
    original = pd.read_csv(manifest, dtype={"patient_id": str}).set_index("patient_id")
    assert list(imported.columns[:7]) == ["patient_id", "who_grade", "invasion", "t1c",
                                          "flairc", "adc", "mask"]  # fmt: skip
    for row in imported.itertuples():
        assert (row.who_grade, row.invasion) == tuple(
            original.loc[row.patient_id, ["who_grade", "invasion"]]
        )
        for sequence in ("t1c", "flairc", "adc"):
            ours, affine = _canonical(imported_manifest.parent / getattr(row, sequence))
            theirs, their_affine = _canonical(
                manifest.parent / original.loc[row.patient_id, sequence]
            )
            assert np.abs(affine - their_affine).max() < 0.01, (row.patient_id, sequence)
            tolerance = slopes[row.patient_id, sequence] / 2 + 1e-6
            assert np.abs(ours - theirs).max() <= tolerance, (row.patient_id, sequence)
        mask, _ = _canonical(imported_manifest.parent / row.mask)
        truth, _ = _canonical(manifest.parent / original.loc[row.patient_id, "mask"])
        dice = 2 * np.sum((mask > 0) & (truth == 1)) / (np.sum(mask > 0) + np.sum(truth == 1))
        assert dice >= 0.95, (row.patient_id, dice)


def test_the_dicom_route_gives_the_same_cache_and_predictions(round_trip, tmp_path):
    """Both manifests preprocessed at the smoke size: the same volumes within float16's step
    (the int16 storage moves a voxel by at most slope / 2), and a fixed network's
    probabilities within 1e-3."""
    import torch

    from tcl.config import get_profile
    from tcl.data.patients import roi_of_mask
    from tcl.data.preprocess import load_cache, preprocess_cohort
    from tcl.training.train import build_model

    manifest, imported_manifest, _, _ = round_trip
    caches = []
    for name, source in (("nifti", manifest), ("dicom", imported_manifest)):
        table = pd.read_csv(source, dtype={"patient_id": str})
        table["mask"] = ""  # the box from the tumour mask would differ by the contour's edge
        box = {
            row.patient_id: roi_of_mask(np.asarray(nib.load(manifest.parent / row.mask).dataobj))
            for row in pd.read_csv(manifest, dtype={"patient_id": str}).itertuples()
        }
        for column, k in zip(("x0", "x1", "y0", "y1", "z0", "z1"), range(6), strict=True):
            table[column] = [box[p][k] for p in table.patient_id]
        for column in ("t1c", "flairc", "adc"):
            table[column] = [str(source.parent / p) for p in table[column]]
        table.to_csv(tmp_path / f"{name}.csv", index=False)
        cache = preprocess_cohort(tmp_path / f"{name}.csv", tmp_path / name, size=(16, 16, 8),
                                  workers=1, progress=False)  # fmt: skip
        caches.append(load_cache(cache.parent if cache.is_file() else cache))
    nifti, dicom = (np.asarray(c.volumes, dtype=np.float32) for c in caches)
    assert nifti.shape == dicom.shape
    assert np.abs(nifti - dicom).max() <= 2e-3 * max(1.0, float(np.abs(nifti).max()))
    torch.manual_seed(0)
    model = build_model("proposed", get_profile("smoke"), torch.device("cpu")).eval()
    with torch.no_grad():
        p = [torch.softmax(model(torch.from_numpy(v))["grade"], dim=1) for v in (nifti, dicom)]
    assert (p[0] - p[1]).abs().max() < 1e-3


def test_a_dicom_seg_gives_the_mask_as_a_structure_set_does(tmp_path):
    """The tumour as a binary DICOM SEG on the T1C series instead of contours: the same mask."""
    from conftest import write_dicom_series, write_seg
    from pydicom.uid import generate_uid

    from tcl.synthetic import cohort as synth

    manifest = synth.synthesize_cohort(
        tmp_path / "nifti", 3, seed=4, shape=(48, 40, 10), workers=1, progress=False
    )
    row = next(pd.read_csv(manifest, dtype={"patient_id": str}).itertuples())
    folder = tmp_path / "dicom" / row.patient_id
    uid, _ = write_dicom_series(
        manifest.parent / row.t1c, folder / "t1", "T1 POST", row.patient_id, generate_uid()
    )
    write_seg(manifest.parent / row.mask, folder / "seg" / "SEG", uid, "Tumour (GTV)")
    imported = import_dicom(
        tmp_path / "dicom", tmp_path / "out", series=["t1c=t1*"], roi="tumour*", workers=1
    )
    mask, affine = _canonical(tmp_path / "out" / imported.loc[0, "mask"])
    truth, their_affine = _canonical(manifest.parent / row.mask)
    assert np.array_equal(mask > 0, truth == 1) and np.abs(affine - their_affine).max() < 0.01


def test_import_dicom_draws_the_qc_page_of_what_it_imported(round_trip, tmp_path, capsys):
    manifest = round_trip[0]
    dicom = manifest.parent.parent / "dicom"
    qc = tmp_path / "qc"
    command = ["import-dicom", str(dicom), "--out", str(tmp_path / "out"), "--series",
               "t1c=*t1*", "--series", "flairc=*flair*", "--series", "adc=adc*",
               "--roi", "gtv*", "--qc", str(qc), "--quiet", "--workers", "1"]  # fmt: skip
    assert main(command) == 0
    assert f"QC page: {qc / 'index.html'}" in capsys.readouterr().out
    pictures = sorted(p.name for p in qc.glob("*.png"))
    assert pictures == [f"{pid}.png" for pid in round_trip[2].patient_id]
