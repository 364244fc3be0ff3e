"""``python -m tcl register MANIFEST --out DIR``: FLAIR-C and ADC of every patient, registered
rigidly onto that patient's T1C (:func:`tcl.data.registration.register_rigid`).

What it writes, all at once when every patient succeeded (nothing otherwise):

- ``DIR/images/<patient>/flairc.nii.gz``, ``adc.nii.gz``: copies of the series whose affine
  places them on the T1C anatomy. The voxels are not resampled, so nothing is lost;
  preprocessing later puts them onto the T1C grid as it does any series on another grid. The
  mask follows a series when it shares that series' grid (it was drawn on it).
- ``DIR/manifest.csv``: the input manifest, cell for cell, except that it names these copies;
  T1C, unmoved masks and every other column are the originals (paths relative to ``DIR``).
- ``DIR/registration.csv``: per patient and series, the transform (the 4×4 matrix from T1C's
  world to the series' world, RAS mm, row-major), the offset it corrects (shift of the ROI
  centre in mm, rotation in degrees), the mutual information before and after, and seconds.
- ``DIR/register.json``: settings, totals and provenance (commit, versions, command line).

The originals are never modified.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk

from tcl.data.manifest import PatientFiles, find_separator, read_csv_text_ids, read_manifest
from tcl.data.nifti import load_volume
from tcl.data.patients import bbox_problem, degenerate_problem, duplicate_problems, same_grid
from tcl.data.qc import qc_page
from tcl.data.registration import (
    FULL,
    Settings,
    misregistered,
    offset_of,
    register_rigid,
    roi_centre,
)
from tcl.parallel import default_workers, map_patients
from tcl.utils import (
    TclError,
    available_cpus,
    exit_on_sigterm,
    new_folder,
    provenance,
    refuse_existing_folder,
    write_text_atomic,
)

SEQUENCES = ("flairc", "adc")  # registered onto t1c
REGISTRATION_COLUMNS = [
    "patient_id", "series", "source", "written", "offset_mm", "rotation_deg",
    "mi_before", "mi_after", "seconds", "matrix",
]  # fmt: skip


@dataclass(frozen=True)
class SeriesResult:
    """One registered series (or a mask that followed one) of one patient."""

    patient_id: str
    series: str  # flairc, adc or mask
    source: str  # the original file
    written: str  # the copy, relative to DIR
    offset_mm: float
    rotation_deg: float
    mi_before: float
    mi_after: float
    seconds: float
    matrix: str  # 16 numbers, row-major, T1C world → the series' world


def _folder_name(index: int, patient_id: str) -> str:
    """A file-system-safe, unique folder for a patient (ids may hold any character)."""
    return f"{index:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', patient_id)[:60]}"


def _write_moved(source: str, matrix: np.ndarray, target: Path) -> None:
    """A copy of ``source`` whose affine is corrected by ``matrix`` (T1C world → its world):
    the voxel that sat at world point p now sits at matrix⁻¹ p, on the T1C anatomy."""
    image = nib.load(source)
    affine = np.linalg.inv(matrix) @ image.affine
    header = image.header.copy()
    copy = nib.Nifti1Image(np.asanyarray(image.dataobj), affine, header=header)
    copy.set_sform(affine, code=1)
    copy.set_qform(affine, code=1)
    nib.save(copy, str(target))


def register_patient(
    job: tuple[int, PatientFiles], staging: Path, settings: Settings = FULL
) -> list[SeriesResult]:
    """Register one patient's FLAIR-C and ADC onto its T1C; write the copies under
    ``staging``/images. Its series were checked by :func:`register_cohort` before any
    registration (:func:`_series_problems`)."""
    index, files = job
    pid = files.patient_id
    t1c = load_volume(files.paths["t1c"], what=f"patient {pid}, t1c", canonical=False)
    mask = None
    if files.mask is not None:
        mask = load_volume(files.mask, what=f"patient {pid}, mask", canonical=False)
    centre = roi_centre(t1c, mask, files.bbox)
    folder = Path("images") / _folder_name(index, pid)
    (staging / folder).mkdir(parents=True, exist_ok=True)
    results = []
    for series in SEQUENCES:
        path = files.paths[series]
        moving = load_volume(path, what=f"patient {pid}, {series}", canonical=False)
        try:
            registration = register_rigid(t1c, moving, settings)
        except TclError as error:
            raise TclError(f"patient {pid}, {series}: {error} ({path})") from error
        written = folder / f"{series}.nii.gz"
        _write_moved(path, registration.matrix, staging / written)
        shift, angle = offset_of(registration.matrix, centre)
        result = SeriesResult(
            patient_id=pid,
            series=series,
            source=path,
            written=str(written),
            offset_mm=round(shift, 3),
            rotation_deg=round(angle, 3),
            mi_before=round(registration.mi_before, 5),
            mi_after=round(registration.mi_after, 5),
            seconds=round(registration.seconds, 2),
            matrix=" ".join(f"{v:.6g}" for v in registration.matrix.ravel()),
        )
        results.append(result)
        # a mask drawn on this series (its grid, not T1C's) is as far from T1C as the series
        if mask is not None and not same_grid(mask, t1c) and same_grid(mask, moving):
            written_mask = folder / "mask.nii.gz"
            _write_moved(files.mask, registration.matrix, staging / written_mask)
            results.append(
                SeriesResult(
                    **{
                        **asdict(result),
                        "series": "mask",
                        "source": files.mask,
                        "written": str(written_mask),
                        "seconds": 0.0,
                    }
                )  # fmt: skip
            )
    return results


def _register_job(job: tuple[int, PatientFiles], staging: Path, settings: Settings, threads: int):
    """Worker: (results, None) or (None, the error's message)."""
    # ITK's own threads, shared among the workers: more would only compete for the cores
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        return register_patient(job, staging, settings), None
    except TclError as error:
        return None, str(error)


def _relative(path: str, out: Path) -> str:
    return os.path.relpath(Path(path).resolve(), out.resolve())


def _output_manifest(manifest: Path, table: pd.DataFrame, results: list[SeriesResult],
                     out: Path) -> tuple[pd.DataFrame, str]:  # fmt: skip
    """The input manifest, cell for cell, with its image paths pointing at the registered
    copies (or, relative to ``out``, at the originals). Returns (table, separator)."""
    separator, _ = find_separator(manifest)
    separator = separator or ","
    raw = pd.read_csv(manifest, sep=separator, dtype=str, keep_default_na=False)
    written = {(r.patient_id, r.series): r.written for r in results}
    images = ("t1c", *SEQUENCES, "mask")
    folder = manifest.resolve().parent
    for row, (_, patient) in enumerate(table.iterrows()):
        pid = str(patient["patient_id"])
        for column in images:
            if column not in raw.columns or raw.at[row, column] == "":
                continue
            moved = written.get((pid, column))
            raw.at[row, column] = moved if moved else _relative(str(patient[column]), out)
        # other columns that name files beside the manifest (the synthetic cohort's signs)
        for column in raw.columns:
            cell = raw.at[row, column]
            if column not in images and cell and not Path(cell).is_absolute():
                if len(cell) < 4096 and (folder / cell).is_file():
                    raw.at[row, column] = _relative(str(folder / cell), out)
    return raw, separator


def _series_problems(files: PatientFiles) -> list[str]:
    """What stops a patient before any registration: a series of one value or with NaN (an
    all-zero T1C would stop SimpleITK mid-cohort), two sequences that are one file or hold the
    same voxels, and what is wrong with its region (:func:`_roi_problems`)."""
    pid = files.patient_id
    volumes, problems = {}, []
    for name, path in files.paths.items():
        try:
            volumes[name] = load_volume(path, what=f"patient {pid}, {name}", canonical=False)
        except TclError as error:
            problems.append(str(error))
            continue
        problem = degenerate_problem(volumes[name], pid, name, path)
        if problem:
            problems.append(problem)
    problems += duplicate_problems(volumes, files.paths, pid)
    return problems + _roi_problems(files)


def _roi_problems(files: PatientFiles) -> list[str]:
    """What is wrong with a patient's region of interest, read cheaply before registering: a
    bbox outside T1C (its header), a mask without a voxel > 0."""
    pid = files.patient_id
    if files.mask is not None:
        mask = load_volume(files.mask, what=f"patient {pid}, mask", canonical=False)
        if not (np.nan_to_num(mask.data) > 0).any():
            return [f"patient {pid}, mask: empty ROI (no voxel > 0) in {files.mask}"]
        return []
    if files.bbox is None:
        return []
    try:
        shape = nib.load(files.paths["t1c"]).shape[:3]
    except Exception as error:  # nibabel raises several kinds for an unreadable header
        return [f"patient {pid}, t1c: cannot read NIfTI file {files.paths['t1c']}: {error}"]
    problem = bbox_problem(pid, files.bbox, shape, f"t1c {files.paths['t1c']}")
    return [problem] if problem else []


def register_cohort(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    workers: int | None = None,
    progress: bool = False,
    settings: Settings = FULL,
) -> pd.DataFrame:
    """Register every patient of ``manifest`` (see the module docstring); returns the
    registration table. ``out`` must not exist yet, or be an empty folder. On any error
    nothing is left in ``out``."""
    manifest, out = Path(manifest), Path(out)
    refuse_existing_folder(out)
    table = read_manifest(manifest, require_labels=False)
    patients = [PatientFiles.from_row(row) for _, row in table.iterrows()]
    missing = [
        f"patient {files.patient_id}, {name}: file not found: {path}"
        for files in patients
        for name, path in [*files.paths.items(), ("mask", files.mask or "")]
        if path and not Path(path).is_file()
    ]
    if missing:  # before hours of work, not after
        listed = "\n".join(f"  - {line}" for line in missing)
        raise TclError(f"{len(missing)} missing file(s) in {manifest}:\n{listed}")
    unusable = [problem for files in patients for problem in _series_problems(files)]
    if unusable:  # before any registration (which measures offsets at the region's centre)
        listed = "\n".join(f"  - {line}" for line in unusable)
        raise TclError(f"{len(unusable)} problem(s) in {manifest}, nothing registered:\n{listed}")
    start = time.perf_counter()
    with new_folder(out) as staging:
        n_workers = default_workers(len(patients), workers)
        threads = max(1, available_cpus() // n_workers)
        worker = partial(_register_job, staging=staging, settings=settings, threads=threads)
        results: list[SeriesResult] = []
        outcomes = map_patients(
            worker, list(enumerate(patients)), workers=n_workers, progress=progress,
            desc="register",
        )  # fmt: skip
        try:
            for done, error in outcomes:
                if error is not None:
                    raise TclError(f"{error}\nnothing was written to {out}")
                results.extend(done)
        finally:
            outcomes.close()
        registered, separator = _output_manifest(manifest, table, results, out)
        registered.to_csv(staging / "manifest.csv", index=False, sep=separator)
        frame = pd.DataFrame([asdict(r) for r in results], columns=REGISTRATION_COLUMNS)
        frame.to_csv(staging / "registration.csv", index=False)
        seconds = time.perf_counter() - start
        write_text_atomic(
            staging / "register.json",
            json.dumps(
                {
                    "manifest": str(manifest.resolve()),
                    "patients": len(patients),
                    "workers": n_workers,
                    "seconds": round(seconds, 1),
                    "settings": asdict(settings),
                    **provenance(),
                },
                indent=1,
            ),
        )
    return frame


def read_registration(path: str | os.PathLike) -> dict[tuple[str, str], np.ndarray]:
    """(patient_id, series) → the 4×4 matrix of a ``registration.csv`` (T1C world → the
    series' world, RAS mm): for users who move other objects with a series (docs/your-cohort.md);
    the tests read the transforms back with it too."""
    frame = read_csv_text_ids(path)
    return {
        (str(r.patient_id), str(r.series)): np.array(r.matrix.split(), dtype=float).reshape(4, 4)
        for r in frame.itertuples()
    }


def main(args: argparse.Namespace) -> int:
    """``python -m tcl register`` with its parsed options (tcl.cli)."""
    with exit_on_sigterm(f"register: terminated (SIGTERM); nothing was written to {args.out}"):
        frame = register_cohort(
            args.manifest, args.out, workers=args.workers, progress=not args.quiet
        )
    series = frame[frame["series"] != "mask"]
    if not args.quiet:
        moved = series[(series["offset_mm"] > 0) | (series["rotation_deg"] > 0)]
        print(
            f"registered {series['patient_id'].nunique()} patient(s), {len(series)} series "
            f"({len(moved)} moved; largest offset {series['offset_mm'].max():.1f} mm, "
            f"{series['rotation_deg'].max():.1f}°) in "
            f"{json.loads((args.out / 'register.json').read_text())['seconds']:.0f} s: "
            f"{args.out / 'manifest.csv'}"
        )
    if args.qc is not None:  # the same patients before and after, as validate --qc draws them
        # Before: flagged where registration moved a series beyond validate's misregistration
        # thresholds (its own measurement, so no second registration is needed to tell).
        before: dict[str, list[str]] = {}
        for row in series.itertuples():
            if not misregistered(row.offset_mm, row.rotation_deg):
                continue
            before.setdefault(str(row.patient_id), []).append(
                f"patient {row.patient_id}, {row.series}: misregistered, registration moved it "
                f"by {row.offset_mm:.1f} mm and {row.rotation_deg:.1f}°"
            )
        for stage, manifest in (("before", args.manifest), ("after", args.out / "manifest.csv")):
            page = qc_page(
                manifest,
                args.qc / stage,
                f"QC {stage} registration: {manifest}",
                workers=args.workers,
                notes=before if stage == "before" else None,
            )
            print(f"QC page, {stage}: {page}")
    return 0
