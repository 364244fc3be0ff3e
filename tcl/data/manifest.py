"""The cohort manifest: reading, validating, and importing the released code's folder layout.

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

The sequences must be co-registered (their affines map voxels to the same scanner space), not
necessarily on one voxel grid: FLAIR-C, ADC and the mask on another grid than T1C are resampled
onto the T1C grid with nibabel (linear for images, nearest neighbour for the mask). A file whose
field of view does not overlap T1C's, or misses the ROI entirely, is refused.

Task labels: ``invasion`` and ``high_grade = who_grade >= 2``.

Every check collects all problems before reporting, each naming the patient and the file, so a
cohort of 800 patients is fixed in one pass rather than one error at a time. Warnings (signal
that is zero, constant or mostly clipped inside the ROI; partial coverage) do not stop a run.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tcl.data.nifti import (
    Volume,
    box_to_canonical,
    canonical_affine,
    canonical_orientation,
    covered_fraction,
    load_volume,
    reorient,
    resample_to_grid,
    world_extent,
)
from tcl.data.register import OFFSET_DEG, OFFSET_MM, misregistration, roi_centre
from tcl.utils import TclError, available_cpus, write_text_atomic

# Misregistration warnings name this command; check_cohort puts the manifest's path in.
REGISTER_HINT = "python -m tcl register MANIFEST --out FOLDER"

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
MASK_LABELS = (0, 1, 2)  # background, tumour, peritumoural oedema
AFFINE_TOLERANCE = 1e-3  # mm; co-registered files written by different tools differ by rounding
# validate warns when more than this share of a sequence's tumour voxels (mask label 1; the
# whole ROI when there is no mask) sits at or above the clip ceiling (CLIP_RANGE in
# tcl.data.preprocess): the contrast inside the tumour is then mostly cut away, as with a 12-bit
# scanner range (0..4095, enhancing tumour far above 1200) or an ADC map in other units. Oedema
# (label 2) is left out: its ADC (about 1200..1600 × 1e-6 mm²/s) clips legitimately. On a
# 40-patient synthetic cohort the largest share was 65% (ADC), so no warning there.
CLIPPED_SHARE_WARNING = 0.8
# Cell separators a manifest may use: CSV, spreadsheet exports in comma-decimal locales, TSV.
SEPARATORS = (",", ";", "\t")
# Text read as patient identifiers is never a missing value: NA, N/A, null, None are ids.
ID_COLUMNS = ("patient_id",)

# The released code's folder layout (import-folders): folder -> (who_grade, invasion).
# Its high-grade folders do not tell WHO II from WHO III: both are imported as who_grade 2,
# which leaves the high_grade label (>= 2) exact.
GRADE_FOLDERS: dict[str, tuple[int, int]] = {
    "Grade_1": (1, 0),
    "Grade_2_invasion": (2, 1),
    "Grade_2_noninvasion": (2, 0),
}
# released file name -> manifest column (t2 in the released data is contrast-enhanced FLAIR)
FOLDER_FILES: dict[str, str] = {
    "t1_bbox.nii.gz": "t1c",
    "t2_bbox.nii.gz": "flairc",
    "adc_bbox.nii.gz": "adc",
}


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


def _find_separator(path: Path) -> tuple[str | None, str]:
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


def _read_table(path: Path, require_labels: bool = True) -> tuple[pd.DataFrame | None, list[str]]:
    """Parse and check the manifest table. Returns (table or None if unusable, problems).

    ``require_labels=False`` (new patients to predict) accepts manifests without ``who_grade``
    and ``invasion`` columns or with empty cells there; labels that are given are still checked.

    Cells are read as text (only empty cells become NaN) so that ids like ``0001`` or ``NA``
    survive and malformed numbers can be reported with their original spelling. The separator
    is found from the header line (``,``, ``;`` or tab); with ``;`` or tab, numbers may use a
    decimal comma. Rows whose every cell is empty (a spreadsheet's trailing rows) are dropped.
    """
    if not path.is_file():
        return None, [f"manifest not found: {path}"]
    separator, header = _find_separator(path)
    if separator is None:
        known = [c for c in MANIFEST_COLUMNS if c in header]
        if known:
            # the column names are there but no known separator splits them apart
            shown = header.strip()[:80]
            return None, [
                f"{path}: cannot split the header line {shown!r} into columns: cells must be "
                "separated by ',' (CSV), ';' (spreadsheet export) or a tab; save the manifest "
                "with one of these separators"
            ]
        separator = ","  # no patient_id at all: the missing-column report below says so
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
        return None, [f"{path}: cannot read manifest CSV (separator {separator!r}): {error}"]
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
        if not pid:
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
        who_grade[i] = grade if grade is not None else -1
        invasion[i] = inv if inv is not None else -1
        if not _is_empty(row["age"]):
            try:
                age[i] = float(row["age"])
            except ValueError:
                problems.append(f"{who}: age {row['age']!r} is not a number")
            else:
                if not (0 <= age[i] <= 120):
                    problems.append(f"{who}: age {row['age']!r} outside 0..120")
        if not _is_empty(row["sex"]) and str(row["sex"]).strip() not in ("M", "F"):
            problems.append(f"{who}: sex {row['sex']!r} not in {{M, F}}")
        for column in MODALITIES:
            if _is_empty(row[column]):
                problems.append(f"{who}: empty {column} path")
        if _is_empty(row["mask"]):
            given = [c for c in BBOX_COLUMNS if not _is_empty(row.get(c))]
            if len(given) < 6:
                problems.append(f"{who}: no ROI: mask is empty and bbox columns are not all given")
                continue
            values = [_as_int(row[c]) for c in BBOX_COLUMNS]
            bad = [c for c, v in zip(BBOX_COLUMNS, values, strict=True) if v is None or v < 0]
            if bad:
                problems.append(
                    f"{who}: bbox {', '.join(bad)} not non-negative whole voxel indices"
                )
                continue
            bbox[i] = values
            for axis, (lo, hi) in zip(
                "xyz", zip(values[::2], values[1::2], strict=True), strict=True
            ):
                if hi <= lo:
                    problems.append(
                        f"{who}: empty ROI: bbox {axis}0={lo}, {axis}1={hi} (end-exclusive, "
                        f"needs {axis}1 > {axis}0)"
                    )

    counts = ids[ids != ""].value_counts()
    for pid in counts[counts > 1].index:
        rows = [str(lines[i]) for i in np.flatnonzero(ids.to_numpy() == pid)]
        problems.append(
            f"{path}: patient {pid}: duplicate patient_id (CSV lines {', '.join(rows)})"
        )

    # The cleaned table: typed labels, absolute paths, bbox as nullable ints.
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
    table = table[ordered + [c for c in table.columns if c not in ordered]]
    return table, problems


def _raise_problems(problems: list[str], source: object) -> None:
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
    table, problems = _read_table(path, require_labels)
    _raise_problems(problems, path)
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


@dataclass
class PatientImages:
    """The loaded images of one patient, on the T1C voxel grid in canonical (RAS+) orientation.

    ``images`` [3, X, Y, Z] float32 (t1c, flairc, adc); ``roi`` (x0, x1, y0, y1, z0, z1),
    end-exclusive, in that canonical grid; ``mask`` [X, Y, Z] uint8 labels on the same grid
    (None when the ROI came from a bbox); ``warnings`` (signal sanity, partial coverage; they do
    not stop a run); ``resampled``: modality or ``mask`` → how it was put onto the T1C grid;
    ``affine``: that canonical grid's voxel-to-mm matrix (spacing, position).
    """

    images: np.ndarray
    roi: tuple[int, int, int, int, int, int]
    mask: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    resampled: dict[str, str] = field(default_factory=dict)
    affine: np.ndarray | None = None  # 4×4 voxel → mm of ``images``' (canonical) grid


@dataclass
class PatientCheck:
    """What checking one patient found: ``problems`` (the patient cannot be used), ``warnings``
    (it can, but look), ``resampled`` (file → how it was put onto the T1C grid). Small and
    picklable, so validation workers return it instead of the images."""

    patient_id: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resampled: dict[str, str] = field(default_factory=dict)


def roi_of_mask(mask: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
    """Bounding box (x0, x1, y0, y1, z0, z1), end-exclusive, of the voxels > 0 of ``mask``
    [X, Y, Z]; None when there are none."""
    inside = mask > 0
    if not inside.any():
        return None
    bounds: list[int] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(inside.any(axis=other))
        bounds += [int(hits[0]), int(hits[-1]) + 1]
    return tuple(bounds)  # type: ignore[return-value]


def same_grid(a: Volume, b: Volume) -> bool:
    return a.data.shape == b.data.shape and np.allclose(
        a.affine, b.affine, rtol=0, atol=AFFINE_TOLERANCE
    )


def _sample_points(box: tuple[int, ...], per_axis: int = 16) -> np.ndarray:
    """Up to ``per_axis``³ voxel centres [N, 3] spread evenly over the voxel box ``box``
    (x0, x1, y0, y1, z0, z1; end-exclusive): enough to tell how much of it a field of view
    covers without visiting millions of voxels."""
    axes = [
        np.unique(np.linspace(lo, hi - 1, min(per_axis, hi - lo)).round())
        for lo, hi in zip(box[::2], box[1::2], strict=True)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _grid_text(volume: Volume) -> str:
    shape = "×".join(str(n) for n in volume.data.shape)
    spacing = "×".join(f"{s:.3g}" for s in volume.spacing)
    return f"{shape} voxels of {spacing} mm"


def _extent_text(volume: Volume) -> str:
    corners = world_extent(volume.data.shape, volume.affine)
    low, high = corners.min(axis=0), corners.max(axis=0)
    return ", ".join(
        f"{axis} {lo:.0f}..{hi:.0f}" for axis, lo, hi in zip("xyz", low, high, strict=True)
    )


def _signal_checks(
    pid: str,
    files: PatientFiles,
    images: np.ndarray,
    region: np.ndarray,
    tumour: np.ndarray,
    roi: tuple[int, ...],
) -> tuple[list[str], list[str]]:
    """Signal sanity of ``images`` [3, X, Y, Z] → (problems, warnings).

    Warnings: a sequence all zero or constant inside the ROI ``region`` [X, Y, Z] (bool), or
    mostly at the clip ceiling inside ``tumour`` [X, Y, Z] (bool). A problem is what
    preprocessing refuses: no voxel > 0 after clipping in any sequence over the in-plane ROI
    box ``roi`` (all slices, the crop it takes).
    """
    from tcl.data.preprocess import CLIP_RANGE, crop_in_plane

    problems: list[str] = []
    warnings: list[str] = []
    ceiling = CLIP_RANGE[1]
    for k, modality in enumerate(MODALITIES):
        values = images[k][region]
        where = f"patient {pid}, {modality}: {files.paths[modality]}"
        if values.size == 0:
            continue
        if not values.any():
            warnings.append(f"{where} is all zero inside the ROI ({values.size} voxels)")
        elif values.min() == values.max():
            warnings.append(
                f"{where} is constant ({values.flat[0]:g}) inside the ROI ({values.size} voxels)"
            )
        inside = images[k][tumour]
        share = float(np.count_nonzero(inside >= ceiling)) / max(inside.size, 1)
        if share > CLIPPED_SHARE_WARNING:
            warnings.append(
                f"{where}: {share:.0%} of the tumour's voxels are at or above the clip ceiling "
                f"{ceiling:g} (preprocessing clips to {list(CLIP_RANGE)}): is the intensity "
                "range or unit what the paper used?"
            )
    crop = crop_in_plane(images, roi)
    if not (crop > CLIP_RANGE[0]).any():
        problems.append(
            f"patient {pid}: no voxel > {CLIP_RANGE[0]:g} in any sequence inside the ROI "
            f"(in-plane box x {roi[0]}..{roi[1]}, y {roi[2]}..{roi[3]}, every slice), so "
            f"preprocessing has nothing to normalise ({files.paths['t1c']})"
        )
    return problems, warnings


def nonfinite_problem(volume: Volume, pid: str, name: str, path: str) -> str | None:
    """The problem of a volume with NaN or infinite voxels, or None."""
    bad = int(np.count_nonzero(~np.isfinite(volume.data)))
    return f"patient {pid}, {name}: {bad} NaN/inf voxel(s) in {path}" if bad else None


def _alignment_warnings(
    pid: str,
    volumes: dict[str, Volume],
    paths: dict[str, str],
    roi: tuple[int, int, int, int, int, int],
) -> list[str]:
    """Warnings for FLAIR-C and ADC (and a mask drawn on their grid) that a quick rigid
    registration finds misregistered against T1C (:func:`tcl.data.register.misregistration`)."""
    t1c = volumes["t1c"]
    centre = roi_centre(t1c, bbox=roi)
    warnings = []
    for name in ("flairc", "adc"):
        found = misregistration(t1c, volumes[name], centre)
        if found is None:
            continue
        shift, angle = found
        warnings.append(
            f"patient {pid}, {name}: {paths[name]} seems misregistered against t1c "
            f"{paths['t1c']}: a quick registration moves it by about {shift:.0f} mm and "
            f"{angle:.0f}° (more than {OFFSET_MM:g} mm or {OFFSET_DEG:g}°), so its resampled "
            f"image would miss the T1C anatomy; `{REGISTER_HINT}` registers FLAIR-C and ADC "
            "onto T1C"
        )
        mask = volumes.get("mask")
        if mask is not None and not same_grid(mask, t1c) and same_grid(mask, volumes[name]):
            warnings.append(
                f"patient {pid}, mask: {paths['mask']} is on the grid of {name}, so it is "
                f"probably as far off; `{REGISTER_HINT}` moves it with {name}"
            )
    return warnings


def _load_patient(
    files: PatientFiles, alignment: bool = False
) -> tuple[PatientCheck, PatientImages | None]:
    """Load and check one patient's files (see :func:`load_patient`)."""
    pid = files.patient_id
    check = PatientCheck(patient_id=pid)
    problems = check.problems
    volumes: dict[str, Volume] = {}  # as stored
    entries = [(m, files.paths[m]) for m in MODALITIES]
    if files.mask is not None:
        entries.append(("mask", files.mask))
    paths = dict(entries)
    for name, path in entries:
        if not path:
            continue  # an empty path is a table-level problem, reported there
        try:
            volume = load_volume(path, what=f"patient {pid}, {name}", canonical=False)
        except TclError as error:
            problems.append(str(error))
            continue
        problem = nonfinite_problem(volume, pid, name, path)
        if problem:
            problems.append(problem)
        volumes[name] = volume

    # The reference grid is T1C's (the first readable modality when T1C itself is broken).
    reference = next((m for m in MODALITIES if m in volumes), None)
    if reference is None:
        return check, None
    ref = volumes[reference]
    ref_path = paths[reference]
    ref_shape: tuple[int, int, int] = ref.data.shape  # type: ignore[assignment]
    whole = (0, ref_shape[0], 0, ref_shape[1], 0, ref_shape[2])
    other_grid: list[str] = []
    for name in volumes:
        if name == reference or same_grid(volumes[name], ref):
            continue
        other = volumes[name]
        # overlap both ways: a small field of view inside T1C's, or T1C's inside a large one
        seen = covered_fraction(_sample_points(whole), ref.affine, other.data.shape, other.affine)
        other_box = tuple(v for n in other.data.shape for v in (0, n))
        back = covered_fraction(_sample_points(other_box), other.affine, ref_shape, ref.affine)
        if seen == 0 and back == 0:
            problems.append(
                f"patient {pid}, {name}: the field of view of {paths[name]} ({_extent_text(other)}"
                f" mm) does not overlap that of {reference} {ref_path} ({_extent_text(ref)} mm): "
                "not co-registered, or the wrong file"
            )
            continue
        other_grid.append(name)

    mask_data: np.ndarray | None = None
    roi: tuple[int, int, int, int, int, int] | None = None  # in the stored T1C grid
    if "mask" in volumes:
        mask = volumes["mask"].data
        # select the odd voxels first: np.unique over the whole mask (a sort) costs more
        # than loading it
        odd = np.ones(mask.shape, dtype=bool)
        for label in MASK_LABELS:
            odd &= mask != label
        outside = np.unique(mask[odd & np.isfinite(mask)]).tolist()
        if outside:
            shown = ", ".join(f"{v:g}" for v in outside[:10])
            problems.append(
                f"patient {pid}, mask: label(s) {shown} outside {{0, 1, 2}} in {files.mask}"
            )
        if "mask" in other_grid:
            mask = resample_to_grid(volumes["mask"], ref_shape, ref.affine, order=0).data
            check.resampled["mask"] = (
                f"{_grid_text(volumes['mask'])} → the {reference} grid, nearest neighbour"
            )
        mask_data = np.where(np.isfinite(mask), mask, 0)
        roi = roi_of_mask(mask_data)
        if roi is None:
            problems.append(
                f"patient {pid}, mask: empty ROI (no voxel > 0"
                + (" on the t1c grid" if "mask" in other_grid else "")
                + f") in {files.mask}"
            )
    elif files.mask is None and files.bbox is not None:
        x0, x1, y0, y1, z0, z1 = files.bbox
        spans = [(x0, x1), (y0, y1), (z0, z1)]
        inside = all(0 <= lo < hi <= n for (lo, hi), n in zip(spans, ref_shape, strict=True))
        if any(hi <= lo for lo, hi in spans):
            pass  # an empty bbox is a table-level problem, already reported by _read_table
        elif not inside:
            problems.append(
                f"patient {pid}: bbox x {x0}..{x1}, y {y0}..{y1}, z {z0}..{z1} is outside "
                f"the volume of shape {ref_shape} as stored ({reference} {ref_path}; bbox "
                "columns are voxel indices of the file as stored)"
            )
        else:
            roi = files.bbox

    images_on_grid = [m for m in MODALITIES if m in other_grid]
    if roi is not None:
        points = _sample_points(roi)
        for name in images_on_grid:
            other = volumes[name]
            share = covered_fraction(points, ref.affine, other.data.shape, other.affine)
            if share == 0:
                problems.append(
                    f"patient {pid}, {name}: the field of view of {paths[name]} "
                    f"({_extent_text(other)} mm) does not reach the ROI on the {reference} "
                    f"grid ({ref_path}): not co-registered, or the wrong file"
                )
            elif share < 1:
                check.warnings.append(
                    f"patient {pid}, {name}: {paths[name]} covers only {share:.0%} of the ROI; "
                    "the rest is 0 after resampling onto the t1c grid"
                )

    if problems or roi is None or any(m not in volumes for m in MODALITIES):
        return check, None
    if alignment:
        check.warnings.extend(_alignment_warnings(pid, volumes, paths, roi))
    # Onto the T1C grid where needed, then reoriented to canonical: the bbox was read in the
    # stored grid and is carried along. The reoriented channels are views; np.stack makes the
    # one copy, in the layout of its inputs (nibabel's arrays are Fortran-ordered, and a copy
    # into C order would cost more than loading).
    ornt = canonical_orientation(ref.affine)
    channels = []
    for modality in MODALITIES:
        volume = volumes[modality]
        if modality in images_on_grid:
            check.resampled[modality] = (
                f"{_grid_text(volume)} → the {reference} grid ({_grid_text(ref)}), linear"
            )
            volume = resample_to_grid(volume, ref_shape, ref.affine, order=1)
        channels.append(reorient(volume.data, ornt))
    images = np.stack(channels).astype(np.float32, copy=False)
    del channels, volumes
    canonical_roi = box_to_canonical(roi, ref_shape, ornt)
    canonical_mask = None
    if mask_data is not None:
        canonical_mask = reorient(mask_data, ornt).astype(np.uint8)  # astype: a contiguous copy
        region = canonical_mask > 0
        tumour = canonical_mask == 1
        if not tumour.any():  # oedema only: the lesion is all there is
            tumour = region
    else:
        region = np.zeros(images.shape[1:], dtype=bool)
        x0, x1, y0, y1, z0, z1 = canonical_roi
        region[x0:x1, y0:y1, z0:z1] = True
        tumour = region
    signal_problems, signal_warnings = _signal_checks(
        pid, files, images, region, tumour, canonical_roi
    )
    problems.extend(signal_problems)
    check.warnings.extend(signal_warnings)
    if problems:
        return check, None
    return check, PatientImages(
        images=images,
        roi=canonical_roi,
        mask=canonical_mask,
        warnings=list(check.warnings),
        resampled=dict(check.resampled),
        affine=canonical_affine(ref.affine, ref_shape),
    )


def load_patient(
    files: PatientFiles, alignment: bool = False
) -> tuple[list[str], PatientImages | None]:
    """Load and check one patient's files; collect every problem rather than stop at the first.

    Checks: each file exists and is a readable 3D NIfTI; no NaN/inf voxels; every modality (and
    the mask) either has the grid (shape and affine) of T1C or is co-registered on another grid
    whose field of view overlaps T1C's and reaches the ROI — then it is resampled onto the T1C
    grid (nibabel ``resample_from_to``: linear for images, nearest for the mask); mask labels
    are in {0, 1, 2}; the ROI (mask > 0, or the bbox in T1C's stored voxel grid) is non-empty,
    inside the volume and has some signal > 0. The images are then reoriented to canonical.
    With ``alignment``, also whether FLAIR-C and ADC lie on the T1C anatomy (a quick rigid
    registration, about 1 s a patient; a warning when they do not).
    Returns (problems, images); images is None when there is any problem, else its
    ``warnings`` and ``resampled`` say what to look at.
    """
    check, images = _load_patient(files, alignment)
    return check.problems, images


def check_patient(files: PatientFiles) -> list[str]:
    """The problems of one patient's files (``load_patient`` without keeping the images)."""
    return _load_patient(files)[0].problems


def inspect_patient(files: PatientFiles, alignment: bool = False) -> PatientCheck:
    """Problems, warnings and resampled files of one patient (``load_patient`` without the
    images, so that validation workers send back a few lines rather than volumes)."""
    return _load_patient(files, alignment)[0]


# ---------------------------------------------------------------------------------------------
# ordered parallel map over patients

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers(n_items: int, workers: int | None = None) -> int:
    """Worker processes to use: ``workers`` if given, else one per CPU, never more than items."""
    wanted = available_cpus() if workers is None else workers
    if wanted < 1:
        raise TclError(f"--workers must be >= 1 (got {workers})")
    return max(1, min(wanted, n_items))


def _watch_parent(parent: int, stop: Any) -> None:
    """Exit this worker as soon as its parent is gone (the worker is then re-parented) or the
    parent sets ``stop`` (a multiprocessing Event: it no longer wants the results).

    A worker blocked on the task queue never learns that a SIGKILLed parent (out-of-memory
    killer, container stop) has died: it shares the queue's pipe with its siblings, so it never
    sees end-of-file, and it would wait for ever as an orphan holding memory.
    """
    while os.getppid() == parent:
        if stop.wait(0.2):
            break
    os._exit(1)


def _init_worker(parent: int, stop: Any) -> None:
    """Run in each pool worker before its first task."""
    # Ctrl-C goes to the whole process group: the parent alone reacts (it stops the pool and
    # prints one line), the workers would each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's Python-level SIGTERM handler (preprocess installs
    # one to clean up); a worker terminated by the pool must simply stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()


def map_patients(
    func: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int = 1,
    progress: bool = False,
    desc: str = "patients",
    total: int | None = None,
) -> Iterator[Result]:
    """Yield ``func(item)`` for each item, **in input order**, using ``workers`` processes.

    At most ``2 × workers`` results are in flight, so memory stays bounded however many
    patients there are. Results do not depend on ``workers`` (each call is independent).
    Workers are forked where the platform allows: spawned workers would re-import the caller's
    main module, which breaks scripts without an ``if __name__ == "__main__"`` guard. ``func``
    uses only numpy and nibabel, so threads that the parent holds (torch) do not matter.

    Workers ignore Ctrl-C (the parent handles it) and exit by themselves within a fraction of a
    second when the parent dies, however it dies. When the consumer stops early (an error, an
    interrupt, ``close()``), queued items are cancelled and the workers exit at once, dropping
    the item in hand.
    """
    from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

    items = list(items)
    bar = tqdm(total=total or len(items), desc=desc, unit="patient", disable=not progress)
    try:
        if workers <= 1:
            for item in items:
                yield func(item)
                bar.update(1)
            return
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        stop = context.Event()
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(os.getpid(), stop),
        )
        finished = False
        pending: list[Future] = []
        try:
            iterator = iter(items)
            for item in iterator:
                pending.append(pool.submit(func, item))
                if len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
                    bar.update(1)
            while pending:
                yield pending.pop(0).result()
                bar.update(1)
            finished = True
        finally:
            for future in pending:
                future.cancel()
            if not finished:
                stop.set()  # workers drop the patient in hand and exit
            pool.shutdown(wait=finished, cancel_futures=True)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# whole-cohort validation


@dataclass
class CohortReport:
    """Everything :func:`check_cohort` found: ``problems`` (each stops a later step),
    ``warnings`` (worth a look, stop nothing) and ``resampled`` (patient → file → how it was put
    onto the T1C grid), all in manifest order."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resampled: dict[str, dict[str, str]] = field(default_factory=dict)
    labelled: bool = True  # False: no label given, the class checks were skipped


def has_labels(path: Path) -> bool:
    """Whether the manifest gives any label (a ``who_grade`` or ``invasion`` cell that is not
    empty). A manifest of patients to predict gives none; one that gives some must give all."""
    if not path.is_file():
        return True  # the labelled reading reports it
    separator, _ = _find_separator(path)
    if separator is None:
        return True  # unreadable: the labelled reading reports why
    table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    columns = [c for c in ("who_grade", "invasion") if c in table.columns]
    return any((table[c].str.strip() != "").any() for c in columns)


def _draw_checks(path: Path, table: pd.DataFrame, draws: int) -> tuple[list[str], list[str]]:
    """What ``python -m tcl splits --draws N`` would refuse in this cohort (problems), and
    draws that cannot all differ (a warning)."""
    from tcl.data.splits import class_size_problems, distinct_training_sets, patient_class

    if draws < 1:
        return [f"--draws must be at least 1, got {draws}"], []
    sizes = {"low_grade": 0, "high_grade_invasive": 0, "high_grade_noninvasive": 0}
    for grade, invasion in zip(table["who_grade"], table["invasion"], strict=True):
        sizes[patient_class(int(grade), int(invasion))] += 1
    problems = [
        f"{path}: {problem}; `python -m tcl splits` refuses this cohort"
        for problem in class_size_problems(sizes)
    ]
    warnings = []
    if not problems:
        distinct = distinct_training_sets(sizes)
        if distinct < draws:
            warnings.append(
                f"{path}: the class sizes {sizes} allow only {distinct} different training "
                f"set(s), fewer than the {draws} draws: some draws will be identical"
            )
    return problems, warnings


def check_cohort(
    path: str | os.PathLike,
    workers: int | None = 1,
    progress: bool = False,
    draws: int | None = None,
    alignment: bool = False,
) -> CohortReport:
    """Check a cohort: the manifest (see :func:`read_manifest`), every patient's files (see
    :func:`load_patient`) and, when ``draws`` is given, whether ``python -m tcl splits --draws
    DRAWS`` can split it (each class needs :data:`tcl.data.splits.MIN_PER_CLASS` patients).
    With ``alignment``, also whether FLAIR-C and ADC lie on the T1C anatomy (warnings).
    No problem means that preprocess and splits accept the cohort.

    A manifest without labels (patients to predict) is checked for everything else; the
    report's ``labelled`` is then False.
    """
    path = Path(path)
    report = CohortReport(labelled=has_labels(path))
    table, problems = _read_table(path, require_labels=report.labelled)
    report.problems.extend(problems)
    if table is None:
        return report
    patients = [PatientFiles.from_row(row) for _, row in table.iterrows()]
    n_workers = default_workers(len(patients), workers)
    inspect = partial(inspect_patient, alignment=alignment)
    for check in map_patients(
        inspect, patients, workers=n_workers, progress=progress, desc="validate"
    ):
        report.problems.extend(check.problems)
        report.warnings.extend(
            w.replace(REGISTER_HINT, f"python -m tcl register {path} --out FOLDER")
            for w in check.warnings
        )
        if check.resampled:
            report.resampled[check.patient_id] = check.resampled
    if not report.labelled:
        return report
    labels_ok = (table["who_grade"] > 0).all() and (table["invasion"] >= 0).all()
    if draws is not None and labels_ok:
        problems, warnings = _draw_checks(path, table, draws)
        report.problems.extend(problems)
        report.warnings.extend(warnings)
    return report


def validate_cohort(
    path: str | os.PathLike,
    workers: int | None = 1,
    progress: bool = False,
    draws: int | None = None,
) -> list[str]:
    """Every problem of a cohort (:func:`check_cohort`'s problems, without its warnings), in
    manifest order. An empty list means valid."""
    return check_cohort(path, workers=workers, progress=progress, draws=draws).problems


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    """The paper's three classes (WHO I; high grade with / without invasion) and WHO III."""
    high = table["who_grade"] >= 2
    return {
        "WHO I": int((~high).sum()),
        "high grade with invasion": int((high & (table["invasion"] == 1)).sum()),
        "high grade without invasion": int((high & (table["invasion"] == 0)).sum()),
        "of which WHO III": int((table["who_grade"] == 3).sum()),
    }


def add_alignment_option(parser: argparse.ArgumentParser) -> None:
    """``--no-alignment-check``, for the verbs that read patients with the check on."""
    parser.add_argument(
        "--no-alignment-check",
        action="store_true",
        help=(
            "skip the misregistration check (a quick registration of FLAIR-C and ADC onto "
            "T1C, about 1 s a patient): misregistered series then go unnoticed"
        ),
    )


def cli_validate(argv: list[str]) -> int:
    """``python -m tcl validate MANIFEST [--draws N] [--workers W] [--no-alignment-check]
    [--quiet]``."""
    from tcl.data.splits import DEFAULT_DRAWS

    parser = argparse.ArgumentParser(
        prog="python -m tcl validate",
        description=(
            "Check a cohort (manifest, every NIfTI file, and that it can be split into the "
            "draws); list every problem at once. Exit 0 means preprocess and splits accept it."
        ),
    )
    parser.add_argument("manifest", type=Path, help="manifest.csv of the cohort")
    parser.add_argument(
        "--draws",
        type=int,
        default=DEFAULT_DRAWS,
        help=f"draws that splits will make (default {DEFAULT_DRAWS}, as make does)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    add_alignment_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    report = check_cohort(
        args.manifest,
        workers=args.workers,
        progress=not args.quiet,
        draws=args.draws,
        alignment=not args.no_alignment_check,
    )
    if report.resampled:
        print(
            f"{len(report.resampled)} patient(s) with files on another voxel grid than t1c, "
            "resampled onto the t1c grid (linear for images, nearest neighbour for masks):"
        )
        for pid, files in report.resampled.items():
            for name, how in files.items():
                print(f"  - patient {pid}, {name}: {how}")
    if report.warnings:
        print(f"{len(report.warnings)} warning(s):")
        for warning in report.warnings:
            print(f"  - {warning}")
    if args.no_alignment_check:
        print("alignment: not checked (--no-alignment-check)")
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {args.manifest}:")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    if not report.labelled:
        table = read_manifest(args.manifest, require_labels=False)
        print(
            f"OK: {len(table)} patients, no labels: the class checks (labels, class sizes, "
            "draws) were skipped; such a cohort can be predicted, not trained on"
        )
        return 0
    table = read_manifest(args.manifest)
    counts = ", ".join(f"{name} {n}" for name, n in class_counts(table).items())
    print(f"OK: {len(table)} patients, {counts}")
    return 0


# ---------------------------------------------------------------------------------------------
# import of the released code's folder layout


def import_folders(root: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """Write a manifest for ``ROOT/<Grade folder>/<patient>/{t1,t2,adc}_bbox.nii.gz``.

    Grade folders: ``Grade_1`` → who_grade 1, invasion 0; ``Grade_2_invasion`` → who_grade 2,
    invasion 1; ``Grade_2_noninvasion`` → who_grade 2, invasion 0. The layout does not tell
    WHO II from WHO III, so every high-grade patient gets who_grade 2 (``high_grade`` stays
    exact; a WHO III count is not recoverable). ``t2`` is FLAIR-C → column ``flairc``.
    The files are already cropped to the tumour box, so the ROI is the whole volume: bbox
    columns 0..shape (end-exclusive, voxel grid of ``t1`` as stored), ``mask`` empty. age, sex and
    scanner are empty. Paths are written relative to the manifest's folder; the manifest is
    written atomically. Raises :class:`TclError` naming unknown folders, patients with a missing
    file, unreadable ``t1`` files and duplicate patient ids, or an empty ROOT.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise TclError(f"import-folders: {root} is not a folder")
    if out.is_dir():
        raise TclError(
            f"import-folders: --out {out} is a folder; give the manifest file to write, e.g. "
            f"{out / 'manifest.csv'}"
        )
    problems: list[str] = []
    rows: list[dict[str, object]] = []
    seen: dict[str, Path] = {}
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if entry.name not in GRADE_FOLDERS or not entry.is_dir():
            problems.append(
                f"unknown entry {entry} (expected only folders {', '.join(GRADE_FOLDERS)})"
            )
    for folder_name, (who_grade, invasion) in GRADE_FOLDERS.items():
        folder = root / folder_name
        if not folder.is_dir():
            continue
        for patient_dir in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            pid = patient_dir.name
            if not patient_dir.is_dir():
                problems.append(f"unknown entry {patient_dir} (expected patient folders)")
                continue
            if pid in seen:
                problems.append(
                    f"patient {pid}: duplicate patient folder {patient_dir} and {seen[pid]}"
                )
                continue
            seen[pid] = patient_dir
            absent = [name for name in FOLDER_FILES if not (patient_dir / name).is_file()]
            if absent:
                problems.append(f"patient {pid}: missing {', '.join(absent)} in {patient_dir}")
                continue
            try:
                shape = load_volume(
                    patient_dir / "t1_bbox.nii.gz", f"patient {pid}, t1c", canonical=False
                ).data.shape
            except TclError as error:
                problems.append(str(error))
                continue
            row: dict[str, object] = {
                "patient_id": pid,
                "who_grade": who_grade,
                "invasion": invasion,
                "age": "",
                "sex": "",
                "scanner": "",
            }
            for name, column in FOLDER_FILES.items():
                row[column] = os.path.relpath((patient_dir / name).resolve(), out.resolve().parent)
            row["mask"] = ""
            for axis, n in enumerate(shape):
                row[BBOX_COLUMNS[2 * axis]] = 0
                row[BBOX_COLUMNS[2 * axis + 1]] = int(n)
            rows.append(row)
    if not rows and not problems:
        problems.append(f"no patients found under {root} (expected {', '.join(GRADE_FOLDERS)})")
    _raise_problems(problems, f"import-folders {root}")
    table = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + list(BBOX_COLUMNS))
    write_text_atomic(out, table.to_csv(index=False))
    return read_manifest(out)


def cli_import_folders(argv: list[str]) -> int:
    """``python -m tcl import-folders ROOT --out MANIFEST``."""
    parser = argparse.ArgumentParser(
        prog="python -m tcl import-folders",
        description=(
            "Turn the released code's layout ROOT/{Grade_1,Grade_2_invasion,Grade_2_noninvasion}"
            "/<patient>/{t1,t2,adc}_bbox.nii.gz into a manifest (ROI = the whole pre-cropped "
            "volume; WHO II and III are not distinguished by the layout: both become 2)."
        ),
    )
    parser.add_argument("root", type=Path, help="folder holding the Grade_* folders")
    parser.add_argument("--out", type=Path, required=True, help="manifest.csv to write")
    args = parser.parse_args(argv)
    table = import_folders(args.root, args.out)
    counts = ", ".join(f"{name} {n}" for name, n in class_counts(table).items())
    print(f"wrote {args.out}: {len(table)} patients, {counts}")
    print("note: the folder layout does not distinguish WHO II from WHO III; all high grade = 2")
    return 0
