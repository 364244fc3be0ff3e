"""Manifest reading, cohort validation (every bad input named by patient and file), and the
import of the released code's Grade_* folder layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    edit_manifest,
)

from tcl.cli import main
from tcl.data.manifest import MANIFEST_COLUMNS, read_manifest
from tcl.data.validate import check_cohort
from tcl.utils import TclError


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


# --- import-folders --------------------------------------------------------------------------


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
