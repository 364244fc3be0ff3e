"""The image operations of preprocessing, forward and back: pure functions on arrays (NumPy and
nibabel's header and orientation helpers; workers need no torch), shared by the cache builder
(tcl.data.preprocess), prediction and validation; and the record of how one patient's input was
cut (:class:`InputGeometry`), with the way back from the network's grid to the patient's
(:func:`to_canonical`, :func:`to_stored`, :func:`box_mask`) that explanation maps take.

Per patient, on the three modalities on the T1C voxel grid (FLAIR-C and ADC on another grid are
resampled onto it, see :func:`tcl.data.patients.load_patient`), reoriented to canonical RAS+
(axes X, Y in-plane, Z = slices), in this order:

1. **crop** in-plane to the ROI (bounding box of mask labels > 0, or the manifest's bbox
   columns, given in the T1C file's stored voxel grid and carried through the reorientation)
   plus ``margin`` voxels on each side, clamped to the volume; all slices are kept (the paper
   crops in-plane only; the bbox's z0/z1 are checked but do not crop);
2. **clip** intensities to [0, 1200]. Clipping comes before any interpolation, on the raw
   voxels of the cropped box as the released code does, so that an outlier voxel is not
   smeared into its neighbours by the resize (clip-then-interpolate keeps every value in the
   range, interpolate-then-clip would not be the same image);
3. **zero-pad** the crop to a square, centred (odd remainders go after);
4. **resize** to ``size`` = (H, W, D) by trilinear interpolation with torch's
   ``interpolate(mode="trilinear", align_corners=False)`` convention (half-pixel centres, edge
   clamped, no anti-aliasing), implemented separably in NumPy so workers need no torch; the
   output shape is exactly ``size``;
5. **z-score** each modality over the foreground — voxels non-zero in the sum of the three
   clipped modalities — and set the background to exactly 0. Normalising last guarantees that
   what the network sees has foreground mean 0 / SD 1; the padding (zeros, and zeros stay zero
   under linear interpolation) remains background.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations

Roi = tuple[int, int, int, int, int, int]
CLIP_RANGE = (0.0, 1200.0)


def crop_box(roi: Roi, shape: tuple[int, ...], margin: int = 0) -> tuple[int, int, int, int]:
    """The in-plane crop (x0, x1, y0, y1), end-exclusive: the ROI's box grown by ``margin``
    voxels and clamped to a volume of ``shape`` [X, Y, ...]."""
    x0, x1, y0, y1 = roi[:4]
    n_x, n_y = shape[:2]
    return max(0, x0 - margin), min(n_x, x1 + margin), max(0, y0 - margin), min(n_y, y1 + margin)


def crop_in_plane(images: np.ndarray, roi: Roi, margin: int = 0) -> np.ndarray:
    """Crop ``images`` [C, X, Y, Z] to :func:`crop_box`; every slice is kept. Returns a view
    [C, x1 - x0, y1 - y0, Z]."""
    x0, x1, y0, y1 = crop_box(roi, images.shape[1:], margin)
    return images[:, x0:x1, y0:y1, :]


def square_padding(n_x: int, n_y: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zeros (before, after) along x and y that make an n_x × n_y plane square, centred (the
    odd voxel of an uneven pad goes after)."""
    side = max(n_x, n_y)
    pad_x, pad_y = side - n_x, side - n_y
    return (pad_x // 2, pad_x - pad_x // 2), (pad_y // 2, pad_y - pad_y // 2)


def pad_square(images: np.ndarray) -> np.ndarray:
    """Zero-pad ``images`` [C, X, Y, Z] in-plane to [C, S, S, Z], S = max(X, Y), by
    :func:`square_padding`."""
    widths = ((0, 0), *square_padding(*images.shape[1:3]), (0, 0))
    return np.pad(images, widths, mode="constant", constant_values=0)


def _resize_axis(array: np.ndarray, axis: int, length: int) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` to ``length`` samples, with the
    half-pixel convention of torch's ``align_corners=False``."""
    n = array.shape[axis]
    if n == length:
        return array
    source = (np.arange(length, dtype=np.float64) + 0.5) * (n / length) - 0.5
    source = np.clip(source, 0.0, None)  # torch clamps negative positions to the first voxel
    lower = np.minimum(np.floor(source).astype(np.int64), n - 1)
    upper = np.minimum(lower + 1, n - 1)
    weight = (source - lower).astype(array.dtype)
    shape = [1] * array.ndim
    shape[axis] = length
    weight = weight.reshape(shape)
    low = np.take(array, lower, axis=axis)
    high = np.take(array, upper, axis=axis)
    return low + (high - low) * weight


def resize_trilinear(images: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Resize ``images`` [C, X, Y, Z] to [C, *size] (trilinear, ``align_corners=False``).

    Trilinear interpolation is separable, so three 1D passes give the same result as torch's
    ``interpolate(..., mode="trilinear", align_corners=False)`` (up to float rounding).
    """
    out = images
    for axis, length in enumerate(size, start=1):
        out = _resize_axis(out, axis, int(length))
    assert out.shape[1:] == tuple(size)
    return out


def zscore_foreground(images: np.ndarray) -> tuple[np.ndarray, int]:
    """Per channel z-score of ``images`` [C, H, W, D] over the foreground (voxels non-zero in
    the channel sum); the background is set to 0. Returns (normalised float32, foreground
    voxel count). A channel constant over the foreground becomes 0 there."""
    foreground = images.sum(axis=0) != 0
    count = int(foreground.sum())
    out = np.zeros(images.shape, dtype=np.float32)
    if count == 0:
        return out, 0
    for channel in range(images.shape[0]):
        values = images[channel][foreground].astype(np.float64)
        mean, std = values.mean(), values.std()
        out[channel][foreground] = (values - mean) / (std if std > 0 else 1.0)
    return out, count


def preprocess_images(
    images: np.ndarray, roi: Roi, size: tuple[int, int, int], margin: int = 0
) -> np.ndarray:
    """The whole per-patient pipeline (module docstring): ``images`` [3, X, Y, Z] raw →
    [3, *size] float32 z-scored. Raises ValueError when the ROI has no voxel > 0."""
    crop = crop_in_plane(images, roi, margin).astype(np.float32)
    crop = np.clip(crop, *CLIP_RANGE)
    resized = resize_trilinear(pad_square(crop), size)
    normalised, count = zscore_foreground(resized)
    if count == 0:
        raise ValueError(f"no voxel > 0 in the ROI after clipping to {list(CLIP_RANGE)}")
    return normalised


# ---------------------------------------------------------------------------- and back
# Prediction records how each patient's input was cut (InputGeometry); explanation maps go back
# through it to the patient's own grid.


@dataclass
class InputGeometry:
    """How a patient's network input was cut from its T1C file, to map results back.

    ``box`` is the in-plane crop (x0, x1, y0, y1) in the canonical (RAS+) voxel grid of shape
    ``canonical_shape`` [X, Y, Z]; the crop was zero-padded to ``side`` × ``side`` (``pad`` =
    voxels before, x and y) and resized to the network's ``size``. ``affine`` and ``shape`` are
    the T1C file's own (stored) grid, the grid explanation maps are written in.
    """

    box: tuple[int, int, int, int]
    canonical_shape: tuple[int, int, int]
    side: int
    pad: tuple[int, int]
    size: tuple[int, int, int]
    affine: np.ndarray  # 4×4 of the stored T1C file
    shape: tuple[int, int, int]  # of the stored T1C file


def input_geometry(
    roi: Roi, shape: tuple[int, int, int], t1c_path: str, size: tuple[int, int, int], margin: int
) -> InputGeometry:
    """The crop, pad and resize that :func:`preprocess_images` applies to a patient's images of
    canonical ``shape`` [X, Y, Z] with ``roi``, recorded to map results back."""
    x0, x1, y0, y1 = crop_box(roi, shape, margin)
    (pad_x, _), (pad_y, _) = square_padding(x1 - x0, y1 - y0)
    header = nib.load(t1c_path)  # the header only: the data was read by load_patient
    return InputGeometry(
        box=(x0, x1, y0, y1),
        canonical_shape=tuple(shape),  # type: ignore[arg-type]
        side=max(x1 - x0, y1 - y0),
        pad=(pad_x, pad_y),
        size=tuple(size),  # type: ignore[arg-type]
        affine=np.asarray(header.affine, dtype=np.float64),
        shape=tuple(int(s) for s in header.shape[:3]),  # type: ignore[arg-type]
    )


def to_canonical(volume_map: np.ndarray, geometry: InputGeometry) -> np.ndarray:
    """[H, W, D] map on the network grid → [X, Y, Z] on the patient's canonical grid.

    The inverse of the crop → pad → resize above: resize back to the padded
    crop (same trilinear rule), drop the padding, put the crop in place; zero elsewhere. Values
    are scaled by (H·W·D) / (side·side·Z) so that the map's sum is kept.
    """
    x0, x1, y0, y1 = geometry.box
    n_z = geometry.canonical_shape[2]
    side = geometry.side
    up = resize_trilinear(volume_map[None].astype(np.float32), (side, side, n_z))[0]
    up *= np.float32(volume_map.size / up.size)
    pad_x, pad_y = geometry.pad
    full = np.zeros(geometry.canonical_shape, dtype=np.float32)
    full[x0:x1, y0:y1, :] = up[pad_x : pad_x + (x1 - x0), pad_y : pad_y + (y1 - y0), :]
    return full


def to_stored(canonical: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[X, Y, Z] in canonical RAS+ order → the voxel order of a file with ``affine`` (the
    inverse of nibabel's ``as_closest_canonical``)."""
    stored = nib.io_orientation(affine)
    ras = orientations.axcodes2ornt(("R", "A", "S"))
    return orientations.apply_orientation(canonical, orientations.ornt_transform(ras, stored))


def box_mask(geometry: InputGeometry) -> np.ndarray:
    """Boolean [X, Y, Z] of the crop box (canonical grid): every voxel the network saw."""
    inside = np.zeros(geometry.canonical_shape, dtype=bool)
    x0, x1, y0, y1 = geometry.box
    inside[x0:x1, y0:y1, :] = True
    return inside
