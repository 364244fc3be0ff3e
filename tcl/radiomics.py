"""Radiomics reference: hand-crafted features inside the mask + logistic regression per task.

This is the kind of method that earlier meningioma grading / invasion studies used, and the
artifact's difficulty gauge: on the default synthetic cohort its mean test AUC is meant to lie in
0.70–0.90 for each task (learnable, far from solved), leaving room for the deep models.

Features (one row per patient; ``extract_features``)
    per modality (t1c, flairc, adc) inside the tumour (mask label 1):
        mean, SD, CV, 10th/50th/90th percentiles, skewness, kurtosis — T1C and FLAIR-C divided
        by the median of the normal-appearing tissue around the lesion (removes scanner gain
        and most of the bias field); ADC kept in 1e-6 mm²/s;
        texture: mean in-plane gradient magnitude (per mm, same normalisation), and the grey-level
        co-occurrence matrix's contrast and homogeneity (scikit-image's ``graycomatrix`` /
        ``graycoprops``; 16 grey levels, in-plane neighbours at distance 1, both voxels in the
        tumour; see ``glcm_features``);
        interface: mean of a 2-voxel ring just outside the tumour relative to the tumour mean,
        and the mean gradient on the tumour border relative to the tumour–ring step (edge
        sharpness);
    shape: tumour volume (ml, and log), surface-to-volume ratio and sphericity of the tumour's
    surface mesh (``mesh_area_volume``), extent (volume / bounding box), slices covered, largest
    in-plane area, connected components;
    oedema (label 2): volume (ml, log1p), oedema / tumour ratio, FLAIR-C and ADC means.
    A feature that is undefined for a patient (oedema intensity without oedema, the mesh of a
    tumour too small for one) is NaN in the feature table.

Classifier (``predict_draws``)
    per draw and task (invasion, high_grade), fitted on the draw's training patients only:
    fill missing features with the training median, standardise, then L2 logistic regression
    (C = 0.1, balanced class weights, lbfgs, seeded); predict its test patients. Nothing about
    the test patients enters the fit: the imputation is part of the fitted pipeline, not a
    cohort-wide fill beforehand. Hard labels: class 1 where p > 0.5, the networks' rule (the
    argmax of a two-class softmax, tcl.train), so p = 0.5 exactly is class 0 in every row.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
from scipy import ndimage, stats
from skimage import measure
from skimage.feature import graycomatrix, graycoprops

from tcl.data.manifest import MODALITIES, PatientFiles, read_manifest
from tcl.data.patients import load_patient, roi_of_mask
from tcl.data.splits import read_splits
from tcl.parallel import default_workers, map_patients
from tcl.predictions import PREDICTION_COLUMNS, TASKS, decide
from tcl.utils import TclError, atomic_path

GLCM_LEVELS = 16
REGULARISATION_C = 0.1
RING_REFERENCE_MM = 15.0  # normal tissue band around the lesion used to normalise intensities
# Gaussian smoothing (mm) of the tumour mask before its surface is meshed. Marching cubes on the
# binary mask follows the voxel staircase, whose area exceeds the smooth surface's by about 9 %
# (a voxelised sphere of radius 10 mm: sphericity 0.92 instead of 1). One millimetre of
# smoothing removes the staircase but not the shape (the same sphere: 0.997; a cube, truly
# 0.806: 0.87, its edges rounded by the blur).
MESH_SMOOTHING_MM = 1.0


# ----------------------------------------------------------------------------- features
def _moments(values: np.ndarray, prefix: str) -> dict[str, float]:
    """Intensity statistics of a 1D sample."""
    mean = float(values.mean())
    sd = float(values.std())
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_sd": sd,
        f"{prefix}_cv": sd / abs(mean) if mean else 0.0,
        f"{prefix}_p10": float(p10),
        f"{prefix}_p50": float(p50),
        f"{prefix}_p90": float(p90),
        f"{prefix}_skew": float(stats.skew(values)) if values.size > 2 and sd > 0 else 0.0,
        f"{prefix}_kurt": float(stats.kurtosis(values)) if values.size > 3 and sd > 0 else 0.0,
    }


def grey_levels(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Quantise ``image`` [X, Y, Z] into GLCM_LEVELS grey levels for the co-occurrence matrix.

    Equal-width bins between the 1st and 99th percentiles of the values inside ``region``
    ([X, Y, Z] boolean): level round((v - p1) · (L - 1) / (p99 - p1)), clipped to 0 … L - 1, so
    a few extreme voxels do not squeeze the rest into one bin. A region of one value is all
    level 0. Returns uint8 [X, Y, Z] (every voxel quantised; the region only sets the bins).
    """
    low, high = np.percentile(image[region], [1, 99])
    scale = (GLCM_LEVELS - 1) / (high - low) if high > low else 0.0
    return np.clip(np.rint((image - low) * scale), 0, GLCM_LEVELS - 1).astype(np.uint8)


def glcm_features(levels: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Contrast and homogeneity of the grey-level co-occurrence matrix of ``region``.

    Args:
        levels: [X, Y, Z] integer grey levels in 0 … GLCM_LEVELS - 1 (``grey_levels``).
        region: [X, Y, Z] boolean; a pair counts only when both its voxels lie in it.

    What is computed: for every axial slice (the last axis) with a voxel of ``region``,
    scikit-image's ``graycomatrix`` at distance 1 and angles 0 and π/2 (the neighbours along
    Y and along X; pairs never cross slices, whose spacing is several times the in-plane one),
    symmetric (each pair counted both ways), not normalised. The counts of all slices and both
    angles are summed into one GLCM_LEVELS × GLCM_LEVELS matrix, which ``graycoprops``
    normalises to P and reads: contrast Σ P(i, j) (i - j)² and homogeneity
    Σ P(i, j) / (1 + (i - j)²) (the inverse difference moment). Returns (0, 1), the values of
    a uniform region, when ``region`` holds no such pair.
    """
    # graycomatrix has no mask: voxels outside the region get one extra grey level, and that
    # level's row and column are dropped, which leaves exactly the pairs inside the region
    outside = GLCM_LEVELS
    marked = np.where(region, levels, outside).astype(np.uint8)
    counts = np.zeros((GLCM_LEVELS, GLCM_LEVELS), dtype=np.float64)
    for z in np.flatnonzero(region.any(axis=(0, 1))):
        matrix = graycomatrix(
            marked[:, :, z], distances=[1], angles=[0.0, np.pi / 2], levels=outside + 1,
            symmetric=True, normed=False,
        )  # fmt: skip
        counts += matrix[:outside, :outside].sum(axis=(2, 3))
    if counts.sum() == 0:
        return 0.0, 1.0
    pooled = counts[:, :, None, None]  # graycoprops wants [levels, levels, distances, angles]
    contrast = float(graycoprops(pooled, "contrast")[0, 0])
    homogeneity = float(graycoprops(pooled, "homogeneity")[0, 0])
    return contrast, homogeneity


def mesh_area_volume(
    region: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[float, float]:
    """Surface area (mm²) and enclosed volume (mm³) of a binary region [X, Y, Z].

    The region is padded (so that a region touching the volume's border still gets a closed
    surface), smoothed with a Gaussian of MESH_SMOOTHING_MM and meshed by marching cubes at
    level 0.5 (scikit-image), in millimetres of ``spacing``. The volume is that of the mesh
    (divergence theorem over its triangles), so that area and volume describe one surface and
    the sphericity they give obeys the isoperimetric bound (≤ 1). Returns (nan, nan) when the
    smoothed region never reaches 0.5 (a tumour of a voxel or two has no surface to speak of).
    """
    pad = 2 + int(math.ceil(3 * MESH_SMOOTHING_MM / min(spacing)))
    smooth = ndimage.gaussian_filter(
        np.pad(region, pad).astype(np.float64), [MESH_SMOOTHING_MM / s for s in spacing]
    )
    if smooth.max() <= 0.5:
        return math.nan, math.nan
    vertices, faces, _, _ = measure.marching_cubes(smooth, 0.5, spacing=tuple(spacing))
    area = float(measure.mesh_surface_area(vertices, faces))
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum())) / 6.0
    return area, volume


def sphericity(area: float, volume: float) -> float:
    """Area of the sphere of ``volume`` divided by ``area``: 1 for a sphere, less otherwise
    (π^(1/3) (6V)^(2/3) / A)."""
    return math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area


def patient_features(paths: dict[str, str], patient_id: str = "") -> dict[str, float]:
    """Features of one patient from ``paths`` (t1c, flairc, adc, mask file paths).

    The files are read as preprocessing reads them (tcl.data.patients.load_patient): on the T1C
    grid in canonical orientation, a sequence or mask on another grid resampled onto it, so a
    cohort that ``tcl validate`` accepts is one radiomics can read. Raises TclError (naming the
    patient and file) for a file problem or a mask without tumour voxel (label 1).
    """

    files = PatientFiles(
        patient_id=patient_id,
        paths={m: paths[m] for m in MODALITIES},
        mask=paths["mask"],
        bbox=None,
    )
    problems, loaded = load_patient(files)
    if loaded is None or loaded.mask is None:
        raise TclError("; ".join(problems) or f"patient {patient_id}: cannot be read")
    mask = np.rint(loaded.mask).astype(np.int16)
    affine = loaded.affine if loaded.affine is not None else np.eye(4)
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    images = dict(zip(MODALITIES, loaded.images, strict=True))
    tumour_full = mask == 1
    if not tumour_full.any():
        raise TclError(f"patient {patient_id}: mask {paths['mask']} has no tumour voxel (label 1)")
    # crop to the lesion plus the reference band (all slices) to keep the work small
    margin = [int(math.ceil((RING_REFERENCE_MM + 4) / spacing[a])) for a in range(2)]
    x0, x1, y0, y1, _, _ = roi_of_mask(mask)  # the lesion's box: labels > 0
    box = (
        slice(max(0, x0 - margin[0]), min(mask.shape[0], x1 + margin[0])),
        slice(max(0, y0 - margin[1]), min(mask.shape[1], y1 + margin[1])),
        slice(None),
    )
    mask = mask[box]
    tumour, oedema, lesion = mask == 1, mask == 2, mask > 0
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    ring = ndimage.binary_dilation(tumour, plane, iterations=2) & ~tumour
    reference_iters = max(1, int(round(RING_REFERENCE_MM / spacing[0])))
    reference = ndimage.binary_dilation(lesion, plane, iterations=reference_iters) & ~lesion
    border = tumour & ~ndimage.binary_erosion(tumour, plane)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    tumour_ml = float(tumour.sum()) * voxel_ml
    oedema_ml = float(oedema.sum()) * voxel_ml
    area, mesh_mm3 = mesh_area_volume(tumour, spacing)
    volume_mm3 = tumour_ml * 1000.0
    tumour_box = roi_of_mask(tumour)
    bbox_mm3 = float(
        np.prod([(tumour_box[2 * a + 1] - tumour_box[2 * a]) * spacing[a] for a in range(3)])
    )
    features: dict[str, float] = {
        "tumour_ml": tumour_ml,
        "tumour_log_ml": math.log(tumour_ml),
        "surface_to_volume": area / mesh_mm3,  # per mm; NaN without a mesh
        "sphericity": sphericity(area, mesh_mm3),
        "extent": volume_mm3 / bbox_mm3,
        "slices": float(np.count_nonzero(tumour.any(axis=(0, 1)))),  # slices with tumour
        "max_slice_area_cm2": float(tumour.sum(axis=(0, 1)).max() * spacing[0] * spacing[1] / 100),
        "components": float(ndimage.label(tumour)[1]),
        "oedema_ml": oedema_ml,
        "oedema_log_ml": math.log1p(oedema_ml),
        "oedema_ratio": oedema_ml / tumour_ml,
    }
    for modality in MODALITIES:
        image = images[modality][box]
        if modality == "adc":
            norm = 1.0
        else:
            ref_values = image[reference] if reference.any() else image[~lesion]
            norm = float(np.median(ref_values)) or 1.0
        image = image / norm
        values = image[tumour]
        features.update(_moments(values, modality))
        gx, gy = np.gradient(image, spacing[0], spacing[1], axis=(0, 1))
        gradient = np.hypot(gx, gy)
        features[f"{modality}_gradient"] = float(gradient[tumour].mean())
        contrast, homogeneity = glcm_features(grey_levels(image, tumour), tumour)
        features[f"{modality}_glcm_contrast"] = contrast
        features[f"{modality}_glcm_homogeneity"] = homogeneity
        ring_mean = float(image[ring].mean()) if ring.any() else float(values.mean())
        features[f"{modality}_ring_ratio"] = ring_mean / float(values.mean() or 1.0)
        step = abs(float(values.mean()) - ring_mean)
        features[f"{modality}_edge_sharpness"] = float(gradient[border].mean()) / max(step, 1e-6)
        if modality != "t1c":
            features[f"oedema_{modality}_mean"] = (
                float(image[oedema].mean()) if oedema.any() else float(np.nan)
            )
    return features


def _features_job(item: tuple[str, dict[str, str]]) -> dict[str, float]:
    patient_id, paths = item
    return {"patient_id": patient_id, **patient_features(paths, patient_id)}


def extract_features(manifest: pd.DataFrame, workers: int | None = None) -> pd.DataFrame:
    """Hand-crafted features of every patient of ``manifest`` (absolute paths in t1c, flairc,
    adc, mask, as :func:`tcl.data.manifest.read_manifest` returns).

    Returns one row per patient_id (in manifest order) with float feature columns. Features
    undefined for a patient (e.g. oedema intensity without oedema) are NaN: they are filled in
    by the classifier with the median of each draw's training patients (``predict_draws``), never
    with a statistic of the whole cohort, which would let test patients shape the training data.
    """

    if "mask" not in manifest or manifest["mask"].isna().any():
        missing = manifest.loc[manifest.get("mask", pd.Series(np.nan)).isna(), "patient_id"]
        raise TclError(
            "radiomics needs a mask for every patient (tumour label 1); missing for "
            + ", ".join(map(str, list(missing)[:10]))
        )
    items = [
        (str(row.patient_id), {c: str(getattr(row, c)) for c in (*MODALITIES, "mask")})
        for row in manifest.itertuples(index=False)
    ]
    rows = list(
        map_patients(
            _features_job,
            items,
            workers=default_workers(len(items), workers),
            progress=False,
            desc="radiomics",
        )
    )
    table = pd.DataFrame(rows)
    numeric = table.columns.drop("patient_id")
    table[numeric] = table[numeric].astype(float)
    return table


# ----------------------------------------------------------------------------- classifier
def _model(seed: int):
    """The per-draw, per-task classifier: impute → standardise → logistic regression, each step
    fitted on the training patients alone."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        # keep_empty_features: a feature missing for every training patient becomes a constant
        # 0 (no information) instead of being dropped, so train and test keep the same columns
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(
            C=REGULARISATION_C, class_weight="balanced", max_iter=5000, random_state=seed
        ),
    )


def _labels(manifest: pd.DataFrame) -> pd.DataFrame:
    labels = manifest[["patient_id", "who_grade", "invasion"]].copy()
    labels["patient_id"] = labels["patient_id"].astype(str)
    labels["high_grade"] = (labels["who_grade"].astype(int) >= 2).astype(int)
    labels["invasion"] = labels["invasion"].astype(int)
    return labels.set_index("patient_id")


def predict_draws(
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    draws: list[dict[str, list[str]]],
    seed: int = 0,
) -> pd.DataFrame:
    """Train per draw and task on the draw's training patients; predict its test patients.

    Args:
        features: one row per patient_id (``extract_features``; any numeric columns).
        manifest: labels (patient_id, who_grade, invasion).
        draws: ``[{"train": [ids], "test": [ids]}, ...]``.

    Returns the predictions.csv table: patient_id, draw, p_invasion, p_high_grade, invasion,
    high_grade, pred_invasion, pred_high_grade (test patients of every draw).
    """
    table = features.copy()
    table["patient_id"] = table["patient_id"].astype(str)
    table = table.set_index("patient_id")
    labels = _labels(manifest)
    missing = sorted(
        set(pid for draw in draws for part in draw.values() for pid in part) - set(table.index)
    )
    if missing:
        raise TclError(f"no features for patient(s) {', '.join(missing[:10])} of the splits")
    frames = []
    for k, draw in enumerate(draws):
        train, test = list(map(str, draw["train"])), list(map(str, draw["test"]))
        out = pd.DataFrame({"patient_id": test, "draw": k})
        for task in TASKS:
            y_train = labels.loc[train, task].to_numpy()
            if len(np.unique(y_train)) < 2:
                raise TclError(f"draw {k}: training set has a single {task} class")
            model = _model(seed + k).fit(table.loc[train].to_numpy(), y_train)
            out[f"p_{task}"] = model.predict_proba(table.loc[test].to_numpy())[:, 1]
        for task in TASKS:
            out[task] = labels.loc[test, task].to_numpy()
        for task in TASKS:
            out[f"pred_{task}"] = decide(out[f"p_{task}"].to_numpy())
        frames.append(out[list(PREDICTION_COLUMNS)])
    return pd.concat(frames, ignore_index=True)


def auc_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Test AUC per draw and task (rows: draw; columns: invasion, high_grade), NaN if a
    draw's test set has one class only."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for draw, group in predictions.groupby("draw"):
        row = {"draw": draw}
        for task in TASKS:
            y = group[task].to_numpy()
            row[task] = roc_auc_score(y, group[f"p_{task}"]) if len(np.unique(y)) == 2 else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("draw")


def main(args: argparse.Namespace) -> int:
    """``python -m tcl radiomics`` with its parsed options (tcl.cli)."""

    manifest = read_manifest(args.manifest)
    draws = read_splits(args.splits)
    features = extract_features(manifest, workers=args.workers)
    predictions = predict_draws(features, manifest, draws)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "features.csv") as tmp:
        features.to_csv(tmp, index=False, float_format="%.6g")
    for k, group in predictions.groupby("draw"):
        with atomic_path(args.out / f"draw{k}" / "predictions.csv") as tmp:
            group.to_csv(tmp, index=False, float_format="%.6g")
    aucs = auc_table(predictions)
    print("radiomics test AUC")
    print(aucs.to_string(float_format=lambda v: f"{v:.3f}"))
    print("mean  " + "  ".join(f"{task} {aucs[task].mean():.3f}" for task in TASKS))
    return 0
