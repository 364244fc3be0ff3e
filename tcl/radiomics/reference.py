"""Radiomics reference: hand-crafted features inside the mask + logistic regression per task.

This is the kind of method that earlier meningioma grading / invasion studies used, and the
classical reference every network is read against (its test AUCs: the README's generated
results block and notebook 03).

Features (one row per patient; ``extract_features``)
    Where the Image Biomarker Standardisation Initiative defines a feature, it is computed as
    the IBSI defines it (tcl.radiomics.ibsi, checked by ``python -m tcl ibsi`` on the IBSI phantom)
    and named by its IBSI tag; docs/baselines.md §8 argues the settings.
    per modality (t1c, flairc, adc) inside the tumour (mask label 1), prefixed ``<modality>_``:
        IBSI intensity statistics stat_mean, stat_var, stat_cov, stat_p10, stat_median,
        stat_p90, stat_skew, stat_kurt; T1C and FLAIR-C divided by the median of the
        normal-appearing tissue around the lesion (ours: removes scanner gain and most of the
        bias field), ADC kept in 1e-6 mm²/s and re-segmented to ADC_RANGE;
        IBSI co-occurrence matrix, 2.5D merged (the in-plane directions of every slice in one
        matrix; the 6 mm slices are too far apart for 3D neighbours): cm_contrast_2_5D_comb,
        cm_inv_diff_mom_2_5D_comb, cm_joint_entr_2_5D_comb, cm_corr_2_5D_comb; grey levels
        by a fixed bin number (FIXED_BINS) for T1C and FLAIR-C, whose units are arbitrary, and
        by a fixed bin size (ADC_BIN_WIDTH from the bottom of ADC_RANGE) for the quantitative
        ADC map;
        ours: the mean in-plane gradient magnitude (per mm); the interface: mean of a 2-voxel
        ring just outside the tumour relative to the tumour mean, and the mean gradient on
        the tumour border relative to the tumour–ring step (edge sharpness);
    shape: IBSI morphology of the tumour mask (mesh by marching cubes, unsmoothed):
    morph_volume (mesh, mm³), morph_vol_approx (voxel counting, mm³), morph_av,
    morph_sphericity, morph_vol_dens_aabb; ours: the log of the voxel-counted volume in ml,
    slices covered, largest in-plane area, connected components;
    oedema (label 2, ours): volume (ml, log1p), oedema / tumour ratio, FLAIR-C and ADC means.
    A feature that is undefined for a patient (oedema intensity without oedema, the texture
    of a tumour with no two neighbouring voxels) is NaN in the feature table.

Classifier (``predict_draws``)
    per draw and task (invasion, high_grade), fitted on the draw's training patients only:
    fill missing features with the training median, standardise, then L2 logistic regression
    (balanced class weights, lbfgs, seeded) whose strength C is chosen from REGULARISATION_GRID
    by a stratified 5-fold cross-validation of ROC AUC within the training patients; predict
    its test patients. Nothing about the test patients enters the fit: the imputation is part
    of the fitted pipeline, not a cohort-wide fill beforehand. Hard labels: class 1 where
    p > 0.5, the networks' rule (the argmax of a two-class softmax, tcl.training.train), so p = 0.5
    exactly is class 0 in every row.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from tcl.data.manifest import MODALITIES, PatientFiles, read_manifest
from tcl.data.patients import load_patient, roi_of_mask
from tcl.data.splits import read_splits
from tcl.parallel import default_workers, map_patients
from tcl.radiomics import ibsi
from tcl.tasks import PREDICTION_COLUMNS, TASKS, decide
from tcl.training.runs import PREDICTIONS, draw_dir
from tcl.utils import TclError, atomic_path

# C = 1 / L2 strength, 0.001 … 10 in 9 steps; the inner cross-validation picks one per draw
# and task (0.1, the value fixed before, lies in the middle)
REGULARISATION_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))
INNER_FOLDS = 5  # fewer where a class has fewer training patients
DEFAULT_C = 0.1  # where no cross-validation is possible
RING_REFERENCE_MM = 15.0  # normal tissue band around the lesion used to normalise intensities
# Discretisation for the co-occurrence matrix (IBSI section 2.7, docs/baselines.md §8): T1C and
# FLAIR-C in arbitrary units by a fixed bin number over the tumour's range; ADC, a
# quantitative map in 1e-6 mm²/s, by a fixed bin size from the bottom of a fixed range, so a
# grey level means the same diffusivity in every patient. Above 3,500 lies nothing a tissue
# can do (free water at 37 °C: about 3,000), so those voxels leave ADC's intensity mask.
FIXED_BINS = 32
ADC_RANGE = (0.0, 3500.0)
ADC_BIN_WIDTH = 50.0
TEXTURE = ("cm_contrast", "cm_inv_diff_mom", "cm_joint_entr", "cm_corr")
TEXTURE_AGGREGATION = "2_5D_comb"
STATISTICS = ("mean", "var", "cov", "p10", "median", "p90", "skew", "kurt")
MORPHOLOGY = (
    "morph_volume",
    "morph_vol_approx",
    "morph_av",
    "morph_sphericity",
    "morph_vol_dens_aabb",
)


# ----------------------------------------------------------------------------- features
def texture(image: np.ndarray, region: np.ndarray, modality: str) -> dict[str, float]:
    """The IBSI co-occurrence features of TEXTURE (2.5D merged) of ``region`` [X, Y, Z] in
    ``image`` [X, Y, Z], discretised as FIXED_BINS / ADC_BIN_WIDTH say; NaN where the region
    holds no pair of in-plane neighbours."""
    tags = [f"{name}_{TEXTURE_AGGREGATION}" for name in TEXTURE]
    if not region.any():
        return dict.fromkeys(tags, math.nan)
    if modality == "adc":
        levels = ibsi.fixed_bin_size(image[region], ADC_BIN_WIDTH, ADC_RANGE[0])
        n_levels = int(math.ceil((ADC_RANGE[1] - ADC_RANGE[0]) / ADC_BIN_WIDTH))
    else:
        levels, n_levels = ibsi.fixed_bin_number(image[region], FIXED_BINS), FIXED_BINS
    grid = np.ones(image.shape, dtype=np.int64)
    grid[region] = np.minimum(levels, n_levels)
    found = ibsi.cooccurrence(grid, region, n_levels, (TEXTURE_AGGREGATION,))
    return {tag: found.get(tag, math.nan) for tag in tags}


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
    shape = ibsi.morphology(tumour, tumour.astype(np.float64), spacing, False)
    features: dict[str, float] = {name: shape[name] for name in MORPHOLOGY}
    features |= {
        "tumour_log_ml": math.log(tumour_ml),
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
            low, high = ADC_RANGE  # IBSI re-segmentation of the intensity mask
            region = tumour & (image >= low) & (image <= high)
        else:
            ref_values = image[reference] if reference.any() else image[~lesion]
            norm = float(np.median(ref_values)) or 1.0
            region = tumour
        image = image / norm
        values = image[region] if region.any() else image[tumour]
        stats = ibsi.statistics(values)
        features |= {f"{modality}_stat_{name}": stats[f"stat_{name}"] for name in STATISTICS}
        features |= {
            f"{modality}_{name}": v for name, v in texture(image, region, modality).items()
        }
        gx, gy = np.gradient(image, spacing[0], spacing[1], axis=(0, 1))
        gradient = np.hypot(gx, gy)
        features[f"{modality}_gradient"] = float(gradient[tumour].mean())
        tumour_mean = float(image[tumour].mean())
        ring_mean = float(image[ring].mean()) if ring.any() else tumour_mean
        features[f"{modality}_ring_ratio"] = ring_mean / (tumour_mean or 1.0)
        step = abs(tumour_mean - ring_mean)
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
def _model(seed: int, folds: int = INNER_FOLDS) -> GridSearchCV | Pipeline:
    """The per-draw, per-task classifier: impute → standardise → logistic regression, its C
    chosen by an inner cross-validation in ``folds`` stratified folds, every fold refitting
    all three steps; then all three are refitted on the training patients alone at the chosen
    C. Below 2 folds (a class with a single training patient) C is DEFAULT_C."""
    pipeline = make_pipeline(
        # keep_empty_features: a feature missing for every training patient becomes a constant
        # 0 (no information) instead of being dropped, so train and test keep the same columns
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=DEFAULT_C, class_weight="balanced", max_iter=5000, random_state=seed),
    )
    if folds < 2:
        return pipeline
    return GridSearchCV(
        pipeline,
        {"logisticregression__C": list(REGULARISATION_GRID)},
        scoring="roc_auc",
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
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
            folds = min(INNER_FOLDS, int(np.bincount(y_train).min()))
            model = _model(seed + k, folds).fit(table.loc[train].to_numpy(), y_train)
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
        with atomic_path(draw_dir(args.out, k) / PREDICTIONS) as tmp:
            group.to_csv(tmp, index=False, float_format="%.6g")
    aucs = auc_table(predictions)
    print("radiomics test AUC")
    print(aucs.to_string(float_format=lambda v: f"{v:.3f}"))
    print("mean  " + "  ".join(f"{task} {aucs[task].mean():.3f}" for task in TASKS))
    return 0
