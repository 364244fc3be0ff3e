"""NIfTI reading and writing: the only place that touches nibabel.

Volumes are returned in the closest canonical (RAS+) orientation so that every later step can
assume axis 0 = left→right, 1 = posterior→anterior, 2 = inferior→superior (slices last, as the
paper's H×W×D input).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tcl.utils import TclError, atomic_path


@dataclass(frozen=True)
class Volume:
    """A 3D image in canonical orientation: ``data`` [X, Y, Z] float32, ``affine`` 4×4."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def load_volume(path: str | os.PathLike, what: str = "") -> Volume:
    """Read a 3D NIfTI file, reoriented to closest canonical, as float32.

    ``what`` (e.g. ``"patient P0001, t1c"``) is prefixed to error messages so that a bad file
    in a cohort of hundreds can be found. Raises :class:`TclError` for a missing, unreadable,
    corrupt or non-3D file.
    """
    path = Path(path)
    label = f"{what}: " if what else ""
    if not path.is_file():
        raise TclError(f"{label}file not found: {path}")
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel raises many types for corrupt files
        raise TclError(f"{label}cannot read NIfTI file {path}: {error}") from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise TclError(f"{label}{path} is not a 3D volume (shape {data.shape})")
    return Volume(data=data, affine=np.asarray(image.affine, dtype=np.float64))


def save_volume(
    path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, dtype: type = np.float32
) -> None:
    """Write ``data`` [X, Y, Z] with ``affine`` to ``path`` (.nii or .nii.gz) atomically."""
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
