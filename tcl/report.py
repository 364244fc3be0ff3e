"""Tables for the notebooks: Table 1 (cohort), Tables 2–3 (metrics beside the paper's), DeLong.

Every table is written as CSV (tidy, for machines), Markdown and LaTeX (formatted, for people),
under ``figures/<profile>/<name>.{csv,md,tex}``, atomically, with a caption line that says which
profile and cohort produced it — synthetic results are never passed off as the paper's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from tcl.data.splits import CLASSES, PAPER_TABLE1, patient_classes
from tcl.metrics import PAPER_METRICS, PAPER_TASK
from tcl.utils import git_commit, write_text_atomic

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
    """``delong.csv`` (tcl.evaluate) with the paper's task names, sorted by task, configuration
    and draw: the tidy table beside the formatted one."""
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


README_START = "<!-- results:start (written by `make all`; do not edit by hand) -->"
README_END = "<!-- results:end -->"
README_TABLES = ("table1", "ceilings", "table2", "table3")
# How close to the input yardstick (tcl.ceilings, input_lr) a network must come, in mean test
# AUC, to count as having learnt what its input carries (issue: a quick protocol that learns).
YARDSTICK_MARGIN = 0.03


def results_summary(summary: pd.DataFrame, ceilings: pd.DataFrame | None = None) -> str:
    """A paragraph about a run, computed from ``metrics_summary.csv`` (and the cohort's
    ``ceilings.csv`` where there is one): what the signs allow, where the networks land, the
    proposed network's rank, radiomics, and which networks never cross p > 0.5. Generated with
    the tables, so it cannot disagree with them."""
    networks = [c for c in TABLE2_CONFIGS + TABLE3_CONFIGS if c != "radiomics"]
    networks = list(dict.fromkeys(networks))

    def mean(config: str, task: str, metric: str) -> float:
        rows = summary[
            (summary.config == config) & (summary.task == task) & (summary.metric == metric)
        ]
        return float(rows["mean"].iloc[0]) if len(rows) else float("nan")

    label = CONFIG_LABELS
    sentences = []
    tasks = {"invasion": "invasion", "high_grade": "grade"}
    yardstick: dict[str, float] = {}
    if ceilings is not None and {"ceiling", "mean", "task"} <= set(ceilings.columns):
        ceiling = ceilings.set_index(["ceiling", "task"])["mean"]

        def pair(name: str) -> str:
            return " / ".join(f"{ceiling[name, task]:.3f}" for task in tasks)

        sentences.append(
            "Ceilings of this cohort (mean test AUC invasion / grade, `python -m tcl ceilings`): "
            f"every sign read perfectly {pair('sign_lr')}, the shared factor's signs only "
            f"{pair('shared_sign_lr')}, the Bayes rule on the latent factors {pair('bayes')}."
        )
        if ("input_lr", "invasion") in ceiling.index:
            sentences.append(
                "The input yardstick (a logistic regression on 42 statistics of the networks' "
                f"own input, `tcl/ceilings.py`) reaches {pair('input_lr')}."
            )
            yardstick = {task: float(ceiling["input_lr", task]) for task in tasks}
    for task, name in tasks.items():
        aucs = {c: mean(c, task, "auc") for c in networks}
        aucs = {c: v for c, v in aucs.items() if not np.isnan(v)}
        if not aucs:
            continue
        ranked = sorted(aucs, key=aucs.get, reverse=True)
        low, high = ranked[-1], ranked[0]
        text = (
            f"{name.capitalize()}: the {len(aucs)} networks reach a mean test AUC of "
            f"{aucs[low]:.3f} ({label[low]}) to {aucs[high]:.3f} ({label[high]})"
        )
        if "proposed" in aucs:
            text += (
                f"; the proposed network {aucs['proposed']:.3f}, "
                f"{_ordinal(ranked.index('proposed') + 1)} of {len(aucs)}"
            )
        if yardstick:
            near = sum(v >= yardstick[task] - YARDSTICK_MARGIN for v in aucs.values())
            text += (
                f"; {near} of {len(aucs)} within {YARDSTICK_MARGIN} of the input yardstick "
                f"({yardstick[task]:.3f})"
            )
        radiomics = mean("radiomics", task, "auc")
        if not np.isnan(radiomics):
            text += f"; the radiomics reference {radiomics:.3f}"
        sentences.append(text + ".")
    silent = [
        f"{label[c]} ({tasks[t]})"
        for c in networks
        for t in tasks
        if mean(c, t, "sensitivity") == 0.0
    ]
    sentences.append(
        "At the paper's rule (class 1 when p > 0.5) "
        + (
            "every network finds some positive test patients on both tasks (mean sensitivity "
            "above 0)."
            if not silent
            else "these networks find no positive test patient in any draw: "
            + ", ".join(silent)
            + "."
        )
    )
    return " ".join(sentences) + "\n"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def update_readme(
    readme: str | os.PathLike,
    figures_dir: str | os.PathLike,
    profile: str,
    evaluation_dir: str | os.PathLike | None = None,
) -> None:
    """Replace the results block of ``readme`` with the tables under ``figures_dir``.

    The block lies between :data:`README_START` and :data:`README_END`; it holds the Markdown
    tables the notebooks wrote (Table 1, the ceilings where the cohort is synthetic, Tables 2
    and 3) and, with ``evaluation_dir``, the paragraph of :func:`results_summary`, so the
    README shows what the last run produced and nothing typed by hand.
    """
    readme, figures_dir = Path(readme), Path(figures_dir)
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no results block ({README_START} … {README_END})")
    kernels = run_kernels(Path(evaluation_dir).parent / "runs") if evaluation_dir else []
    made_on = f"; kernels: {' + '.join(kernels)}" if kernels else ""
    parts = [f"Last `make all` with profile `{profile}` (commit `{_commit()}`{made_on}):\n"]
    if evaluation_dir is not None:
        summary = pd.read_csv(Path(evaluation_dir) / "metrics_summary.csv")
        ceilings_csv = figures_dir / "ceilings.csv"
        ceilings = pd.read_csv(ceilings_csv) if ceilings_csv.is_file() else None
        parts.append(results_summary(summary, ceilings))
    for name in README_TABLES:
        path = figures_dir / f"{name}.md"
        if path.is_file():
            parts.append(path.read_text())
    block = "\n".join(parts)
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    write_text_atomic(readme, f"{head}{README_START}\n{block}\n{README_END}{tail}")


def run_kernels(runs_dir: str | os.PathLike) -> list[str]:
    """The kernels the trainings under ``runs_dir`` ran on (their run.json), each kind once,
    e.g. "CPU ATen AVX2, oneDNN Intel AVX2" or "CUDA NVIDIA H200"."""
    kinds = []
    for path in sorted(Path(runs_dir).glob("*/draw*/run.json")):
        kernels = json.loads(path.read_text()).get("kernels") or {}
        if kernels.get("device") == "cpu":
            kinds.append(f"CPU ATen {kernels['aten_capability']}, oneDNN {kernels['onednn_isa']}")
        elif kernels.get("device") == "cuda":
            kinds.append(f"CUDA {kernels['gpu']}")
    return list(dict.fromkeys(kinds))


def _commit() -> str:
    """The commit, shortened to 12 characters; a tree with changes keeps its ``+dirty``."""
    commit = git_commit()
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


# ----------------------------------------------------------------------------- reproduction
# How far a reproduction's mean over the three draws may lie from the README's and still count
# as the same result, per metric (keys: the tables' metric labels, lower case, "_" for " " and
# "-", no "."). Measured with tools/reproduction_tolerance.py at commit a748911, quick profile:
# the largest difference of any of a metric's 18 cells (9 networks × 2 tasks) between the
# README's run (CPU_ISA=avx2) and a run with native AVX-512 kernels (another machine) or one
# with SEED=1 (another seed), whichever is larger. The thresholded metrics move most: a run
# whose positives sit just below p = 0.5 in one draw (Baseline3 invasion, AVX2, draw 0) moves
# its mean sensitivity by a third. Radiomics and Table 1 do not depend on either and must be
# identical.
TOLERANCE: dict[str, float] = {
    "sensitivity": 0.3148,
    "specificity": 0.0306,
    "accuracy": 0.0222,
    "g_mean": 0.3145,
    "balanced_acc": 0.1451,
    "mcc": 0.1607,
    "auprc": 0.1278,
    "auc": 0.0382,
}
EXACT_COLUMNS = ("Radiomics",)
COMPARED_TABLES = ("table2", "table3")


def block_of(readme_text: str, profile: str) -> str | None:
    """The results block of ``readme_text`` if it was written by a run of ``profile``."""
    if README_START not in readme_text or README_END not in readme_text:
        return None
    block = readme_text.split(README_START, 1)[1].split(README_END, 1)[0]
    return block if f"with profile `{profile}`" in block else None


def parse_tables(markdown: str) -> dict[tuple[str, str, str], str]:
    """Every cell of the metric tables in ``markdown``: ``{(task, metric, column): text}``."""
    cells: dict[tuple[str, str, str], str] = {}
    header: list[str] | None = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if row[:2] == ["Task", "Metric"]:
            header = row
        elif header is not None and not set(line) <= set("|- "):
            for column, text in zip(header[2:], row[2:], strict=False):
                cells[(row[0], row[1], column)] = text
    return cells


def cell_mean(cell: str) -> float:
    match = re.match(r"\s*(-?[0-9.]+)", cell)
    return float(match.group(1)) if match else float("nan")


def compare_with_reference(
    reference_text: str,
    figures_dir: str | os.PathLike,
    profile: str,
    runs_dir: str | os.PathLike | None = None,
) -> tuple[bool, list[str]]:
    """Compare this run's Tables 2–3 (``figures_dir``) with the README block of ``profile``
    in ``reference_text``. Returns (agrees, lines to print); where the runs under
    ``runs_dir`` used other kernels than the README's, the last line says how to match them."""
    block = block_of(reference_text, profile)
    if block is None:
        return True, [f"no committed results for profile {profile} to compare with"]
    agrees, lines = _compare_cells(block, figures_dir, profile)
    ours = run_kernels(runs_dir) if runs_dir is not None else []
    if ours and lines and "exactly" not in lines[0] and not all(k in block for k in ours):
        lines.append(
            f"  (this run's kernels: {' + '.join(ours)}; the README's are in its results "
            "block. CPU_ISA=avx2 gives AVX2 kernels on any machine that has them.)"
        )
    return agrees, lines


def _compare_cells(
    block: str, figures_dir: str | os.PathLike, profile: str
) -> tuple[bool, list[str]]:
    new_text = "\n".join(
        (Path(figures_dir) / f"{name}.md").read_text()
        for name in COMPARED_TABLES
        if (Path(figures_dir) / f"{name}.md").is_file()
    )
    ours, theirs = parse_tables(new_text), parse_tables(block)
    if not ours:
        return False, [f"no Tables 2-3 under {figures_dir} to compare"]
    if ours == theirs:
        return True, [
            f"the tables agree with the README's ({profile}) exactly: every cell identical"
        ]
    outside, within = [], 0
    for key in sorted(set(ours) | set(theirs)):
        task, metric, column = key
        a, b = cell_mean(ours.get(key, "")), cell_mean(theirs.get(key, ""))
        metric_key = metric.lower().replace(" ", "_").replace(".", "").replace("-", "_")
        limit = 0.0 if column in EXACT_COLUMNS else TOLERANCE.get(metric_key, 0.0)
        if np.isnan(a) or np.isnan(b) or abs(a - b) > limit + 1e-9:
            outside.append(
                f"  {task} · {metric} · {column}: {a:.4f} here, {b:.4f} in the README "
                f"(|difference| {abs(a - b):.4f} > tolerance {limit:.4f})"
            )
        elif a != b:
            within += 1
    if not outside:
        return True, [
            f"the tables agree with the README's ({profile}) within the measured tolerance: "
            f"{within} cell(s) differ, none by more than machine-to-machine or seed-to-seed "
            "variation"
        ]
    return False, [
        f"the tables DIFFER from the README's ({profile}): {len(outside)} cell(s) outside "
        "the measured tolerance"
    ] + outside


def committed_readme(readme: str | os.PathLike) -> str:
    """The README as committed (``git show HEAD:README.md``), or the file as it is where the
    project is not a git checkout."""
    readme = Path(readme).resolve()
    try:
        return subprocess.run(
            ["git", "show", f"HEAD:./{readme.name}"],
            cwd=readme.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return readme.read_text()


def main(args: argparse.Namespace) -> int:
    """``python -m tcl report readme|compare ...`` with its parsed options (tcl.cli): what the
    Makefile's pipeline ends with."""
    if args.action == "readme":
        update_readme(args.readme, args.figures, args.profile, args.evaluation)
        return 0
    if args.skip:
        print(f"tcl: tables not compared with the README's: {args.skip}")
        return 0
    _, lines = compare_with_reference(
        committed_readme(args.readme), args.figures, args.profile, args.runs
    )
    print("\n".join(f"tcl: {line}" if i == 0 else line for i, line in enumerate(lines)))
    return 0
