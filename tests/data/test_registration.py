"""Rigid registration (tcl.data.registration): transforms, known moves recovered, the real
patient's FLAIR."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_BOX

from tcl.data.nifti import Volume, load_volume
from tcl.data.registration import (
    OFFSET_DEG,
    OFFSET_MM,
    apply,
    offset_of,
    register_rigid,
    rigid_matrix,
    rms_displacement,
    rotation_angle_deg,
)

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "registration_compare", ROOT / "tools" / "registration_compare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transform_helpers_agree():
    centre = np.array([10.0, -20.0, 30.0])
    matrix = rigid_matrix((0.0, 0.0, 90.0), (5.0, 0.0, 0.0), tuple(centre))
    assert rotation_angle_deg(matrix) == pytest.approx(90.0)
    shift, angle = offset_of(matrix, centre)  # the centre is only shifted
    assert (shift, angle) == pytest.approx((5.0, 90.0))
    point = centre + [1.0, 0.0, 0.0]  # turned a quarter about z, then shifted
    assert apply(matrix, point[None])[0] == pytest.approx(centre + [5.0, 1.0, 0.0])
    assert rms_displacement(matrix, matrix, np.zeros((4, 3))) == 0.0


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
