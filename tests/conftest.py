"""Shared fixtures: a tiny cohort written with nibabel directly, and the real test data.

The cohort does not use the synthetic generator (tcl.data.synth), so the manifest, validation
and preprocessing tests check those modules alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest


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


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Path:
    """Path of the manifest of a fresh four-patient cohort (40×40×8 volumes, box tumours)."""
    return write_tiny_cohort(tmp_path / "cohort")
