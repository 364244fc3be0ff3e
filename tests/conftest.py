"""Shared fixtures: a tiny cohort written with nibabel directly, and the real test data.

The cohort does not use the synthetic generator (tcl.synthetic.cohort), so the manifest, validation
and preprocessing tests check those modules alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tcl.config import get_profile
from tcl.synthetic.cohort import synthesize_cohort
from tcl.training.train import train_run

# The files that take longest, longest first (pytest --durations=0 under make test, 2 cores):
# the Slurm pipeline, the registrations, the documents' commands, the stem at paper size. They
# are collected first, so that xdist hands them out first and the short files fill the gaps
# after, instead of one long file starting when the other worker is nearly done.
LONGEST_FIRST = (
    "tests/data/test_register.py",
    "tests/test_slurm.py",
    "tests/data/test_registration.py",
    "tests/test_documents.py",
    "tests/models/test_stem.py",
    "tests/data/test_validate.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads ../shared/data is marked ``real_data`` (tests/README.md); the
    files of :data:`LONGEST_FIRST` go first, in that order, each file's tests in theirs."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)
    rank = {path: k for k, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


# Test files that share a session fixture, and so one xdist worker (the fixture is then built
# once): file -> the name of its group. Every other file is a group of its own.
SHARED_WORKER = {
    f"tests/application/test_{name}.py": "trained network"
    for name in ("predict", "saved", "explain")
}


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under ``--dist loadfile`` (make test), each test file goes to one worker, as pytest-xdist
    does, and the files of one :data:`SHARED_WORKER` group go to the same worker; in the order
    of collection (:data:`LONGEST_FIRST`), not xdist's default of the files with most tests
    first."""
    if config.getvalue("dist") != "loadfile":
        return None
    config.option.loadscopereorder = False
    from xdist.scheduler import LoadScopeScheduling  # only where xdist runs the suite

    class FilesAndGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_WORKER.get(path, path)

    return FilesAndGroups(config, log)


@pytest.fixture(autouse=True, scope="session")
def _itk_one_thread():
    """Every registration in the tests runs ITK on one thread, for torch's reason below: with
    the other worker busy, the known-transforms test took 55.6 s on ITK's default two threads
    and 45.9 s on one. (The register verb sets its workers' threads itself.)"""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread():
    """Every test runs torch on one thread: the suite's tensors are tiny, and on a shared 2-core
    machine the OpenMP hand-offs between two threads cost far more than the work (the model
    tests took 41 s on two threads against 7 s on one)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Real test data (each set with its README and licence) lives outside the repository: in
# ../shared/data beside the checkout, or where TCL_SHARED_DATA points.
SHARED_DATA_ROOTS = [Path(p) for p in (os.environ.get("TCL_SHARED_DATA", ""),) if p]
SHARED_DATA_ROOTS.append(Path(__file__).resolve().parents[2] / "shared" / "data")


def find_shared_data(name: str) -> Path | None:
    """The folder of the real test data set ``name``, or None where it is absent."""
    return next((root / name for root in SHARED_DATA_ROOTS if (root / name).is_dir()), None)


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """``shared_data(name)``: the real test data set's folder; the test skips, saying so in one
    line, where it is absent."""

    def folder(name: str) -> Path:
        found = find_shared_data(name)
        if found is None:
            looked = ", ".join(str(root) for root in SHARED_DATA_ROOTS)
            pytest.skip(f"real test data {name!r} absent (looked in {looked}; TCL_SHARED_DATA)")
        return found

    return folder


TINY_SHAPE = (40, 40, 8)  # X, Y, Z voxels
# (patient_id, who_grade, invasion, sex, box x0, x1, y0, y1): non-square boxes on purpose
TINY_PATIENTS = (
    ("P001", 1, 0, "F", 10, 30, 12, 20),
    ("P002", 2, 1, "M", 5, 15, 5, 25),
    ("P003", 3, 0, "F", 20, 36, 14, 30),
    ("P004", 1, 0, "M", 8, 20, 8, 20),
)
TINY_AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])  # 1 mm in-plane, 3 mm slices, RAS+


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = TINY_AFFINE) -> Path:
    """Save ``data`` [X, Y, Z] as float32 NIfTI at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def tiny_images(index: int, box: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    """Three modalities and a mask [40, 40, 8]: tissue everywhere, a brighter box tumour.

    Slice z = 0 is left zero (air) so that background handling is exercised. The mask has the
    tumour box as label 1 and a one-voxel oedema rim (label 2) inside it.
    """
    rng = np.random.default_rng(index)
    x0, x1, y0, y1 = box
    tumour = np.zeros(TINY_SHAPE, dtype=bool)
    tumour[x0:x1, y0:y1, 1:7] = True
    images: dict[str, np.ndarray] = {}
    for k, (tissue, lesion) in enumerate(((300.0, 900.0), (400.0, 700.0), (800.0, 1500.0))):
        volume = tissue + 20.0 * rng.standard_normal(TINY_SHAPE) + 10.0 * k
        volume[tumour] = lesion + 30.0 * rng.standard_normal(int(tumour.sum()))
        volume[:, :, 0] = 0.0
        images[("t1c", "flairc", "adc")[k]] = volume.astype(np.float32)
    mask = tumour.astype(np.float32)
    mask[x0, y0:y1, 1:7] = 2.0  # oedema rim on one side
    images["mask"] = mask
    return images


def write_tiny_cohort(root: Path, patients=TINY_PATIENTS) -> Path:
    """Write ``root/<pid>/{t1c,flairc,adc,mask}.nii.gz`` and ``root/manifest.csv``."""
    rows = []
    for index, (pid, grade, invasion, sex, *box) in enumerate(patients):
        images = tiny_images(index, tuple(box))
        row = {
            "patient_id": pid,
            "who_grade": grade,
            "invasion": invasion,
            "age": 50 + index,
            "sex": sex,
            "scanner": f"S{index % 2}",
        }
        for name, volume in images.items():
            write_nifti(root / pid / f"{name}.nii.gz", volume)
            row[name] = f"{pid}/{name}.nii.gz"
        rows.append(row)
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def edit_manifest(manifest: Path, edit) -> None:
    """Apply ``edit(table)`` (a DataFrame of the CSV text) and write the manifest back."""
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    edited = edit(table)
    table = table if edited is None else edited
    table.to_csv(manifest, index=False)


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Path:
    """Path of the manifest of a fresh four-patient cohort (40×40×8 volumes, box tumours)."""
    return write_tiny_cohort(tmp_path / "cohort")


# --- DICOM, written from NIfTI, for the import-dicom round trip ------------------------------


def move_header(path: Path, displacement: np.ndarray) -> None:
    """Rewrite ``path`` so that its content lies at ``displacement`` x instead of x (the voxels
    stay, the affine moves), as a series planned on another slab or after motion."""
    image = nib.load(str(path))
    affine = displacement @ image.affine
    moved = nib.Nifti1Image(np.asanyarray(image.dataobj), affine, header=image.header)
    moved.set_sform(affine, code=1)
    moved.set_qform(affine, code=1)
    nib.save(moved, str(path))


# The real patient's raw series (tcga-fg-6692, from the shared_data fixture): its lesion in T1C
# voxels as stored (its README): x 55–115, y 125–190, z 13–21.
REAL_BOX = (55, 115, 125, 190, 13, 21)


RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def _dicom_file(meta_class: str, instance: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta_class, instance
    return ds


def write_dicom_series(
    nifti: Path,
    folder: Path,
    description: str,
    patient_id: str,
    frame_uid: str,
    transposed: bool = False,
) -> tuple[str, float]:
    """Write ``nifti`` as an MR series of int16 slices with a rescale slope, one file per
    slice under ``folder``, in the file's geometry (``transposed``: rows and columns swapped,
    i.e. another matrix and orientation of the same voxels). Returns (SeriesInstanceUID,
    slope): the stored values are round(value / slope), so the read-back differs by at most
    slope / 2."""
    from pydicom.uid import generate_uid

    image = nib.load(nifti)
    data = np.asarray(image.dataobj, dtype=np.float64)
    lps = RAS_TO_LPS @ image.affine[:3]
    slope = max(float(np.abs(data).max()), 1.0) / 32000.0
    series = generate_uid()
    first, second = (1, 0) if transposed else (0, 1)  # array axis along a row, down a column
    along_row, along_column = lps[:, first], lps[:, second]
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        plane = data[:, :, k] if transposed else data[:, :, k].T  # [rows, columns]
        ds = _dicom_file(MR_IMAGE_STORAGE, generate_uid())
        ds.PatientID, ds.Modality, ds.SeriesDescription = patient_id, "MR", description
        ds.StudyInstanceUID, ds.SeriesInstanceUID = frame_uid[:-2] + ".1", series
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = k + 1
        cosines = [
            *(along_row / np.linalg.norm(along_row)),
            *(along_column / np.linalg.norm(along_column)),
        ]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in cosines]
        ds.ImagePositionPatient = [f"{v:.5f}" for v in lps @ np.array([0.0, 0.0, k, 1.0])]
        ds.PixelSpacing = [f"{np.linalg.norm(v):.8g}" for v in (along_column, along_row)]
        ds.SliceThickness = f"{np.linalg.norm(lps[:, 2]):.8g}"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", "0"
        slope = float(ds.RescaleSlope)
        ds.PixelData = np.rint(plane / slope).astype("<i2").tobytes()
        ds.save_as(folder / f"slice{k:03d}.bin", enforce_file_format=True)  # no .dcm on purpose
    return series, slope


def write_rtstruct(
    mask_nifti: Path, path: Path, series_uid: str, frame_uid: str, roi_name: str, label: int = 1
) -> None:
    """A structure set whose ROI ``roi_name`` outlines ``label`` of ``mask_nifti`` slice by
    slice (contours at the 0.5 level between voxel centres), referencing ``series_uid``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid
    from skimage import measure

    image = nib.load(mask_nifti)
    region = np.asarray(image.dataobj) == label
    lps = RAS_TO_LPS @ image.affine[:3]
    ds = _dicom_file(RT_STRUCTURE_SET_STORAGE, generate_uid())
    ds.Modality, ds.StructureSetLabel = "RTSTRUCT", "tumour"
    ds.SeriesInstanceUID = generate_uid()
    referenced = Dataset()
    referenced.SeriesInstanceUID = series_uid
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([referenced])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, roi_name, frame_uid
    ds.StructureSetROISequence = Sequence([roi])
    contours = []
    for k in range(region.shape[2]):
        padded = np.pad(region[:, :, k].astype(float), 1)
        for line in measure.find_contours(padded, 0.5):
            ij = line - 1.0  # back to the unpadded voxel indices
            points = np.column_stack([ij, np.full(len(ij), k), np.ones(len(ij))]) @ lps.T
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.6f}" for v in points.ravel()]
            contours.append(contour)
    outline = Dataset()
    outline.ReferencedROINumber = 1
    outline.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([outline])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# The series descriptions write_dicom_patient gives; import rules such as t1c=*t1* match them.
DICOM_DESCRIPTIONS = {"t1c": "T1 POST GD", "flairc": "FLAIR POST", "adc": "ADC map"}


def write_dicom_patient(
    images: dict[str, Path],
    mask: Path,
    folder: Path,
    patient_id: str,
    roi_name: str = "GTV",
    transposed_adc: bool = True,
) -> dict[str, float]:
    """One patient as a DICOM study under ``folder``: the T1C, FLAIR-C and ADC NIfTI files of
    ``images`` as MR series (:func:`write_dicom_series`; ``transposed_adc``: the ADC with rows
    and columns swapped, another matrix and orientation) in one frame of reference, and a
    structure set ``folder``/rs/RS whose ROI ``roi_name`` outlines label 1 of ``mask`` on the
    T1C series. Returns each sequence's rescale slope."""
    from pydicom.uid import generate_uid

    frame = generate_uid()
    slopes, uids = {}, {}
    for sequence, description in DICOM_DESCRIPTIONS.items():
        uids[sequence], slopes[sequence] = write_dicom_series(
            images[sequence],
            folder / sequence,
            description,
            patient_id,
            frame,
            transposed=transposed_adc and sequence == "adc",
        )
    write_rtstruct(mask, folder / "rs" / "RS", uids["t1c"], frame, roi_name)
    return slopes


def write_seg(mask_nifti: Path, path: Path, series_uid: str, label: str, value: int = 1) -> None:
    """A binary DICOM SEG of ``value`` in ``mask_nifti``, one frame per slice that holds it,
    on the grid of a series written by :func:`write_dicom_series` (not transposed)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    image = nib.load(mask_nifti)
    region = np.asarray(image.dataobj) == value
    lps = RAS_TO_LPS @ image.affine[:3]
    ds = _dicom_file("1.2.840.10008.5.1.4.1.1.66.4", generate_uid())
    ds.Modality, ds.SegmentationType, ds.SeriesInstanceUID = "SEG", "BINARY", generate_uid()
    referenced = Dataset()
    referenced.SeriesInstanceUID = series_uid
    ds.ReferencedSeriesSequence = Sequence([referenced])
    segment = Dataset()
    segment.SegmentNumber, segment.SegmentLabel = 1, label
    ds.SegmentSequence = Sequence([segment])
    slices = [k for k in range(region.shape[2]) if region[:, :, k].any()]
    groups = []
    for k in slices:
        group, position, identification = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.5f}" for v in lps @ np.array([0.0, 0.0, k, 1.0])]
        identification.ReferencedSegmentNumber = 1
        group.PlanePositionSequence = Sequence([position])
        group.SegmentIdentificationSequence = Sequence([identification])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    frames = np.stack([region[:, :, k].T for k in slices]).astype(np.uint8)
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(slices), frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(frames.ravel())
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# A cohort that validate accepts and splits can split: two patients of each label group.
SPLITTABLE = TINY_PATIENTS + (
    ("P005", 2, 1, "F", 6, 18, 10, 30),
    ("P006", 2, 0, "M", 12, 28, 4, 20),
)


def write_tiny_cache(
    root: Path,
    n_patients: int = 24,
    size: tuple[int, int, int] = (32, 32, 12),
    seed: int = 0,
    signal: float = 2.0,
) -> Path:
    """A cache in tcl.data.preprocess's format with a planted, learnable signal.

    Invasive patients get a bright rim in t1c, high-grade patients a dark core in adc, both
    ``signal`` noise SDs strong; every patient has an ellipsoidal foreground (z-scored) in zero
    background.
    """
    rng = np.random.default_rng(seed)
    h, w, d = size
    ids = [f"P{i:04d}" for i in range(n_patients)]
    invasion = np.array([1 if i % 4 == 0 else 0 for i in range(n_patients)])
    high_grade = np.where(invasion == 1, 1, (np.arange(n_patients) % 4 == 1).astype(int))
    yy, xx, zz = np.meshgrid(
        np.linspace(-1, 1, h), np.linspace(-1, 1, w), np.linspace(-1, 1, d), indexing="ij"
    )
    radius = np.sqrt(yy**2 + xx**2 + (zz * 0.8) ** 2)
    inside = radius < 0.8
    volumes = np.zeros((n_patients, 3, h, w, d), dtype=np.float16)
    for i in range(n_patients):
        image = rng.normal(0, 1, (3, h, w, d))
        image[0] += signal * invasion[i] * ((radius > 0.6) & inside)
        image[2] -= signal * high_grade[i] * (radius < 0.4)
        image = image * inside
        for c in range(3):
            values = image[c][inside]
            image[c][inside] = (values - values.mean()) / values.std()
        volumes[i] = image.astype(np.float16)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "volumes.npy", volumes)
    pd.DataFrame(
        {
            "row": np.arange(n_patients),
            "patient_id": ids,
            "who_grade": np.where(high_grade == 1, 2, 1),
            "invasion": invasion,
            "high_grade": high_grade,
            "age": 55,
            "sex": "F",
            "scanner": "Skyra",
        }
    ).to_csv(root / "index.csv", index=False)
    meta = {"size": list(size), "n_patients": n_patients, "margin": 0, "input_hash": f"tiny{seed}"}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


# A runs tree of made-up predictions, for the evaluation and reporting tests.
RUN_TEST_PATIENTS = 60
RUN_NOISE = {"proposed": 0.35, "efmt": 0.6, "mmoe": 0.8}  # smaller noise = better model


def run_labels(draw: int) -> pd.DataFrame:
    """The test set of one draw: ids and labels shared by every configuration."""
    rng = np.random.default_rng(100 + draw)
    high_grade = (rng.random(RUN_TEST_PATIENTS) < 0.35).astype(int)
    high_grade[:3], high_grade[3:6] = 1, 0
    invasion = high_grade * (rng.random(RUN_TEST_PATIENTS) < 0.5).astype(int)
    invasion[:2], invasion[2] = 1, 0
    ids = [f"P{draw}{i:03d}" for i in range(RUN_TEST_PATIENTS)]
    return pd.DataFrame({"patient_id": ids, "invasion": invasion, "high_grade": high_grade})


def write_run(runs: Path, config: str, draw: int) -> Path:
    rng = np.random.default_rng([list(RUN_NOISE).index(config), draw])
    table = run_labels(draw)
    for task in ("invasion", "high_grade"):  # tcl.tasks.TASKS
        noise = rng.normal(0, RUN_NOISE[config] * 2, RUN_TEST_PATIENTS)
        score = 1 / (1 + np.exp(-(2 * table[task] - 1 + noise)))
        table[f"p_{task}"] = score
        table[f"pred_{task}"] = (score > 0.5).astype(int)
    table.insert(1, "draw", draw)
    path = runs / config / f"draw{draw}" / "predictions.csv"
    path.parent.mkdir(parents=True)
    # shuffled rows: evaluation must pair patients by id, not by row
    table.sample(frac=1, random_state=draw).to_csv(path, index=False)
    return path


def write_runs_tree(root: Path) -> Path:
    """A runs tree of made-up predictions (proposed and efmt × draws 0-2, mmoe draws 0 and 2, a
    folder that is no configuration) under ``root``/results/smoke/runs; returns that folder."""
    runs = root / "results" / "smoke" / "runs"
    for config in ("proposed", "efmt"):
        for draw in (0, 1, 2):
            write_run(runs, config, draw)
    for draw in (0, 2):  # mmoe lacks draw 1
        write_run(runs, "mmoe", draw)
    (runs / "notes").mkdir()  # not a configuration: ignored, listed in provenance
    return runs


# ---------------------------------------------------------------------------- smoke trainings
SMOKE = get_profile("smoke")


def write_tiny_splits(path: Path, cache: Path, n_draws: int = 2) -> Path:
    """Draws of half the cohort for training (every class represented), half for testing."""
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    draws = []
    for k in range(n_draws):
        ids = index["patient_id"].tolist()
        train = sorted(ids[k % 2 :: 2])
        draws.append({"train": train, "test": sorted(set(ids) - set(train))})
    path.write_text(json.dumps({"draws": draws}))
    return path


# Four epochs of three steps (12 training patients, batch 4), so that a checkpoint can fall in
# the middle of an epoch; no periodic checkpoint unless a test asks for one.
LONGER = replace(SMOKE, epochs=4, batch_size=4, checkpoint_minutes=60.0)


STEPS_PER_EPOCH = 3


@pytest.fixture(scope="module")
def tiny_draws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny cache at the smoke size and its splits file: (cache, splits.json)."""
    root = tmp_path_factory.mktemp("cohort")
    cache = write_tiny_cache(root / "cache", n_patients=24, size=SMOKE.size)
    return cache, write_tiny_splits(root / "splits.json", cache)


def train_tiny(
    draws: tuple[Path, Path], out: Path, config: str = "proposed", profile=SMOKE, **kwargs
) -> Path:
    """``config`` trained on draw 0 of ``draws`` (:func:`tiny_draws`) into ``out``."""
    cache, splits = draws
    # One thread: on a shared 2-core machine a second OpenMP thread mostly spins (see
    # tcl.training.runtime.configure_backend); results are bit-reproducible for a given thread
    # count.
    kwargs.setdefault("threads", 1)
    return train_run(config, 0, profile, cache, splits, out, device="cpu", quiet=True, **kwargs)


def read_run_predictions(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions.csv", dtype={"patient_id": str})


# ---------------------------------------------------------------------------- a trained network
N_PATIENTS = 40
SYNTH_SHAPE = (48, 48, 12)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic cohort (with sign maps), its smoke cache and draws, and the proposed
    network trained on draws 0 and 1 with saved weights. Built once per xdist worker: the
    files that use it share one xdist worker (SHARED_WORKER)."""
    from tcl.data.manifest import read_manifest
    from tcl.data.preprocess import preprocess_cohort
    from tcl.data.splits import make_draws, write_splits
    from tcl.synthetic.cohort import synthesize_cohort
    from tcl.training.train import train_run

    root = tmp_path_factory.mktemp("predict")
    manifest = synthesize_cohort(
        root / "raw", N_PATIENTS, seed=5, shape=SYNTH_SHAPE, workers=1, progress=False
    )
    cache = preprocess_cohort(manifest, root / "cache", size=SMOKE.size, workers=1, progress=False)
    splits = root / "splits.json"
    write_splits(make_draws(read_manifest(manifest), n_draws=2, seed=666), splits, seed=666)
    runs = {}
    for draw in (0, 1):
        runs[draw] = train_run(
            "proposed", draw, SMOKE, cache, splits, root / f"run{draw}", device="cpu",
            quiet=True, save_weights=True, threads=1,
        )  # fmt: skip
    test_ids = json.loads(splits.read_text())["draws"][0]["test"]
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    test_manifest = root / "raw" / "test.csv"
    table[table.patient_id.isin(test_ids)].to_csv(test_manifest, index=False)
    return {"root": root, "manifest": manifest, "test": test_manifest, "run0": runs[0],
            "run1": runs[1], "cache": cache}  # fmt: skip


# ---------------------------------------------------------------------------- registration
@pytest.fixture(scope="module")
def six_patients(tmp_path_factory) -> Path:
    """Six synthetic patients at the default geometry (256×256×24, 1×1×6 mm), untouched."""
    root = tmp_path_factory.mktemp("register") / "cohort"
    return synthesize_cohort(root, 6, seed=3, progress=False)
