"""Tables for the notebooks: Table 1 (cohort), Tables 2–3 (metrics beside the paper's), DeLong.
The README's results block and the comparison of a run with it are :mod:`tcl.pipeline.reproduction`.

Every table is written as CSV (tidy, for machines), Markdown and LaTeX (formatted, for people),
under ``figures/<profile>/<name>.{csv,md,tex}``, atomically, with a caption line that says which
profile and cohort produced it — synthetic results are never passed off as the paper's.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tcl.data.splits import CLASSES, PAPER_TABLE1, patient_classes
from tcl.evaluation.metrics import PAPER_METRICS
from tcl.tasks import PAPER_TASK
from tcl.utils import write_text_atomic

CLASS_LABELS = {
    "low_grade": "Low grade (WHO I), no invasion",
    "high_grade_invasive": "High grade (WHO II/III), invasion",
    "high_grade_noninvasive": "High grade, no invasion",
}
TABLE2_CONFIGS = ("efmt", "mfmt", "mmoe", "maml", "radiomics", "proposed")
TABLE3_CONFIGS = ("baseline1", "baseline2", "baseline3", "baseline4", "proposed")
CONFIG_LABELS = {
    "efmt": "EFMT", "mfmt": "MFMT", "mmoe": "MMoE", "maml": "MAML", "radiomics": "Radiomics",
    "baseline1": "Baseline1", "baseline2": "Baseline2", "baseline3": "Baseline3",
    "baseline4": "Baseline4", "proposed": "Proposed",
}  # fmt: skip
METRICS = PAPER_METRICS  # the paper's eight, in its column order
METRIC_LABELS = {
    "sensitivity": "Sensitivity", "specificity": "Specificity", "accuracy": "Accuracy",
    "g_mean": "G-Mean", "balanced_accuracy": "Balanced Acc.", "mcc": "MCC", "auprc": "AUPRC",
    "auc": "AUC",
}  # fmt: skip
TASK_LABELS = {"invasion": "Brain invasion", "grade": "Grade", "high_grade": "Grade"}


def table1(manifest: pd.DataFrame) -> pd.DataFrame:
    """Cohort characteristics per class (paper Table 1) beside the paper's values.

    Args:
        manifest: one row per patient with ``who_grade``, ``invasion``, ``age``, ``sex``.

    Returns:
        One row per class: ``n, age_mean, age_sd, male, female`` and the same with ``paper_``.
    """
    frame = manifest.assign(cohort_class=patient_classes(manifest))
    rows = []
    for name in CLASSES:
        members = frame[frame.cohort_class == name]
        paper = PAPER_TABLE1[name]
        age = pd.to_numeric(members["age"], errors="coerce")
        rows.append(
            {
                "class": CLASS_LABELS[name],
                "n": len(members),
                "age_mean": age.mean(),
                "age_sd": age.std(ddof=1),
                "male": int((members["sex"] == "M").sum()),
                "female": int((members["sex"] == "F").sum()),
                "paper_n": paper[0],
                "paper_age_mean": paper[1],
                "paper_age_sd": paper[2],
                "paper_male": paper[3],
                "paper_female": paper[4],
            }
        )
    return pd.DataFrame(rows)


def format_table1(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 for people: "ours [paper]" in each cell."""
    return pd.DataFrame(
        {
            "Class": table["class"],
            "n": [f"{r.n} [{r.paper_n}]" for r in table.itertuples()],
            "Age": [
                f"{r.age_mean:.2f} ± {r.age_sd:.2f} [{r.paper_age_mean:.2f} ± {r.paper_age_sd:.2f}]"
                for r in table.itertuples()
            ],
            "Male/Female": [
                f"{r.male}/{r.female} [{r.paper_male}/{r.paper_female}]" for r in table.itertuples()
            ],
        }
    )


def metrics_table(summary: pd.DataFrame, configs: tuple[str, ...]) -> pd.DataFrame:
    """Tidy rows of ``summary`` (``metrics_summary.csv``) for ``configs``, in table order."""
    frame = summary[summary["config"].isin(configs)].copy()
    frame["task"] = frame["task"].replace(PAPER_TASK)
    frame["config"] = pd.Categorical(frame["config"], categories=list(configs), ordered=True)
    frame = frame[frame["metric"].isin(METRICS)]
    frame["metric"] = pd.Categorical(frame["metric"], categories=list(METRICS), ordered=True)
    frame["task"] = pd.Categorical(frame["task"], categories=["invasion", "grade"], ordered=True)
    return frame.sort_values(["task", "metric", "config"]).reset_index(drop=True)


def format_metrics_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """Rows (task, metric) × columns config, cells "mean ± sd [paper]"."""

    def cell(row: pd.Series) -> str:
        if pd.isna(row["mean"]):
            text = "missing"
        else:
            text = (
                f"{row['mean']:.4f} ± {row['sd']:.4f}"
                if pd.notna(row["sd"])
                else f"{row['mean']:.4f}"
            )
        paper = row.get("paper")
        return text if paper is None or pd.isna(paper) else f"{text} [{paper:.4f}]"

    cells = tidy.assign(cell=tidy.apply(cell, axis=1))
    wide = cells.pivot_table(
        index=["task", "metric"], columns="config", values="cell", aggfunc="first", observed=True
    )
    wide = wide.reset_index()
    wide["task"] = wide["task"].map(lambda t: TASK_LABELS.get(str(t), str(t)))
    wide["metric"] = wide["metric"].map(lambda m: METRIC_LABELS.get(str(m), str(m)))
    wide.columns = [CONFIG_LABELS.get(str(c), str(c).capitalize()) for c in wide.columns]
    return wide


def draw_counts(manifest: pd.DataFrame, draws: list[dict[str, list[str]]]) -> pd.DataFrame:
    """Patients per draw and set (train, test): all of them, invasive, high grade, low grade.

    Args:
        manifest: one row per patient with ``patient_id``, ``invasion``, ``high_grade``.
        draws: the draws of splits.json (``train`` and ``test`` lists of patient ids).
    """
    labels = manifest.set_index("patient_id")
    rows = []
    for k, draw in enumerate(draws):
        for part in ("train", "test"):
            members = labels.loc[draw[part]]
            rows.append(
                {
                    "draw": k,
                    "set": part,
                    "patients": len(members),
                    "invasive": int(members.invasion.sum()),
                    "high grade": int(members.high_grade.sum()),
                    "low grade": int((members.high_grade == 0).sum()),
                }
            )
    return pd.DataFrame(rows)


DELONG_COLUMNS = (
    "task", "config", "draw", "auc_proposed", "auc_other", "diff", "ci", "p_value", "p_holm",
)  # fmt: skip


def delong_rows(delong: pd.DataFrame) -> pd.DataFrame:
    """``delong.csv`` (tcl.evaluation.evaluate) with the paper's task names, sorted by task,
    configuration and draw: the tidy table beside the formatted one."""
    frame = delong.assign(task=delong["task"].replace(PAPER_TASK))
    return frame.sort_values(["task", "config", "draw"]).reset_index(drop=True)


def format_delong(delong: pd.DataFrame) -> pd.DataFrame:
    """The DeLong tests for people: configuration labels, the difference and its confidence
    interval signed to four decimals, p-values to three significant digits.

    Args:
        delong: :func:`delong_rows`' table.
    """
    return delong.assign(
        config=delong["config"].map(lambda c: CONFIG_LABELS.get(c, c)),
        diff=delong["diff"].map("{:+.4f}".format),
        ci=[
            f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(delong.ci_low, delong.ci_high, strict=True)
        ],
        p_value=delong["p_value"].map("{:.3g}".format),
        p_holm=delong["p_holm"].map("{:.3g}".format),
    )[list(DELONG_COLUMNS)]


def significant_share(delong: pd.DataFrame, alpha: float = 0.05) -> str:
    """One sentence: per task, the share of comparisons with a Holm-adjusted p below ``alpha``
    (a comparison that was not tested counts as not significant)."""
    significant = (delong["p_holm"] < alpha).groupby(delong["task"]).mean()
    shares = ", ".join(f"{task} {share:.0%}" for task, share in significant.items())
    return f"Share of comparisons significant after Holm adjustment: {shares}"


def to_markdown(frame: pd.DataFrame, caption: str = "") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    header = [str(c) for c in frame.columns]
    rows = [["" if pd.isna(v) else _fmt(v) for v in row] for row in frame.itertuples(index=False)]
    lines = [f"{caption}\n"] if caption else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# LaTeX's special characters in text mode and what prints them (the set pandas'
# Styler.to_latex(escape=True) handles), plus ± as math. Replaced in one pass, so that the braces
# and backslash of a replacement are never escaped again.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}  # fmt: skip
_LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX_ESCAPES)))


def latex_escape(text: str) -> str:
    """``text`` with every LaTeX special character replaced so that it prints as itself."""
    return _LATEX_SPECIAL.sub(lambda match: LATEX_ESCAPES[match.group()], text)


def to_latex(frame: pd.DataFrame, caption: str = "") -> str:
    """A booktabs LaTeX tabular (no extra dependency); every cell and header is escaped
    (:func:`latex_escape`), the caption is a comment line above it."""
    caption = " ".join(caption.split())  # one line: a newline would end the comment
    lines = [f"% {caption}"] if caption else []
    lines.append(r"\begin{tabular}{" + "l" * len(frame.columns) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\")
    lines.append(r"\midrule")
    for row in frame.itertuples(index=False):
        cells = ("" if pd.isna(v) else _fmt(v) for v in row)
        lines.append(" & ".join(latex_escape(cell) for cell in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    return str(value)


def write_table(
    tidy: pd.DataFrame,
    formatted: pd.DataFrame,
    name: str,
    out_dir: str | os.PathLike,
    caption: str,
) -> dict[str, Path]:
    """Write ``name.csv`` (tidy) and ``name.md`` / ``name.tex`` (formatted) into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], tidy.to_csv(index=False))
    write_text_atomic(paths["md"], to_markdown(formatted, caption))
    write_text_atomic(paths["tex"], to_latex(formatted, caption))
    return paths


def caption(title: str, profile: str, cohort: str) -> str:
    """A caption that always says where the numbers came from."""
    source = "SYNTHETIC cohort (not the paper's data)" if cohort.startswith("synthetic") else cohort
    return f"{title} — profile `{profile}`, cohort: {source}; [paper value] in brackets."


NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


def draws_text(draws: list[int] | tuple[int, ...]) -> str:
    """How a caption names the draws a table holds: ``draw 0 only``, ``the two draws 0 and 2``,
    ``the three draws 0, 1 and 2``."""
    draws = sorted(int(d) for d in draws)
    if not draws:
        raise ValueError("no draws")
    if len(draws) == 1:
        return f"draw {draws[0]} only"
    listed = ", ".join(map(str, draws[:-1])) + f" and {draws[-1]}"
    return f"the {NUMBER_WORDS.get(len(draws), str(len(draws)))} draws {listed}"


def evaluated_draws(evaluation_dir: str | os.PathLike) -> list[int]:
    """The draws an evaluation holds (``expected_draws`` of its provenance.json, written by
    ``python -m tcl evaluate``; ``make all DRAWS=0`` evaluates draw 0 only)."""
    path = Path(evaluation_dir) / "provenance.json"
    return [int(d) for d in json.loads(path.read_text())["expected_draws"]]
