"""``python -m tcl import-dicom DICOM_DIR --out DIR``: a hospital's DICOM export → a cohort.

DICOM_DIR holds one folder per patient (the folder's name is the patient id), nested in any
way inside. Every file is looked at by content (the ``DICM`` marker), not by name or extension,
and sorted into its series (SeriesInstanceUID); structure sets (RTSTRUCT) are kept apart.

Run without ``--series``, the command lists every series of every patient (patient, series
description, modality, matrix, spacing, number of files) and writes that table to
``DIR/series.csv``, so the user can write the rules. With ``--series SEQUENCE=PATTERN``
(SEQUENCE t1c, flairc or adc; PATTERN a case-insensitive glob on SeriesDescription) the chosen
series are written as ``DIR/images/<patient>/<sequence>.nii.gz`` with their true geometry, and
``DIR/manifest.csv`` names them: the manifest every other verb reads. ``--roi PATTERN``
rasterises the structure-set contours whose ROI name matches into ``mask.nii.gz`` (label 1), on
the grid of the series the structure set references, or takes the frames of a DICOM SEG whose
segment label matches (frames on that series' grid); a patient without contours gets no mask
(a box can be added to the manifest later). ``--labels CSV`` joins who_grade and invasion (and
any other manifest column) by patient_id; without it the label columns are empty, as ``predict``
accepts.

Libraries: pydicom reads the headers and the structure sets (pure Python, the reference DICOM
parser of the Python world); SimpleITK, already ours for registration, reads the pixel data of
a series (GDCM: every transfer syntax, the rescale slope and intercept applied) and writes
NIfTI with the geometry converted from DICOM's LPS to NIfTI's RAS.

Contours are filled slice by slice with the even-odd rule (a contour inside another is a
hole), a voxel inside when its centre lies inside the polygon (scikit-image's polygon).

Guarantees: a corrupt or truncated file is named; a pattern that matches no series or several
is reported by patient with the candidates; the originals are only read; everything is written
into a temporary folder that becomes DIR at the end, so an error leaves nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from skimage.draw import polygon

from tcl.data.manifest import MODALITIES, unusable_id
from tcl.data.qc import qc_page
from tcl.parallel import default_workers, map_patients
from tcl.utils import TclError, new_folder, provenance, refuse_existing_folder, write_text_atomic

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
SPACING_TOLERANCE = 0.01  # relative: slices further from even than this mean a missing slice
SERIES_COLUMNS = (
    "patient_id",
    "series_description",
    "modality",
    "matrix",
    "spacing_mm",
    "files",
    "series_uid",
)


@dataclass
class Series:
    """One image series of a patient: its files (unsorted) and what its first header says."""

    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    columns: int = 0
    pixel_spacing: tuple[float, float] = (0.0, 0.0)


@dataclass
class PatientDicom:
    """Everything found under one patient folder."""

    patient_id: str
    series: dict[str, Series] = field(default_factory=dict)  # SeriesInstanceUID → series
    structure_sets: list[Path] = field(default_factory=list)
    segmentations: list[Path] = field(default_factory=list)  # DICOM SEG


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def scan_patient(folder: Path) -> PatientDicom:
    """Every DICOM file under ``folder``, sorted into series and structure sets."""

    found = PatientDicom(patient_id=folder.name)
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            if not _is_dicom(path):
                continue
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as error:  # pydicom raises many kinds on a damaged file
                raise TclError(
                    f"patient {found.patient_id}: cannot read DICOM file {path}: {error}"
                ) from None
            meta = getattr(header, "file_meta", None)
            if str(getattr(meta, "MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
                continue  # a DICOMDIR index, not an image
            modality = str(getattr(header, "Modality", ""))
            if not modality or "SeriesInstanceUID" not in header:
                raise TclError(
                    f"patient {found.patient_id}: DICOM file {path} has no Modality or "
                    "SeriesInstanceUID: truncated or damaged"
                )
            if modality == "RTSTRUCT":
                found.structure_sets.append(path)
                continue
            if modality == "SEG":
                found.segmentations.append(path)
                continue
            uid = str(getattr(header, "SeriesInstanceUID", ""))
            if not uid or not hasattr(header, "ImagePositionPatient"):
                continue  # not a slice of an image series (a report, a presentation state)
            series = found.series.get(uid)
            if series is None:
                spacing = [float(v) for v in getattr(header, "PixelSpacing", (0.0, 0.0))]
                series = found.series[uid] = Series(
                    uid=uid,
                    description=str(getattr(header, "SeriesDescription", "")),
                    modality=modality,
                    rows=int(getattr(header, "Rows", 0)),
                    columns=int(getattr(header, "Columns", 0)),
                    pixel_spacing=(spacing[0], spacing[1]),
                )
            series.files.append(path)
    return found


def scan(dicom_dir: Path) -> list[PatientDicom]:
    """One :class:`PatientDicom` per folder directly under ``dicom_dir`` (sorted by name)."""
    if not dicom_dir.is_dir():
        raise TclError(f"{dicom_dir}: not a folder")
    folders = sorted(p for p in dicom_dir.iterdir() if p.is_dir())
    if not folders:
        raise TclError(f"{dicom_dir}: no patient folder in it (one folder per patient)")
    for folder in folders:
        why = unusable_id(folder.name)
        if why is not None:
            raise TclError(f"{folder}: the folder name, the patient id, {why}")
    return [scan_patient(folder) for folder in folders]


def series_table(patients: list[PatientDicom]) -> pd.DataFrame:
    """The series.csv table: one row per image series of every patient."""
    rows = []
    for patient in patients:
        for series in sorted(patient.series.values(), key=lambda s: s.description):
            rows.append(
                {
                    "patient_id": patient.patient_id,
                    "series_description": series.description,
                    "modality": series.modality,
                    "matrix": f"{series.columns}x{series.rows}x{len(series.files)}",
                    "spacing_mm": "x".join(f"{v:g}" for v in series.pixel_spacing),
                    "files": len(series.files),
                    "series_uid": series.uid,
                }
            )
    return pd.DataFrame(rows, columns=list(SERIES_COLUMNS))


def choose(patient: PatientDicom, rules: dict[str, str]) -> dict[str, Series]:
    """The series each rule (sequence → glob on SeriesDescription) picks for ``patient``;
    TclError naming the patient and the candidates when a rule matches none or several."""
    chosen, problems = {}, []
    for sequence, pattern in rules.items():
        matches = [
            s
            for s in patient.series.values()
            if fnmatch.fnmatch(s.description.lower(), pattern.lower())
        ]
        if len(matches) == 1:
            chosen[sequence] = matches[0]
            continue
        candidates = ", ".join(repr(s.description) for s in patient.series.values()) or "none"
        how = "no series" if not matches else f"{len(matches)} series"
        problems.append(
            f"patient {patient.patient_id}, {sequence}: --series {sequence}={pattern!r} matches "
            f"{how}; the series: {candidates}"
        )
    if problems:
        raise TclError("\n".join(problems))
    return chosen


def read_series(series: Series, what: str):
    """The series as a SimpleITK image (LPS geometry, rescale applied), its slices ordered
    along the slice normal."""

    positions = []
    for path in series.files:
        header = pydicom.dcmread(path)
        expected = header.Rows * header.Columns * header.BitsAllocated // 8
        expected *= int(getattr(header, "SamplesPerPixel", 1))
        compressed = header.file_meta.TransferSyntaxUID.is_compressed
        data = getattr(header, "PixelData", None)
        if data is None or (not compressed and len(data) < expected):
            raise TclError(f"{what}: DICOM file {path} has no or truncated pixel data")
        row, column = np.asarray(header.ImageOrientationPatient, dtype=float).reshape(2, 3)
        normal = np.cross(row, column)
        positions.append(float(np.dot(normal, np.asarray(header.ImagePositionPatient, float))))
    order = [str(series.files[i]) for i in np.argsort(positions, kind="stable")]
    steps = np.diff(np.sort(positions))
    if len(steps) and (
        steps.min() <= 0 or steps.max() - steps.min() > SPACING_TOLERANCE * steps.mean()
    ):
        raise TclError(
            f"{what}: its {len(positions)} slices are not evenly spaced (steps "
            f"{steps.min():.3g}–{steps.max():.3g} mm): a slice missing or repeated?"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(order)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise TclError(f"{what}: cannot read the series' pixel data: {error}") from None
    return sitk.Cast(image, sitk.sitkFloat32)


def continuous_index(image, points: np.ndarray) -> np.ndarray:
    """[N, 3] LPS points (mm) → [N, 3] continuous x, y, z voxel indices of ``image`` (SimpleITK)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    to_index = np.linalg.inv(direction * np.asarray(image.GetSpacing()))
    return (points - np.asarray(image.GetOrigin())) @ to_index.T


def rasterise(structure_set: Path, pattern: str, image, what: str) -> np.ndarray | None:
    """The contours of the ROIs whose name matches ``pattern`` filled on ``image``'s grid:
    uint8 [Z, Y, X] (SimpleITK's array order), 1 inside; None if no ROI matches."""

    try:
        rtstruct = pydicom.dcmread(structure_set)
    except Exception as error:
        raise TclError(f"{what}: cannot read structure set {structure_set}: {error}") from None
    names = {
        int(roi.ROINumber): str(roi.ROIName)
        for roi in getattr(rtstruct, "StructureSetROISequence", [])
    }
    wanted = {n for n, name in names.items() if fnmatch.fnmatch(name.lower(), pattern.lower())}
    if not wanted:
        return None
    size = image.GetSize()  # x, y, z
    mask = np.zeros(size[::-1], dtype=bool)
    for roi in getattr(rtstruct, "ROIContourSequence", []):
        if int(roi.ReferencedROINumber) not in wanted:
            continue
        for contour in getattr(roi, "ContourSequence", []):
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            index = continuous_index(image, points)
            z = int(round(float(index[:, 2].mean())))
            if not 0 <= z < size[2] or len(points) < 3:
                continue
            rr, cc = polygon(index[:, 1], index[:, 0], shape=(size[1], size[0]))
            plane = np.zeros((size[1], size[0]), dtype=bool)
            plane[rr, cc] = True
            mask[z] ^= plane  # even-odd: a contour inside another is a hole
    return mask.astype(np.uint8)


def referenced_series(path: Path) -> str | None:
    """The SeriesInstanceUID of the image series a structure set or a SEG was drawn on."""

    header = pydicom.dcmread(path, stop_before_pixels=True)
    for series in getattr(header, "ReferencedSeriesSequence", []):  # SEG
        return str(series.SeriesInstanceUID)
    for frame in getattr(header, "ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in getattr(frame, "RTReferencedStudySequence", []):
            for series in getattr(study, "RTReferencedSeriesSequence", []):
                return str(series.SeriesInstanceUID)
    return None


def segmentation(path: Path, pattern: str, image, what: str) -> np.ndarray | None:
    """The frames of a DICOM SEG whose segment label matches ``pattern``, placed on
    ``image``'s grid by their ImagePositionPatient: uint8 [Z, Y, X], 1 inside; None if no
    segment matches. The frames must share the image's rows, columns and orientation."""

    try:
        seg = pydicom.dcmread(path)
        frames = seg.pixel_array
    except Exception as error:
        raise TclError(f"{what}: cannot read DICOM SEG {path}: {error}") from None
    frames = frames.reshape(-1, *frames.shape[-2:])
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    wanted = {n for n, name in labels.items() if fnmatch.fnmatch(name.lower(), pattern.lower())}
    if not wanted:
        return None
    size = image.GetSize()
    if frames.shape[1:] != (size[1], size[0]):
        raise TclError(
            f"{what}: DICOM SEG {path} has frames of {frames.shape[2]}x{frames.shape[1]}, "
            f"its series {size[0]}x{size[1]}"
        )
    mask = np.zeros(size[::-1], dtype=np.uint8)
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if number not in wanted:
            continue
        position = np.asarray(groups.PlanePositionSequence[0].ImagePositionPatient, float)
        x, y, z = continuous_index(image, position[None])[0]
        if abs(x) > 0.01 or abs(y) > 0.01 or abs(z - round(z)) > 0.01:
            raise TclError(f"{what}: a frame of DICOM SEG {path} is not on its series' grid")
        if 0 <= round(z) < size[2]:
            mask[int(round(z))] |= (frame > 0).astype(np.uint8)
    return mask


@dataclass(frozen=True)
class Job:
    patient: PatientDicom
    rules: dict[str, str]
    roi: str | None
    staging: Path


def import_patient(job: Job) -> dict[str, str]:
    """Write one patient's chosen series (and mask) under ``staging``/images/<patient>/;
    returns its manifest row (paths relative to the output folder)."""

    patient = job.patient
    pid = patient.patient_id
    folder = job.staging / "images" / pid
    folder.mkdir(parents=True, exist_ok=True)
    row = {"patient_id": pid, "mask": ""}
    images = {}
    for sequence, series in choose(patient, job.rules).items():
        image = read_series(series, f"patient {pid}, {sequence} ({series.description!r})")
        sitk.WriteImage(image, str(folder / f"{sequence}.nii.gz"), useCompression=True)
        row[sequence] = f"images/{pid}/{sequence}.nii.gz"
        images[series.uid] = image
    if job.roi is not None:
        outlines = [(p, rasterise) for p in patient.structure_sets]
        outlines += [(p, segmentation) for p in patient.segmentations]
        for outline, read in outlines:
            uid = referenced_series(outline)
            grid = images.get(uid) if uid else None
            if grid is None and uid in patient.series:
                grid = read_series(patient.series[uid], f"patient {pid}, the contoured series")
            if grid is None:
                continue
            mask = read(outline, job.roi, grid, f"patient {pid}")
            if mask is None or not mask.any():
                continue
            written = sitk.GetImageFromArray(mask)
            written.CopyInformation(grid)
            sitk.WriteImage(written, str(folder / "mask.nii.gz"), useCompression=True)
            row["mask"] = f"images/{pid}/mask.nii.gz"
            break
    return row


def _rules(settings: list[str]) -> dict[str, str]:
    rules = {}
    for setting in settings:
        sequence, sep, pattern = setting.partition("=")
        if not sep or sequence not in MODALITIES or not pattern:
            raise TclError(
                f"--series {setting!r}: expected SEQUENCE=PATTERN with SEQUENCE one of "
                f"{', '.join(MODALITIES)}"
            )
        rules[sequence] = pattern
    return rules


def import_dicom(
    dicom_dir: str | os.PathLike,
    out: str | os.PathLike,
    series: list[str] | None = None,
    roi: str | None = None,
    labels: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The command (see the module docstring). Returns the series table without rules, else
    the manifest. ``out`` must not exist yet, or be an empty folder."""
    dicom_dir, out = Path(dicom_dir), Path(out)
    rules = _rules(series or [])
    refuse_existing_folder(out)
    label_table = None
    if labels is not None:
        label_table = pd.read_csv(labels, dtype={"patient_id": str})
        if "patient_id" not in label_table:
            raise TclError(f"--labels {labels}: no patient_id column")
    patients = scan(dicom_dir)
    table = series_table(patients)
    with new_folder(out) as staging:
        table.to_csv(staging / "series.csv", index=False)
        result = table
        if rules:
            for patient in patients:
                choose(patient, rules)  # every patient's rules checked before any pixel is read
            jobs = [Job(p, rules, roi, staging) for p in patients]
            rows = list(
                map_patients(
                    import_patient,
                    jobs,
                    workers=default_workers(len(jobs), workers),
                    progress=progress,
                    desc="import-dicom",
                )
            )
            manifest = pd.DataFrame(rows)
            for column in ("who_grade", "invasion", *MODALITIES, "mask"):
                if column not in manifest:
                    manifest[column] = ""
            if label_table is not None:
                extra = label_table.drop(
                    columns=[c for c in (*MODALITIES, "mask") if c in label_table]
                )
                manifest = manifest.drop(
                    columns=[c for c in extra.columns if c != "patient_id" and c in manifest]
                ).merge(extra, on="patient_id", how="left")
            first = ["patient_id", "who_grade", "invasion", *MODALITIES, "mask"]
            manifest = manifest[first + [c for c in manifest.columns if c not in first]]
            manifest.to_csv(staging / "manifest.csv", index=False)
            result = manifest
        write_text_atomic(
            staging / "import.json",
            pd.Series(
                {"dicom_dir": str(dicom_dir.resolve()), "rules": rules, "roi": roi, **provenance()}
            ).to_json(indent=1),
        )
    return result


def main(args: argparse.Namespace) -> int:
    """``python -m tcl import-dicom`` with its parsed options (tcl.cli)."""
    result = import_dicom(
        args.dicom_dir,
        args.out,
        series=args.series,
        roi=args.roi,
        labels=args.labels,
        workers=args.workers,
        progress=not args.quiet,
    )
    if not args.series:
        with pd.option_context("display.width", 200, "display.max_colwidth", 40):
            print(result.drop(columns=["series_uid"]).to_string(index=False))
        print(f"\nwritten: {Path(args.out) / 'series.csv'}; choose with --series t1c=PATTERN …")
        return 0
    if args.qc is not None:
        missing = [m for m in MODALITIES if m not in _rules(args.series)]
        if missing:  # the pipeline cannot read such patients, so neither can the page
            print(f"QC page not written: no --series for {', '.join(missing)}")
        else:
            manifest = Path(args.out) / "manifest.csv"
            page = qc_page(manifest, args.qc, f"QC of {manifest}", args.workers)
            print(f"QC page: {page}")
    masks = int((result["mask"] != "").sum())
    print(
        f"{len(result)} patient(s) imported to {args.out}: manifest.csv, images/ "
        f"({masks} with a mask)"
    )
    return 0
