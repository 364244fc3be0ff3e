"""One patient's files: loaded, checked and put onto one grid (the T1C voxel grid, canonical RAS+).

The sequences must be co-registered (their affines map voxels to the same scanner space), not
necessarily on one voxel grid: FLAIR-C, ADC and the mask on another grid than T1C are resampled
onto the T1C grid with nibabel (linear for images, nearest neighbour for the mask). A file whose
field of view does not overlap T1C's, or misses the ROI entirely, is refused. With the
alignment check on, a quick rigid registration tells whether FLAIR-C and ADC really lie on the
T1C anatomy (:mod:`tcl.data.registration`).

Every problem of a patient is collected before reporting, each naming the patient and the file.
Warnings (signal that is zero, constant or mostly clipped inside the ROI; partial coverage;
misregistration) do not stop a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from tcl.data.manifest import MODALITIES, PatientFiles
from tcl.data.nifti import (
    Volume,
    box_to_canonical,
    canonical_affine,
    canonical_orientation,
    covered_fraction,
    load_volume,
    reordered_onto,
    reorient,
    resample_to_grid,
    world_extent,
)
from tcl.data.registration import OFFSET_DEG, OFFSET_MM, misregistration, roi_centre
from tcl.data.transforms import CLIP_RANGE, crop_in_plane
from tcl.utils import TclError

# Misregistration warnings name this command; check_cohort puts the manifest's path in.
REGISTER_HINT = "python -m tcl register MANIFEST --out FOLDER"

MASK_LABELS = (0, 1, 2)  # background, tumour, peritumoural oedema
AFFINE_TOLERANCE = 1e-3  # mm; co-registered files written by different tools differ by rounding
# validate warns when more than this share of a sequence's tumour voxels (mask label 1; the
# whole ROI when there is no mask) sits at or above the clip ceiling (CLIP_RANGE in
# tcl.data.preprocess): the contrast inside the tumour is then mostly cut away, as with a 12-bit
# scanner range (0..4095, enhancing tumour far above 1200) or an ADC map in other units. Oedema
# (label 2) is left out: its ADC (about 1200..1600 × 1e-6 mm²/s) clips legitimately. On a
# 40-patient synthetic cohort the largest share was 65% (ADC), so no warning there.
CLIPPED_SHARE_WARNING = 0.8


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
    misregistered: list[str] = field(default_factory=list)  # series the alignment check flagged


def roi_of_mask(mask: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
    """Bounding box (x0, x1, y0, y1, z0, z1), end-exclusive, of the voxels > 0 of ``mask``
    [X, Y, Z]; None when there are none."""
    found = ndimage.find_objects((mask > 0).astype(np.uint8))
    if not found:
        return None
    x, y, z = found[0]
    return (x.start, x.stop, y.start, y.stop, z.start, z.stop)


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
    swapped = contrast_warning(pid, files, images, region, tumour)
    if swapped:
        warnings.append(swapped)
    crop = crop_in_plane(images, roi)
    if not (crop > CLIP_RANGE[0]).any():
        problems.append(
            f"patient {pid}: no voxel > {CLIP_RANGE[0]:g} in any sequence inside the ROI "
            f"(in-plane box x {roi[0]}..{roi[1]}, y {roi[2]}..{roi[3]}, every slice), so "
            f"preprocessing has nothing to normalise ({files.paths['t1c']})"
        )
    return problems, warnings


def lesion_contrast(image: np.ndarray, tumour: np.ndarray, ring: np.ndarray) -> float:
    """Mean of ``image`` [X, Y, Z] in ``tumour`` over its mean in ``ring`` (the tissue around
    the lesion, :func:`surroundings`): how far the tumour stands out. NaN where the ring is
    empty or dark."""
    around = float(image[ring].mean()) if ring.any() else 0.0
    if around <= 0 or not tumour.any():
        return float("nan")
    return float(image[tumour].mean()) / around


def surroundings(region: np.ndarray) -> np.ndarray:
    """The ring of 2 in-plane voxels around ``region`` [X, Y, Z] (bool), same shape."""
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    box = ndimage.find_objects(region.astype(np.uint8))
    ring = np.zeros_like(region)
    if not box:
        return ring
    # dilate within the region's box and a margin only: the same ring, a fraction of the work
    near = tuple(
        slice(max(0, s.start - 3), min(n, s.stop + 3)) if axis < 2 else s
        for axis, (s, n) in enumerate(zip(box[0], region.shape, strict=True))
    )
    part = region[near]
    ring[near] = ndimage.binary_dilation(part, plane, iterations=2) & ~part
    return ring


def contrast_warning(
    pid: str, files: PatientFiles, images: np.ndarray, region: np.ndarray, tumour: np.ndarray
) -> str | None:
    """A warning when T1C and FLAIR-C look swapped, or None. A meningioma enhances strongly,
    so on the contrast-enhanced T1 it stands out from the tissue around the lesion more than
    on FLAIR-C, where the tumour is close to grey matter and oedema can be brighter still; a
    T1C whose tumour contrast (:func:`lesion_contrast`) is not above FLAIR-C's is flagged.
    On the 800 synthetic patients it flags 3 as named and 797 swapped (docs/your-cohort.md)."""
    ring = surroundings(region)
    t1c = lesion_contrast(images[0], tumour, ring)
    flairc = lesion_contrast(images[1], tumour, ring)
    if not (t1c <= flairc):  # also when either is NaN: nothing to compare
        return None
    return (
        f"patient {pid}, t1c: the tumour stands out less from its surroundings on t1c "
        f"{files.paths['t1c']} ({t1c:.2f}×) than on flairc {files.paths['flairc']} "
        f"({flairc:.2f}×), where an enhancing meningioma stands out most on T1C: are t1c and "
        "flairc swapped?"
    )


def bbox_problem(pid: str, bbox: tuple[int, ...], shape: tuple[int, ...], image: str) -> str | None:
    """The problem of a non-empty bbox (x0, x1, y0, y1, z0, z1; end-exclusive voxel indices of
    the file as stored) that reaches outside ``image`` of ``shape``, or None."""
    x0, x1, y0, y1, z0, z1 = bbox
    spans = [(x0, x1), (y0, y1), (z0, z1)]
    if any(hi <= lo for lo, hi in spans):
        return None  # an empty bbox is a table-level problem, already reported by read_table
    if all(0 <= lo < hi <= n for (lo, hi), n in zip(spans, shape, strict=True)):
        return None
    return (
        f"patient {pid}: bbox x {x0}..{x1}, y {y0}..{y1}, z {z0}..{z1} is outside the volume "
        f"of shape {tuple(shape)} as stored ({image}; bbox columns are voxel indices of the file "
        "as stored)"
    )


def nonfinite_problem(volume: Volume, pid: str, name: str, path: str) -> str | None:
    """The problem of a volume with NaN or infinite voxels, or None."""
    bad = int(np.count_nonzero(~np.isfinite(volume.data)))
    return f"patient {pid}, {name}: {bad} NaN/inf voxel(s) in {path}" if bad else None


def degenerate_problem(volume: Volume, pid: str, name: str, path: str) -> str | None:
    """The problem of an image series that holds no image: NaN or infinite voxels, or one
    value everywhere (an all-zero file is what a failed export leaves); None if it is fine.
    Checked before anything else reads the series (registration divides by its mass)."""
    problem = nonfinite_problem(volume, pid, name, path)
    if problem is None and volume.data.size and volume.data.min() == volume.data.max():
        value = float(volume.data.flat[0])
        problem = (
            f"patient {pid}, {name}: every voxel of {path} is {value:g}: an empty or failed "
            "export, not an image"
        )
    return problem


def duplicate_problems(volumes: dict[str, Volume], paths: dict[str, str], pid: str) -> list[str]:
    """Two sequences of one patient that are one file, or the same voxels on the same grid:
    the manifest names one file twice, or an export copied a series."""
    problems = []
    names = [m for m in MODALITIES if m in volumes]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = volumes[first], volumes[second]
            same_file = os.path.realpath(paths[first]) == os.path.realpath(paths[second])
            if same_file or (same_grid(a, b) and np.array_equal(a.data, b.data)):
                what = "are the same file" if same_file else "hold the same voxels"
                problems.append(
                    f"patient {pid}: {first} {paths[first]} and {second} {paths[second]} {what}"
                )
    return problems


def _alignment_warnings(
    pid: str,
    volumes: dict[str, Volume],
    paths: dict[str, str],
    roi: tuple[int, int, int, int, int, int],
    flagged: list[str],
) -> list[str]:
    """Warnings for FLAIR-C and ADC (and a mask drawn on their grid) that a quick rigid
    registration finds misregistered against T1C (:func:`tcl.data.registration.misregistration`);
    the names of the misregistered series are appended to ``flagged``."""
    t1c = volumes["t1c"]
    centre = roi_centre(t1c, bbox=roi)
    warnings = []
    for name in ("flairc", "adc"):
        found = misregistration(t1c, volumes[name], centre)
        if found is None:
            continue
        shift, angle = found
        flagged.append(name)
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


def _region_of_interest(
    files: PatientFiles,
    volumes: dict[str, Volume],
    reference: str,
    other_grid: list[str],
    check: PatientCheck,
) -> tuple[np.ndarray | None, tuple[int, int, int, int, int, int] | None]:
    """The patient's mask on the reference grid (NaN as 0; None without a mask) and its ROI
    box in the reference grid as stored, from the mask or else the manifest's bbox columns;
    what is wrong with either goes to ``check.problems``. The ROI is None when there is none
    to use."""
    pid, problems = files.patient_id, check.problems
    ref = volumes[reference]
    ref_shape: tuple[int, int, int] = ref.data.shape  # type: ignore[assignment]
    ref_path = files.paths[reference]
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
        problem = bbox_problem(pid, files.bbox, ref_shape, f"{reference} {ref_path}")
        if problem:
            problems.append(problem)
        elif all(lo < hi for lo, hi in zip(files.bbox[::2], files.bbox[1::2], strict=True)):
            roi = files.bbox  # (an empty bbox is a table-level problem, reported by read_table)

    return mask_data, roi


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
        check_image = degenerate_problem if name in MODALITIES else nonfinite_problem
        problem = check_image(volume, pid, name, path)
        if problem:
            problems.append(problem)
        volumes[name] = volume

    # The reference grid is T1C's (the first readable modality when T1C itself is broken).
    reference = next((m for m in MODALITIES if m in volumes), None)
    if reference is None:
        problems.extend(duplicate_problems(volumes, paths, pid))
        return check, None
    ref = volumes[reference]
    # The same voxel centres stored in another axis order are put in T1C's order exactly;
    # only a truly different grid is resampled below.
    for name, volume in volumes.items():
        if name != reference and not same_grid(volume, ref):
            volumes[name] = (
                reordered_onto(volume, ref.data.shape, ref.affine, AFFINE_TOLERANCE) or volume
            )
    problems.extend(duplicate_problems(volumes, paths, pid))
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

    mask_data, roi = _region_of_interest(files, volumes, reference, other_grid, check)

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
        check.warnings.extend(_alignment_warnings(pid, volumes, paths, roi, check.misregistered))
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


def examine_patient(
    files: PatientFiles, alignment: bool = False
) -> tuple[PatientCheck, PatientImages | None]:
    """What checking one patient found and, when nothing stops it, its images (both halves of
    :func:`load_patient` and :func:`inspect_patient`, for a caller that needs both: the QC
    page)."""
    return _load_patient(files, alignment)


def inspect_patient(files: PatientFiles, alignment: bool = False) -> PatientCheck:
    """Problems, warnings and resampled files of one patient (``load_patient`` without the
    images, so that validation workers send back a few lines rather than volumes)."""
    return _load_patient(files, alignment)[0]
