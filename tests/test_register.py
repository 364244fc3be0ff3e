"""Raw series that are not co-registered (issue 19): the misregistration check in validate, the
rigid registration onto T1C (``python -m tcl register``), the real patient, unlabelled cohorts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tcl.cli import main
from tcl.data.coregister import read_registration, register_cohort
from tcl.data.nifti import Volume, load_volume
from tcl.data.preprocess import load_cache, preprocess_cohort
from tcl.data.register import (
    OFFSET_DEG,
    OFFSET_MM,
    apply,
    offset_of,
    register_rigid,
    rigid_matrix,
    rms_displacement,
    rotation_angle_deg,
)
from tcl.data.synth import synthesize_cohort
from tcl.data.validate import check_cohort
from tcl.utils import TclError

ROOT = Path(__file__).resolve().parents[1]
# The real patient's raw series (tcga-fg-6692) come from conftest's shared_data fixture.
# The lesion of the real patient, in T1C voxels as stored (its README): x 55–115, y 125–190,
# z 13–21.
REAL_BOX = (55, 115, 125, 190, 13, 21)


def _tool():
    spec = importlib.util.spec_from_file_location(
        "registration_compare", ROOT / "tools" / "registration_compare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def move_header(path: Path, displacement: np.ndarray) -> None:
    """Rewrite ``path`` so that its content lies at ``displacement`` x instead of x (the voxels
    stay, the affine moves), as a series planned on another slab or after motion."""
    image = nib.load(str(path))
    affine = displacement @ image.affine
    moved = nib.Nifti1Image(np.asanyarray(image.dataobj), affine, header=image.header)
    moved.set_sform(affine, code=1)
    moved.set_qform(affine, code=1)
    nib.save(moved, str(path))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six synthetic patients at the default geometry (256×256×24, 1×1×6 mm), untouched."""
    root = tmp_path_factory.mktemp("register") / "cohort"
    return synthesize_cohort(root, 6, seed=3, progress=False)


def test_transform_helpers_agree():
    centre = np.array([10.0, -20.0, 30.0])
    matrix = rigid_matrix((0.0, 0.0, 90.0), (5.0, 0.0, 0.0), tuple(centre))
    assert rotation_angle_deg(matrix) == pytest.approx(90.0)
    shift, angle = offset_of(matrix, centre)  # the centre is only shifted
    assert (shift, angle) == pytest.approx((5.0, 90.0))
    point = centre + [1.0, 0.0, 0.0]  # turned a quarter about z, then shifted
    assert apply(matrix, point[None])[0] == pytest.approx(centre + [5.0, 1.0, 0.0])
    assert rms_displacement(matrix, matrix, np.zeros((4, 3))) == 0.0


# --- item 3: accuracy on known transforms ----------------------------------------------------


@pytest.mark.slow
def test_known_rigid_transforms_are_recovered(tmp_path):
    """Patients rendered at 1 mm and acquired in 6 mm slices; FLAIR-C and ADC moved by random
    rigid transforms of up to 20 mm and 15°, in the header (the affine) or in the data (the
    patient moved and was acquired again; the series then covers fewer slices).

    A header move is recovered within 1 mm and 1°, as the issue asks. A move in the data is
    recovered that well in only 2 of the tool's 6 such cases (docs/your-cohort.md, "Accuracy and
    time": thick slices of a turned head are not a turned copy of the first acquisition, and a
    series that keeps only half its slices can end in a local optimum, as this test's ADC case
    moved by 16 mm and 14° does, 7 mm off); this test holds such a move to at least halving the
    misregistration.
    tools/registration_compare.py runs the same on more cases."""
    tool = _tool()
    cases = tool.make_cases(tmp_path, patients=2, seed=11)
    assert {c["mode"] for c in cases} == {"header", "data"}
    for case in cases:
        fixed = load_volume(case["fixed"], canonical=False)
        moving = load_volume(case["moving"], canonical=False)
        found = register_rigid(fixed, moving)
        truth = np.asarray(case["truth"])
        error_mm = rms_displacement(found.matrix, truth, np.load(case["roi"]))
        error_deg = rotation_angle_deg(np.linalg.inv(found.matrix) @ truth)
        moved = f"{case['displacement_mm']:.1f} mm, {case['displacement_deg']:.1f}°"
        label = f"{case['patient']} {case['sequence']} ({case['mode']}, moved {moved})"
        if case["mode"] == "header":
            assert error_mm <= 1.0, f"{label}: RMS error {error_mm:.2f} mm over the ROI"
            assert error_deg <= 1.0, f"{label}: rotation error {error_deg:.2f}°"
        else:
            before = rms_displacement(np.eye(4), truth, np.load(case["roi"]))
            assert error_mm <= before / 2, f"{label}: RMS error {error_mm:.2f} of {before:.2f} mm"
        assert found.mi_after > found.mi_before


# --- item 1: the check in validate -----------------------------------------------------------


@pytest.mark.slow
def test_the_synthetic_cohort_is_not_flagged(cohort):
    """Its ADC maps are shifted by up to 2 mm on purpose (an EPI-like nuisance): below the
    threshold, so validate says nothing."""
    table = pd.read_csv(cohort)
    shift = np.hypot(table["latent_adc_shift_x_mm"], table["latent_adc_shift_y_mm"])
    assert shift.max() > 0  # the nuisance is there to be ignored
    report = check_cohort(cohort, alignment=True)
    assert report.problems == []
    assert not [w for w in report.warnings if "misregistered" in w], report.warnings


@pytest.mark.slow
def test_misregistration_is_flagged_with_patient_sequence_offset_and_fix(cohort, tmp_path, capsys):
    moved = tmp_path / "cohort"
    table = pd.read_csv(cohort)
    for column in ("t1c", "flairc", "adc", "mask", "signs"):
        for cell in table[column]:
            (moved / cell).parent.mkdir(parents=True, exist_ok=True)
            (moved / cell).write_bytes((cohort.parent / cell).read_bytes())
    # without labels: six patients are too few for the class checks, which are not tested here
    table.drop(columns=["who_grade", "invasion"]).to_csv(moved / "manifest.csv", index=False)
    pid = table.loc[2, "patient_id"]
    displacement = rigid_matrix((0.0, 6.0, 8.0), (10.0, -6.0, 4.0), (0.0, 0.0, 0.0))
    move_header(moved / table.loc[2, "flairc"], displacement)

    # misregistration stops validate (and so make all DATA=...) unless the user accepts it
    assert main(["validate", str(moved / "manifest.csv"), "--quiet", "--verbose"]) == 1
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if "seems misregistered" in line]
    assert len(flagged) == 1, out
    assert f"patient {pid}, flairc" in flagged[0]
    assert f"python -m tcl register {moved / 'manifest.csv'} --out" in flagged[0]
    assert "mm and" in flagged[0] and "°" in flagged[0]
    assert "1 series of 1 patient(s) seem misregistered" in out
    assert "--accept-misregistration" in out and "ACCEPT_MISREGISTRATION=1" in out
    accepted = ["validate", str(moved / "manifest.csv"), "--quiet", "--accept-misregistration"]
    assert main(accepted) == 0
    assert "seems misregistered" in capsys.readouterr().out  # still listed

    assert main(["validate", str(moved / "manifest.csv"), "--quiet", "--no-alignment-check"]) == 0
    out = capsys.readouterr().out
    assert "misregistered" not in out and "alignment: not checked" in out


@pytest.mark.slow
def test_a_mask_drawn_on_a_misregistered_series_is_named_and_moves_with_it(
    cohort, tmp_path, capsys
):
    """A mask on FLAIR-C's grid (not T1C's) is as far off as FLAIR-C: validate names it, and
    tcl register gives it FLAIR-C's corrected affine."""
    table = pd.read_csv(cohort).iloc[[2]]
    row = table.iloc[0]
    folder = tmp_path / "one"
    folder.mkdir()
    for column in ("t1c", "flairc", "adc", "mask"):
        (folder / f"{column}.nii.gz").write_bytes((cohort.parent / row[column]).read_bytes())
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
    original = nib.load(str(cohort.parent / row["mask"])).affine
    assert offset_of(affine["mask"] @ np.linalg.inv(original), np.zeros(3))[1] < 1.0


# --- item 2: tcl register --------------------------------------------------------------------


@pytest.mark.slow
def test_register_aligns_the_cohort_and_the_cache_follows(cohort, tmp_path):
    """FLAIR-C and ADC of every patient displaced by known transforms (header); after
    ``tcl register`` the preprocessed cache correlates with that of the untouched cohort at
    ≥ 0.95 per sequence inside the ROI, and registration.csv holds the transforms."""
    table = pd.read_csv(cohort).head(3)
    moved = tmp_path / "moved"
    rng = np.random.default_rng(5)
    truths = {}
    for _, row in table.iterrows():
        for column in ("t1c", "flairc", "adc", "mask"):
            target = moved / row[column]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((cohort.parent / row[column]).read_bytes())
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
        cohort.parent / table.loc[0, "flairc"]
    ).read_bytes()  # noqa: E501
    original = nib.load(str(moved / table.loc[0, "flairc"]))
    assert np.allclose(original.affine, truths[(table.loc[0, "patient_id"], "flairc")] @ nib.load(
        str(cohort.parent / table.loc[0, "flairc"])).affine)  # fmt: skip

    size = (48, 48, 12)
    # the reference: the undisplaced patient, with the ADC map's deliberate EPI-like shift
    # taken out of its header too (registration takes it out, as it should)
    for column in ("t1c", "flairc", "mask", "signs"):
        table[column] = [str(cohort.parent / cell) for cell in table[column]]
    unshifted = []
    for _, row in table.iterrows():
        target = tmp_path / "reference" / f"{row['patient_id']}_adc.nii.gz"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes((cohort.parent / row["adc"]).read_bytes())
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


def test_register_refuses_bad_input_and_writes_nothing(cohort, tmp_path, monkeypatch):
    table = pd.read_csv(cohort).head(2)
    bad = table[["patient_id", "who_grade", "invasion", "t1c", "flairc", "adc", "mask"]].copy()
    for column in ("t1c", "flairc", "adc", "mask"):
        bad[column] = [str(cohort.parent / cell) for cell in bad[column]]
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
    bad.loc[1, "adc"] = str(cohort.parent / table.loc[1, "adc"])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    calls = []

    def breaks_second_patient(fixed, moving, settings):
        calls.append(1)
        if len(calls) > 2:  # two series of the first patient went through
            raise TclError("registration failed")
        return register_rigid(fixed, moving, settings)

    monkeypatch.setattr("tcl.data.coregister.register_rigid", breaks_second_patient)
    with pytest.raises(TclError, match=f"patient {pid}, flairc: registration failed"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert len(calls) == 3 and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    monkeypatch.undo()

    # an all-zero T1C (a failed export): named, no SimpleITK traceback ("Total Mass of the
    # image was zero" before), nothing written
    zero = nib.load(bad.loc[1, "t1c"])
    nib.save(nib.Nifti1Image(np.zeros(zero.shape, np.float32), zero.affine), tmp_path / "z.nii.gz")
    bad.loc[1, "adc"] = str(cohort.parent / table.loc[1, "adc"])
    bad.loc[1, "t1c"] = str(tmp_path / "z.nii.gz")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TclError, match=f"nothing registered(?s:.*)patient {pid}, t1c: every voxel"):
        register_cohort(tmp_path / "bad.csv", out, workers=1)
    assert not out.exists()

    # a box outside T1C: refused before any registration (the offsets are measured at its
    # centre), and so is a mask without a voxel > 0
    bad.loc[1, "t1c"] = str(cohort.parent / table.loc[1, "t1c"])
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
        register_cohort(cohort, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --- item 4: unlabelled cohorts --------------------------------------------------------------


def test_an_unlabelled_manifest_is_validated_without_the_class_checks(cohort, tmp_path, capsys):
    table = pd.read_csv(cohort)
    unlabelled = table[["patient_id", "t1c", "flairc", "adc", "mask"]].copy()
    for column in ("t1c", "flairc", "adc", "mask"):
        unlabelled[column] = [str(cohort.parent / cell) for cell in unlabelled[column]]
    unlabelled.head(2).to_csv(tmp_path / "new.csv", index=False)  # 2 patients: no class sizes
    assert main(["validate", str(tmp_path / "new.csv"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 patients, no labels: the class checks" in out and "skipped" in out
    # the other checks still run
    unlabelled.loc[0, "flairc"] = str(tmp_path / "gone.nii.gz")
    unlabelled.head(2).to_csv(tmp_path / "new.csv", index=False)
    assert main(["validate", str(tmp_path / "new.csv"), "--quiet"]) == 1
    assert "file not found" in capsys.readouterr().out


# --- the real patient ------------------------------------------------------------------------


def test_the_real_patients_flair_lands_on_the_t1c_lesion(shared_data):
    """Resampled through its own header, the FLAIR misses the T1C anatomy by centimetres and a
    rotation; registered, it matches T1C inside the lesion's box (voxel-wise correlation
    0.17 before, 0.61 after when this test was written). ANTsPy and SimpleITK's own defaults
    find the same transform (about 29 mm and 13.5° at the lesion; tools/registration_compare.py)."""
    from tcl.data.nifti import resample_to_grid

    real = shared_data("tcga-fg-6692")
    t1c = load_volume(real / "t1c.nii.gz", canonical=False)
    flair = load_volume(real / "flair.nii.gz", canonical=False)
    found = register_rigid(t1c, flair)
    centre = apply(t1c.affine, np.array([[85.0, 157.0, 17.0]]))[0]
    shift, angle = offset_of(found.matrix, centre)
    assert 26 < shift < 32 and 12 < angle < 15, (shift, angle)
    assert found.mi_after > 2 * found.mi_before
    assert shift > OFFSET_MM and angle > OFFSET_DEG

    x0, x1, y0, y1, z0, z1 = REAL_BOX
    lesion = t1c.data[x0:x1, y0:y1, z0:z1].ravel()
    correlation = {}
    for name, matrix in (("before", np.eye(4)), ("after", found.matrix)):
        placed = Volume(flair.data, np.linalg.inv(matrix) @ flair.affine)
        on_t1c = resample_to_grid(placed, t1c.data.shape, t1c.affine, order=1).data
        correlation[name] = np.corrcoef(lesion, on_t1c[x0:x1, y0:y1, z0:z1].ravel())[0, 1]
    assert correlation["before"] < 0.3 and correlation["after"] > 0.5, correlation


# --- item 5: the overview of a box-only patient ----------------------------------------------


def test_the_overview_of_a_box_only_patient_shows_a_slice_of_the_box():
    """Without a mask every slice of a box has the same area; the overview then shows the
    box's slice where the maps are strongest, even when they are stronger outside it."""
    from tcl.explain import overview_slice

    maps = {task: np.zeros((20, 20, 30)) for task in ("invasion", "high_grade")}
    maps["invasion"][:, :, 25] = 5.0  # the top of the skull, outside the box
    maps["high_grade"][5:10, 5:10, 16] = 1.0
    box = (4, 12, 4, 12, 13, 22)
    assert overview_slice(maps, None, box) == 16
    assert overview_slice(maps, None) == 25  # without the box, as before
    tumour = np.zeros((20, 20, 30), dtype=bool)
    tumour[6:9, 6:9, 14] = True
    assert overview_slice(maps, tumour, box) == 14  # a mask decides where it is given


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
