"""Whole-cohort validation (``python -m tcl validate``): the manifest, every patient's files and
whether the draws can split it, every problem listed at once.

No problem means that preprocess and splits accept the cohort. Warnings (signal, coverage,
misregistration, draws that cannot all differ) are worth a look and stop nothing.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from tcl.data.manifest import PatientFiles, class_counts, has_labels, read_manifest, read_table
from tcl.data.patients import REGISTER_HINT, inspect_patient
from tcl.data.qc import QcEntry, examine_and_draw, write_index
from tcl.data.splits import (
    class_size_problems,
    distinct_training_sets,
    patient_classes,
)
from tcl.parallel import default_workers, map_patients


@dataclass
class CohortReport:
    """Everything :func:`check_cohort` found: ``problems`` (each stops a later step),
    ``warnings`` (worth a look, stop nothing) and ``resampled`` (patient → file → how it was put
    onto the T1C grid), all in manifest order."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resampled: dict[str, dict[str, str]] = field(default_factory=dict)
    labelled: bool = True  # False: no label given, the class checks were skipped
    misregistered: dict[str, list[str]] = field(default_factory=dict)  # patient → series


def _draw_checks(path: Path, table: pd.DataFrame, draws: int) -> tuple[list[str], list[str]]:
    """What ``python -m tcl splits --draws N`` would refuse in this cohort (problems), and
    draws that cannot all differ (a warning)."""
    if draws < 1:
        return [f"--draws must be at least 1, got {draws}"], []
    sizes = {"low_grade": 0, "high_grade_invasive": 0, "high_grade_noninvasive": 0}
    for name in patient_classes(table):
        sizes[name] += 1
    problems = [
        f"{path}: {problem}; `python -m tcl splits` refuses this cohort"
        for problem in class_size_problems(sizes)
    ]
    warnings = []
    if not problems:
        distinct = distinct_training_sets(sizes)
        if distinct < draws:
            warnings.append(
                f"{path}: the class sizes {sizes} allow only {distinct} different training "
                f"set(s), fewer than the {draws} draws: some draws will be identical"
            )
    return problems, warnings


LINE_WIDTH = 240  # characters of a patient's warning line before it is cut


def _patient_of(warning: str) -> str:
    """``patient X`` of a warning that starts so, else the whole first clause (a table-wide
    warning)."""
    head = warning.split(":", 1)[0]
    return head.split(",", 1)[0] if head.startswith("patient ") else head


def warning_lines(warnings: list[str]) -> list[str]:
    """The warnings as one line per patient, in order: each warning without its ``patient X,``
    prefix and with every path cut to its file name, joined by ``; `` and cut at LINE_WIDTH.
    A table-wide warning (not about one patient) keeps its own line, whole."""
    grouped: dict[str, list[str]] = {}
    for warning in warnings:
        who = _patient_of(warning)
        rest = warning[len(who) :].lstrip(",: ") if warning.startswith(who) else warning
        rest = re.sub(r"(?:[^\s`'\"()]*/)+([^\s/`'\"()]+)", r"\1", rest)
        grouped.setdefault(who, []).append(rest)
    lines = []
    for who, parts in grouped.items():
        line = f"{who}: " + "; ".join(parts)
        if who.startswith("patient ") and len(line) > LINE_WIDTH:  # a table-wide one stays whole
            line = line[: LINE_WIDTH - 1] + "…"
        lines.append(line)
    return lines


def check_cohort(
    path: str | os.PathLike,
    workers: int | None = 1,
    progress: bool = False,
    draws: int | None = None,
    alignment: bool = False,
    qc_dir: str | os.PathLike | None = None,
) -> CohortReport:
    """Check a cohort: the manifest (see :func:`read_manifest`), every patient's files (see
    :func:`load_patient`) and, when ``draws`` is given, whether ``python -m tcl splits --draws
    DRAWS`` can split it (each class needs :data:`tcl.data.splits.MIN_PER_CLASS` patients).
    With ``alignment``, also whether FLAIR-C and ADC lie on the T1C anatomy (warnings).
    With ``qc_dir``, also the QC page there (tcl.data.qc: a picture per patient, index.html).
    No problem means that preprocess and splits accept the cohort.

    A manifest without labels (patients to predict) is checked for everything else; the
    report's ``labelled`` is then False.
    """
    path = Path(path)
    report = CohortReport(labelled=has_labels(path))
    table, problems = read_table(path, require_labels=report.labelled)
    report.problems.extend(problems)
    if table is None:
        return report
    patients = [PatientFiles.from_row(row) for _, row in table.iterrows()]
    n_workers = default_workers(len(patients), workers)
    if qc_dir is not None:
        qc_dir = Path(qc_dir)
        qc_dir.mkdir(parents=True, exist_ok=True)
        inspect = partial(examine_and_draw, folder=qc_dir, alignment=alignment)
    else:
        inspect = partial(inspect_patient, alignment=alignment)
    entries = []
    for found in map_patients(
        inspect, patients, workers=n_workers, progress=progress, desc="validate"
    ):
        check, picture = found if qc_dir is not None else (found, None)
        entries.append(QcEntry(check.patient_id, picture, check.problems, check.warnings))
        report.problems.extend(check.problems)
        report.warnings.extend(
            w.replace(REGISTER_HINT, f"python -m tcl register {path} --out FOLDER")
            for w in check.warnings
        )
        if check.resampled:
            report.resampled[check.patient_id] = check.resampled
        if check.misregistered:
            report.misregistered[check.patient_id] = check.misregistered
    if qc_dir is not None:
        write_index(qc_dir, entries, f"QC of {path}")
    if not report.labelled:
        return report
    labels_ok = (table["who_grade"] > 0).all() and (table["invasion"] >= 0).all()
    if draws is not None and labels_ok:
        problems, warnings = _draw_checks(path, table, draws)
        report.problems.extend(problems)
        report.warnings.extend(warnings)
    return report


def main(args: argparse.Namespace) -> int:
    """``python -m tcl validate`` with its parsed options (tcl.cli)."""
    report = check_cohort(
        args.manifest,
        workers=args.workers,
        progress=not args.quiet,
        draws=args.draws,
        alignment=not args.no_alignment_check,
        qc_dir=args.qc,
    )
    if report.resampled:
        print(
            f"{len(report.resampled)} patient(s) with files on another voxel grid than t1c, "
            "resampled onto the t1c grid (linear for images, nearest neighbour for masks):"
        )
        for pid, files in report.resampled.items():
            for name, how in files.items():
                print(f"  - patient {pid}, {name}: {how}")
    if report.warnings:
        lines = report.warnings if args.verbose else warning_lines(report.warnings)
        patients = len({_patient_of(w) for w in report.warnings})
        print(f"{len(report.warnings)} warning(s), {patients} patient(s) or table-wide:")
        for line in lines:
            print(f"  - {line}")
        if not args.verbose and lines != report.warnings:
            print("  (a line per patient, paths cut to file names; --verbose: each in full)")
    if args.no_alignment_check:
        print("alignment: not checked (--no-alignment-check)")
    if args.qc is not None:
        print(f"QC page: {Path(args.qc) / 'index.html'}")
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {args.manifest}:")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    if report.misregistered and not args.accept_misregistration:
        series = sum(len(names) for names in report.misregistered.values())
        print(
            f"{series} series of {len(report.misregistered)} patient(s) seem misregistered "
            f"(warnings above): training on them would mix anatomies. Register them first, "
            f"`python -m tcl register {args.manifest} --out FOLDER`, then use "
            "FOLDER/manifest.csv; or go on as they are with --accept-misregistration "
            "(make: ACCEPT_MISREGISTRATION=1)"
        )
        return 1
    if not report.labelled:
        table = read_manifest(args.manifest, require_labels=False)
        print(
            f"OK: {len(table)} patients, no labels: the class checks (labels, class sizes, "
            "draws) were skipped; such a cohort can be predicted, not trained on"
        )
        return 0
    table = read_manifest(args.manifest)
    counts = ", ".join(f"{name} {n}" for name, n in class_counts(table).items())
    print(f"OK: {len(table)} patients, {counts}")
    return 0
