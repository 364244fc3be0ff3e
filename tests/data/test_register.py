"""``python -m tcl register`` (tcl.data.register): a cohort's FLAIR-C and ADC registered onto
T1C, a mask drawn on a moved series moved with it, bad input refused, and the real patient
flagged by validate, then registered."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import REAL_BOX, move_header

from tcl.cli import main
from tcl.data.preprocess import load_cache, preprocess_cohort
from tcl.data.register import read_registration, register_cohort
from tcl.data.registration import (
    QUICK,
    offset_of,
    register_rigid,
    rigid_matrix,
)
from tcl.utils import TclError


@pytest.mark.slow
def test_a_mask_drawn_on_a_misregistered_series_is_named_and_moves_with_it(
    six_patients, tmp_path, capsys
):
    """A mask on FLAIR-C's grid (not T1C's) is as far off as FLAIR-C: validate names it, and
    tcl register gives it FLAIR-C's corrected affine."""
    table = pd.read_csv(six_patients).iloc[[2]]
    row = table.iloc[0]
    folder = tmp_path / "one"
    folder.mkdir()
    for column in ("t1c", "flairc", "adc", "mask"):
        (folder / f"{column}.nii.gz").write_bytes((six_patients.parent / row[column]).read_bytes())
    displacement = rigid_matrix((0.0, 6.0, 8.0), (10.0, -6.0, 4.0), (0.0, 0.0, 0.0))
    for column in ("flairc", "mask"):  # the mask drawn on the moved FLAIR-C
        move_header(folder / f"{column}.nii.gz", displacement)
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "patient_id,t1c,flairc,adc,mask\n"
        f"{row['patient_id']},t1c.nii.gz,flairc.nii.gz,adc.nii.gz,mask.nii.gz\n"
    )
    assert main(["validate", str(manifest), "--quiet", "--verbose"]) == 1  # stops make
    out = capsys.readouterr().out
    assert (
        f"patient {row['patient_id']}, mask: {folder / 'mask.nii.gz'} is on the grid of flairc"
        in out
    )

    frame = register_cohort(manifest, tmp_path / "registered", workers=1)
    assert list(frame["series"]) == ["flairc", "mask", "adc"]
    written = dict(zip(frame["series"], frame["written"], strict=True))
    affine = {k: nib.load(str(tmp_path / "registered" / v)).affine for k, v in written.items()}
    assert np.allclose(affine["mask"], affine["flairc"])
    # back where it was drawn on the untouched patient, to within the registration's error
    original = nib.load(str(six_patients.parent / row["mask"])).affine
    assert offset_of(affine["mask"] @ np.linalg.inv(original), np.zeros(3))[1] < 1.0


@pytest.mark.slow
def test_register_aligns_the_cohort_and_the_cache_follows(six_patients, tmp_path):
    """FLAIR-C and ADC of every patient displaced by known transforms (header); after
    ``tcl register`` the preprocessed cache correlates with that of the untouched cohort at
    ≥ 0.95 per sequence inside the ROI, and registration.csv holds the transforms."""
    # two patients, four series, each displaced its own way (the verb's cost is per series)
    table = pd.read_csv(six_patients).head(2)
    moved = tmp_path / "moved"
    rng = np.random.default_rng(5)
    truths = {}
    for _, row in table.iterrows():
        for column in ("t1c", "flairc", "adc", "mask"):
            target = moved / row[column]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((six_patients.parent / row[column]).read_bytes())
        for series in ("flairc", "adc"):
            angles = tuple(rng.uniform(-8, 8, 3))
            shift = tuple(rng.uniform(-12, 12, 3))
            displacement = rigid_matrix(angles, shift, (0.0, 0.0, 0.0))
            move_header(moved / row[series], displacement)
            truths[(row["patient_id"], series)] = displacement
    table[["patient_id", "who_grade", "invasion", "t1c", "flairc", "adc", "mask"]].to_csv(
        moved / "manifest.csv", index=False
    )
    out = tmp_path / "registered"
    frame = register_cohort(moved / "manifest.csv", out, workers=2)
    assert set(frame["series"]) == {"flairc", "adc"}
    assert (out / "manifest.csv").is_file() and (out / "register.json").is_file()
    matrices = read_registration(out / "registration.csv")
    for (pid, series), truth in truths.items():
        # the series' own nuisance (ADC's deliberate shift) is part of what is found
        assert offset_of(np.linalg.inv(truth) @ matrices[(pid, series)], np.zeros(3))[1] < 1.0
    # the originals are untouched
    assert (moved / table.loc[0, "flairc"]).read_bytes() != (
        six_patients.parent / table.loc[0, "flairc"]
    ).read_bytes()  # noqa: E501
    original = nib.load(str(moved / table.loc[0, "flairc"]))
    assert np.allclose(original.affine, truths[(table.loc[0, "patient_id"], "flairc")] @ nib.load(
        str(six_patients.parent / table.loc[0, "flairc"])).affine)  # fmt: skip

    size = (48, 48, 12)
    # the reference: the undisplaced patient, with the ADC map's deliberate EPI-like shift
    # taken out of its header too (registration takes it out, as it should)
    for column in ("t1c", "flairc", "mask", "signs"):
        table[column] = [str(six_patients.parent / cell) for cell in table[column]]
    unshifted = []
    for _, row in table.iterrows():
        target = tmp_path / "reference" / f"{row['patient_id']}_adc.nii.gz"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes((six_patients.parent / row["adc"]).read_bytes())
        shift = [row["latent_adc_shift_x_mm"], row["latent_adc_shift_y_mm"], 0.0]
        move_header(target, np.linalg.inv(rigid_matrix((0.0, 0.0, 0.0), tuple(shift))))
        unshifted.append(str(target))
    table["adc"] = unshifted
    table.to_csv(tmp_path / "reference.csv", index=False)
    reference = preprocess_cohort(
        tmp_path / "reference.csv", tmp_path / "cache_reference", size=size, workers=2
    )
    registered = preprocess_cohort(out / "manifest.csv", tmp_path / "cache_registered", size=size,
                                   workers=2)  # fmt: skip
    # the cache holds the ROI (cropped around it, then resized): all of it is compared
    a = load_cache(reference).volumes
    b = load_cache(registered).volumes
    for channel, name in enumerate(("t1c", "flairc", "adc")):
        for patient in range(len(table)):
            x = a[patient, channel].astype(np.float64).ravel()
            y = b[patient, channel].astype(np.float64).ravel()
            r = np.corrcoef(x, y)[0, 1]
            assert r >= 0.95, f"{name} of patient {patient}: correlation {r:.3f}"


def test_register_refuses_bad_input_and_writes_nothing(six_patients, tmp_path, monkeypatch):
    table = pd.read_csv(six_patients).head(2)
    bad = table[["patient_id", "who_grade", "invasion", "t1c", "flairc", "adc", "mask"]].copy()
    for column in ("t1c", "flairc", "adc", "mask"):
        bad[column] = [str(six_patients.parent / cell) for cell in bad[column]]
    pid = bad.loc[1, "patient_id"]
    out = tmp_path / "out"

    # a missing file: refused before any registration
    bad.loc[1, "adc"] = str(tmp_path / "missing_adc.nii.gz")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TclError, match=f"patient {pid}, adc: file not found: .*missing_adc"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert main(["register", str(tmp_path / "bad.csv"), "--out", str(out), "--quiet"]) == 2

    # a corrupt file: found before any registration, nothing written
    (tmp_path / "corrupt_adc.nii.gz").write_bytes(b"not a NIfTI file")
    bad.loc[1, "adc"] = str(tmp_path / "corrupt_adc.nii.gz")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TclError, match=f"nothing registered(?s:.*)patient {pid}, adc: cannot read"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []

    # a failure after the first patient was registered (here a registration that breaks):
    # still nothing written
    bad.loc[1, "adc"] = str(six_patients.parent / table.loc[1, "adc"])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    calls = []

    def breaks_second_patient(fixed, moving, settings):
        calls.append(1)
        if len(calls) > 2:  # two series of the first patient went through
            raise TclError("registration failed")
        # what is tested is that nothing is written, not the transform: the first patient's
        # series go through the quick recipe (0.6 s a series instead of about 8)
        return register_rigid(fixed, moving, QUICK)

    monkeypatch.setattr("tcl.data.register.register_rigid", breaks_second_patient)
    with pytest.raises(TclError, match=f"patient {pid}, flairc: registration failed"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert len(calls) == 3 and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    monkeypatch.undo()

    # an all-zero T1C (a failed export): named, no SimpleITK traceback ("Total Mass of the
    # image was zero" before), nothing written
    zero = nib.load(bad.loc[1, "t1c"])
    nib.save(nib.Nifti1Image(np.zeros(zero.shape, np.float32), zero.affine), tmp_path / "z.nii.gz")
    bad.loc[1, "adc"] = str(six_patients.parent / table.loc[1, "adc"])
    bad.loc[1, "t1c"] = str(tmp_path / "z.nii.gz")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TclError, match=f"nothing registered(?s:.*)patient {pid}, t1c: every voxel"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert not out.exists()

    # a box outside T1C: refused before any registration (the offsets are measured at its
    # centre), and so is a mask without a voxel > 0
    bad.loc[1, "t1c"] = str(six_patients.parent / table.loc[1, "t1c"])
    boxed = bad.drop(columns=["mask"]).assign(x0=0, x1=10, y0=0, y1=10, z0=0, z1=10)
    boxed.loc[1, ["x0", "x1"]] = [500, 520]
    boxed.to_csv(tmp_path / "boxed.csv", index=False)
    with pytest.raises(
        TclError, match=f"nothing registered(?s:.*)patient {pid}: bbox x 500..520, .* is outside"
    ):
        register_cohort(tmp_path / "boxed.csv", out, workers=1)
    zero = nib.load(bad.loc[1, "mask"])
    nib.save(nib.Nifti1Image(np.zeros(zero.shape, np.uint8), zero.affine), tmp_path / "m.nii.gz")
    bad.loc[1, "mask"] = str(tmp_path / "m.nii.gz")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TclError, match=f"nothing registered(?s:.*)patient {pid}, mask: empty ROI"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert not out.exists()

    # an --out that holds files is refused before any work, and left alone
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TclError, match="already exists"):
        register_cohort(six_patients, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --- the real patient ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_patient_is_flagged_by_validate_then_registered(tmp_path, capsys, shared_data):
    """The issue's own trial: the three raw series in a manifest with a box around the lesion
    (T2 stands in for ADC). validate names both series; after tcl register it names none."""
    real = shared_data("tcga-fg-6692")
    x0, x1, y0, y1, z0, z1 = REAL_BOX
    manifest = tmp_path / "real.csv"
    manifest.write_text(
        "patient_id,t1c,flairc,adc,mask,x0,x1,y0,y1,z0,z1\n"
        f"TCGA-FG-6692,{real / 't1c.nii.gz'},{real / 'flair.nii.gz'},{real / 't2.nii.gz'},,"
        f"{x0},{x1},{y0},{y1},{z0},{z1}\n"
    )
    assert main(["validate", str(manifest), "--quiet", "--verbose"]) == 1
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if "seems misregistered" in line]
    assert [line.split(":")[0].strip(" -") for line in flagged] == [
        "patient TCGA-FG-6692, flairc",
        "patient TCGA-FG-6692, adc",
    ], out
    qc = tmp_path / "qc"
    registered = ["register", str(manifest), "--out", str(tmp_path / "registered"), "--quiet"]
    assert main([*registered, "--qc", str(qc)]) == 0
    for stage in ("before", "after"):  # the page to look at, before and after
        assert (qc / stage / "TCGA-FG-6692.png").read_bytes()[:4] == b"\x89PNG"
        assert "TCGA-FG-6692" in (qc / stage / "index.html").read_text()
    # before: flagged with what registration moved; after, no misregistration is left (the
    # contrast check still flags this glioma, whose "ADC" is a T2: see test_real_scans)
    before = (qc / "before" / "index.html").read_text()
    assert "flairc: misregistered, registration moved it" in before
    assert "adc: misregistered, registration moved it" in before
    assert "misregistered" not in (qc / "after" / "index.html").read_text()
    assert main(["validate", str(tmp_path / "registered" / "manifest.csv"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "misregistered" not in out and "OK: 1 patients, no labels" in out
