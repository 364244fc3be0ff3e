"""Rigid registration of FLAIR-C and ADC onto T1C, and the check that finds series that need it.

Raw clinical series are often not co-registered: the patient moves between series, and each
series is planned on its own slab. Resampled through their own headers, such series miss the
T1C anatomy by centimetres. This module holds the registration itself (SimpleITK) and two uses:

- :func:`misregistration` (``tcl validate`` and ``tcl predict``): a quick registration
  (:data:`QUICK`) of a series onto T1C; beyond :data:`OFFSET_MM` or :data:`OFFSET_DEG` the
  patient gets a warning (:mod:`tcl.data.manifest`) naming the series, the offset and the fix.
- :func:`register_rigid` with :data:`FULL`, which ``python -m tcl register``
  (:mod:`tcl.data.register`) runs on every patient.

Transforms are 4×4 matrices in world (RAS, mm) coordinates that map a point of T1C's world to
where that anatomy lies in the other series' world: identity for co-registered series. A
series is put onto the T1C anatomy by replacing its affine A with matrix⁻¹ · A.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from tcl.data.nifti import Volume
from tcl.utils import TclError

# SimpleITK (0.24 s to import) is imported by the functions that run a registration:
# tcl.data.patients reads this module's thresholds on every patient load, which must not pay it.

# Beyond these a series is reported as misregistered. Below them lies what a co-registered
# cohort still shows: EPI distortion shifts ADC maps by a few millimetres (the synthetic cohort
# shifts its ADC by up to 2 mm in x and y, 2.8 mm in all, on purpose), and the quick check
# errs by about half a millimetre. Above them the lesion moves by more than a third of the
# smallest meningiomas' diameter (~1 cm); 3° turns a point 8 cm from the centre (the
# cortex) by 4 mm.
OFFSET_MM = 4.0
OFFSET_DEG = 3.0


def misregistered(shift_mm: float, angle_deg: float) -> bool:
    """Whether a series that registration moves by ``shift_mm`` and ``angle_deg`` counts as
    misregistered (beyond :data:`OFFSET_MM` or :data:`OFFSET_DEG`)."""
    return shift_mm > OFFSET_MM or angle_deg > OFFSET_DEG


def rigid_matrix(
    rotation_deg: tuple[float, float, float],
    translation_mm: tuple[float, float, float],
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """The world transform x ↦ R (x − c) + c + t, R = Rz Ry Rx of the angles (degrees)."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rotation = rz @ ry @ rx
    centre = np.asarray(centre, dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + np.asarray(translation_mm, dtype=float)
    return matrix


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """The angle of the rotation part of a rigid 4×4 transform, in degrees."""
    cosine = (np.trace(matrix[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` [N, 3] (mm) through the 4×4 ``matrix``."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def rms_displacement(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> float:
    """Root mean square distance (mm) between where two transforms take ``points`` [N, 3]."""
    return float(np.sqrt(np.mean(np.sum((apply(a, points) - apply(b, points)) ** 2, axis=1))))


def offset_of(matrix: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """How far a transform moves ``centre`` (mm) and its rotation angle (degrees)."""
    shift = apply(matrix, np.asarray(centre, dtype=float)[None])[0] - centre
    return float(np.linalg.norm(shift)), rotation_angle_deg(matrix)


def roi_centre(
    t1c: Volume,
    mask: Volume | None = None,
    bbox: tuple[int, int, int, int, int, int] | None = None,
) -> np.ndarray:
    """The world point (mm) where offsets are measured: the centre of the mask's voxels > 0,
    else of the bbox (T1C's stored voxel indices, end-exclusive), else of T1C's volume."""
    if mask is not None and (mask.data > 0).any():
        index = np.argwhere(mask.data > 0).mean(axis=0)
        return apply(mask.affine, index[None])[0]
    if bbox is not None:
        index = np.array([(bbox[0] + bbox[1] - 1) / 2, (bbox[2] + bbox[3] - 1) / 2,
                          (bbox[4] + bbox[5] - 1) / 2])  # fmt: skip
    else:
        index = (np.asarray(t1c.data.shape, dtype=float) - 1) / 2
    return apply(t1c.affine, index[None])[0]


def misregistration(
    t1c: Volume, series: Volume, centre: np.ndarray, seed: int = 0
) -> tuple[float, float] | None:
    """The offset (mm at ``centre``, degrees) of ``series`` against ``t1c`` that a quick
    registration (:data:`QUICK`) finds, when it is beyond :data:`OFFSET_MM` or
    :data:`OFFSET_DEG` and improves the mutual information; else None.

    About 0.6 s a series on 2 cores (256×256×24). It catches offsets of centimetres and
    degrees, which is its purpose; its estimate is rough (2.5 mm on average, more for large
    rotations), so the warning reports it as approximate and ``python -m tcl register`` does
    the real work.
    """
    if any(min(_extent_voxels(v, QUICK.coarse_mm)) < MIN_VOXELS for v in (t1c, series)):
        return None  # a field of view this small holds too little anatomy to register
    found = register_rigid(t1c, series, QUICK, seed=seed)
    if found.mi_after <= found.mi_before:
        return None
    shift, angle = offset_of(found.matrix, centre)
    return (shift, angle) if misregistered(shift, angle) else None


# ----------------------------------------------------------------------------- SimpleITK bridge
# ITK works in LPS world coordinates, nibabel in RAS: the two differ by a flip of x and y.
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_sitk(volume: Volume):
    """A SimpleITK float32 image of ``volume`` (its grid as stored: spacing, direction and
    origin from the affine)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.data.transpose(2, 1, 0)))
    lps = _LPS @ volume.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return sitk.Cast(image, sitk.sitkFloat32)


def _ras_matrix(transform) -> np.ndarray:
    """The RAS 4×4 matrix of an ITK rigid transform (fixed LPS point → moving LPS point)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    matrix[:3, 3] = np.asarray(transform.GetTranslation()) + centre - matrix[:3, :3] @ centre
    return _LPS @ matrix @ _LPS


@dataclass(frozen=True)
class Registration:
    """A rigid registration of one series onto T1C.

    ``matrix`` (RAS 4×4) maps T1C's world to the series' world; ``mi_before`` / ``mi_after``
    are the Mattes mutual information at the identity and at ``matrix`` on the finest working
    grid (higher = better aligned; ITK minimises its negative); ``seconds`` of wall time.
    """

    matrix: np.ndarray
    mi_before: float
    mi_after: float
    seconds: float


@dataclass(frozen=True)
class Settings:
    """One registration recipe (see :func:`register_rigid`).

    ``fine_mm`` / ``coarse_mm``: the isotropic working grids; ``start_deg``: the extra starts
    are rotated by ± this about each axis (0: one start only); ``refine``: how many of the best
    coarse results are refined on the fine grid (0: stop at the coarse grid); the sampled share
    of head voxels and the iterations per grid.
    """

    fine_mm: float = 2.0
    coarse_mm: float = 4.0
    start_deg: float = 10.0
    refine: int = 2
    coarse_sampling: float = 0.25
    fine_sampling: float = 0.05
    coarse_iterations: int = 60
    fine_iterations: int = 10  # Powell's rounds over the six parameters


FULL = Settings()
# The misregistration check: one start, the 4 mm grid only (gradient descent, then Powell). On
# the 12 cases of tools/registration_compare.py its error is 2.5 mm on average (4.4 mm without
# the Powell step, 1.05 mm for FULL) in 0.6 s a series: enough to tell centimetres and degrees
# from the few millimetres of a co-registered series.
QUICK = Settings(start_deg=0.0, refine=1, fine_mm=4.0, fine_sampling=0.25)


# The coarse grid needs this many voxels along each axis for a registration to mean anything.
MIN_VOXELS = 8


def _extent_voxels(volume: Volume, mm: float) -> list[int]:
    """How many voxels of ``mm`` span the volume's field of view along each of its axes."""
    return [int(round(n * s / mm)) for n, s in zip(volume.data.shape, volume.spacing, strict=True)]


def _working_image(image, mm: float):
    """``image`` on an isotropic ``mm`` grid over the same field of view, smoothed first along
    the axes it shrinks (σ = half the new spacing) so that the coarse grid does not alias."""
    import SimpleITK as sitk

    spacing = image.GetSpacing()
    sigma = [mm / 2.0 if s < mm else 0.01 for s in spacing]
    smoothed = sitk.SmoothingRecursiveGaussian(image, sigma)
    size = [max(1, int(round(n * s / mm))) for n, s in zip(image.GetSize(), spacing, strict=True)]
    return sitk.Resample(
        smoothed, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [mm] * 3,
        image.GetDirection(), 0.0, sitk.sitkFloat32,
    )  # fmt: skip


def _head_mask(image):
    """The head on ``image`` (Otsu's threshold, dilated by two voxels): the metric samples only
    there, since air holds no information and dominates a brain MRI's field of view."""
    import SimpleITK as sitk

    head = sitk.OtsuThreshold(image, 0, 1)
    return sitk.BinaryDilate(head, [2, 2, 2])


def _method(sampling: float, mask, seed: int):
    """Mattes mutual information (32 bins) on a random share of the head voxels, linear
    interpolation; the optimiser is set by :func:`_coarse_search` or :func:`_fine_search`."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # ITK reads seed 0 as "seed from the wall clock": shift it, so that every seed is fixed
    method.SetMetricSamplingPercentage(sampling, seed + 1)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _coarse_search(method, iterations: int, step_mm: float) -> None:
    """Regular-step gradient descent: fast, and it travels centimetres in a few dozen steps."""
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step_mm,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    # rotations scaled so that a unit step moves a voxel as far as a unit shift
    method.SetOptimizerScalesFromPhysicalShift()


def _fine_search(method, iterations: int, step_mm: float) -> None:
    """Powell's line searches along each parameter, to a thousandth of a step: the gradient
    descents stopped a millimetre or two short of the optimum on the fine grid (on the cases
    checked, the mutual information at the true transform was above where they stopped)."""
    method.SetOptimizerAsPowell(
        numberOfIterations=iterations,
        maximumLineIterations=20,
        stepLength=step_mm,
        stepTolerance=1e-3,
        valueTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()


def _euler(transform):
    """The Euler transform inside what ``ImageRegistrationMethod.Execute`` returns."""
    import SimpleITK as sitk

    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetNthTransform(0)
    return sitk.Euler3DTransform(transform)


def register_rigid(
    fixed: Volume, moving: Volume, settings: Settings = FULL, seed: int = 0
) -> Registration:
    """Register ``moving`` rigidly onto ``fixed`` (both as stored, any grid and orientation).

    Both go onto isotropic working grids first: clinical series have thick slices (5–6 mm),
    and a pyramid that shrinks every axis alike would leave four slices of 24 mm at its coarse
    level. The search starts from the transform that aligns the centres of mass (series planned
    on different slabs are centimetres apart) and from that transform turned by ±``start_deg``
    about each axis, since one start lands in a local optimum for some rotations over 10°
    (measured: tools/registration_compare.py). Each start is optimised on the coarse grid; the
    ``refine`` best are optimised on the fine grid, and the one with the highest mutual
    information wins. Deterministic for a given ``seed`` and thread count.
    """
    import SimpleITK as sitk

    for volume, name in ((fixed, "fixed"), (moving, "moving")):
        if min(_extent_voxels(volume, settings.coarse_mm)) < MIN_VOXELS:
            raise TclError(
                f"the {name} image's field of view ({volume.data.shape} voxels) is too small "
                f"to register: under {MIN_VOXELS} voxels of {settings.coarse_mm:g} mm along "
                "an axis"
            )
    start_time = time.perf_counter()
    fixed_image, moving_image = to_sitk(fixed), to_sitk(moving)
    grids = {mm: (_working_image(fixed_image, mm), _working_image(moving_image, mm))
             for mm in {settings.coarse_mm, settings.fine_mm}}  # fmt: skip
    masks = {mm: _head_mask(images[0]) for mm, images in grids.items()}
    coarse_fixed, coarse_moving = grids[settings.coarse_mm]
    centred = sitk.CenteredTransformInitializer(
        coarse_fixed, coarse_moving, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )  # fmt: skip
    starts = [centred]
    if settings.start_deg > 0:
        for axis in range(3):
            for sign in (-1.0, 1.0):
                turned = sitk.Euler3DTransform(centred)
                angles = [turned.GetAngleX(), turned.GetAngleY(), turned.GetAngleZ()]
                angles[axis] += sign * math.radians(settings.start_deg)
                turned.SetRotation(*angles)
                starts.append(turned)
    results = []
    for start in starts:
        method = _method(settings.coarse_sampling, masks[settings.coarse_mm], seed)
        _coarse_search(method, settings.coarse_iterations, settings.coarse_mm / 2)
        method.SetInitialTransform(start, inPlace=False)
        found = _euler(method.Execute(coarse_fixed, coarse_moving))
        results.append((method.GetMetricValue(), found))
    results.sort(key=lambda result: result[0])

    last_mm = settings.fine_mm if settings.refine > 0 else settings.coarse_mm
    if settings.refine > 0:
        fine_fixed, fine_moving = grids[settings.fine_mm]
        refined = []
        for _, found in results[: settings.refine]:
            method = _method(settings.fine_sampling, masks[settings.fine_mm], seed)
            _fine_search(method, settings.fine_iterations, settings.fine_mm / 2)
            method.SetInitialTransform(found, inPlace=False)
            better = _euler(method.Execute(fine_fixed, fine_moving))
            refined.append((method.GetMetricValue(), better))
        results = sorted(refined, key=lambda result: result[0])
    best = results[0][1]
    # both values on the same grid and samples, so that they compare
    last_fixed, last_moving = grids[last_mm]
    sampling = settings.fine_sampling if settings.refine > 0 else settings.coarse_sampling
    judge = _method(sampling, masks[last_mm], seed)
    identity = sitk.Euler3DTransform()
    identity.SetCenter(best.GetCenter())
    judge.SetInitialTransform(identity, inPlace=False)
    before = judge.MetricEvaluate(last_fixed, last_moving)
    judge.SetInitialTransform(best, inPlace=False)
    after = judge.MetricEvaluate(last_fixed, last_moving)
    matrix = _ras_matrix(best)
    if after >= before:  # ITK's values are negated: the series was better aligned as it was
        matrix, after = np.eye(4), before
    return Registration(
        matrix=matrix,
        mi_before=-float(before),
        mi_after=-float(after),
        seconds=time.perf_counter() - start_time,
    )


__all__ = [
    "FULL",
    "OFFSET_DEG",
    "OFFSET_MM",
    "MIN_VOXELS",
    "QUICK",
    "Registration",
    "Settings",
    "apply",
    "misregistration",
    "offset_of",
    "register_rigid",
    "rigid_matrix",
    "rms_displacement",
    "roi_centre",
    "rotation_angle_deg",
    "to_sitk",
]
