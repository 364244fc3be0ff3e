"""The paper's random draws: a class-stratified training set, the rest for testing.

Per draw the paper trains on 145 WHO I + 44 invasive high grade + 25 non-invasive high grade
patients (214 of 800) and tests on the other 586; three draws are made by shuffling each class
and taking the first k (docs/paper.md, "Splits"). For a cohort of another size the per-class
training counts are scaled proportionally (each at least 1, and at least 1 left for testing).
The released split script wrote its second draw into the first draw's folder; here each draw
has its own entry.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tcl.data.manifest import read_manifest
from tcl.utils import TclError, provenance, write_text_atomic

# The paper's Table 1 per class: n, age mean, age SD, male, female (docs/paper.md, "Cohort").
# The one home of these numbers: the synthetic generator and the report tables read them here.
PAPER_TABLE1 = {
    "low_grade": (652, 56.75, 10.70, 139, 513),
    "high_grade_invasive": (62, 55.77, 11.97, 26, 36),
    "high_grade_noninvasive": (86, 55.52, 12.46, 39, 47),
}
# Paper cohort (800) and its training counts per class.
PAPER_CLASS_SIZES = {name: row[0] for name, row in PAPER_TABLE1.items()}
PAPER_TRAIN_COUNTS = {"low_grade": 145, "high_grade_invasive": 44, "high_grade_noninvasive": 25}
CLASSES = tuple(PAPER_CLASS_SIZES)
MIN_PER_CLASS = 2  # one patient to train on and one to test on, in every class
DEFAULT_DRAWS = 3  # the paper's; the Makefile asks for the same


def patient_class(who_grade: int, invasion: int) -> str:
    """One of the three cohort classes for a patient's labels."""
    if invasion:
        return "high_grade_invasive"
    return "high_grade_noninvasive" if who_grade >= 2 else "low_grade"


def patient_classes(table: pd.DataFrame) -> list[str]:
    """The class (:func:`patient_class`) of every row of ``table``, in its order."""
    return [
        patient_class(int(g), int(i))
        for g, i in zip(table["who_grade"], table["invasion"], strict=True)
    ]


def class_size_problems(class_sizes: dict[str, int]) -> list[str]:
    """One line per class of ``class_sizes`` (class → patients) too small to be split."""
    return [
        f"class {name} has {size} patient(s); each class needs at least {MIN_PER_CLASS} "
        "(one to train on, one to test on)"
        for name, size in class_sizes.items()
        if size < MIN_PER_CLASS
    ]


def train_counts(class_sizes: dict[str, int]) -> dict[str, int]:
    """Training patients per class: the paper's counts, scaled to this cohort's class sizes.
    Raises :class:`TclError` naming every class with fewer than :data:`MIN_PER_CLASS`."""
    problems = class_size_problems(class_sizes)
    if problems:
        raise TclError("; ".join(problems))
    counts = {}
    for name, size in class_sizes.items():
        if size == PAPER_CLASS_SIZES[name]:
            counts[name] = PAPER_TRAIN_COUNTS[name]
        else:
            share = PAPER_TRAIN_COUNTS[name] / PAPER_CLASS_SIZES[name]
            counts[name] = int(min(max(round(share * size), 1), size - 1))
    return counts


def distinct_training_sets(class_sizes: dict[str, int]) -> int:
    """How many different training sets the class-stratified draw can produce: the product
    over classes of (class size choose training count). Fewer than the draws asked for means
    that some draws repeat."""
    counts = train_counts(class_sizes)
    return math.prod(math.comb(class_sizes[name], counts[name]) for name in class_sizes)


def make_draws(
    table: pd.DataFrame, n_draws: int = 3, seed: int = 666
) -> list[dict[str, list[str]]]:
    """Draw ``n_draws`` class-stratified train/test splits.

    Args:
        table: one row per patient with ``patient_id``, ``who_grade`` and ``invasion`` columns
            (a manifest or a cache index).
        n_draws: number of independent draws.
        seed: seeds one generator for all draws, so the draws differ from each other but the
            whole set is reproducible.

    Returns:
        ``[{"train": [ids], "test": [ids]}, ...]``, ids sorted within each list.
    """
    if n_draws < 1:
        raise TclError(f"--draws must be at least 1, got {n_draws}")
    ids = table["patient_id"].astype(str).to_numpy()
    classes = np.array(patient_classes(table))
    members = {name: np.sort(ids[classes == name]) for name in CLASSES}
    counts = train_counts({name: len(m) for name, m in members.items()})
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        train = np.concatenate([rng.permutation(members[name])[: counts[name]] for name in CLASSES])
        test = np.setdiff1d(ids, train)
        draws.append({"train": sorted(train.tolist()), "test": sorted(test.tolist())})
    return draws


def write_splits(draws: list[dict[str, list[str]]], path: str | os.PathLike, seed: int) -> None:
    """Write draws as ``{"draws": [...], "seed": ..., "provenance": ...}`` atomically."""
    document = {"draws": draws, "seed": seed, "provenance": provenance()}
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


def read_splits(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read the draws of a splits file; a missing or malformed file names the command to run."""
    path = Path(path)
    hint = f"build it with: python -m tcl splits --manifest MANIFEST --out {path}"
    if not path.is_file():
        raise TclError(f"splits file not found: {path}; {hint}")
    try:
        draws = json.loads(path.read_text())["draws"]
        for draw in draws:
            if set(draw) != {"train", "test"} or set(draw["train"]) & set(draw["test"]):
                raise ValueError("each draw needs disjoint 'train' and 'test' lists")
    except (ValueError, KeyError, TypeError) as error:
        raise TclError(f"malformed splits file {path}: {error}; {hint}") from error
    return draws


def main(args: argparse.Namespace) -> int:
    """``python -m tcl splits`` with its parsed options (tcl.cli)."""
    if args.out.is_dir():
        raise TclError(
            f"--out {args.out} is a folder; give the splits file to write, e.g. "
            f"{args.out / 'splits.json'}"
        )

    table = read_manifest(args.manifest)
    draws = make_draws(table, n_draws=args.draws, seed=args.seed)
    write_splits(draws, args.out, seed=args.seed)
    print(
        f"wrote {args.out}: {len(draws)} draws, {len(draws[0]['train'])} train / "
        f"{len(draws[0]['test'])} test patients each"
    )
    return 0
