"""Figures for the notebooks. Each function returns a matplotlib Figure; ``save_figure`` writes
PNG and PDF atomically under ``figures/<profile>/``."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from tcl.evaluation.paper_tables import CONFIG_LABELS
from tcl.tasks import TASK_FROM_PAPER
from tcl.utils import atomic_path

MODALITY_LABELS = {"t1c": "T1C", "flairc": "FLAIR-C", "adc": "ADC"}


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save ``fig`` as ``name.png`` (150 dpi) and ``name.pdf`` in ``out_dir``."""
    paths = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=ext)
        paths.append(path)
    return paths


def modality_montage(
    volumes: dict[str, dict[str, np.ndarray]], masks: dict[str, np.ndarray] | None = None
) -> plt.Figure:
    """Rows = patients (e.g. one per class), columns = T1C, FLAIR-C, ADC (like the paper's Fig. 1).

    Args:
        volumes: ``{row title: {"t1c": [X,Y,Z], "flairc": ..., "adc": ...}}``.
        masks: optional ``{row title: mask [X,Y,Z]}``; picks the slice with the most tumour and
            draws the ROI outline.
    """
    fig, axes = plt.subplots(len(volumes), 3, figsize=(9, 3 * len(volumes)), squeeze=False)
    for row, (title, channels) in enumerate(volumes.items()):
        mask = None if masks is None else masks.get(title)
        first = next(iter(channels.values()))
        z = first.shape[2] // 2 if mask is None else int(np.argmax((mask > 0).sum(axis=(0, 1))))
        for col, (name, volume) in enumerate(channels.items()):
            ax = axes[row, col]
            # radiological display: rows anterior→posterior, patient's left on the right
            ax.imshow(np.rot90(volume[:, :, z]), cmap="gray")
            if mask is not None:
                ax.contour(
                    np.rot90(mask[:, :, z]), levels=[0.5, 1.5], colors=["r", "y"], linewidths=0.6
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(MODALITY_LABELS.get(name, name))
            if col == 0:
                ax.set_ylabel(title)
    fig.tight_layout()
    return fig


def roc_pr_curves(predictions: dict[str, pd.DataFrame], task: str, title: str = "") -> plt.Figure:
    """ROC (left) and precision–recall (right) curves of several configurations for one task.

    Args:
        predictions: ``{config: predictions table}``; all draws are pooled per configuration
            (each draw's test set is a different sample, so pooling shows the typical curve;
            the AUCs in the tables are per-draw means).
        task: ``"invasion"`` or ``"high_grade"``.
    """
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    for config, table in predictions.items():
        column = TASK_FROM_PAPER.get(task, task)  # accepts the paper's "grade" too
        y, p = table[column].to_numpy(), table[f"p_{column}"].to_numpy()
        fpr, tpr, _ = roc_curve(y, p)
        precision, recall, _ = precision_recall_curve(y, p)
        label = CONFIG_LABELS.get(config, config)
        ax_roc.plot(fpr, tpr, label=label, lw=1.2)
        ax_pr.plot(recall, precision, label=label, lw=1.2)
    ax_roc.plot([0, 1], [0, 1], ls=":", c="grey")
    ax_roc.set(xlabel="1 − specificity", ylabel="sensitivity", title=f"ROC — {title or task}")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"Precision–recall — {title or task}")
    ax_roc.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Each loss term (left) and the learning rate (right) per epoch from ``history.csv``."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.8))
    terms = [
        c
        for c in history.columns
        if c == "total" or c.split("_")[0] in {"cls", "con", "aux", "intra"}
    ]
    for term in terms:
        ax_loss.plot(history["epoch"], history[term], label=term, lw=1.5 if term == "total" else 1)
    ax_loss.set(xlabel="epoch", ylabel="loss", title=title or "training loss")
    ax_loss.legend(fontsize=7, ncol=2)
    ax_lr.plot(history["epoch"], history["lr"], c="k")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    return fig


def auc_curves(curves: dict[str, pd.DataFrame], yardstick: dict[str, float] | None = None
               ) -> plt.Figure:  # fmt: skip
    """Train (dashed) and test (solid) AUC per epoch of several runs of tcl.perf.learning
    (``{label: its CSV}``), one panel per task plus grade among the non-invasive patients;
    ``yardstick``: the input yardstick per panel (``invasion``, ``grade``, ``grade_noninv``),
    drawn as a grey line."""
    panels = (("invasion", "invasion"), ("grade", "grade"),
              ("grade_noninv", "grade, non-invasive patients only"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, (label, table) in enumerate(curves.items()):
            epochs = table[table["epoch"] >= 0]
            if f"test_auc_{key}" not in epochs:
                continue
            colour = f"C{i}"
            ax.plot(epochs["epoch"] + 1, epochs[f"test_auc_{key}"], c=colour, label=label)
            ax.plot(epochs["epoch"] + 1, epochs[f"train_auc_{key}"], c=colour, ls="--", lw=0.8)
        if yardstick and key in yardstick:
            ax.axhline(yardstick[key], c="grey", lw=1, label="input yardstick (test)")
        ax.set(xlabel="epoch", title=title, ylim=(0.5, 1.0))
    axes[0].set_ylabel("AUC (solid: test, dashed: train)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def forest_plot(delong: pd.DataFrame, title: str = "") -> plt.Figure:
    """AUC(proposed) − AUC(other) with its confidence interval, per comparison and draw.

    Args:
        delong: rows with ``task, draw, config, diff, ci_low, ci_high, p_holm``.
    """
    tasks = list(dict.fromkeys(delong["task"]))
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(5 * len(tasks), 0.3 * len(delong) / len(tasks) + 1.5), squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = delong[delong["task"] == task].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        ax.errorbar(
            rows["diff"],
            y,
            xerr=[rows["diff"] - rows["ci_low"], rows["ci_high"] - rows["diff"]],
            fmt="o",
            ms=3,
            c="k",
            lw=1,
        )
        ax.axvline(0, c="grey", ls=":")
        ax.set_yticks(
            y,
            [
                f"{CONFIG_LABELS.get(c, c)} · draw {d}"
                for c, d in zip(rows["config"], rows["draw"], strict=True)
            ],
            fontsize=7,
        )
        ax.set(xlabel="AUC(proposed) − AUC(other)", title=f"{title} {task}".strip())
    fig.tight_layout()
    return fig


def contrastive_panels(history: pd.DataFrame, similarities: pd.DataFrame) -> plt.Figure:
    """The task-aware contrastive loss during training and what it left in the final model.

    Args:
        history: a run's history.csv (``epoch`` and, where the configuration has them,
            ``con_invasion`` and ``con_grade``).
        similarities: one column per (task view, projection) pair of cosine similarities on
            the test patients (tcl.evaluation.representations.contrastive_similarities).

    Left panel: the two contrastive terms per epoch; right: a box per column of
    ``similarities``, whiskers without outliers.
    """
    fig, (ax_loss, ax_sim) = plt.subplots(1, 2, figsize=(11, 3.8))
    for term in ("con_invasion", "con_grade"):
        if term in history:
            ax_loss.plot(history["epoch"], history[term], label=term)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="contrastive terms during training")
    ax_loss.legend()
    ax_sim.boxplot([similarities[c] for c in similarities.columns], showfliers=False)
    ax_sim.set_xticks(
        range(1, len(similarities.columns) + 1), similarities.columns, rotation=15, fontsize=8
    )
    ax_sim.set(ylabel="cosine similarity", title="test patients, final model")
    fig.tight_layout()
    return fig


CLASS_COLOURS = {
    "low_grade": "#4C72B0",
    "high_grade_noninvasive": "#DD8452",
    "high_grade_invasive": "#C44E52",
}


def embedding_scatter(points: dict[str, np.ndarray], classes: list[str]) -> plt.Figure:
    """One 2-D scatter per feature set, patients coloured by cohort class.

    Args:
        points: ``{title: [N, 2] coordinates}`` (e.g. the PCA of each feature set).
        classes: cohort class of each of the N patients (tcl.data.splits.patient_class).
    """
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4), squeeze=False)
    classes_array = np.asarray(classes)
    for ax, (title, xy) in zip(axes[0], points.items(), strict=True):
        for name, colour in CLASS_COLOURS.items():
            chosen = classes_array == name
            ax.scatter(*xy[chosen].T, s=8, c=colour, alpha=0.7, label=name.replace("_", " "))
        ax.set(title=title, xticks=[], yticks=[], xlabel="PC 1", ylabel="PC 2")
    axes[0, 0].legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    return fig


def r2_heatmap(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Rows = feature sets, columns = latent factors, cells = cross-validated R²."""
    import seaborn as sns  # 1.3 s to import, for this figure alone

    fig, ax = plt.subplots(figsize=(6, 2.8))
    sns.heatmap(table.astype(float), annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax)
    ax.set(title=title or "linear predictability of each latent factor (out-of-fold R²)")
    fig.tight_layout()
    return fig


def pointing_game_bars(summary: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per task (panels) and sign family (bars): the mean share of the positive attribution on
    the family against the family's mean share of the crop box, for patients with the label
    (solid) and without it (hatched). ``summary``: tcl.synthetic.pointing.summarize_shares."""
    tasks = list(dict.fromkeys(summary["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = summary[(summary["task"] == task) & (summary["family"] != "any_sign")]
        families = list(dict.fromkeys(rows["family"]))
        x = np.arange(len(families))
        for offset, label in ((-0.2, 1), (0.2, 0)):
            part = rows[rows["label"] == label].set_index("family").reindex(families)
            hatch = None if label == 1 else "//"
            name = "with the label" if label == 1 else "without"
            ax.bar(x + offset, part["attribution_share"], 0.38, color="tab:red", alpha=0.8,
                   hatch=hatch, label=f"attribution share, {name}")  # fmt: skip
            ax.scatter(x + offset, part["area_share"], color="black", marker="_", s=160,
                       zorder=3, label=f"area share, {name}" if label == 1 else None)  # fmt: skip
        ax.set_xticks(x, families, rotation=35, ha="right", fontsize=8)
        ax.set(ylabel="share of the crop box / of positive attribution", title=task)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ceiling_curve(
    curve: pd.DataFrame,
    kappa: float,
    cohort: dict[str, dict[str, float]],
    paper_best: dict[str, float],
    title: str = "",
) -> plt.Figure:
    """The Bayes ceiling of each task against kappa (``curve``: tcl.synthetic.ceilings.bayes_curve),
    the cohort's own ceilings at its kappa (``cohort``: {ceiling: {task: AUC}}) and the paper's
    best AUC per task (dashed)."""
    tasks = [c for c in curve.columns if c != "kappa"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    markers = {
        "sign_lr": "o",
        "shared_sign_lr": "s",
        "latent_lr": "^",
        "bayes": "*",
        "input_lr": "P",
    }
    for ax, task in zip(axes[0], tasks, strict=True):
        ax.plot(curve["kappa"], curve[task], color="tab:blue", label="Bayes ceiling (population)")
        ax.axhline(paper_best[task], color="tab:red", ls="--", lw=1, label="paper, best row")
        ax.axvline(kappa, color="grey", lw=0.8)
        for name, values in cohort.items():
            ax.scatter([kappa], [values[task]], marker=markers.get(name, "x"), zorder=3,
                       label=f"this cohort: {name}")  # fmt: skip
        ax.set(xlabel="kappa (task-specific class separation)", ylabel="test AUC",
               title=task.replace("_", " "), ylim=(0.75, 1.0))  # fmt: skip
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def registration_figure(
    t1c: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    z: int,
    box: tuple[int, int, int, int] | None = None,
    title: str = "",
) -> plt.Figure:
    """One axial slice of T1C and of another series on T1C's grid, resampled through its own
    header (``before``) and after registration (``after``); all [X, Y, Z] in T1C's stored
    grid. ``box`` (x0, x1, y0, y1) outlines the lesion on every panel."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.2))
    panels = (("T1C", t1c), ("FLAIR through its header", before), ("FLAIR registered", after))
    for ax, (name, volume) in zip(axes, panels, strict=True):
        picture = volume[:, :, z].T
        low, high = np.percentile(picture, (1, 99.5))
        ax.imshow(picture, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6))
        if box is not None:
            x0, x1, y0, y1 = box
            ax.add_patch(
                plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="tab:orange", lw=1.5)
            )
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"axial slice {z} of T1C")
    fig.tight_layout()
    return fig
