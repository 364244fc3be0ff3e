"""Whole-cohort validation (tcl.data.validate): every bad input named by patient and file,
several problems at once, warnings, the misregistration check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    SPLITTABLE,
    TINY_AFFINE,
    edit_manifest,
    move_header,
    tiny_images,
    write_nifti,
    write_tiny_cohort,
)

from tcl.cli import main
from tcl.data.manifest import BBOX_COLUMNS
from tcl.data.registration import (
    rigid_matrix,
)
from tcl.data.validate import check_cohort


def _rewrite(cohort: Path, pid: str, name: str, change) -> None:
    path = cohort / pid / f"{name}.nii.gz"
    index = int(pid[1:]) - 1
    box = {"P001": (10, 30, 12, 20), "P002": (5, 15, 5, 25), "P003": (20, 36, 14, 30)}.get(
        pid, (8, 20, 8, 20)
    )
    data = tiny_images(index, box)[name]
    data, affine = change(data, TINY_AFFINE.copy())
    write_nifti(path, data, affine)


def _nan(data, affine):
    data[3, 4, 5] = np.nan
    return data, affine


def _inf(data, affine):
    data[1, 1, 1] = np.inf
    return data, affine


def _first_slice_only(data, affine):
    return data[:, :, :1], affine  # a field of view that misses the tumour's slices 1..6


def _elsewhere(data, affine):
    affine[0, 3] += 500.0  # half a metre to the side: no overlap with t1c at all
    return data, affine


def _empty(data, affine):
    return np.zeros_like(data), affine


def _label3(data, affine):
    data[15, 15, 3] = 3
    return data, affine


def _bbox_outside(manifest):
    def edit(table):
        for column, value in zip(BBOX_COLUMNS, (0, 99, 0, 40, 0, 8), strict=True):
            table[column] = value
        table["mask"] = ""
        table.loc[table["patient_id"] != "P004", "x1"] = 40

    edit_manifest(manifest, edit)


def _set(column, pid, value):
    def mutate(manifest):
        def edit(table):
            table.loc[table["patient_id"] == pid, column] = value

        edit_manifest(manifest, edit)

    return mutate


def _drop(column):
    return lambda manifest: edit_manifest(manifest, lambda t: t.drop(columns=[column]))


BAD_INPUTS = {
    "missing file": (
        lambda m: (m.parent / "P002" / "adc.nii.gz").unlink(),
        ["P002", "adc.nii.gz", "not found"],
    ),
    "corrupt file": (
        lambda m: (m.parent / "P003" / "flairc.nii.gz").write_bytes(b"garbage" * 50),
        ["P003", "flairc.nii.gz", "cannot read"],
    ),
    "field of view misses the ROI": (
        lambda m: _rewrite(m.parent, "P001", "adc", _first_slice_only),
        ["P001", "adc.nii.gz", "does not reach the ROI"],
    ),
    "fields of view do not overlap": (
        lambda m: _rewrite(m.parent, "P004", "flairc", _elsewhere),
        ["P004", "flairc.nii.gz", "t1c.nii.gz", "does not overlap"],
    ),
    "NaN voxel": (lambda m: _rewrite(m.parent, "P002", "t1c", _nan), ["P002", "t1c.nii.gz", "NaN"]),
    "inf voxel": (lambda m: _rewrite(m.parent, "P003", "adc", _inf), ["P003", "adc.nii.gz", "inf"]),
    "all-zero series": (
        lambda m: _rewrite(m.parent, "P002", "t1c", _empty),
        ["P002", "t1c", "t1c.nii.gz", "every voxel", "is 0"],
    ),
    "constant series": (
        lambda m: _rewrite(m.parent, "P003", "flairc", lambda d, a: (np.full_like(d, 7.5), a)),
        ["P003", "flairc", "flairc.nii.gz", "is 7.5"],
    ),
    "one file as two sequences": (
        _set("flairc", "P001", "P001/t1c.nii.gz"),
        ["P001", "t1c", "flairc", "are the same file"],
    ),
    "a copied series": (
        lambda m: shutil.copy(
            m.parent / "P004" / "adc.nii.gz", m.parent / "P004" / "flairc.nii.gz"
        ),
        ["P004", "flairc", "adc", "hold the same voxels"],
    ),
    "empty ROI (mask)": (
        lambda m: _rewrite(m.parent, "P001", "mask", _empty),
        ["P001", "mask.nii.gz", "empty ROI"],
    ),
    "mask label 3": (
        lambda m: _rewrite(m.parent, "P004", "mask", _label3),
        ["P004", "mask.nii.gz", "label(s) 3"],
    ),
    "bbox outside the volume": (_bbox_outside, ["P004", "t1c.nii.gz", "outside the volume"]),
    "empty bbox": (
        lambda m: (_bbox_outside(m), _set("x1", "P004", "0")(m)),
        ["P004", "manifest.csv", "empty ROI"],
    ),
    "invasion with WHO I": (
        _set("invasion", "P001", "1"),
        ["P001", "manifest.csv", "invasion = 1 with who_grade = 1"],
    ),
    "who_grade 4": (_set("who_grade", "P003", "4"), ["P003", "manifest.csv", "who_grade '4'"]),
    "invasion 2": (_set("invasion", "P003", "2"), ["P003", "manifest.csv", "invasion '2'"]),
    "sex X": (_set("sex", "P002", "X"), ["P002", "manifest.csv", "sex 'X'"]),
    "duplicate ids": (
        _set("patient_id", "P003", "P002"),
        ["P002", "manifest.csv", "duplicate patient_id"],
    ),
    "missing column": (_drop("flairc"), ["manifest.csv", "missing required column", "flairc"]),
    "no ROI": (_drop("mask"), ["manifest.csv", "missing required column", "mask"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_validate_names_patient_and_file_of_each_bad_input(tiny_cohort, case, capsys):
    mutate, needles = BAD_INPUTS[case]
    mutate(tiny_cohort)
    problems = check_cohort(tiny_cohort).problems
    matching = [p for p in problems if all(n in p for n in needles)]
    assert matching, f"{case}: no problem mentions {needles}: {problems}"
    assert main(["validate", str(tiny_cohort), "--quiet"]) == 1
    assert needles[-1] in capsys.readouterr().out


def test_validate_lists_several_problems_at_once_in_manifest_order(tiny_cohort):
    BAD_INPUTS["missing file"][0](tiny_cohort)  # P002 adc
    _rewrite(tiny_cohort.parent, "P004", "t1c", _nan)
    _rewrite(tiny_cohort.parent, "P001", "mask", _label3)
    _set("invasion", "P003", "7")(tiny_cohort)
    serial = check_cohort(tiny_cohort, workers=1).problems
    assert len(serial) == 4, serial
    table_first = serial[0]
    assert "P003" in table_first and "invasion '7'" in table_first
    assert ["P001" in serial[1], "P002" in serial[2], "P004" in serial[3]] == [True] * 3
    assert check_cohort(tiny_cohort, workers=2).problems == serial  # deterministic in parallel


# two more high-grade patients, so that every class can be split (two per class at least)
def test_validate_command_exits_nonzero_or_reports_ok(tmp_path):
    manifest = write_tiny_cohort(tmp_path / "cohort", SPLITTABLE)
    command = [sys.executable, "-m", "tcl", "validate", str(manifest), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("OK: 6 patients, WHO I 2, high grade with invasion 2")
    (tmp_path / "cohort" / "P002" / "adc.nii.gz").unlink()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "P002" in done.stdout and "adc.nii.gz" in done.stdout


def test_t1c_and_flairc_swapped_are_flagged_by_patient(tiny_cohort):
    """The tumour stands out more on T1C (an enhancing meningioma) than on FLAIR-C; a
    manifest that swaps the two columns gets a warning per patient, a correct one none."""

    assert not [w for w in check_cohort(tiny_cohort).warnings if "flairc swapped" in w]
    edit_manifest(tiny_cohort, lambda t: t.rename(columns={"t1c": "flairc", "flairc": "t1c"}))
    flagged = [w for w in check_cohort(tiny_cohort).warnings if "are t1c and flairc swapped" in w]
    assert [w.split(",")[0] for w in flagged] == [f"patient P00{i}" for i in range(1, 5)]
    assert "flairc.nii.gz (1.00×)" not in flagged[0] and "×) than on flairc" in flagged[0]


def test_warnings_are_one_line_per_patient_with_file_names_and_counted():
    from tcl.data.validate import warning_lines

    warnings = [
        "patient P1, adc: /a/long/path/P1/adc.nii.gz covers only 50% of the ROI; the rest is 0",
        "patient P2, t1c: /x/P2/t1c.nii.gz is all zero inside the ROI (12 voxels)",
        "patient P1, flairc: /a/long/path/P1/flairc.nii.gz is constant (3) inside the ROI",
        "/data/manifest.csv: only 8 different training set(s), fewer than the 9 draws",
    ]
    lines = warning_lines(warnings)
    assert lines == [
        "patient P1: adc: adc.nii.gz covers only 50% of the ROI; the rest is 0; flairc: "
        "flairc.nii.gz is constant (3) inside the ROI",
        "patient P2: t1c: t1c.nii.gz is all zero inside the ROI (12 voxels)",
        "/data/manifest.csv: only 8 different training set(s), fewer than the 9 draws",
    ]
    long = warning_lines([f"patient P3, adc: {'x' * 400}"])[0]
    assert len(long) == 240 and long.endswith("…")
    table_wide = f"/{'d' * 200}/manifest.csv: only 8 different training set(s), fewer than …"
    assert warning_lines([table_wide]) == [table_wide]  # whole, path and all


@pytest.mark.slow
def test_the_synthetic_cohort_is_not_flagged(six_patients):
    """Its ADC maps are shifted by up to 2 mm on purpose (an EPI-like nuisance): below the
    threshold, so validate says nothing."""
    table = pd.read_csv(six_patients)
    shift = np.hypot(table["latent_adc_shift_x_mm"], table["latent_adc_shift_y_mm"])
    assert shift.max() > 0  # the nuisance is there to be ignored
    report = check_cohort(six_patients, alignment=True)
    assert report.problems == []
    assert not [w for w in report.warnings if "misregistered" in w], report.warnings


@pytest.mark.slow
def test_misregistration_is_flagged_with_patient_sequence_offset_and_fix(
    six_patients, tmp_path, capsys
):
    moved = tmp_path / "cohort"
    # three patients, one of them moved: the alignment check runs on each, three times below
    table = pd.read_csv(six_patients).head(3)
    for column in ("t1c", "flairc", "adc", "mask", "signs"):
        for cell in table[column]:
            (moved / cell).parent.mkdir(parents=True, exist_ok=True)
            (moved / cell).write_bytes((six_patients.parent / cell).read_bytes())
    # without labels: three patients are too few for the class checks, which are not tested here
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


def test_an_unlabelled_manifest_is_validated_without_the_class_checks(
    six_patients, tmp_path, capsys
):
    table = pd.read_csv(six_patients)
    unlabelled = table[["patient_id", "t1c", "flairc", "adc", "mask"]].copy()
    for column in ("t1c", "flairc", "adc", "mask"):
        unlabelled[column] = [str(six_patients.parent / cell) for cell in unlabelled[column]]
    unlabelled.head(2).to_csv(tmp_path / "new.csv", index=False)  # 2 patients: no class sizes
    assert main(["validate", str(tmp_path / "new.csv"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 patients, no labels: the class checks" in out and "skipped" in out
    # the other checks still run
    unlabelled.loc[0, "flairc"] = str(tmp_path / "gone.nii.gz")
    unlabelled.head(2).to_csv(tmp_path / "new.csv", index=False)
    assert main(["validate", str(tmp_path / "new.csv"), "--quiet"]) == 1
    assert "file not found" in capsys.readouterr().out
