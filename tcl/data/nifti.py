"""NIfTI reading and writing: the only place that touches nibabel.

Volumes are returned in the closest canonical (RAS+) orientation so that every later step can
assume axis 0 = left→right, 1 = posterior→anterior, 2 = inferior→superior (slices last, as the
paper's H×W×D input). Two helpers serve manifests written against the files as stored:
:func:`box_to_canonical` carries a voxel box of the stored grid into the canonical grid, and
:func:`resample_to_grid` puts a co-registered volume acquired on another grid onto a reference
grid (nibabel's own resampling).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from tcl.utils import TclError, atomic_path

Box = tuple[int, int, int, int, int, int]  # x0, x1, y0, y1, z0, z1; end-exclusive


@dataclass(frozen=True)
class Volume:
    """A 3D image: ``data`` [X, Y, Z] float32 and its voxel-to-world ``affine`` 4×4 (mm).

    :func:`load_volume` returns it in canonical orientation unless asked for the stored one.
    """

    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def load_volume(path: str | os.PathLike, what: str = "", canonical: bool = True) -> Volume:
    """Read a 3D NIfTI file as float32, reoriented to closest canonical (RAS+) unless
    ``canonical`` is False (then the voxel grid is the file's own, as ``img.dataobj`` indexes it).

    ``what`` (e.g. ``"patient P0001, t1c"``) is prefixed to error messages so that a bad file
    in a cohort of hundreds can be found. Raises :class:`TclError` for a missing, unreadable,
    corrupt or non-3D file.
    """
    path = Path(path)
    label = f"{what}: " if what else ""
    if not path.is_file():
        raise TclError(f"{label}file not found: {path}")
    try:
        image = nib.load(str(path))
        if canonical:
            image = nib.as_closest_canonical(image)
        data = np.asarray(image.get_fdata(dtype=np.float32))
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as error:  # nibabel raises many types for corrupt files
        raise TclError(f"{label}cannot read NIfTI file {path}: {error}") from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise TclError(f"{label}{path} is not a 3D volume (shape {data.shape})")
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        # a singular affine has no orientation and no physical extent to compare
        raise TclError(f"{label}{path} has a degenerate affine (zero or non-finite voxel size)")
    return Volume(data=data, affine=affine)


def canonical_orientation(affine: np.ndarray) -> np.ndarray:
    """The reorientation [3, 2] that takes a grid with ``affine`` to closest canonical (RAS+),
    as ``nib.as_closest_canonical`` uses it: row i = [canonical axis of stored axis i, ±1]."""
    return io_orientation(affine)


def reorient(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """``data`` [X, Y, Z] (stored grid) reoriented by ``ornt`` (:func:`canonical_orientation`):
    a view (flipped, transposed) where possible, not a copy; copy it where contiguity matters."""
    return apply_orientation(data, ornt)


def canonical_affine(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The affine 4×4 of a stored grid (``affine``, ``shape``) once reoriented to canonical."""
    return affine @ inv_ornt_aff(canonical_orientation(affine), shape[:3])


def to_canonical(volume: Volume) -> tuple[Volume, np.ndarray]:
    """``volume`` (any stored orientation) in closest canonical orientation, as
    ``nib.as_closest_canonical`` makes it, and the orientation used (for
    :func:`box_to_canonical`)."""
    ornt = canonical_orientation(volume.affine)
    affine = canonical_affine(volume.affine, volume.data.shape)
    return Volume(data=np.ascontiguousarray(reorient(volume.data, ornt)), affine=affine), ornt


def reordered_onto(
    volume: Volume, shape: tuple[int, ...], affine: np.ndarray, tolerance: float
) -> Volume | None:
    """``volume`` in the voxel order of the grid (``shape``, ``affine``) when both grids are
    the same voxel centres stored in another axis order or direction (a DICOM series read
    with its rows and columns swapped, a file written radiologically): an exact flip and
    transpose, no interpolation. ``tolerance``: mm allowed between the two affines once
    reordered. None when the grids differ in anything else (they need resampling)."""
    transform = ornt_transform(io_orientation(volume.affine), io_orientation(affine))
    data = apply_orientation(volume.data, transform)
    moved = volume.affine @ inv_ornt_aff(transform, volume.data.shape[:3])
    if data.shape[:3] != tuple(shape[:3]) or not np.allclose(moved, affine, rtol=0, atol=tolerance):
        return None
    return Volume(data=data, affine=np.asarray(affine, dtype=np.float64))


def box_to_canonical(box: Box, shape: tuple[int, int, int], ornt: np.ndarray) -> Box:
    """The voxel box ``box`` of a stored grid of ``shape`` in the canonical grid that
    ``ornt`` (from :func:`to_canonical`) leads to: the same voxels, so
    ``canonical[box'] == reoriented(stored[box])``.

    A flipped axis of length n maps [lo, hi) to [n - hi, n - lo); axes are then permuted.
    """
    spans: list[tuple[int, int]] = [(0, 0)] * 3
    for axis in range(3):
        lo, hi = box[2 * axis], box[2 * axis + 1]
        target, flip = int(ornt[axis, 0]), ornt[axis, 1]
        if flip < 0:
            lo, hi = shape[axis] - hi, shape[axis] - lo
        spans[target] = (lo, hi)
    return tuple(v for span in spans for v in span)  # type: ignore[return-value]


def world_extent(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The 8 corners [8, 3] (mm) of the field of view of a grid: the outer faces of its
    edge voxels (voxel centres -0.5 … n - 0.5)."""
    corners = np.array(
        [[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64
    )
    voxels = corners * np.asarray(shape[:3], dtype=np.float64) - 0.5
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def covered_fraction(
    points_vox: np.ndarray,
    grid_affine: np.ndarray,
    other_shape: tuple[int, ...],
    other_affine: np.ndarray,
) -> float:
    """Share of the voxel centres ``points_vox`` [N, 3] of a grid (``grid_affine``) that lie
    inside the field of view of another grid (``other_shape``, ``other_affine``)."""
    if len(points_vox) == 0:
        return 0.0
    to_other = np.linalg.inv(other_affine) @ grid_affine
    mapped = points_vox @ to_other[:3, :3].T + to_other[:3, 3]
    upper = np.asarray(other_shape[:3], dtype=np.float64) - 0.5
    inside = ((mapped >= -0.5) & (mapped <= upper)).all(axis=1)
    return float(inside.mean())


def resample_to_grid(
    volume: Volume, shape: tuple[int, int, int], affine: np.ndarray, order: int
) -> Volume:
    """``volume`` resampled onto the grid (``shape``, ``affine``) with nibabel's
    ``resample_from_to`` (scipy ``affine_transform``): ``order`` 1 = trilinear (images),
    0 = nearest neighbour (label masks, so labels stay labels). Points outside ``volume``'s
    field of view become 0. Returns data [*shape] float32."""
    # here, not at the top: it imports scipy.ndimage (0.47 s), which only resampling needs, and
    # this module is imported by every command
    from nibabel.processing import resample_from_to

    source = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
    out = resample_from_to(source, (tuple(shape), affine), order=order, mode="constant", cval=0.0)
    data = np.asarray(out.dataobj, dtype=np.float32)
    return Volume(data=data, affine=np.asarray(affine, dtype=np.float64))


def save_volume(
    path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, dtype: type = np.float32
) -> None:
    """Write ``data`` [X, Y, Z] with ``affine`` to ``path`` (.nii or .nii.gz) atomically."""
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
