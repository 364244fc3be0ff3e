"""``python -m tcl predict``: apply saved networks to new patients.

For each patient of a manifest (the usual format; label columns optional) the files are checked
as ``tcl validate`` checks them and preprocessed by the very function that built the training
cache (:func:`tcl.data.preprocess.load_and_preprocess`: load and check, crop, clip, z-score,
resize, the cache's float16 precision), with the settings recorded in the model's
``model.json``. The network
then gives the two probabilities, and the paper's rule (``p > 0.5``) the classes.

Several ``--model`` folders (e.g. the three draws) are applied to the same inputs and their
probabilities averaged; the output's ``n_models`` column and its ``.json`` sidecar say so.

Nothing is written unless every patient could be read: bad input raises one error listing every
problem (each naming the patient and file), and the CSV is written under a temporary name and
renamed. With ``--explain DIR``, attribution maps per patient and task go to ``DIR`` as well
(tcl.application.explain).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from tcl.application.explain import DEFAULT_IG_STEPS, explain_patients
from tcl.application.saved import ModelSpec, load_model, read_spec
from tcl.data.manifest import PatientFiles, read_manifest
from tcl.data.preprocess import PreparedPatient, load_and_preprocess
from tcl.data.transforms import input_geometry
from tcl.parallel import default_workers, map_patients
from tcl.tasks import DECISION_RULE, PREDICT_COLUMNS, TASKS, decide
from tcl.training.inference import class_probabilities
from tcl.training.runtime import resolve_device
from tcl.utils import TclError, atomic_path, available_cpus, provenance, write_text_atomic


def _prepare(
    job: tuple[PatientFiles, tuple[int, int, int], int, bool],
) -> tuple[list[str], PreparedPatient | None]:
    """Worker: check, load and preprocess one patient (the training cache's code path); with
    the job's last flag, also check that FLAIR-C and ADC lie on the T1C anatomy."""
    files, size, margin, alignment = job
    problems, loaded, volume = load_and_preprocess(files, size, margin, alignment)
    if volume is None or loaded is None:
        return problems, None
    geometry = input_geometry(loaded.roi, loaded.images.shape[1:], files.paths["t1c"], size, margin)
    notes = list(loaded.warnings) + [
        f"patient {files.patient_id}, {name}: resampled onto the T1C grid ({how})"
        for name, how in loaded.resampled.items()
    ]
    return [], PreparedPatient(files.patient_id, volume, geometry, notes)


def read_patients(manifest: str | os.PathLike) -> tuple[pd.DataFrame, list[PatientFiles]]:
    """The manifest's table (labels optional) and each patient's files."""
    table = read_manifest(manifest, require_labels=False)
    return table, [PatientFiles.from_row(row) for _, row in table.iterrows()]


def prepare_patients(
    patients: list[PatientFiles],
    spec: ModelSpec,
    workers: int | None = None,
    progress: bool = True,
    alignment: bool = True,
) -> list[PreparedPatient]:
    """Check and preprocess every patient; one TclError listing every problem if any. With
    ``alignment``, misregistered series are warned of (see ``tcl validate``)."""
    jobs = [(files, spec.size, spec.margin, alignment) for files in patients]
    problems: list[str] = []
    prepared: list[PreparedPatient] = []
    results = map_patients(
        _prepare, jobs, workers=default_workers(len(jobs), workers), progress=progress,
        desc="read + preprocess",
    )  # fmt: skip
    for patient_problems, patient in results:
        problems.extend(patient_problems)
        if patient is not None:
            prepared.append(patient)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise TclError(
            f"{len(problems)} problem(s) in the patients to predict; nothing was written:\n{listed}"
        )
    notes = [note for patient in prepared for note in patient.warnings]
    if notes:  # as validate shows them: they do not stop a prediction
        print("\n".join(f"warning: {note}" for note in notes), file=sys.stderr)
    return prepared


def load_models(
    run_dirs: list[str | os.PathLike], device: torch.device
) -> list[tuple[torch.nn.Module, ModelSpec]]:
    """Every saved model; they must share their preprocessing (one input feeds them all)."""
    if not run_dirs:
        raise TclError("--model is required (a run folder with model.safetensors + model.json)")
    specs = [read_spec(d) for d in run_dirs]  # fail fast on a wrong folder, before any weights
    first = specs[0].preprocessing_key()
    for run_dir, spec in zip(run_dirs, specs, strict=True):
        if spec.preprocessing_key() != first:
            raise TclError(
                f"--model {run_dir} was trained on other inputs than --model {run_dirs[0]} "
                f"(size, channels, margin or preprocessing differ: {spec.preprocessing_key()} vs "
                f"{first}); models can be averaged only when one input feeds them all"
            )
    return [load_model(d, device) for d in run_dirs]


@torch.no_grad()
def predict_volumes(
    models: list[torch.nn.Module],
    volumes: np.ndarray,
    device: torch.device,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``models`` of the class-1 probabilities of both tasks.

    Args:
        volumes: [N, 3, H, W, D] float16 network inputs.
    Returns:
        p_invasion [N], p_high_grade [N] (float64).
    """
    rows = np.arange(len(volumes))
    p_invasion = np.zeros(len(volumes))
    p_high_grade = np.zeros(len(volumes))
    bar = tqdm(
        total=len(models) * len(volumes), desc="predict", unit="patient", disable=not progress
    )
    for model in models:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            invasion, high_grade = class_probabilities(model, volumes, chunk, batch_size, device)
            p_invasion[chunk] += invasion
            p_high_grade[chunk] += high_grade
            bar.update(len(chunk))
    bar.close()
    return p_invasion / len(models), p_high_grade / len(models)


def predictions_table(
    table: pd.DataFrame, ids: list[str], p_invasion: np.ndarray, p_high_grade: np.ndarray,
    n_models: int,
) -> pd.DataFrame:  # fmt: skip
    """The output rows: probabilities, the paper's classes, and the labels where known."""
    out = pd.DataFrame(
        {
            "patient_id": ids,
            "p_invasion": p_invasion,
            "p_high_grade": p_high_grade,
            "pred_invasion": decide(p_invasion),
            "pred_high_grade": decide(p_high_grade),
        },
        columns=list(PREDICT_COLUMNS),
    )
    labels = table.set_index("patient_id").loc[ids]
    for column in TASKS:
        if column in labels and labels[column].notna().any():
            out[column] = labels[column].to_numpy()
            out[column] = out[column].astype("Int64")
    out["n_models"] = n_models
    return out


def run_predict(
    models: list[str | os.PathLike],
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    device: str = "auto",
    explain: str | os.PathLike | None = None,
    workers: int | None = None,
    threads: int | None = None,
    ig_steps: int | None = None,
    progress: bool = True,
    alignment: bool = True,
) -> pd.DataFrame:
    """Predict every patient of ``manifest`` with the saved ``models``; write ``out`` (CSV)
    and ``out.json`` (models, averaging, timings, provenance); with ``explain``, the maps.
    ``alignment``: warn of FLAIR-C or ADC series misregistered against T1C (about 1 s a
    patient). Returns the predictions table."""

    started = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise TclError(f"--out {out} is a folder; give the CSV file to write")
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        torch.set_num_threads(threads or available_cpus())
    loaded = load_models(list(models), torch_device)
    spec = loaded[0][1]
    table, patients = read_patients(manifest)
    prepared = prepare_patients(
        patients, spec, workers=workers, progress=progress, alignment=alignment
    )
    volumes = np.stack([p.volume for p in prepared])
    ids = [p.patient_id for p in prepared]
    p_invasion, p_high_grade = predict_volumes(
        [m for m, _ in loaded], volumes, torch_device, progress=progress
    )
    result = predictions_table(table, ids, p_invasion, p_high_grade, len(loaded))
    predicted = time.perf_counter()

    explained = None
    if explain is not None:
        explained = explain_patients(
            [m for m, _ in loaded],
            prepared,
            patients,
            result,
            Path(explain),
            torch_device,
            steps=ig_steps or DEFAULT_IG_STEPS,
            progress=progress,
        )
    sidecar = {
        "manifest": str(Path(manifest).resolve()),
        "models": [
            {
                "run_dir": str(Path(d).resolve()),
                "config": s.config,
                "draw": s.raw.get("training", {}).get("draw"),
                "weights_sha256": s.raw.get("weights_sha256"),
            }
            for d, (_, s) in zip(models, loaded, strict=True)
        ],
        "averaging": (
            f"p_invasion and p_high_grade are the mean of {len(loaded)} models' probabilities"
            if len(loaded) > 1
            else "one model"
        ),
        "decision_rule": DECISION_RULE,
        "n_patients": len(result),
        "warnings": [note for patient in prepared for note in patient.warnings],
        "device": str(torch_device),
        "seconds": {
            "predict": predicted - started,
            "explain": (time.perf_counter() - predicted) if explain is not None else None,
        },
        "explain": explained,
        "provenance": provenance(),
    }
    with atomic_path(out) as tmp:
        result.to_csv(tmp, index=False)
    write_text_atomic(
        out.with_name(out.name + ".json"), json.dumps(sidecar, indent=1, default=str) + "\n"
    )
    return result


def main(args: argparse.Namespace) -> int:
    """``python -m tcl predict`` with its parsed options (tcl.cli)."""
    result = run_predict(
        args.model,
        args.manifest,
        args.out,
        device=args.device,
        explain=args.explain,
        workers=args.workers,
        threads=args.threads,
        ig_steps=args.ig_steps,
        progress=not args.quiet,
        alignment=not args.no_alignment_check,
    )
    models = (
        f"{len(args.model)} models (probabilities averaged)" if len(args.model) > 1 else "1 model"
    )
    print(f"predicted {len(result)} patient(s) with {models} → {args.out}", file=sys.stderr)
    return 0
