"""``python -m tcl evaluate RUNS_DIR --out DIR``: metrics, paper comparison and DeLong tests.

Reads every run ``RUNS_DIR/<config>/draw<K>/predictions.csv`` (``config`` one of
``tcl.config.CONFIGS`` or ``radiomics``) and writes, atomically, into ``DIR``:

- ``metrics_per_draw.csv``: ``config, draw, task, metric, value``, every metric of
  ``tcl.evaluation.metrics.METRICS`` (the paper's eight plus ``auprc_hard``).
- ``metrics_summary.csv``: ``config, task, metric, mean, sd, n_draws, paper, complete,
  paper_table, note``. ``paper`` is the published value (Table 2 for efmt/mfmt/mmoe/maml/proposed,
  Table 3 for baseline1-4/proposed; Proposed has identical numbers in both, so
  ``paper_table`` reads ``2+3``). The paper's AUPRC was computed from hard labels, so the
  paper value is attached to both ``auprc`` (ours, from scores) and ``auprc_hard`` (like for
  like); ``note`` says so on those rows. A configuration missing a draw has ``complete`` false
  and NaN ``mean``/``sd``: it is never averaged over fewer draws.
- ``delong.csv``: ``task, draw, config, auc_proposed, auc_other, diff, ci_low, ci_high, z,
  p_value, p_holm, family_size, note``: the paired DeLong test of ``proposed`` against each other
  configuration on the same test patients of that draw (``diff = auc_proposed - auc_other``,
  CI of that difference). A comparison on a test set with fewer than two patients of a
  class (possible only in tiny smoke cohorts) is listed with NaN values and a note.

  **Multiplicity family**: Holm's adjustment runs over all comparisons sharing a task and a
  draw, i.e. ``proposed`` vs every other configuration present for that draw (up to eight
  networks plus radiomics). Draws are separate test sets and tasks separate questions, so each
  (task, draw) is one family, which matches the paper's claim "proposed differs from each
  compared method" made per task.
- ``provenance.json``: commit, package versions, the runs read (with SHA-256 of each file),
  the missing runs, and the choices above.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tcl.config import CONFIGS
from tcl.data.manifest import read_csv_text_ids
from tcl.evaluation.metrics import METRICS, run_metrics, summarize_draws
from tcl.evaluation.stats import (
    bootstrap_ci,
    delong_ci,
    delong_test,
    holm,
    mann_whitney_auc,
    paired_scores,
)
from tcl.tasks import PAPER_TASK, TASK_FROM_PAPER, TASKS
from tcl.training.runs import PREDICTIONS, draw_of, predictions_file
from tcl.utils import TclError, atomic_path, provenance

EVALUATED_CONFIGS: tuple[str, ...] = CONFIGS + ("radiomics",)
REFERENCE_CONFIG = "proposed"
DEFAULT_DRAWS: tuple[int, ...] = (0, 1, 2)
PAPER_TABLES: dict[str, str] = {"2": "paper_table2.csv", "3": "paper_table3.csv"}
HOLM_FAMILY = (
    "per (task, draw): proposed vs every other configuration with predictions for that draw"
)
SUMMARY_COLUMNS = [
    "config", "task", "metric", "mean", "sd", "n_draws", "paper", "complete", "paper_table", "note",
]  # fmt: skip
# The paper's AUPRC column was computed from hard labels (docs/paper.md, "Known defects of the
# released code").
AUPRC_NOTES: dict[str, str] = {
    "auprc": "paper AUPRC came from hard labels: compare it with auprc_hard",
    "auprc_hard": "paper AUPRC column (hard labels, like for like)",
}


def _join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def paper_values() -> pd.DataFrame:
    """The published Table 2 and Table 3 values, long format.

    Columns ``config, task, metric, paper, paper_table`` with our names (``efmt``,
    ``high_grade``, ...). Proposed appears in both tables; its numbers must agree and it is
    listed once with ``paper_table = "2+3"``.
    """
    frames = []
    for table, filename in PAPER_TABLES.items():
        path = resources.files("tcl") / "reference" / filename
        with resources.as_file(path) as file:
            wide = pd.read_csv(file)
        long = wide.melt(id_vars=["task", "metric"], var_name="config", value_name="paper")
        long["config"] = long["config"].str.lower()
        long["task"] = long["task"].map(TASK_FROM_PAPER)
        long["paper_table"] = table
        frames.append(long)
    values = pd.concat(frames, ignore_index=True)
    both = values.groupby(["config", "task", "metric"])["paper"].nunique()
    if (both > 1).any():  # a guard on the packaged data, not on user input
        raise TclError(f"paper tables disagree for {list(both[both > 1].index)}")
    values["paper_table"] = values.groupby(["config", "task", "metric"])["paper_table"].transform(
        lambda t: "+".join(sorted(set(t)))
    )
    values = values.drop_duplicates(["config", "task", "metric"])
    return values[["config", "task", "metric", "paper", "paper_table"]].reset_index(drop=True)


def find_runs(runs_dir: Path, draws: tuple[int, ...] | None = None) -> dict[tuple[str, int], Path]:
    """``{(config, draw): predictions.csv}`` for every run under ``runs_dir``.

    Folders that are not a known configuration or not ``draw<K>`` are ignored (and listed in
    provenance.json by ``evaluate_runs``); a draw folder without predictions.csv is a missing run.
    With ``draws``, runs of other draws are left out (``make all DRAWS=0`` evaluates draw 0 even
    where runs of other draws exist, e.g. radiomics, which makes all three at once).
    """
    runs = {}
    for config in EVALUATED_CONFIGS:
        for folder in sorted((runs_dir / config).glob("draw*")):
            draw = draw_of(folder.name)
            predictions = folder / PREDICTIONS
            if draw is not None and predictions.is_file():
                if draws is None or draw in draws:
                    runs[(config, draw)] = predictions
    return runs


def _ignored_entries(runs_dir: Path) -> list[str]:
    ignored = []
    for entry in sorted(runs_dir.iterdir()):
        if entry.name not in EVALUATED_CONFIGS:
            ignored.append(entry.name)
        elif entry.is_dir():
            for sub in sorted(entry.iterdir()):
                if draw_of(sub.name) is None or not (sub / PREDICTIONS).is_file():
                    ignored.append(f"{entry.name}/{sub.name}")
    return ignored


def read_predictions(path: Path, draw: int) -> pd.DataFrame:
    """One run's predictions.csv; its ``draw`` column must equal the folder's draw."""
    try:
        table = read_csv_text_ids(path)  # ids as text: a patient NA or None is not missing
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise TclError(f"{path}: cannot read predictions ({error})") from None
    if "draw" in table.columns and not (table["draw"] == draw).all():
        found = sorted(set(table["draw"].astype(str)))
        raise TclError(f"{path}: folder says draw {draw} but the draw column holds {found}")
    return table


def read_pooled_predictions(
    runs_dir: str | os.PathLike, config: str, draws: Sequence[int]
) -> pd.DataFrame | None:
    """The predictions of ``config``'s runs of ``draws`` in one table, draw after draw (ids as
    text, each draw checked as :func:`read_predictions` does); runs not there are left out,
    and None says that none is. Each draw's test set is another, so pooled rows show typical
    behaviour, not one test set's."""
    tables = []
    for draw in draws:
        path = predictions_file(runs_dir, config, draw)
        if path.is_file():
            tables.append(read_predictions(path, draw))
    return pd.concat(tables) if tables else None


def delong_table(
    predictions: dict[tuple[str, int], pd.DataFrame], alpha: float = 0.05
) -> pd.DataFrame:
    """Paired DeLong tests of proposed vs each other configuration, per task and draw.

    ``predictions`` maps ``(config, draw)`` to a predictions table. Holm-adjusted within each
    (task, draw) family; see the module docstring.
    """
    columns = [
        "task", "draw", "config", "auc_proposed", "auc_other", "diff", "ci_low", "ci_high",
        "z", "p_value", "p_holm", "family_size", "note",
    ]  # fmt: skip
    rows = []
    draws = sorted({d for c, d in predictions if c == REFERENCE_CONFIG})
    for task in TASKS:
        for draw in draws:
            reference = predictions[(REFERENCE_CONFIG, draw)]
            family = []
            for config in EVALUATED_CONFIGS:
                if config == REFERENCE_CONFIG or (config, draw) not in predictions:
                    continue
                _, y, score_ref, score_other = paired_scores(
                    reference,
                    predictions[(config, draw)],
                    score_column=f"p_{task}",
                    label_column=task,
                    name_a=f"{REFERENCE_CONFIG}/draw{draw}",
                    name_b=f"{config}/draw{draw}",
                )
                n_pos = int(np.sum(y == 1))
                n_neg = int(np.sum(y == 0))
                if min(n_pos, n_neg) < 2:
                    # a tiny (smoke) test set: the DeLong variance needs two patients per class;
                    # report the gap instead of stopping the whole evaluation
                    note = f"not tested: {n_pos} positive / {n_neg} negative test patients"
                    family.append([task, draw, config, *[math.nan] * 7, note])
                    continue
                try:
                    result = delong_test(y, score_ref, score_other, alpha=alpha)
                except TclError as error:
                    raise TclError(f"{config}/draw{draw} vs proposed, {task}: {error}") from None
                family.append([
                    task, draw, config, result.auc_a, result.auc_b, result.diff,
                    result.ci_low, result.ci_high, result.z, result.p_value, "",
                ])  # fmt: skip
            # Holm over the comparisons actually made in this (task, draw) family
            p_values = np.array([row[9] for row in family], dtype=np.float64)
            adjusted = holm(p_values) if family else []
            size = int(np.sum(~np.isnan(p_values)))
            rows += [[*row[:10], p, size, row[10]] for row, p in zip(family, adjusted, strict=True)]
    return pd.DataFrame(rows, columns=columns)


def auc_intervals(
    predictions: dict[int, pd.DataFrame], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """Each task's test AUC on each draw with two (1 - alpha) intervals: DeLong's (from the
    AUC's variance, a normal approximation) and a stratified percentile bootstrap of
    ``n_boot`` resamples (no approximation, slower). ``predictions`` maps a draw to one
    network's predictions table. Where the two agree, the normal approximation holds at this
    test-set size. Columns: task, draw, auc, delong_low, delong_high, bootstrap_low,
    bootstrap_high, note (why the row is empty: a class with fewer than 2 test patients,
    which has no variance to estimate, as in the smoke profile's small test sets)."""
    rows = []
    for task in TASKS:
        for draw, table in sorted(predictions.items()):
            y, score = table[task].to_numpy(), table[f"p_{task}"].to_numpy()
            counts = int(np.sum(y == 1)), int(np.sum(y == 0))
            if min(counts) < 2:
                note = f"{counts[0]} positive and {counts[1]} negative test patients"
                rows.append([task, draw, *[math.nan] * 5, note])
                continue
            delong = delong_ci(y, score, alpha)
            boot = bootstrap_ci(mann_whitney_auc, y, score, n_boot=n_boot, alpha=alpha, seed=seed)
            rows.append([task, draw, delong.auc, delong.ci_low, delong.ci_high, boot.ci_low,
                         boot.ci_high, ""])  # fmt: skip
    columns = ["task", "draw", "auc", "delong_low", "delong_high", "bootstrap_low",
               "bootstrap_high", "note"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")


def evaluate_runs(
    runs_dir: str | Path,
    out_dir: str | Path,
    draws: tuple[int, ...] = DEFAULT_DRAWS,
    alpha: float = 0.05,
) -> dict[str, Path]:
    """Evaluate every run under ``runs_dir`` and write the four outputs into ``out_dir``.

    Only runs of ``draws`` are read; provenance.json's ``expected_draws`` says which (the
    notebooks' tables name them). Returns ``{"metrics_per_draw", "metrics_summary", "delong",
    "provenance": path}``.
    Raises TclError when ``runs_dir`` does not exist or holds no run at all. Nothing is written
    unless every table could be computed (each file is renamed into place only once complete).
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise TclError(f"RUNS_DIR {runs_dir} does not exist or is not a folder")
    draws = tuple(sorted(set(int(d) for d in draws)))
    runs = find_runs(runs_dir, draws)
    if not runs:
        raise TclError(
            f"no runs found in RUNS_DIR {runs_dir}: expected "
            f"{runs_dir}/<config>/draw<K>/predictions.csv with config in "
            f"{', '.join(EVALUATED_CONFIGS)} and K in {', '.join(map(str, draws))}"
        )

    predictions = {key: read_predictions(path, key[1]) for key, path in sorted(runs.items())}
    per_draw_frames = []
    for (config, draw), table in predictions.items():
        frame = run_metrics(table, what=str(runs[(config, draw)]))
        frame.insert(0, "config", config)
        per_draw_frames.append(frame)
    per_draw = pd.concat(per_draw_frames, ignore_index=True)
    per_draw = per_draw[["config", "draw", "task", "metric", "value"]]

    summary = summarize_draws(per_draw, expected_draws=draws)
    paper = paper_values()
    paper_lookup = pd.concat(
        [paper, paper[paper["metric"] == "auprc"].assign(metric="auprc_hard")], ignore_index=True
    )
    summary = summary.merge(paper_lookup, on=["config", "task", "metric"], how="left")
    summary["note"] = [
        _join_notes(note, AUPRC_NOTES[metric])
        if metric in AUPRC_NOTES and pd.notna(value)
        else note
        for note, metric, value in zip(
            summary["note"], summary["metric"], summary["paper"], strict=True
        )
    ]
    order = {c: i for i, c in enumerate(EVALUATED_CONFIGS)}
    summary = (
        summary.assign(
            _config=summary["config"].map(order),
            _task=summary["task"].map(TASKS.index),
            _metric=summary["metric"].map(METRICS.index),
        )
        .sort_values(["_config", "_task", "_metric"])
        .drop(columns=["_config", "_task", "_metric"])
        .reset_index(drop=True)
    )

    summary = summary[SUMMARY_COLUMNS]

    delong = delong_table(predictions, alpha=alpha)

    configs_seen = sorted({c for c, _ in runs}, key=order.get)
    missing_runs = [f"{c}/draw{d}" for c in configs_seen for d in draws if (c, d) not in runs]
    record = {
        **provenance(),
        "runs_dir": str(runs_dir.resolve()),
        "expected_draws": list(draws),
        "alpha": alpha,
        "runs": {
            f"{c}/draw{d}": {"path": str(path), "sha256": _sha256(path)}
            for (c, d), path in sorted(runs.items())
        },
        "missing_runs": missing_runs,
        "absent_configs": [c for c in EVALUATED_CONFIGS if c not in configs_seen],
        "ignored_entries": _ignored_entries(runs_dir),
        "other_draws_left_out": sorted(
            f"{c}/draw{d}" for c, d in find_runs(runs_dir) if d not in draws
        ),
        "task_names_in_paper": PAPER_TASK,
        "holm_family": HOLM_FAMILY,
        "metric_notes": {
            "auprc": "average precision of p(class 1) (fixes the released code)",
            "auprc_hard": "average precision of hard 0/1 predictions (released code, paper)",
            "balanced_accuracy": "(sensitivity + specificity) / 2 for both tasks (fixes the "
            "released code's swapped arguments for grade)",
            "sd": "sample SD (ddof 1) over draws; missing draws leave mean and sd NaN",
        },
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics_per_draw": out_dir / "metrics_per_draw.csv",
        "metrics_summary": out_dir / "metrics_summary.csv",
        "delong": out_dir / "delong.csv",
        "provenance": out_dir / "provenance.json",
    }
    _write_csv(per_draw, paths["metrics_per_draw"])
    _write_csv(summary, paths["metrics_summary"])
    _write_csv(delong, paths["delong"])
    with atomic_path(paths["provenance"]) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    return paths


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if math.isnan(value) else float(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def main(args: argparse.Namespace) -> int:
    """``python -m tcl evaluate`` with its parsed options (tcl.cli)."""
    if args.draws is not None and args.draws < 1:
        raise TclError(f"--draws must be at least 1, got {args.draws}")
    if args.draw is not None and min(args.draw) < 0:
        raise TclError(f"--draw must be 0 or more, got {min(args.draw)}")
    if args.draw is not None:
        draws = tuple(args.draw)
    else:
        draws = tuple(range(args.draws)) if args.draws is not None else DEFAULT_DRAWS
    if not 0 < args.alpha < 1:
        raise TclError(f"--alpha must lie in (0, 1), got {args.alpha}")
    out = args.out if args.out is not None else args.runs_dir.resolve().parent
    paths = evaluate_runs(args.runs_dir, out, draws=draws, alpha=args.alpha)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
