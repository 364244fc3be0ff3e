"""What the numbered notebooks call: their setup, and every step of more than a few lines.

A notebook in ``notebooks/`` is a chapter to be read: its markdown says what is shown and why,
and each code cell is one or two calls into the package. The steps live here (or in
:mod:`tcl.evaluation.paper_tables` for tables and :mod:`tcl.evaluation.plots` for figures) so that
tests reach them and two notebooks that do the same thing (03 and 04) share one piece of code.

Sections follow the notebooks: setup (all seven), 01 data, 03/04 the paper's tables, 06
representations, 07 predictions and explanations.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

import tcl
from tcl.application.explain import PROFILE_SETTINGS
from tcl.application.saved import ModelSpec
from tcl.config import Profile
from tcl.data.manifest import read_csv_text_ids, read_manifest
from tcl.data.nifti import load_volume
from tcl.data.preprocess import Cache, load_cache
from tcl.data.splits import patient_classes, read_splits
from tcl.evaluation import paper_tables
from tcl.evaluation.evaluate import read_pooled_predictions
from tcl.evaluation.plots import roc_pr_curves, save_figure
from tcl.evaluation.representations import FEATURE_SETS, embed, load_trained
from tcl.synthetic import ceilings
from tcl.training import augment
from tcl.training import runs as run_layout
from tcl.utils import TclError, git_commit

CHANNELS = ("t1c", "flairc", "adc")  # the cache's channel order (tcl.data.preprocess)

# ---------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Chapter:
    """Where a notebook reads and writes: its papermill parameters as paths, and what follows
    from them."""

    profile: str
    cohort: str
    manifest: Path
    cache: Path
    splits: Path
    results: Path
    figures: Path

    @property
    def runs(self) -> Path:
        """One folder per configuration and draw (tcl.training.runs)."""
        return run_layout.runs_of(self.results)

    @property
    def evaluation(self) -> Path:
        """What ``python -m tcl evaluate`` wrote (metrics_summary.csv, delong.csv, …)."""
        return self.results / "evaluation"

    @property
    def synthetic(self) -> bool:
        """Whether the cohort is a synthetic one: its results are labelled as such everywhere."""
        return self.cohort.startswith("synthetic")

    def run_dir(self, config: str, draw: int) -> Path:
        """The folder of one training run."""
        return run_layout.run_dir(self.runs, config, draw)

    def show(self, fig: plt.Figure, name: str, folder: str | os.PathLike | None = None) -> None:
        """Save ``fig`` as ``name`` (.png and .pdf) in the figures folder (or ``folder``) and
        show it below the cell."""
        save_figure(fig, self.figures if folder is None else folder, name)
        plt.show()


def banner(chapter: Chapter, version: str = tcl.__version__, commit: str | None = None) -> str:
    """The line under a notebook's title: profile, cohort (a synthetic one said loudly),
    package version and commit."""
    warning = (
        " — **synthetic data: these are not the paper's results**" if chapter.synthetic else ""
    )
    commit = git_commit() if commit is None else commit
    return (
        f"**profile** `{chapter.profile}` · **cohort** `{chapter.cohort}`{warning}"
        f" · tcl {version} · commit `{commit}`"
    )


def setup(
    profile: str,
    cohort: str,
    manifest: str | os.PathLike,
    cache: str | os.PathLike,
    splits: str | os.PathLike,
    results: str | os.PathLike,
    figures: str | os.PathLike,
) -> Chapter:
    """A notebook's first cell: its parameters as a :class:`Chapter`, the figures folder made,
    and the :func:`banner` shown, so that no output is read without its provenance."""
    chapter = Chapter(
        profile=profile,
        cohort=cohort,
        manifest=Path(manifest),
        cache=Path(cache),
        splits=Path(splits),
        results=Path(results),
        figures=Path(figures),
    )
    chapter.figures.mkdir(parents=True, exist_ok=True)
    display(Markdown(banner(chapter)))
    return chapter


# ---------------------------------------------------------------------------- 01 data


# How a notebook runs make's data steps (with the notebook's own Python: see prepare_cohort)
MAKE: tuple[str, ...] = ("make", "--no-print-directory")


def run_make(command: list[str], project: Path) -> int:
    """Run ``command`` (make and its arguments) in ``project``; its exit status."""
    return subprocess.run(command, cwd=project).returncode


def prepare_cohort(chapter: Chapter) -> tuple[pd.DataFrame, Cache, list[dict[str, list[str]]]]:
    """The cohort's manifest table, its cache and its draws; ``make data`` builds what is missing.

    ``make`` has normally built all three before notebook 01 runs, and then nothing is run here.
    A notebook opened on its own asks the Makefile beside it (the project folder holds
    ``data/<cohort>/<size>``, the cache) for the missing parts, with the notebook's profile and,
    for a cohort of one's own, its manifest: the data steps and their settings live in the
    Makefile only.
    """
    needed = [chapter.manifest, chapter.cache / "meta.json", chapter.splits]
    if not all(path.exists() for path in needed):
        if not chapter.synthetic and not chapter.manifest.exists():
            raise FileNotFoundError(f"manifest {chapter.manifest} does not exist")
        project = chapter.cache.resolve().parents[2]  # <project>/data/<cohort>/<size>
        command = [*MAKE, "data", f"PROFILE={chapter.profile}", f"PYTHON={sys.executable}"]
        if not chapter.synthetic:
            command.append(f"DATA={chapter.manifest.resolve()}")
        if not (project / "Makefile").is_file():
            raise TclError(
                f"{', '.join(str(p) for p in needed if not p.exists())} missing, and no Makefile "
                f"in {project} to build it: run `make data PROFILE={chapter.profile}` in the "
                "project folder"
            )
        status = run_make(command, project)
        missing = [str(path) for path in needed if not path.exists()]
        if status or missing:
            raise TclError(
                f"`{' '.join(command)}` in {project} "
                + (f"exited with status {status}" if status else f"did not make {missing}")
                + ": the notebook's parameters must name the files make builds"
            )
    return read_manifest(chapter.manifest), load_cache(chapter.cache), read_splits(chapter.splits)


def cohort_summary(table: pd.DataFrame, cache: Cache, draws: list[dict[str, list[str]]]) -> str:
    """One line: patients, the cache's shape and type, the draws' sizes."""
    return (
        f"{len(table)} patients; cache {tuple(cache.volumes.shape)} ({cache.volumes.dtype}); "
        f"{len(draws)} draws of {len(draws[0]['train'])} training / {len(draws[0]['test'])} "
        "test patients"
    )


def cohort_ceilings(
    chapter: Chapter, table: pd.DataFrame, draws: list[dict[str, list[str]]]
) -> tuple[ceilings.SynthParams, pd.DataFrame, pd.DataFrame]:
    """The ceilings of a synthetic cohort's tasks (tcl.synthetic.ceilings), written as the
    ``ceilings`` table; returns (generator parameters, summary, the table for people)."""
    params = ceilings.read_synth_params(chapter.manifest)
    tidy = pd.concat(
        [
            ceilings.cohort_ceilings(table, draws, params),
            ceilings.cache_input_ceiling(chapter.cache, draws),
        ],
        ignore_index=True,
    )
    summary = ceilings.summarise(tidy)
    shown = ceilings.ceiling_table(summary)
    caption = (
        "Ceilings: the best test AUC a learner could reach, per task and draw — profile "
        f"`{chapter.profile}`, cohort: SYNTHETIC; the paper's best row for comparison."
    )
    paper_tables.write_table(
        summary.reset_index(),
        shown.round(4).reset_index(names="ceiling"),
        "ceilings",
        chapter.figures,
        caption,
    )
    return params, summary, shown


# One patient of each class is shown, with these titles.
EXAMPLE_TITLES = {
    "low_grade": "low grade",
    "high_grade_noninvasive": "high grade, non-invasive",
    "high_grade_invasive": "high grade, invasive",
}


def class_examples(table: pd.DataFrame) -> dict[str, pd.Series]:
    """The first patient of each class in manifest order (class name -> its manifest row)."""
    classes = patient_classes(table)
    return {name: table[[c == name for c in classes]].iloc[0] for name in EXAMPLE_TITLES}


def raw_volumes(
    examples: dict[str, pd.Series],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """The raw sequences of each example (title + id -> sequence -> volume) and its mask where
    the cohort has one, as :func:`tcl.evaluation.plots.modality_montage` takes them."""
    volumes, masks = {}, {}
    for name, row in examples.items():
        label = f"{EXAMPLE_TITLES[name]}\n{row.patient_id}"
        volumes[label] = {m: load_volume(row[m]).data for m in CHANNELS}
        if isinstance(row.get("mask"), str) and row["mask"]:
            masks[label] = load_volume(row["mask"]).data
    return volumes, masks


def _channels(volume: np.ndarray) -> dict[str, np.ndarray]:
    return {m: volume[c] for c, m in enumerate(CHANNELS)}


def cached_volumes(
    cache: Cache, examples: dict[str, pd.Series]
) -> dict[str, dict[str, np.ndarray]]:
    """The same examples as the network sees them (the cache, as float32), by title."""
    rows = cache.rows_of([row.patient_id for row in examples.values()])
    return {
        EXAMPLE_TITLES[name]: _channels(cache.volumes[int(r)].astype("float32"))
        for name, r in zip(examples, rows, strict=True)
    }


def augmentation_examples(
    cache: Cache, patient_id: str, settings: Profile
) -> dict[str, dict[str, np.ndarray]]:
    """One patient through each training augmentation forced on (p = 1), and through all three
    with the z-score after them, from the profile's seed (name -> sequence -> volume)."""
    row = int(cache.rows_of([patient_id])[0])
    x = torch.from_numpy(cache.volumes[row][None].astype("float32"))
    generator = torch.Generator().manual_seed(settings.seed)
    variants = {
        "preprocessed": x,
        "random crop + resize": augment.random_crop_resize(x, 1.0, settings.crop_min, generator),
        "flip": augment.random_flip(x, 1.0, generator),
        "noise": augment.random_noise(x, 1.0, generator),
        "all three + z-score": augment.augment(x, 1.0, settings.crop_min, generator),
    }
    return {name: _channels(v[0].numpy()) for name, v in variants.items()}


# ---------------------------------------------------------------------------- 03, 04 tables


def paper_table(
    chapter: Chapter, name: str, configs: tuple[str, ...], title: str
) -> tuple[list[int], pd.DataFrame, list[str]]:
    """One of the paper's metric tables (Table 2 or 3) from ``metrics_summary.csv``, written as
    ``name``.{csv,md,tex} with its caption. Returns (the draws evaluated, the table for people,
    the configurations without every draw, which are not averaged)."""
    draws = paper_tables.evaluated_draws(chapter.evaluation)  # the draws make trained (DRAWS)
    summary = pd.read_csv(chapter.evaluation / "metrics_summary.csv")
    tidy = paper_tables.metrics_table(summary, configs)
    formatted = paper_tables.format_metrics_table(tidy)
    caption = paper_tables.caption(
        f"{title}: mean ± SD over {paper_tables.draws_text(draws)}", chapter.profile, chapter.cohort
    )
    paper_tables.write_table(tidy, formatted, name, chapter.figures, caption)
    missing = [str(c) for c in tidy[tidy["mean"].isna()]["config"].unique().tolist()]
    return draws, formatted, missing


# The tasks as the tables' figures title them.
TASK_TITLES = {"invasion": "brain invasion", "high_grade": "grade"}


def pooled_roc_pr(
    chapter: Chapter, name: str, configs: tuple[str, ...], draws: Sequence[int]
) -> dict[str, plt.Figure]:
    """ROC and precision-recall curves per task of ``configs``, each one's evaluated draws
    pooled, saved as ``<name>_roc_pr_<task>``; task -> figure."""
    predictions = {}
    for config in configs:
        pooled = read_pooled_predictions(chapter.runs, config, draws)
        if pooled is not None:
            predictions[config] = pooled
    figures = {}
    for task, title in TASK_TITLES.items():
        figures[task] = roc_pr_curves(predictions, task, title=title)
        save_figure(figures[task], chapter.figures, f"{name}_roc_pr_{task}")
    return figures


# ---------------------------------------------------------------------------- 06 representations


@dataclass
class DrawEmbedding:
    """A trained network's pooled features of one draw's test patients."""

    features: dict[str, np.ndarray]  # tcl.evaluation.representations.embed's output
    table: pd.DataFrame  # the test patients' manifest rows, indexed by patient_id
    classes: list[str]  # each patient's cohort class


def embed_test_patients(chapter: Chapter, config: str, draw: int) -> DrawEmbedding:
    """Embed the test patients of ``draw`` with the saved network of that run (from the
    cache, as in training)."""
    model, _ = load_trained(chapter.run_dir(config, draw))
    cache = load_cache(chapter.cache)
    test_ids = read_splits(chapter.splits)[draw]["test"]
    features = embed(model, cache.volumes, cache.rows_of(test_ids))
    table = read_manifest(chapter.manifest).set_index("patient_id").loc[test_ids]
    return DrawEmbedding(features, table, patient_classes(table))


def embedding_summary(config: str, draw: int, embedding: DrawEmbedding) -> str:
    """One line: what was embedded, and the width of each feature set."""
    sizes = ", ".join(
        f"{k} {v.shape[1]}-d" for k, v in embedding.features.items() if k in FEATURE_SETS
    )
    return f"{config}, draw {draw}: embedded {len(embedding.table)} test patients; {sizes}"


# ---------------------------------------------------------------------------- 07 predict, explain


def explain_settings(profile: str, ig_steps: int, per_class: int) -> tuple[int, int]:
    """Integrated-gradients steps and test patients scored per class: the notebook's values,
    or the profile's (tcl.application.explain.PROFILE_SETTINGS; a profile not listed takes the
    paper's) where they are 0 (steps) or negative (patients)."""
    settings = PROFILE_SETTINGS.get(profile, PROFILE_SETTINGS["paper"])
    steps = ig_steps or settings["steps"]
    return steps, settings["per_class"] if per_class < 0 else per_class


def model_card(spec: ModelSpec) -> pd.DataFrame:
    """What a saved network's model.json says, as one column for people."""
    description = spec.raw
    return pd.Series(
        {
            "configuration": spec.config,
            "width / dropout": f"{spec.width} / {spec.dropout}",
            "parameters": f"{description['parameters']:,}",
            "input size (H, W, D)": spec.size,
            "channels": ", ".join(spec.channels),
            "ROI margin (voxels)": spec.margin,
            "clip": description["preprocessing"]["clip"],
            "normalisation": description["preprocessing"]["normalisation"],
            "decision rule": description["outputs"]["decision_rule"],
            "trained on draw": description["training"]["draw"],
            "commit": description["provenance"]["commit"],
        },
        name="model.json",
    ).to_frame()


def draw_test_patients(
    table: pd.DataFrame, splits_path: str | os.PathLike, draw: int
) -> pd.DataFrame:
    """The manifest rows of ``draw``'s test patients (manifest order), with their ``class``."""
    test_ids = read_splits(splits_path)[draw]["test"]
    test = table[table["patient_id"].isin(test_ids)].copy()
    test["class"] = patient_classes(test)
    return test


def first_per_class(patients: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """The patients sorted by id, keeping the first ``n`` of each ``class`` (all with None).

    A class-balanced part of a test set that does not depend on the manifest's order."""
    ordered = patients.sort_values("patient_id")
    return ordered if n is None else ordered.groupby("class", sort=False).head(n)


def write_new_manifest(
    patients: pd.DataFrame, manifest: str | os.PathLike, out: str | os.PathLike
) -> Path:
    """Write ``patients`` as a manifest of their own at ``out``, as a user with new patients
    would: the source manifest's columns only, in its order.

    The new manifest lives in another folder, so every file path in it must be absolute:
    read_manifest has made the image paths so, and ``signs`` (a column it keeps as written,
    relative to the source manifest) is resolved here.
    """
    manifest, out = Path(manifest), Path(out)
    columns = [c for c in pd.read_csv(manifest, nrows=0).columns if c in patients]
    copy = patients[columns].copy()
    if "signs" in copy:
        copy["signs"] = [str((manifest.parent / p).resolve()) for p in copy["signs"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    copy.to_csv(out, index=False)
    return out


def beside_training_run(
    new: pd.DataFrame, run_dir: str | os.PathLike, patients: pd.DataFrame
) -> tuple[pd.DataFrame, float]:
    """New predictions beside the training run's own probabilities for the same patients, with
    each patient's class first; and the largest absolute difference between the two, which
    must be at rounding level (same network, same preprocessing)."""
    own = read_csv_text_ids(Path(run_dir) / run_layout.PREDICTIONS).set_index("patient_id")
    probabilities = ["p_invasion", "p_high_grade"]
    table = new.set_index("patient_id").join(own[probabilities].add_suffix(" (training run)"))
    table.insert(0, "class", patients.set_index("patient_id")["class"])
    difference = (
        table[probabilities].to_numpy()
        - table[[f"{p} (training run)" for p in probabilities]].to_numpy()
    )
    return table, float(np.abs(difference).max())
