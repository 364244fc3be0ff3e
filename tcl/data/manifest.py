"""The cohort manifest: reading, validating, and importing the released code's folder layout.

A cohort is a CSV manifest plus NIfTI files. One row per patient::

    patient_id, who_grade (1|2|3), invasion (0|1), age, sex (M|F), scanner, t1c, flairc, adc, mask

Image paths are relative to the manifest's folder (absolute paths are kept as they are). The
region of interest (ROI) comes from ``mask`` (any label > 0; labels 1 = tumour, 2 = oedema) or,
where ``mask`` is empty, from the bounding-box columns ``x0, x1, y0, y1, z0, z1``: voxel indices,
end-exclusive, in the canonical (RAS+) voxel grid that :func:`tcl.data.nifti.load_volume`
returns. When a row has both, the mask is used. ``age``, ``sex`` and ``scanner`` may be empty
(real cohorts often lack them); extra columns (e.g. the synthetic cohort's ``latent_*``) are kept.

Task labels: ``invasion`` and ``high_grade = who_grade >= 2``.

Every check collects all problems before reporting, each naming the patient and the file, so a
cohort of 800 patients is fixed in one pass rather than one error at a time.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from tcl.data.nifti import load_volume
from tcl.utils import TclError, write_text_atomic

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


def _read_table(path: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """Parse and check the manifest table. Returns (table or None if unusable, problems).

    Cells are read as text (only empty cells become NaN) so that ids like ``0001`` or ``NA``
    survive and malformed numbers can be reported with their original spelling.
    """
    if not path.is_file():
        return None, [f"manifest not found: {path}"]
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as error:  # pandas raises several types for malformed CSV
        return None, [f"{path}: cannot read manifest CSV: {error}"]
    raw.columns = [str(c).strip() for c in raw.columns]

    problems: list[str] = []
    has_bbox = all(c in raw.columns for c in BBOX_COLUMNS)
    partial_bbox = [c for c in BBOX_COLUMNS if c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
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

    for column in OPTIONAL_COLUMNS + ("mask",) + BBOX_COLUMNS:
        if column not in raw.columns:
            raw[column] = np.nan

    ids = raw["patient_id"].map(lambda v: "" if _is_empty(v) else str(v).strip())
    who_grade = np.zeros(len(raw), dtype=np.int64)
    invasion = np.zeros(len(raw), dtype=np.int64)
    age = np.full(len(raw), np.nan)
    bbox = np.full((len(raw), 6), -1, dtype=np.int64)
    for i, row in enumerate(raw.to_dict("records")):
        pid = ids.iloc[i]
        who = f"{path}: patient {pid}" if pid else f"{path}: row {i + 2}"
        if not pid:
            problems.append(f"{who}: empty patient_id")
        grade = _as_int(row["who_grade"])
        if grade not in WHO_GRADES:
            problems.append(f"{who}: who_grade {row['who_grade']!r} not in {{1, 2, 3}}")
        inv = _as_int(row["invasion"])
        if inv not in (0, 1):
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
        rows = [str(i + 2) for i in np.flatnonzero(ids.to_numpy() == pid)]
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


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a cohort manifest (table-level checks only; no image is opened).

    Returns one row per patient with ``patient_id`` (str), ``who_grade`` and ``invasion`` (int),
    ``high_grade`` (int, ``who_grade >= 2``), ``age`` (float, NaN if empty), ``sex``/``scanner``
    (str or NaN), absolute image paths in ``t1c, flairc, adc, mask`` (``mask`` NaN when the ROI
    is given by bbox), the bbox columns as nullable ``Int64``, and any extra columns unchanged.

    Raises one :class:`TclError` that lists every problem (missing columns, duplicate ids,
    labels outside their domain, invasion with WHO I, sex not M/F, no ROI), each naming the
    patient and the manifest file.
    """
    path = Path(path)
    table, problems = _read_table(path)
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
    """The loaded images of one patient: ``images`` [3, X, Y, Z] float32 (t1c, flairc, adc) and
    the ROI as (x0, x1, y0, y1, z0, z1), end-exclusive, in the canonical voxel grid."""

    images: np.ndarray
    roi: tuple[int, int, int, int, int, int]


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


def load_patient(files: PatientFiles) -> tuple[list[str], PatientImages | None]:
    """Load and check one patient's files; collect every problem rather than stop at the first.

    Checks: each file exists and is a readable 3D NIfTI; no NaN/inf voxels; every modality (and
    the mask) has the shape and affine of the first readable modality; mask labels are in
    {0, 1, 2}; the ROI (mask > 0, or the bbox) is non-empty and inside the volume.
    Returns (problems, images); images is None when there is any problem.
    """
    pid = files.patient_id
    problems: list[str] = []
    volumes: dict[str, Any] = {}
    entries = [(m, files.paths[m]) for m in MODALITIES]
    if files.mask is not None:
        entries.append(("mask", files.mask))
    for name, path in entries:
        if not path:
            continue  # an empty path is a table-level problem, reported there
        try:
            volume = load_volume(path, what=f"patient {pid}, {name}")
        except TclError as error:
            problems.append(str(error))
            continue
        bad = int(np.count_nonzero(~np.isfinite(volume.data)))
        if bad:
            problems.append(f"patient {pid}, {name}: {bad} NaN/inf voxel(s) in {path}")
        volumes[name] = volume

    reference = next(((m, volumes[m]) for m in MODALITIES if m in volumes), None)
    if reference is not None:
        ref_name, ref = reference
        ref_path = files.paths[ref_name]
        for name, path in entries:
            if name == ref_name or name not in volumes:
                continue
            other = volumes[name]
            if other.data.shape != ref.data.shape:
                problems.append(
                    f"patient {pid}, {name}: shape {other.data.shape} of {path} differs from "
                    f"{ref_name} {ref.data.shape} ({ref_path})"
                )
            elif not np.allclose(other.affine, ref.affine, rtol=0, atol=AFFINE_TOLERANCE):
                worst = float(np.abs(other.affine - ref.affine).max())
                problems.append(
                    f"patient {pid}, {name}: affine of {path} differs from {ref_name} "
                    f"({ref_path}) by up to {worst:.4g} (tolerance {AFFINE_TOLERANCE})"
                )

    roi = None
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
        roi = roi_of_mask(np.where(np.isfinite(mask), mask, 0))
        if roi is None:
            problems.append(f"patient {pid}, mask: empty ROI (no voxel > 0) in {files.mask}")
    elif files.mask is None and files.bbox is not None and reference is not None:
        ref_name, ref = reference
        shape = ref.data.shape
        x0, x1, y0, y1, z0, z1 = files.bbox
        spans = [(x0, x1), (y0, y1), (z0, z1)]
        inside = all(0 <= lo < hi <= n for (lo, hi), n in zip(spans, shape, strict=True))
        if any(hi <= lo for lo, hi in spans):
            pass  # an empty bbox is a table-level problem, already reported by _read_table
        elif not inside:
            problems.append(
                f"patient {pid}: bbox x {x0}..{x1}, y {y0}..{y1}, z {z0}..{z1} is "
                f"outside the volume of shape {shape} ({ref_name} {files.paths[ref_name]})"
            )
        else:
            roi = files.bbox

    if problems or roi is None or any(m not in volumes for m in MODALITIES):
        return problems, None
    images = np.stack([volumes[m].data for m in MODALITIES]).astype(np.float32, copy=False)
    return problems, PatientImages(images=images, roi=roi)


def check_patient(files: PatientFiles) -> list[str]:
    """The problems of one patient's files (``load_patient`` without keeping the images)."""
    return load_patient(files)[0]


# ---------------------------------------------------------------------------------------------
# ordered parallel map over patients

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers(n_items: int, workers: int | None = None) -> int:
    """Worker processes to use: ``workers`` if given, else one per CPU, never more than items."""
    wanted = (os.cpu_count() or 1) if workers is None else workers
    if wanted < 1:
        raise TclError(f"--workers must be >= 1 (got {workers})")
    return max(1, min(wanted, n_items))


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
    """
    from tqdm.auto import tqdm

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
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending: list[Future] = []
            iterator = iter(items)
            try:
                for item in iterator:
                    pending.append(pool.submit(func, item))
                    if len(pending) >= 2 * workers:
                        yield pending.pop(0).result()
                        bar.update(1)
                while pending:
                    yield pending.pop(0).result()
                    bar.update(1)
            finally:
                for future in pending:
                    future.cancel()
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# whole-cohort validation


def validate_cohort(
    path: str | os.PathLike, workers: int | None = 1, progress: bool = False
) -> list[str]:
    """Every problem of a cohort: the manifest's (see :func:`read_manifest`) and every
    patient's files (see :func:`load_patient`), in manifest order. An empty list means valid.
    """
    path = Path(path)
    table, problems = _read_table(path)
    if table is None:
        return problems
    patients = [PatientFiles.from_row(row) for _, row in table.iterrows()]
    n_workers = default_workers(len(patients), workers)
    for patient_problems in map_patients(
        check_patient, patients, workers=n_workers, progress=progress, desc="validate"
    ):
        problems.extend(patient_problems)
    return problems


def class_counts(table: pd.DataFrame) -> dict[str, int]:
    """The paper's three classes (WHO I; high grade with / without invasion) and WHO III."""
    high = table["who_grade"] >= 2
    return {
        "WHO I": int((~high).sum()),
        "high grade with invasion": int((high & (table["invasion"] == 1)).sum()),
        "high grade without invasion": int((high & (table["invasion"] == 0)).sum()),
        "of which WHO III": int((table["who_grade"] == 3).sum()),
    }


def cli_validate(argv: list[str]) -> int:
    """``python -m tcl validate MANIFEST [--workers W] [--quiet]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tcl validate",
        description="Check a cohort (manifest and every NIfTI file); list every problem at once.",
    )
    parser.add_argument("manifest", type=Path, help="manifest.csv of the cohort")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    problems = validate_cohort(args.manifest, workers=args.workers, progress=not args.quiet)
    if problems:
        print(f"{len(problems)} problem(s) in {args.manifest}:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
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
    columns 0..shape (end-exclusive, canonical grid of ``t1``), ``mask`` empty. age, sex and
    scanner are empty. Paths are written relative to the manifest's folder; the manifest is
    written atomically. Raises :class:`TclError` naming unknown folders, patients with a missing
    file, unreadable ``t1`` files and duplicate patient ids, or an empty ROOT.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise TclError(f"import-folders: {root} is not a folder")
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
                    patient_dir / "t1_bbox.nii.gz", f"patient {pid}, t1c"
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
