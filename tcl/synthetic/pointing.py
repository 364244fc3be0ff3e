"""The pointing game: do a network's explanation maps point at the signs that carry the labels?

The synthetic cohort's generator writes, beside each patient's images, the map of where it drew
each imaging sign (``signs.nii.gz``; its labels are tcl.synthetic.cohort.SIGN_LABELS, and which
task each family carries is SIGN_TASK). :func:`sign_shares` scores one integrated-gradients map
(tcl.application.explain) against it, energy-based: the share of the positive attribution inside
each family's region against that region's share of the crop box the network saw. A ratio
(enrichment) of 1 is no better than spreading the attribution evenly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from tcl.application.explain import DEFAULT_IG_STEPS, explain_patient, path_batch
from tcl.application.predict import prepare_patients, read_patients
from tcl.application.saved import ModelSpec, load_model
from tcl.data.manifest import MODALITIES
from tcl.data.nifti import load_volume
from tcl.data.preprocess import PreparedPatient
from tcl.data.transforms import box_mask
from tcl.synthetic.cohort import SIGN_LABELS, SIGN_TASK
from tcl.tasks import TASKS
from tcl.training.runtime import resolve_device
from tcl.utils import TclError


def sign_shares(
    attribution: np.ndarray, signs: np.ndarray, region: np.ndarray, labels: dict[int, str]
) -> pd.DataFrame:
    """Energy-based pointing game of one map against a sign label map (same grid).

    Args:
        attribution: [X, Y, Z] map (positive = evidence for class 1).
        signs: [X, Y, Z] integer label map (0 = no sign).
        region: [X, Y, Z] boolean, the voxels the network saw (the crop box).
        labels: label → family name.
    Returns one row per family present in ``region``: ``attribution_share`` (share of the
    positive attribution inside the region that falls on the family), ``area_share`` (the
    family's share of the region's voxels) and ``enrichment`` = their ratio (1 = no better than
    spreading the attribution evenly), plus a row ``any_sign`` for all families together.
    """
    positive = np.clip(np.where(region, attribution, 0.0), 0.0, None).astype(np.float64)
    total, n_region = positive.sum(), int(region.sum())
    rows = []
    families = [(name, signs == label) for label, name in labels.items()]
    families.append(("any_sign", signs > 0))
    for name, where in families:
        inside = where & region
        n_inside = int(inside.sum())
        if n_inside == 0:
            continue
        share = float(positive[inside].sum() / total) if total > 0 else float("nan")
        area = n_inside / n_region
        rows.append(
            {
                "family": name,
                "attribution_share": share,
                "area_share": area,
                "enrichment": share / area,
            }
        )
    return pd.DataFrame(rows, columns=["family", "attribution_share", "area_share", "enrichment"])


def load_signs(path: str | os.PathLike, what: str = "") -> np.ndarray:
    """A sign label map in the canonical grid, as integers."""
    return np.rint(load_volume(path, what).data).astype(np.int16)


def score_against_signs(
    models: Sequence[torch.nn.Module],
    prepared: Sequence[PreparedPatient],
    signs_paths: dict[str, str],
    labels: pd.DataFrame,
    device: torch.device,
    steps: int = DEFAULT_IG_STEPS,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pointing game of every prepared patient's maps against its sign map.

    Args:
        signs_paths: patient_id → sign map file (on the T1C grid, e.g. the synthetic cohort's).
        labels: indexed by patient_id, columns ``invasion`` and ``high_grade`` (0/1).
    Returns:
        (shares, facts): ``shares`` has one row per patient, task and family present
        (:func:`sign_shares` columns plus patient_id, task, label); ``facts`` one row per
        patient and task: log-odds, baseline log-odds, completeness gap and the share of the
        positive attribution on each channel.
    """
    names = {label: name for label, (name, _) in SIGN_LABELS.items()}
    shares, facts = [], []
    batch = path_batch(models, device)
    for patient in tqdm(prepared, desc="explain + score", unit="patient", disable=not progress):
        pid = patient.patient_id
        explanation = explain_patient(models, patient, device, steps, batch)
        signs = load_signs(signs_paths[pid], f"patient {pid}, signs")
        if signs.shape != patient.geometry.canonical_shape:
            raise TclError(
                f"patient {pid}: sign map {signs_paths[pid]} has shape {signs.shape}, the "
                f"images {patient.geometry.canonical_shape}"
            )
        region = box_mask(patient.geometry)
        for task in TASKS:
            label = int(labels.loc[pid, task])
            table = sign_shares(explanation.canonical[task], signs, region, names)
            table.insert(0, "label", label)
            table.insert(0, "task", task)
            table.insert(0, "patient_id", pid)
            shares.append(table)
            attribution = explanation.attribution
            facts.append(
                {
                    "patient_id": pid,
                    "task": task,
                    "label": label,
                    "log_odds": attribution.log_odds[task],
                    "baseline_log_odds": attribution.baseline_log_odds[task],
                    "completeness_gap": attribution.gap[task],
                    **{f"share_{m}": v for m, v in explanation.channel_share[task].items()},
                }
            )
    return pd.concat(shares, ignore_index=True), pd.DataFrame(facts)


def summarize_shares(shares: pd.DataFrame) -> pd.DataFrame:
    """Per task, label and family: patients with the family in view, mean attribution share,
    mean area share and their ratio (the enrichment of the mean patient)."""
    grouped = shares.groupby(["task", "label", "family"], sort=False)
    summary = grouped.agg(
        patients=("patient_id", "nunique"),
        attribution_share=("attribution_share", "mean"),
        area_share=("area_share", "mean"),
    ).reset_index()
    summary["enrichment"] = summary["attribution_share"] / summary["area_share"]
    return summary


def carried_share(shares: pd.DataFrame, task: str, families: Sequence[str]) -> pd.DataFrame:
    """Per patient of ``shares`` (one task): the summed attribution and area shares of the
    ``families`` (those that carry ``task``'s label), and their ratio."""
    rows = shares[(shares["task"] == task) & shares["family"].isin(families)]
    per_patient = rows.groupby(["patient_id", "label"])[["attribution_share", "area_share"]].sum()
    per_patient["enrichment"] = per_patient["attribution_share"] / per_patient["area_share"]
    return per_patient.reset_index()


def _percent(value: float) -> str:
    """A share as a percentage with two significant digits (0.031 → '3.1%', 2e-4 → '0.02%')."""
    if value == 0:
        return "0%"
    return f"{value * 100:.2g}%" if value < 0.1 else f"{value:.0%}"


def _carries(family: str, task: str) -> str:
    if SIGN_TASK.get(family) == task:
        return "carries this label"
    return f"carries {SIGN_TASK.get(family, 'neither task').replace('_', ' ')}"


def describe(shares: pd.DataFrame, facts: pd.DataFrame, min_patients: int = 3) -> str:
    """Plain sentences (Markdown) on what the maps point at, computed from the scores: per task,
    on the patients with the label, where the positive attribution goes and whether those
    families carry the task's label (tcl.synthetic.cohort.SIGN_TASK)."""

    summary = summarize_shares(shares)
    lines = []
    for task, label_name in (("invasion", "invasive"), ("high_grade", "high-grade")):
        carriers = [f for f, t in SIGN_TASK.items() if t == task]
        positive = summary[(summary["task"] == task) & (summary["label"] == 1)]
        positive = positive[(positive["family"] != "any_sign")]
        if positive.empty:
            lines.append(f"- **{task}**: no {label_name} patient in the scored set.")
            continue
        ranked = positive[positive["patients"] >= min_patients]
        ranked = ranked.sort_values("attribution_share", ascending=False).head(3)

        top = "; ".join(
            f"{r.family} ({_carries(r.family, task)}): {_percent(r.attribution_share)} of the "
            f"attribution on {_percent(r.area_share)} of the box (×{r.enrichment:.1f})"
            for r in ranked.itertuples()
        )
        carried = carried_share(shares, task, carriers)
        carried = carried[carried["label"] == 1]
        task_facts = facts[facts["task"] == task]
        channel = {m: task_facts[f"share_{m}"].mean() for m in MODALITIES}
        lines.append(
            f"- **{task}**, {carried['patient_id'].nunique()} {label_name} patients. Where the "
            f"positive attribution goes (families in ≥ {min_patients} patients): {top}. All "
            f"families that carry this label ({', '.join(carriers)}) together: "
            f"{_percent(carried['attribution_share'].mean())} of the attribution on "
            f"{_percent(carried['area_share'].mean())} of the box (median enrichment "
            f"×{carried['enrichment'].median():.1f}; ×1 is no better than spreading it evenly). "
            "By sequence: "
            + ", ".join(f"{m} {v:.0%}" for m, v in channel.items())
            + f". Median completeness gap {task_facts['completeness_gap'].median():.1%}."
        )
    return "\n".join(lines)


@dataclass
class PointingGame:
    """The explanation maps of a set of test patients scored against their sign maps."""

    shares: pd.DataFrame  # per patient, task and sign family (score_against_signs)
    facts: pd.DataFrame  # per patient and task: what the network predicted, and the truth
    summary: pd.DataFrame  # summarize_shares of the shares
    n_patients: int


def pointing_game(
    manifest: Path,
    run_dir: str | os.PathLike,
    spec: ModelSpec,
    scored: pd.DataFrame,
    device: str,
    steps: int,
    figures: Path,
) -> PointingGame:
    """Explain the ``scored`` patients (rows of ``manifest`` with ``class`` and ``signs``) from
    their raw files with the saved network of ``run_dir``, score the maps against the sign maps,
    and write the summary as ``pointing_game.csv`` in ``figures``."""
    torch_device = resolve_device(device)
    model, _ = load_model(run_dir, torch_device)
    _, patients = read_patients(manifest)
    wanted = set(scored["patient_id"])
    prepared = prepare_patients(
        [p for p in patients if p.patient_id in wanted], spec, progress=False
    )
    signs_paths = {
        pid: str((manifest.parent / path).resolve())
        for pid, path in zip(scored["patient_id"], scored["signs"], strict=True)
    }
    shares, facts = score_against_signs(
        [model],
        prepared,
        signs_paths,
        scored.set_index("patient_id"),
        torch_device,
        steps=steps,
        progress=False,
    )
    summary = summarize_shares(shares)
    summary.round(4).to_csv(figures / "pointing_game.csv", index=False)
    return PointingGame(shares, facts, summary, len(prepared))


def enrichment(summary: pd.DataFrame) -> pd.DataFrame:
    """The enrichment (attribution share / area share) of each sign family per task, on the
    patients who have the task's label: family × task."""
    positive = summary[summary["label"] == 1]
    return positive.pivot(index="family", columns="task", values="enrichment")
