"""Beyond the paper: do the disentangled features do what the method claims?

The proposed network splits the fused features into an invasion-specific part G_i, a
grade-specific part G_m and a task-common part G_c (paper Sec. 2). If the split works, on the
synthetic cohort — whose labels come from a shared factor A, a grade factor G and an invasion
factor I (docs/synthetic-cohort.md §5) — G_i should carry I, G_m should carry G, and G_c should
carry A.
This module loads a trained run, embeds the test patients and measures how well each feature set
linearly predicts each latent factor (cross-validated R²).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tcl.application.saved import load_model
from tcl.training.inference import outputs_in_batches
from tcl.utils import TclError

# Output keys of the proposed network (tcl.models) and what they are in the paper's notation.
FEATURE_SETS = {
    "feat_invasion": "G_i (invasion-specific)",
    "feat_grade": "G_m (grade-specific)",
    "feat_common": "G_c (task-common)",
}
LATENT_FACTORS = {
    "latent_aggressiveness": "A (shared)",
    "latent_grade": "G (grade-specific)",
    "latent_invasion": "I (invasion-specific)",
}


def load_trained(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The final model of a run saved with ``--save-weights``, in eval mode, and its run.json."""
    run_dir = Path(run_dir)
    model, _ = load_model(run_dir, device)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise TclError(f"{run_dir} has no run.json; was it written by python -m tcl train?")
    return model, json.loads(info_path.read_text())


def embed(
    model: torch.nn.Module, volumes: np.ndarray, rows: np.ndarray, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Every [B, C] output of ``model`` (in eval mode) for the patients at ``rows`` of a cache,
    computed as the test predictions are (tcl.training.inference).

    Args:
        volumes: the cache's [N, 3, H, W, D] array.
        rows: which patients, in the order wanted.

    Returns:
        ``{output key: [len(rows), C] float32}`` for every 2-D output (features, projections,
        logits).
    """
    device = next(model.parameters()).device
    collected: dict[str, list[np.ndarray]] = {}
    for outputs in outputs_in_batches(model, volumes, rows, batch_size, device):
        for key, value in outputs.items():
            if value.ndim == 2:
                collected.setdefault(key, []).append(value.float().cpu().numpy())
    return {key: np.concatenate(parts) for key, parts in collected.items()}


def contrastive_similarities(embedding: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per patient, the cosine similarities the task-aware contrastive loss (Eq. 2–3) pulls
    apart: the task-common projection of each task against its own and the other task's
    specific projection."""

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return (a * b).sum(axis=1)

    common_i, common_m = embedding["common_invasion"], embedding["common_grade"]
    proj_i, proj_m = embedding["proj_invasion"], embedding["proj_grade"]
    return pd.DataFrame(
        {
            "sim(G_c,i, Ĝ_i) own": cosine(common_i, proj_i),
            "sim(G_c,i, Ĝ_m) other": cosine(common_i, proj_m),
            "sim(G_c,m, Ĝ_m) own": cosine(common_m, proj_m),
            "sim(G_c,m, Ĝ_i) other": cosine(common_m, proj_i),
        }
    )


def latent_predictability(
    embedding: dict[str, np.ndarray], latents: pd.DataFrame, folds: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Cross-validated R² of a ridge regression from each feature set to each latent factor.

    Args:
        embedding: output of :func:`embed` (must hold the keys of ``FEATURE_SETS``).
        latents: one row per embedded patient (same order) with the ``latent_*`` columns.

    Returns:
        Rows = feature sets, columns = latent factors, values = out-of-fold R².
    """
    cv = KFold(folds, shuffle=True, random_state=seed)
    table = {}
    for key, label in FEATURE_SETS.items():
        if key not in embedding:
            continue
        features = embedding[key]
        row = {}
        for column, factor in LATENT_FACTORS.items():
            target = latents[column].to_numpy(dtype=float)
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
            predicted = cross_val_predict(model, features, target, cv=cv)
            residual = ((target - predicted) ** 2).sum()
            row[factor] = 1.0 - residual / ((target - target.mean()) ** 2).sum()
        table[label] = row
    return pd.DataFrame(table).T


def pca_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, C] features → [N, 2] first two principal components of the standardised features."""
    return PCA(n_components=2, random_state=seed).fit_transform(
        StandardScaler().fit_transform(features)
    )
