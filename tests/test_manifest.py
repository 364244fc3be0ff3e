"""Manifest reading, cohort validation (every bad input named by patient and file), and the
import of the released code's Grade_* folder layout."""

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
    TINY_SHAPE,
    tiny_images,
    write_nifti,
    write_tiny_cohort,
)

from tcl.cli import main
from tcl.data.manifest import BBOX_COLUMNS, MANIFEST_COLUMNS, read_manifest
from tcl.data.preprocess import load_cache, preprocess_cohort
from tcl.data.released import import_folders
from tcl.data.validate import check_cohort
from tcl.utils import TclError


def edit_manifest(manifest: Path, edit) -> None:
    """Apply ``edit(table)`` (a DataFrame of the CSV text) and write the manifest back."""
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    edited = edit(table)
    table = table if edited is None else edited
    table.to_csv(manifest, index=False)


def test_read_manifest_types_paths_and_labels(tiny_cohort):
    table = read_manifest(tiny_cohort)
    assert list(table.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert table["patient_id"].tolist() == ["P001", "P002", "P003", "P004"]
    assert table["high_grade"].tolist() == [0, 1, 1, 0]  # who_grade 1, 2, 3, 1
    for column in ("t1c", "flairc", "adc", "mask"):
        paths = [Path(p) for p in table[column]]
        assert all(p.is_absolute() and p.is_file() for p in paths)
    assert table["age"].dtype == float and table["sex"].tolist() == ["F", "M", "F", "M"]


def test_read_manifest_keeps_ids_as_text_and_allows_empty_demographics(tiny_cohort):
    def edit(table):
        table["patient_id"] = ["0001", "NA", "0003", "4"]
        table["age"] = ""
        table["sex"] = ""
        table["scanner"] = ""

    edit_manifest(tiny_cohort, edit)
    table = read_manifest(tiny_cohort)
    assert table["patient_id"].tolist() == ["0001", "NA", "0003", "4"]
    assert table["age"].isna().all() and table["sex"].isna().all()
    assert check_cohort(tiny_cohort).problems == []


# --- every bad input: (mutation of the cohort, substrings the problem must contain) ----------


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


def test_read_manifest_raises_one_error_listing_every_table_problem(tiny_cohort):
    def edit(table):
        table.loc[0, "invasion"] = "1"  # P001 WHO I with invasion
        table.loc[1, "who_grade"] = "x"  # P002
        table.loc[3, "patient_id"] = "P003"  # duplicate

    edit_manifest(tiny_cohort, edit)
    with pytest.raises(TclError) as caught:
        read_manifest(tiny_cohort)
    message = str(caught.value)
    assert "3 problem(s)" in message and "manifest.csv" in message
    for needle in ("P001", "P002", "who_grade 'x'", "P003: duplicate"):
        assert needle in message


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


# --- import-folders --------------------------------------------------------------------------

LAYOUT = {  # folder -> patients; each patient's box crop differs in shape
    "Grade_1": {"A01": (10, 30, 12, 20), "A02": (8, 20, 8, 20)},
    "Grade_2_invasion": {"B01": (5, 15, 5, 25), "B02": (6, 18, 10, 30)},
    "Grade_2_noninvasion": {"C01": (20, 36, 14, 30), "C02": (12, 28, 4, 20)},
}


def write_layout(root: Path) -> dict[str, tuple[int, int, int]]:
    """The released code's layout, files cropped to the tumour box. Returns pid → shape."""
    shapes = {}
    for k, (folder, patients) in enumerate(LAYOUT.items()):
        for j, (pid, box) in enumerate(patients.items()):
            images = tiny_images(10 * k + j, box)
            x0, x1, y0, y1 = box
            for name, column in (("t1", "t1c"), ("t2", "flairc"), ("adc", "adc")):
                crop = images[column][x0:x1, y0:y1, :]
                write_nifti(root / folder / pid / f"{name}_bbox.nii.gz", crop)
            shapes[pid] = (x1 - x0, y1 - y0, TINY_SHAPE[2])
    return shapes


def test_import_folders_round_trip_validate_and_preprocess(tmp_path, capsys):
    shapes = write_layout(tmp_path / "released")
    manifest = tmp_path / "cohort" / "manifest.csv"
    status = main(["import-folders", str(tmp_path / "released"), "--out", str(manifest)])
    assert status == 0 and "6 patients" in capsys.readouterr().out
    text = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert not any(Path(p).is_absolute() for p in text["t1c"])  # relative to the manifest
    table = read_manifest(manifest)
    assert table["patient_id"].tolist() == ["A01", "A02", "B01", "B02", "C01", "C02"]
    assert table["who_grade"].tolist() == [1, 1, 2, 2, 2, 2]
    assert table["invasion"].tolist() == [0, 0, 1, 1, 0, 0]
    assert table["mask"].isna().all() and table["age"].isna().all()
    assert table["flairc"].str.endswith("t2_bbox.nii.gz").all()
    for _, row in table.iterrows():
        x, y, z = shapes[row["patient_id"]]
        assert [row[c] for c in BBOX_COLUMNS] == [0, x, 0, y, 0, z]
    assert main(["validate", str(manifest), "--quiet"]) == 0
    out = preprocess_cohort(
        manifest, tmp_path / "cache", size=(16, 16, 4), workers=1, progress=False
    )
    cache = load_cache(out)
    assert cache.volumes.shape == (6, 3, 16, 16, 4)
    assert cache.index["patient_id"].tolist() == ["A01", "A02", "B01", "B02", "C01", "C02"]


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda r: (r / "Grade_3").mkdir(), ["Grade_3", "unknown"]),
        (lambda r: (r / "Grade_1" / "A02" / "t2_bbox.nii.gz").unlink(), ["A02", "t2_bbox"]),
        (
            lambda r: (r / "Grade_1" / "A01" / "t1_bbox.nii.gz").write_bytes(b"not nifti"),
            ["A01", "t1_bbox.nii.gz"],
        ),
        (lambda r: (r / "Grade_2_invasion" / "A01").mkdir(), ["A01", "duplicate"]),
    ],
)
def test_import_folders_names_what_is_wrong_and_writes_nothing(tmp_path, damage, needles):
    root = tmp_path / "released"
    write_layout(root)
    damage(root)
    manifest = tmp_path / "manifest.csv"
    with pytest.raises(TclError) as caught:
        import_folders(root, manifest)
    assert all(n in str(caught.value) for n in needles), str(caught.value)
    assert not manifest.exists()


def test_import_folders_rejects_an_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TclError, match="no patients"):
        import_folders(tmp_path / "empty", tmp_path / "manifest.csv")
    assert main(["import-folders", str(tmp_path / "nowhere"), "--out", "m.csv"]) == 2


@pytest.mark.parametrize(
    "bad_id, why",
    [
        ("../escaped", "path separator"),
        ("/abs/olute", "path separator"),
        ("a\\b", "path separator"),
        ("..", "relative folder name"),
        ("P\x07BELL", "control character"),
    ],
)
def test_a_patient_id_that_is_no_plain_file_name_is_refused_by_row(tiny_cohort, bad_id, why):
    """Outputs are written per patient (predict --explain DIR/<patient_id>): an id such as
    ../escaped would write outside DIR. The manifest is refused, the row named."""
    table = pd.read_csv(tiny_cohort, dtype=str)
    table.loc[1, "patient_id"] = bad_id
    table.to_csv(tiny_cohort, index=False)
    with pytest.raises(TclError) as error:
        read_manifest(tiny_cohort)
    message = str(error.value)
    assert f"row 3: patient_id {bad_id!r}" in message and why in message
    assert main(["validate", str(tiny_cohort), "--quiet"]) != 0


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
