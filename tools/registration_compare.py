"""Compare rigid registration libraries on displaced synthetic patients and the real patient.

    # in the project's environment: synthetic patients and their displaced series
    python tools/registration_compare.py make-cases /tmp/regcases --patients 6
    # in an environment with numpy, nibabel and the library (PYTHONPATH=. for tcl.data)
    python tools/registration_compare.py run /tmp/regcases --library sitk|dipy|ants \\
        [--real ../shared/data/tcga-fg-6692]
    # the figure of docs/your-cohort.md ("The real patient"): T1C, FLAIR through its header,
    # FLAIR registered
    python tools/registration_compare.py figure ../shared/data/tcga-fg-6692

``make-cases`` renders synthetic patients at 1 mm and acquires them in 6 mm slices (5 mm thick,
the default cohort's geometry); FLAIR-C and ADC are moved by random rigid transforms of up to
15° and 20 mm, half of them in the header (the affine changes, the voxels do not) and half in
the data (the patient moved: the fine volume is resampled, then sliced; the series keeps only
the slices whose middle lies in the old field of view). The truth of each case is the transform
from T1C's world to where the anatomy now lies in the moved series (for ADC it includes the
cohort's own 0–2 mm shift).

``run`` registers every case with one library and reports, per case and in summary, the RMS
distance over the tumour and oedema voxels between the recovered and the true transform, the
error of the rotation, and the seconds; with ``--real`` also the real patient's FLAIR onto its
T1C (no truth there: the mutual information before and after, and where the lesion lands).
docs/your-cohort.md ("Accuracy and time", "The real patient") quotes what this printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from tcl.data.nifti import Volume, load_volume
from tcl.data.registration import apply, rms_displacement, rotation_angle_deg

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- cases
def random_rigid(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """A rotation of up to 15° about a random axis through ``centre`` and a shift of up to
    20 mm in a random direction."""
    angle = rng.uniform(0, 15)
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    theta = math.radians(angle)
    rotation = np.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * k @ k
    shift = rng.standard_normal(3)
    shift *= rng.uniform(0, 20) / np.linalg.norm(shift)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + shift
    return matrix


def move_content(volume: Volume, displacement: np.ndarray) -> tuple[Volume, np.ndarray]:
    """The volume resampled so that its content moves by ``displacement`` (world), same grid:
    what lay at x now lies at ``displacement`` x. Also returns where the new content is known
    (it came from inside the old field of view) as a float mask."""
    from scipy.ndimage import map_coordinates

    index = np.indices(volume.data.shape).reshape(3, -1).T.astype(float)
    world = apply(volume.affine, index)
    source = apply(np.linalg.inv(volume.affine), apply(np.linalg.inv(displacement), world)).T
    data = map_coordinates(volume.data, source, order=1, mode="constant", cval=0.0)
    known = map_coordinates(np.ones(volume.data.shape, np.float32), source, order=1, cval=0.0)
    shape = volume.data.shape
    return Volume(data.reshape(shape).astype(np.float32), volume.affine), known.reshape(shape)


def known_slices(volume: Volume, known: Volume) -> Volume:
    """The slices of ``volume`` whose middle (the central 70 % of the field of view in plane,
    where the head is) is known: a series
    whose slab covers less, rather than one that shows unknown anatomy as black. (A patient who
    moves by 20 mm along the head's axis takes part of the anatomy out of the slab; what the
    scanner then sees is neck or air, never a black band across the head.)"""
    nx, ny = known.data.shape[:2]
    middle = known.data[int(0.15 * nx) : int(0.85 * nx), int(0.15 * ny) : int(0.85 * ny)]
    full = (middle >= 0.999).all(axis=(0, 1))
    keep = np.flatnonzero(full)
    lo, hi = int(keep.min()), int(keep.max()) + 1
    affine = volume.affine.copy()
    affine[:3, 3] += volume.affine[:3, 2] * lo
    return Volume(np.ascontiguousarray(volume.data[:, :, lo:hi]), affine)


def acquire_slices(volume: Volume, spacing_mm: float = 6.0, thickness_mm: float = 5.0) -> Volume:
    """Thick axial slices of a finely sampled volume, as a 2D scanner acquires them: each slice
    the mean over ``thickness_mm`` of the fine slices, one every ``spacing_mm``."""
    dz = float(np.linalg.norm(volume.affine[:3, 2]))
    step, slab = int(round(spacing_mm / dz)), max(1, int(round(thickness_mm / dz)))
    n = (volume.data.shape[2] - slab) // step + 1
    data = np.stack(
        [volume.data[:, :, k * step : k * step + slab].mean(axis=2) for k in range(n)], axis=2
    )
    affine = volume.affine.copy()
    affine[:3, 2] *= step
    affine[:3, 3] += volume.affine[:3, 2] * (slab - 1) / 2.0  # the slab's centre
    return Volume(data.astype(np.float32), affine)


def make_cases(
    out: Path, patients: int, seed: int, shape: tuple[int, int, int] = (256, 256, 144)
) -> list[dict]:
    """Render ``patients`` synthetic patients finely (``shape``: 1 mm isotropic by default) and
    acquire them in 6 mm slices: T1C as it is, FLAIR-C and ADC after a random rigid movement of
    the patient (half the cases: the series' content moves, resampled finely before slicing)
    or of the series' header (the other half: the affine changes, the voxels do not).

    The truth of each case is the transform from T1C's world to where the anatomy lies in the
    moved series (for ADC it includes the cohort's own 0–2 mm EPI-like shift). Writes the
    series and ``cases.json`` into ``out``; returns the cases.
    """
    import pandas as pd

    from tcl.synthetic.cohort import synthesize_cohort

    manifest = pd.read_csv(
        synthesize_cohort(out / "fine", max(3, patients), seed=seed, shape=shape, progress=False)
    ).head(patients)
    rng = np.random.default_rng(seed)
    cases = []
    (out / "cases").mkdir(parents=True, exist_ok=True)
    for k, row in manifest.iterrows():
        pid = row["patient_id"]
        mask = load_volume(out / "fine" / row["mask"], canonical=False)
        roi = apply(mask.affine, np.argwhere(mask.data > 0).astype(float))
        centre = roi.mean(axis=0)
        t1c = acquire_slices(load_volume(out / "fine" / row["t1c"], canonical=False))
        fixed = out / "cases" / f"{pid}_t1c.nii.gz"
        nib.save(nib.Nifti1Image(t1c.data, t1c.affine), str(fixed))
        roi_file = out / "cases" / f"{pid}_roi.npy"
        np.save(roi_file, roi[:: max(1, len(roi) // 4000)])
        for j, sequence in enumerate(("flairc", "adc")):
            volume = load_volume(out / "fine" / row[sequence], canonical=False)
            before = np.eye(4)
            if sequence == "adc":  # the cohort's own EPI-like shift of the ADC map
                before[:2, 3] = [row["latent_adc_shift_x_mm"], row["latent_adc_shift_y_mm"]]
            displacement = random_rigid(rng, centre)
            mode = "header" if (k + j) % 2 == 0 else "data"
            if mode == "header":
                moved = acquire_slices(volume)
                moved = Volume(moved.data, displacement @ moved.affine)
            else:
                content, known = move_content(volume, displacement)
                moved = known_slices(
                    acquire_slices(content), acquire_slices(Volume(known, volume.affine))
                )
            path = out / "cases" / f"{pid}_{sequence}_{mode}.nii.gz"
            nib.save(nib.Nifti1Image(moved.data, moved.affine), str(path))
            cases.append(
                {
                    "patient": pid,
                    "sequence": sequence,
                    "mode": mode,
                    "fixed": str(fixed),
                    "moving": str(path),
                    "roi": str(roi_file),
                    "truth": (displacement @ before).tolist(),
                    "displacement_deg": rotation_angle_deg(displacement),
                    "displacement_mm": float(
                        np.linalg.norm(apply(displacement, centre[None])[0] - centre)
                    ),
                }
            )
    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    return cases


# ----------------------------------------------------------------------------- libraries
def register_sitk(fixed: Volume, moving: Volume) -> np.ndarray:
    from tcl.data.registration import register_rigid

    return register_rigid(fixed, moving).matrix


def register_dipy(fixed: Volume, moving: Volume) -> np.ndarray:
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.transforms import RigidTransform3D

    start = transform_centers_of_mass(fixed.data, fixed.affine, moving.data, moving.affine)
    method = AffineRegistration(
        metric=MutualInformationMetric(32, sampling_proportion=0.1),
        level_iters=[200, 100, 50],
        sigmas=[2.0, 1.0, 0.0],
        factors=[4, 2, 1],
        verbosity=0,
    )
    result = method.optimize(
        fixed.data, moving.data, RigidTransform3D(), None, fixed.affine, moving.affine,
        starting_affine=start.affine,
    )  # fmt: skip
    return np.asarray(result.affine)


def register_ants(fixed: Volume, moving: Volume) -> np.ndarray:
    import ants

    def image(volume: Volume):
        lps = LPS @ volume.affine
        spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
        return ants.from_numpy(
            volume.data.astype(np.float32),
            origin=[float(v) for v in lps[:3, 3]],
            spacing=[float(s) for s in spacing],
            direction=lps[:3, :3] / spacing,
        )

    result = ants.registration(image(fixed), image(moving), type_of_transform="Rigid")
    transform = ants.read_transform(result["fwdtransforms"][0])
    parameters = np.asarray(transform.parameters)
    centre = np.asarray(transform.fixed_parameters)
    matrix = np.eye(4)
    matrix[:3, :3] = parameters[:9].reshape(3, 3)
    matrix[:3, 3] = parameters[9:] + centre - matrix[:3, :3] @ centre
    return LPS @ matrix @ LPS


LIBRARIES = {"sitk": register_sitk, "dipy": register_dipy, "ants": register_ants}


def run(cases_dir: Path, library: str, real: Path | None) -> None:
    register = LIBRARIES[library]
    cases = json.loads((cases_dir / "cases.json").read_text())
    rows = []
    for case in cases:
        fixed = load_volume(case["fixed"], canonical=False)
        moving = load_volume(case["moving"], canonical=False)
        points = np.load(case["roi"])
        start = time.perf_counter()
        estimate = register(fixed, moving)
        seconds = time.perf_counter() - start
        truth = np.asarray(case["truth"])
        error_mm = rms_displacement(estimate, truth, points)
        error_deg = rotation_angle_deg(np.linalg.inv(estimate) @ truth)
        rows.append((error_mm, error_deg, seconds))
        print(
            f"{case['patient']} {case['sequence']:<6} {case['mode']:<6} moved "
            f"{case['displacement_mm']:5.1f} mm {case['displacement_deg']:4.1f}°: "
            f"error {error_mm:5.2f} mm {error_deg:4.2f}°, {seconds:4.1f} s",
            flush=True,
        )
    errors = np.array(rows)
    within = int(((errors[:, 0] <= 1) & (errors[:, 1] <= 1)).sum())
    print(
        f"{library}: {len(rows)} cases; RMS error over the ROI mean {errors[:, 0].mean():.2f} mm, "
        f"max {errors[:, 0].max():.2f} mm; rotation error max {errors[:, 1].max():.2f}°; "
        f"within 1 mm and 1°: {within}/{len(rows)}; "
        f"seconds per series mean {errors[:, 2].mean():.1f}, max {errors[:, 2].max():.1f}"
    )
    if real is not None:
        fixed = load_volume(real / "t1c.nii.gz", canonical=False)
        moving = load_volume(real / "flair.nii.gz", canonical=False)
        start = time.perf_counter()
        estimate = register(fixed, moving)
        seconds = time.perf_counter() - start
        # the box centre of docs/your-cohort.md, "The check"
        lesion = apply(fixed.affine, np.array([[85.0, 157.5, 17.0]]))[0]
        shift = np.linalg.norm(apply(estimate, lesion[None])[0] - lesion)
        print(
            f"{library}: real patient FLAIR onto T1C in {seconds:.1f} s; moves the lesion box "
            f"centre by {shift:.1f} mm, rotation {rotation_angle_deg(estimate):.1f}°; matrix "
            f"{np.round(estimate, 3).tolist()}"
        )


def figure(real: Path, out: Path) -> None:
    """T1C, FLAIR through its header and FLAIR registered, at the lesion's middle slice."""
    from tcl.data.nifti import resample_to_grid
    from tcl.data.registration import register_rigid
    from tcl.evaluation.plots import save_figure

    fixed = load_volume(real / "t1c.nii.gz", canonical=False)
    moving = load_volume(real / "flair.nii.gz", canonical=False)
    found = register_rigid(fixed, moving)
    placed = {
        name: resample_to_grid(
            Volume(moving.data, np.linalg.inv(matrix) @ moving.affine),
            fixed.data.shape, fixed.affine, order=1,
        ).data
        for name, matrix in (("before", np.eye(4)), ("after", found.matrix))
    }  # fmt: skip
    from tcl.evaluation.plots import registration_figure

    fig = registration_figure(
        fixed.data, placed["before"], placed["after"], z=17, box=(55, 115, 125, 190),
        title="TCGA-FG-6692: T1C slice 17 (stored grid), lesion box in orange",
    )  # fmt: skip
    for path in save_figure(fig, out.parent, out.stem):
        print(f"wrote {path}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    make = verbs.add_parser("make-cases")
    make.add_argument("out", type=Path)
    make.add_argument("--patients", type=int, default=6)
    make.add_argument("--seed", type=int, default=7)
    go = verbs.add_parser("run")
    go.add_argument("cases", type=Path)
    go.add_argument("--library", choices=sorted(LIBRARIES), default="sitk")
    go.add_argument("--real", type=Path, default=None)
    draw = verbs.add_parser("figure")
    draw.add_argument("real", type=Path, help="the real patient's folder")
    draw.add_argument("--out", type=Path, default=Path("figures/registration_real_patient.png"))
    args = parser.parse_args(argv)
    if args.verb == "figure":
        figure(args.real, args.out)
    elif args.verb == "make-cases":
        cases = make_cases(args.out, args.patients, args.seed)
        print(f"wrote {len(cases)} cases to {args.out}")
    else:
        run(args.cases, args.library, args.real)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
