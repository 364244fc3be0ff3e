"""What does the network look at? Integrated-gradients maps, in each patient's own voxel grid.

Method: integrated gradients (Sundararajan, Taly & Yan, ICML 2017) of each task's log-odds
``logit[1] - logit[0]`` (the softmax's class-1 log-odds), from a baseline of zeros to the
preprocessed input, with a ``steps``-point midpoint rule. It is Captum's
``IntegratedGradients(method="riemann_middle")`` (tests/application/test_explain.py checks the maps
against it), written here because one forward pass per path point serves both tasks and the
average over models, and the log-odds for the completeness gap come with it; Captum needs a
forward and a backward per task, and took 1.03–1.16× our time on the quick profile's input.
Why this method and not Grad-CAM:

- resolution: Grad-CAM lives on the last trunk stage, 2×2×4 voxels for the ``quick`` input and
  4×4×8 for the paper's; a sign such as a 3 mm finger or a CSF cleft cannot be located on it.
  Integrated gradients attribute to every input voxel;
- it is checkable: the attributions of a patient sum to the log-odds at the input minus the
  log-odds at the baseline (completeness; :func:`integrated_gradients` reports the gap, which
  shrinks with ``steps``), so a map says how much of the decision each voxel carries;
- the baseline means something: the inputs are z-scored over the foreground with the background
  at 0, so the all-zero input is "every voxel at its patient's mean", a featureless tumour.

The three channels' attributions are summed per voxel: a map holds the evidence a voxel gives
for class 1 (invasion / high grade) when positive, against it when negative. Maps are then
taken back through the preprocessing (resize undone by the same trilinear rule, padding
removed, crop put back, zero outside the crop box that the network saw) and reoriented from the
canonical RAS+ grid to the T1C file's stored grid, and written with that file's affine. The
resize rescales values by the ratio of voxel counts, so a map's sum is kept: it still sums
(approximately) to the log-odds explained.

On the synthetic cohort, tcl.synthetic.pointing scores these maps against the signs the
generator drew (the pointing game).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from tcl.data.manifest import MODALITIES, PatientFiles
from tcl.data.nifti import save_volume
from tcl.data.patients import load_patient
from tcl.data.preprocess import PreparedPatient
from tcl.data.transforms import InputGeometry, to_canonical, to_stored
from tcl.tasks import PAPER_TASK, TASKS
from tcl.utils import TclError, atomic_path

DEFAULT_IG_STEPS = 32
# What notebook 07 explains and scores under each profile: integrated-gradients steps, and test
# patients scored per class (0: all). On the 2-core CPU one quick map pair costs about 0.85 s at
# 8 steps (completeness gap about 3 %; 1 % at 16 steps for twice the time), so the quick profile
# scores a class-balanced part of the test set; the paper profile, on a GPU, scores all of it.
PROFILE_SETTINGS: dict[str, dict[str, int]] = {
    "paper": {"steps": 32, "per_class": 0},
    "quick": {"steps": 8, "per_class": 40},
    "smoke": {"steps": 4, "per_class": 2},
}
METHOD = "integrated gradients of the class-1 log-odds, zero baseline, midpoint rule"


# ---------------------------------------------------------------------------- attribution


@dataclass
class Attribution:
    """Integrated gradients of one input for both tasks.

    ``maps[task]`` is [3, H, W, D] float32 (per channel); ``log_odds[task]`` the model's log-odds
    at the input and ``baseline_log_odds[task]`` at the zero input; ``gap[task]`` the relative
    completeness gap |sum(map) - (log_odds - baseline)| / |log_odds - baseline|.
    """

    maps: dict[str, np.ndarray]
    log_odds: dict[str, float]
    baseline_log_odds: dict[str, float]
    gap: dict[str, float]


def _log_odds(outputs: dict[str, torch.Tensor], task: str) -> torch.Tensor:
    logits = outputs[PAPER_TASK[task]].float()
    return logits[:, 1] - logits[:, 0]


def integrated_gradients(
    models: Sequence[torch.nn.Module],
    volume: np.ndarray,
    device: torch.device,
    steps: int = DEFAULT_IG_STEPS,
    batch_size: int = 8,
) -> Attribution:
    """Integrated gradients of both tasks' log-odds for one input, averaged over ``models``.

    Args:
        volume: [3, H, W, D] network input (float16 or float32, as preprocessed).
        steps: points of the midpoint rule along the straight path from 0 to the input.
        batch_size: path points per forward/backward pass (memory, not results).
    """
    if steps < 1:
        raise TclError(f"--ig-steps must be >= 1 (got {steps})")
    x = torch.from_numpy(np.asarray(volume, dtype=np.float32)).to(device)[None]
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    gradient_sums = {task: torch.zeros_like(x[0]) for task in TASKS}
    log_odds = {task: 0.0 for task in TASKS}
    baseline = {task: 0.0 for task in TASKS}
    for model in models:
        model.eval()
        # gradients with respect to the input only: weight gradients would double the backward
        wanted = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        with torch.no_grad():
            ends = model(torch.cat([torch.zeros_like(x), x]))
        for task in TASKS:
            values = _log_odds(ends, task)
            baseline[task] += float(values[0]) / len(models)
            log_odds[task] += float(values[1]) / len(models)
        for chunk in alphas.split(batch_size):
            path = (chunk.to(device).view(-1, 1, 1, 1, 1) * x).requires_grad_(True)
            outputs = model(path)
            for k, task in enumerate(TASKS):
                (gradient,) = torch.autograd.grad(
                    _log_odds(outputs, task).sum(), path, retain_graph=k + 1 < len(TASKS)
                )
                gradient_sums[task] += gradient.sum(dim=0) / len(models)
        for parameter, flag in zip(model.parameters(), wanted, strict=True):
            parameter.requires_grad_(flag)
    maps, gap = {}, {}
    for task in TASKS:
        attribution = (x[0] * gradient_sums[task] / steps).cpu().numpy().astype(np.float32)
        maps[task] = attribution
        explained = log_odds[task] - baseline[task]
        gap[task] = abs(float(attribution.sum(dtype=np.float64)) - explained) / max(
            abs(explained), 1e-6
        )
    return Attribution(maps, log_odds, baseline, gap)


# ---------------------------------------------------------------------------- back to the patient


# ---------------------------------------------------------------------------- one patient's maps


@dataclass
class Explanation:
    """One patient's maps: per task the canonical [X, Y, Z] map (channels summed) and the
    per-channel share of its positive attribution; the attribution's facts."""

    patient_id: str
    canonical: dict[str, np.ndarray]
    channel_share: dict[str, dict[str, float]]
    attribution: Attribution


def explain_patient(
    models: Sequence[torch.nn.Module],
    patient: PreparedPatient,
    device: torch.device,
    steps: int = DEFAULT_IG_STEPS,
    batch_size: int = 8,
) -> Explanation:
    """Integrated gradients of a prepared patient, mapped back to its canonical grid."""
    attribution = integrated_gradients(models, patient.volume, device, steps, batch_size)
    canonical, channel_share = {}, {}
    for task, per_channel in attribution.maps.items():
        canonical[task] = to_canonical(per_channel.sum(axis=0), patient.geometry)
        positive = np.clip(per_channel, 0, None).sum(axis=(1, 2, 3))
        total = float(positive.sum()) or 1.0
        channel_share[task] = {
            m: float(v) / total for m, v in zip(MODALITIES, positive, strict=True)
        }
    return Explanation(patient.patient_id, canonical, channel_share, attribution)


def largest_slice(region: np.ndarray) -> int:
    """The axial slice (last axis) with the most voxels of ``region`` [X, Y, Z]."""
    return int(np.argmax(region.reshape(-1, region.shape[2]).sum(axis=0)))


def overview_slice(
    maps: dict[str, np.ndarray],
    tumour: np.ndarray | None,
    roi: tuple[int, int, int, int, int, int] | None = None,
) -> int:
    """The axial slice an overview shows: where the tumour is largest; without a mask (a
    bounding box only, whose slices all have the same area), the slice of the box where the
    maps are strongest. ``roi`` (x0, x1, y0, y1, z0, z1) is canonical, end-exclusive."""
    if tumour is not None and tumour.any():
        return largest_slice(tumour)
    strength = np.abs(maps[TASKS[0]]) + np.abs(maps[TASKS[1]])
    z0, z1 = (0, strength.shape[2]) if roi is None else (roi[4], roi[5])
    return z0 + largest_slice(strength[:, :, z0:z1])


def overview_figure(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    geometry: InputGeometry,
    tumour: np.ndarray | None,
    title: str,
    roi: tuple[int, int, int, int, int, int] | None = None,
) -> Any:  # a matplotlib Figure (matplotlib is imported when drawing)
    """The three sequences at :func:`overview_slice`, plain and with each task's map overlaid
    (red: evidence for class 1, blue: against), cropped to the box.

    Args:
        images: [3, X, Y, Z] canonical raw images; ``maps`` task → [X, Y, Z] canonical map.
        tumour: [X, Y, Z] boolean tumour region (mask > 0), or None (a bounding box only).
        roi: the canonical ROI box, whose slices the overview keeps to without a mask.
    """
    # matplotlib (0.48 s) only when an overview is drawn: predict without --explain never is
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    z = overview_slice(maps, tumour, roi)
    x0, x1, y0, y1 = geometry.box
    grow = max(x1 - x0, y1 - y0) // 4
    xs = slice(max(0, x0 - grow), min(images.shape[1], x1 + grow))
    ys = slice(max(0, y0 - grow), min(images.shape[2], y1 + grow))
    rows = ("image", *TASKS)
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 9), squeeze=False)
    # one colour scale per task (its map is the same under the three sequences)
    scale = {
        task: float(np.percentile(np.abs(maps[task][xs, ys, z]), 99.5)) or 1.0 for task in TASKS
    }
    for col, modality in enumerate(MODALITIES):
        picture = images[col][xs, ys, z].T  # rows = y (posterior → anterior)
        low, high = np.percentile(picture, (1, 99))
        for row, what in enumerate(rows):
            ax = axes[row][col]
            ax.imshow(picture, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6))
            if what != "image":
                layer = np.clip(maps[what][xs, ys, z].T / scale[what], -1, 1)
                rgba = plt.get_cmap("RdBu_r")(0.5 + 0.5 * layer)
                rgba[..., 3] = 0.8 * np.abs(layer)
                ax.imshow(rgba, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(modality)
            if col == 0:
                ax.set_ylabel(what.replace("_", " "))
    fig.suptitle(f"{title} (axial slice {z}; patient right on the right, anterior up)")
    fig.tight_layout()
    return fig


def write_explanation(
    folder: Path,
    explanation: Explanation,
    patient: PreparedPatient,
    files: PatientFiles,
    title: str,
) -> None:
    """``folder``/{invasion,high_grade}.nii.gz in the T1C file's stored grid and affine, and
    ``folder``/overview.png (each file written atomically)."""
    import matplotlib.pyplot as plt  # as in overview_figure: only when maps are written

    geometry = patient.geometry
    folder.mkdir(parents=True, exist_ok=True)
    for task, canonical in explanation.canonical.items():
        save_volume(
            folder / f"{task}.nii.gz", to_stored(canonical, geometry.affine), geometry.affine
        )
    # Read again rather than kept since preparation: the full-resolution images of every
    # patient held for the whole run would take about 25 MB a patient (4 × 256×256×24 fp32).
    problems, loaded = load_patient(files)
    if loaded is None:  # it was read a moment ago; a file changed since
        raise TclError("; ".join(problems) or f"patient {files.patient_id}: cannot be re-read")
    tumour = None if loaded.mask is None else loaded.mask > 0  # on the T1C grid
    fig = overview_figure(
        loaded.images, explanation.canonical, geometry, tumour, title, roi=loaded.roi
    )
    with atomic_path(folder / "overview.png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def path_batch(models: Sequence[torch.nn.Module], device: torch.device) -> int:
    """Path points per pass: 8, or 1 for a paper-width network on the CPU, whose activations
    and gradients for 8 inputs of 3×128×128×24 would not fit a 24 GB machine."""
    parameters = max(sum(p.numel() for p in model.parameters()) for model in models)
    return 1 if device.type == "cpu" and parameters > 20_000_000 else 8


def explain_patients(
    models: Sequence[torch.nn.Module],
    prepared: Sequence[PreparedPatient],
    patients: Sequence[PatientFiles],
    predictions: pd.DataFrame,
    out: Path,
    device: torch.device,
    steps: int = DEFAULT_IG_STEPS,
    progress: bool = True,
) -> dict[str, Any]:
    """Maps of every prepared patient into ``out``/<patient_id>/; returns a summary."""
    if out.exists() and not out.is_dir():
        raise TclError(f"--explain {out} exists and is not a folder")
    files_of = {f.patient_id: f for f in patients}
    rows = predictions.set_index("patient_id")
    gaps: dict[str, list[float]] = {task: [] for task in TASKS}
    batch = path_batch(models, device)
    for patient in tqdm(prepared, desc="explain", unit="patient", disable=not progress):
        explanation = explain_patient(models, patient, device, steps, batch)
        row = rows.loc[patient.patient_id]
        title = (
            f"{patient.patient_id}: p(invasion) {row['p_invasion']:.3f}, "
            f"p(high grade) {row['p_high_grade']:.3f}"
        )
        write_explanation(
            out / patient.patient_id, explanation, patient, files_of[patient.patient_id], title
        )
        for task in TASKS:
            gaps[task].append(explanation.attribution.gap[task])
    return {
        "method": METHOD,
        "steps": steps,
        "folder": str(out),
        "completeness_gap_median": {t: float(np.median(g)) if g else None for t, g in gaps.items()},
    }
