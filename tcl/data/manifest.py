"""The cohort manifest: its columns, and reading it into a checked table.

A cohort is a CSV manifest plus NIfTI files. One row per patient::

    patient_id, who_grade (1|2|3), invasion (0|1), age, sex (M|F), scanner, t1c, flairc, adc, mask

Image paths are relative to the manifest's folder (absolute paths are kept as they are). The
region of interest (ROI) comes from ``mask`` (any label > 0; labels 1 = tumour, 2 = oedema) or,
where ``mask`` is empty, from the bounding-box columns ``x0, x1, y0, y1, z0, z1``: voxel indices,
end-exclusive, of the T1C file **as stored** (what ``img.dataobj[x0:x1, y0:y1, z0:z1]`` indexes,
i.e. what a viewer shows as voxel coordinates), whatever its orientation. When a row has both,
the mask is used. ``age``, ``sex`` and ``scanner`` may be empty (real cohorts often lack them);
extra columns (e.g. the synthetic cohort's ``latent_*``) are kept. The table may come from a
spreadsheet: ``,``, ``;`` or tab between cells (``;`` and tab files may use decimal commas),
a UTF-8 byte-order mark, and rows with every cell empty are accepted.

Reading checks the table itself (columns, labels, ids, bbox cells, file paths given); the files
are checked by :mod:`tcl.data.patients`, the whole cohort by :mod:`tcl.data.validate`. Every
problem is collected before reporting, each naming the patient and the column, so a cohort of
800 patients is fixed in one pass rather than one error at a time.

Task labels: ``invasion`` and ``high_grade = who_grade >= 2``.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tcl.utils import TclError

MANIFEST_COLUMNS = (
    "patient_id",
    "who_grade",
    "invasion",
    "age",
    "sex",
    "scanner",
    "t1c",
    "flairc",
    "adc",
    "mask",
)
BBOX_COLUMNS = ("x0", "x1", "y0", "y1", "z0", "z1")
MODALITIES = ("t1c", "flairc", "adc")
# Columns without which a manifest cannot be used. age/sex/scanner are optional (added empty);
# mask may be absent when all six bbox columns are present.
REQUIRED_COLUMNS = ("patient_id", "who_grade", "invasion") + MODALITIES
OPTIONAL_COLUMNS = ("age", "sex", "scanner")
WHO_GRADES = (1, 2, 3)
# Cell separators a manifest may use: CSV, spreadsheet exports in comma-decimal locales, TSV.
SEPARATORS = (",", ";", "\t")
# Text read as patient identifiers is never a missing value: NA, N/A, null, None are ids.
ID_COLUMNS = ("patient_id",)


# ---------------------------------------------------------------------------------------------
# table-level checks


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _is_blank(value: object) -> bool:
    return _is_empty(value) or (isinstance(value, str) and not value.strip())


def _as_int(value: object) -> int | None:
    """``value`` (a CSV cell as text) as an int, or None if it is not a whole number."""
    try:
        number = float(str(value))
    except ValueError:
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _convert_extra(column: pd.Series) -> pd.Series:
    """Numbers stay numbers in extra columns (the text reader below reads every cell as text)."""
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


_DECIMAL_COMMA = re.compile(r"^\s*([+-]?\d*),(\d+)\s*$")


def _decimal_point(value: object) -> object:
    """``"56,5"`` → ``"56.5"`` (a decimal comma); any other cell unchanged."""
    if isinstance(value, str):
        return _DECIMAL_COMMA.sub(r"\1.\2", value)
    return value


def _header_cells(line: str, separator: str) -> list[str]:
    return [cell.strip() for cell in next(csv.reader([line], delimiter=separator), [])]


def find_separator(path: Path) -> tuple[str | None, str]:
    """The cell separator of the manifest: the one of :data:`SEPARATORS` that splits the header
    line into cells one of which is ``patient_id``. Returns (separator or None, header line)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next((line for line in handle if line.strip()), "")
    for separator in SEPARATORS:
        if "patient_id" in _header_cells(header, separator):
            return separator, header
    return None, header


def read_csv_text_ids(
    path: str | os.PathLike,
    id_columns: tuple[str, ...] = ID_COLUMNS,
    text_columns: tuple[str, ...] = (),
    **kwargs,
) -> pd.DataFrame:
    """``pd.read_csv(path, **kwargs)`` with the ``id_columns`` and ``text_columns`` read as
    text, verbatim.

    pandas turns the cells ``NA``, ``N/A``, ``null``, ``None``, ``nan`` … into missing values
    and ``0001`` into 1; as patient identifiers (or a scanner's name) they are names. These
    columns are therefore read a second time as plain text (a table of ids is small) and
    replace the parsed ones; every other column is parsed as ``pd.read_csv`` would. In the
    ``text_columns`` (free text that may be absent: sex, scanner) an empty cell is missing;
    in the ``id_columns`` it is the empty string.
    """
    table = pd.read_csv(path, **kwargs)
    present = [c for c in (*id_columns, *text_columns) if c in table.columns]
    if present:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("dtype", "usecols", "na_values")}
        # one more read for all of them: only an empty text column cell is missing
        missing = {c: [""] for c in text_columns if c in present}
        text = pd.read_csv(
            path, **kwargs, usecols=present, dtype=str, keep_default_na=False, na_values=missing
        )
        for column in present:
            table[column] = text[column].to_numpy(dtype=object)
    return table


def read_table(path: Path, require_labels: bool = True) -> tuple[pd.DataFrame | None, list[str]]:
    """Parse and check the manifest table. Returns (table or None if unusable, problems).

    ``require_labels=False`` (new patients to predict) accepts manifests without ``who_grade``
    and ``invasion`` columns or with empty cells there; labels that are given are still checked.

    Cells are read as text (only empty cells become NaN) so that ids like ``0001`` or ``NA``
    survive and malformed numbers can be reported with their original spelling. The separator
    is found from the header line (``,``, ``;`` or tab); with ``;`` or tab, numbers may use a
    decimal comma. Rows whose every cell is empty (a spreadsheet's trailing rows) are dropped.
    """
    raw, lines, problems = _read_cells(path)
    if raw is None:
        return None, problems
    problems, complete = _column_problems(path, raw, require_labels)
    if not complete:
        return None, problems
    if len(raw) == 0:
        return None, [f"{path}: manifest has no patients"]

    for column in OPTIONAL_COLUMNS + ("mask", "who_grade", "invasion") + BBOX_COLUMNS:
        if column not in raw.columns:
            raw[column] = np.nan

    ids = raw["patient_id"].map(lambda v: "" if _is_empty(v) else str(v).strip())
    who_grade = np.zeros(len(raw), dtype=np.int64)
    invasion = np.zeros(len(raw), dtype=np.int64)
    age = np.full(len(raw), np.nan)
    bbox = np.full((len(raw), 6), -1, dtype=np.int64)
    for i, row in enumerate(raw.to_dict("records")):
        pid = ids.iloc[i]
        who = f"{path}: patient {pid}" if pid else f"{path}: row {lines[i]}"
        why = unusable_id(pid) if pid else None
        if why is not None:
            who = f"{path}: row {lines[i]}"
            problems.append(f"{who}: patient_id {pid!r} {why}")
        who_grade[i], invasion[i], age[i], bbox[i] = _check_row(
            row, who, bool(pid), require_labels, problems
        )

    counts = ids[ids != ""].value_counts()
    for pid in counts[counts > 1].index:
        rows = [str(lines[i]) for i in np.flatnonzero(ids.to_numpy() == pid)]
        problems.append(
            f"{path}: patient {pid}: duplicate patient_id (CSV lines {', '.join(rows)})"
        )
    table = _typed_table(path, raw, ids, who_grade, invasion, age, bbox, require_labels)
    return table, problems


def _read_cells(path: Path) -> tuple[pd.DataFrame | None, np.ndarray, list[str]]:
    """The manifest's cells as text (empty cells NaN, blank rows dropped, decimal commas
    turned into points where the separator allows them) and the CSV line of each row; or
    (None, lines, problems) for a file that cannot be read as a table."""
    no_lines = np.zeros(0, dtype=np.int64)
    if not path.is_file():
        return None, no_lines, [f"manifest not found: {path}"]
    separator, header = find_separator(path)
    if separator is None:
        known = [c for c in MANIFEST_COLUMNS if c in header]
        if known:
            # the column names are there but no known separator splits them apart
            shown = header.strip()[:80]
            return (
                None,
                no_lines,
                [
                    f"{path}: cannot split the header line {shown!r} into columns: cells must be "
                    "separated by ',' (CSV), ';' (spreadsheet export) or a tab; save the manifest "
                    "with one of these separators"
                ],
            )
        separator = ","  # no patient_id at all: the missing-column report says so
    try:
        raw = pd.read_csv(
            path,
            sep=separator,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig",
        )
    except Exception as error:  # pandas raises several types for malformed CSV
        return (
            None,
            no_lines,
            [f"{path}: cannot read manifest CSV (separator {separator!r}): {error}"],
        )
    raw.columns = [str(c).strip() for c in raw.columns]
    # a spreadsheet's empty rows (every cell empty or blank) are not patients
    blank = raw.apply(lambda column: column.map(_is_blank)).all(axis=1)
    lines = (raw.index[~blank.to_numpy()] + 2).to_numpy()  # CSV line of each row (header = 1)
    raw = raw.loc[~blank].reset_index(drop=True)
    if separator != ",":
        numeric = ("who_grade", "invasion", "age") + BBOX_COLUMNS
        for column in raw.columns:
            if column in numeric or column not in MANIFEST_COLUMNS:
                raw[column] = raw[column].map(_decimal_point)
    return raw, lines, []


def _column_problems(path: Path, raw: pd.DataFrame, require_labels: bool) -> tuple[list[str], bool]:
    """Missing or incomplete columns (a missing required column first), and whether every
    required column is there."""
    problems: list[str] = []
    has_bbox = all(c in raw.columns for c in BBOX_COLUMNS)
    partial_bbox = [c for c in BBOX_COLUMNS if c in raw.columns]
    required = REQUIRED_COLUMNS if require_labels else ("patient_id",) + MODALITIES
    missing = [c for c in required if c not in raw.columns]
    if "mask" not in raw.columns and not has_bbox:
        missing.append("mask (or all six bbox columns " + ", ".join(BBOX_COLUMNS) + ")")
    if partial_bbox and not has_bbox:
        absent = [c for c in BBOX_COLUMNS if c not in raw.columns]
        problems.append(f"{path}: bbox columns incomplete, missing {', '.join(absent)}")
    if missing:
        problems.insert(0, f"{path}: missing required column(s): {', '.join(missing)}")
    return problems, not missing


def unusable_id(patient_id: str) -> str | None:
    """Why ``patient_id`` cannot name a file or folder of its own, or None. Outputs are written
    per patient (``DIR/<patient_id>/``), and manifests come from spreadsheets other people
    wrote: an id with a path separator, ``.`` or ``..``, or a control character could write
    outside the folder asked for, or make a name no one can type."""
    if "/" in patient_id or "\\" in patient_id:
        return "contains a path separator"
    if patient_id in (".", ".."):
        return "is a relative folder name"
    if any(ord(c) < 32 or ord(c) == 127 for c in patient_id):
        return "contains a control character"
    return None


def _check_row(
    row: dict[str, Any], who: str, has_id: bool, require_labels: bool, problems: list[str]
) -> tuple[int, int, float, list[int]]:
    """One patient's cells: append what is wrong to ``problems`` (each naming ``who``) and
    return (who_grade or -1, invasion or -1, age or NaN, the six bbox values or -1s)."""
    if not has_id:
        problems.append(f"{who}: empty patient_id")
    grade = _as_int(row["who_grade"])
    if grade not in WHO_GRADES and (require_labels or not _is_empty(row["who_grade"])):
        problems.append(f"{who}: who_grade {row['who_grade']!r} not in {{1, 2, 3}}")
    inv = _as_int(row["invasion"])
    if inv not in (0, 1) and (require_labels or not _is_empty(row["invasion"])):
        problems.append(f"{who}: invasion {row['invasion']!r} not in {{0, 1}}")
    if grade == 1 and inv == 1:
        problems.append(
            f"{who}: invasion = 1 with who_grade = 1 (brain invasion makes a meningioma "
            "at least WHO grade II since WHO 2016)"
        )
    age = np.nan
    if not _is_empty(row["age"]):
        try:
            age = float(row["age"])
        except ValueError:
            problems.append(f"{who}: age {row['age']!r} is not a number")
        else:
            if not (0 <= age <= 120):
                problems.append(f"{who}: age {row['age']!r} outside 0..120")
    if not _is_empty(row["sex"]) and str(row["sex"]).strip() not in ("M", "F"):
        problems.append(f"{who}: sex {row['sex']!r} not in {{M, F}}")
    for column in MODALITIES:
        if _is_empty(row[column]):
            problems.append(f"{who}: empty {column} path")
    labels = (grade if grade is not None else -1, inv if inv is not None else -1, age)
    no_bbox = [-1] * 6
    if not _is_empty(row["mask"]):
        return (*labels, no_bbox)
    given = [c for c in BBOX_COLUMNS if not _is_empty(row.get(c))]
    if len(given) < 6:
        problems.append(f"{who}: no ROI: mask is empty and bbox columns are not all given")
        return (*labels, no_bbox)
    values = [_as_int(row[c]) for c in BBOX_COLUMNS]
    bad = [c for c, v in zip(BBOX_COLUMNS, values, strict=True) if v is None or v < 0]
    if bad:
        problems.append(f"{who}: bbox {', '.join(bad)} not non-negative whole voxel indices")
        return (*labels, no_bbox)
    for axis, (lo, hi) in zip("xyz", zip(values[::2], values[1::2], strict=True), strict=True):
        if hi <= lo:
            problems.append(
                f"{who}: empty ROI: bbox {axis}0={lo}, {axis}1={hi} (end-exclusive, "
                f"needs {axis}1 > {axis}0)"
            )
    return (*labels, values)


def _typed_table(
    path: Path,
    raw: pd.DataFrame,
    ids: pd.Series,
    who_grade: np.ndarray,
    invasion: np.ndarray,
    age: np.ndarray,
    bbox: np.ndarray,
    require_labels: bool,
) -> pd.DataFrame:
    """The cleaned table: typed labels, absolute paths, bbox as nullable ints, the manifest's
    columns first and any extra ones after them."""
    folder = path.resolve().parent
    table = raw.copy()
    table["patient_id"] = ids.astype(object)
    table["who_grade"] = who_grade
    table["invasion"] = invasion
    table["high_grade"] = (who_grade >= 2).astype(np.int64)
    if not require_labels:  # unknown labels are missing values, not -1
        unknown = who_grade < 0
        table["who_grade"] = pd.array(np.where(unknown, 0, who_grade), dtype="Int64")
        table.loc[unknown, "who_grade"] = pd.NA
        table["high_grade"] = table["who_grade"].ge(2).astype("Int64")
        table["invasion"] = pd.array(np.where(invasion < 0, 0, invasion), dtype="Int64")
        table.loc[invasion < 0, "invasion"] = pd.NA
    table["age"] = age
    for column in ("sex", "scanner"):
        table[column] = raw[column].map(lambda v: np.nan if _is_empty(v) else str(v).strip())
        table[column] = table[column].astype(object)
    for column in MODALITIES + ("mask",):
        table[column] = raw[column].map(
            lambda v: np.nan if _is_empty(v) else os.path.abspath(folder / str(v).strip())
        )
        table[column] = table[column].astype(object)
    for j, column in enumerate(BBOX_COLUMNS):
        table[column] = pd.array([None if b < 0 else int(b) for b in bbox[:, j]], dtype="Int64")
    known = set(MANIFEST_COLUMNS) | set(BBOX_COLUMNS) | {"high_grade"}
    for column in table.columns:
        if column not in known:
            table[column] = _convert_extra(raw[column])
    ordered = list(MANIFEST_COLUMNS) + list(BBOX_COLUMNS) + ["high_grade"]
    return table[ordered + [c for c in table.columns if c not in ordered]]


def raise_problems(problems: list[str], source: object) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise TclError(f"{len(problems)} problem(s) in {source}:\n{lines}")


def read_manifest(path: str | os.PathLike, require_labels: bool = True) -> pd.DataFrame:
    """Read and check a cohort manifest (table-level checks only; no image is opened).

    With ``require_labels=False`` (patients to predict), ``who_grade`` and ``invasion`` may be
    absent or empty; the label columns are then nullable ``Int64`` (missing where unknown).

    Returns one row per patient with ``patient_id`` (str), ``who_grade`` and ``invasion`` (int),
    ``high_grade`` (int, ``who_grade >= 2``), ``age`` (float, NaN if empty), ``sex``/``scanner``
    (str or NaN), absolute image paths in ``t1c, flairc, adc, mask`` (``mask`` NaN when the ROI
    is given by bbox), the bbox columns as nullable ``Int64``, and any extra columns unchanged.

    Raises one :class:`TclError` that lists every problem (missing columns, duplicate ids,
    labels outside their domain, invasion with WHO I, sex not M/F, no ROI), each naming the
    patient and the manifest file.
    """
    path = Path(path)
    table, problems = read_table(path, require_labels)
    raise_problems(problems, path)
    assert table is not None
    return table


# ---------------------------------------------------------------------------------------------
# file-level checks


@dataclass(frozen=True)
class PatientFiles:
    """One manifest row, reduced to what file checks and preprocessing need (picklable)."""

    patient_id: str
    paths: dict[str, str]  # modality (t1c, flairc, adc) -> absolute path
    mask: str | None  # absolute path, or None when the ROI is the bbox
    bbox: tuple[int, int, int, int, int, int] | None  # x0, x1, y0, y1, z0, z1 (end-exclusive)

    @classmethod
    def from_row(cls, row: pd.Series) -> PatientFiles:
        mask = None if _is_empty(row["mask"]) else str(row["mask"])
        bbox = None
        if mask is None and all(not pd.isna(row[c]) for c in BBOX_COLUMNS):
            bbox = tuple(int(row[c]) for c in BBOX_COLUMNS)
        paths = {m: ("" if _is_empty(row[m]) else str(row[m])) for m in MODALITIES}
        return cls(patient_id=str(row["patient_id"]), paths=paths, mask=mask, bbox=bbox)


def has_labels(path: Path) -> bool:
    """Whether the manifest gives any label (a ``who_grade`` or ``invasion`` cell that is not
    empty). A manifest of patients to predict gives none; one that gives some must give all."""
    if not path.is_file():
        return True  # the labelled reading reports it
    separator, _ = find_separator(path)
    if separator is None:
        return True  # unreadable: the labelled reading reports why
    table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    columns = [c for c in ("who_grade", "invasion") if c in table.columns]
    return any((table[c].str.strip() != "").any() for c in columns)


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    """The paper's three classes (WHO I; high grade with / without invasion) and WHO III."""
    high = table["who_grade"] >= 2
    return {
        "WHO I": int((~high).sum()),
        "high grade with invasion": int((high & (table["invasion"] == 1)).sum()),
        "high grade without invasion": int((high & (table["invasion"] == 0)).sum()),
        "of which WHO III": int((table["who_grade"] == 3).sum()),
    }
