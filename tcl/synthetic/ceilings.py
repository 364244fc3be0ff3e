"""How much of the labels a synthetic cohort's images can carry: the ceilings of its tasks.

A network can only be as good as the information its inputs hold. On the synthetic cohort that
information is known, so the test AUC a learner could reach at best is measured here, per task
(invasion, high grade), on the same test patients as the networks (the draws of splits.json):

============== ==========================================================================
bayes          the exact Bayes classifier on the latent factors z = (A, G, I): the
               posterior odds from the known class densities (synth.CLASS_MEANS, A scaled
               by kappa_shared and G, I by kappa, unit covariance, HG-inv's G a
               two-component mixture) and the cohort's class shares. Nothing is
               fitted; no learner can beat it on these factors.
latent_lr      logistic regression on (A, G, I), fitted on each draw's training patients:
               what a simple learner reaches when it sees the factors themselves.
sign_lr        logistic regression on every sign's true value as the generator drew it
               (the manifest's ``latent_*`` sign columns, diameter, ADC mean, location, the
               rendered tumour and oedema volumes): what the images can carry, read
               perfectly, to a linear learner. The networks are measured against this.
shared_sign_lr the same on the signs of the shared factor A alone (lobulation,
               heterogeneity, mushrooming, size): what a learner that saw only the
               task-common signs would reach. The gap to sign_lr is what each task's own
               signs add, the part the paper's task-specific features are meant to catch.
input_lr       logistic regression on 42 crude statistics of the very volumes the networks
               train on (the preprocessing cache: cropped, resized to the profile's input
               size, z-scored; no mask): per sequence, over the whole crop and over its
               central half in-plane, the 5th, 25th, 50th, 75th and 95th percentiles, the SD
               and the mean gradient magnitude (:func:`input_features`). Not a ceiling in
               the strict sense: a yardstick of what a simple linear reading of the
               networks' own input reaches. A network that stays below it has not learnt
               what its input carries. Fixed, never tuned; the only one that needs no ground
               truth, so it is measured for a real cohort too.
============== ==========================================================================

:func:`bayes_curve` gives the Bayes ceiling as a function of kappa by sampling latent factors
alone (no rendering, about a second per value); :func:`cohort_ceilings` works from a manifest
(rendered, or :func:`tcl.synthetic.cohort.sample_cohort_signs`, which gives the same values without
rendering).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tcl.data.manifest import read_manifest
from tcl.data.preprocess import load_cache
from tcl.data.splits import read_splits
from tcl.evaluation.evaluate import paper_values
from tcl.synthetic.cohort import CLASS_MEANS, CLASSES, HG_INV_G_MIXTURE, PAPER_COUNTS, SynthParams
from tcl.utils import TclError, atomic_path

# The tasks as predictions.csv names them, and which of the three groups are positive.
TASK_POSITIVE: dict[str, tuple[str, ...]] = {
    "invasion": ("HG_inv",),
    "high_grade": ("HG_inv", "HG_noninv"),
}
CEILINGS: tuple[str, ...] = ("bayes", "latent_lr", "sign_lr", "shared_sign_lr", "input_lr")
FACTORS: tuple[str, ...] = ("latent_aggressiveness", "latent_grade", "latent_invasion")

# Sign columns of the manifest by the factor that drives them most (synth.SIGNS' loadings):
# A is shared by both tasks, G is grade's own, I is invasion's own.
SHARED_SIGNS: tuple[str, ...] = (
    "latent_lobulation",
    "latent_heterogeneity",
    "latent_mushroom",
    "latent_diameter",
    "latent_tumour_ml",
)
GRADE_SIGNS: tuple[str, ...] = (
    "latent_adc_mean",
    "latent_necrosis",
    "latent_cyst",
    "latent_tail",
    "latent_calcification",
)
INVASION_SIGNS: tuple[str, ...] = (
    "latent_oedema",
    "latent_oedema_ml",
    "latent_blur",
    "latent_rim_coverage",
    "latent_fingers",
    "latent_feeders",
)
LOCATIONS: tuple[str, ...] = ("skull_base", "parasagittal", "convexity")

# A latent model: per group, a mixture of unit-covariance Gaussians [(weight, mean (3,)), ...].
LatentModel = dict[str, list[tuple[float, np.ndarray]]]


def latent_model(params: SynthParams | None = None) -> LatentModel:
    """The generator's class densities of z = (A, G, I) (synth.sample_latents)."""
    params = params or SynthParams()
    scale = np.array([params.kappa_shared, params.kappa, params.kappa])
    model: LatentModel = {}
    for group in CLASSES:
        mean_a, mean_g, mean_i = CLASS_MEANS[group]
        if mean_g is None:
            model[group] = [
                (weight, scale * np.array([mean_a, g, mean_i])) for weight, g in HG_INV_G_MIXTURE
            ]
        else:
            model[group] = [(1.0, scale * np.array([mean_a, mean_g, mean_i]))]
    return model


def class_shares(counts: dict[str, int] | None = None) -> dict[str, float]:
    """Each group's share of the cohort (default: the paper's 652 / 62 / 86)."""
    counts = counts or PAPER_COUNTS
    total = sum(counts.values())
    return {group: counts[group] / total for group in counts}


def bayes_log_odds(
    z: np.ndarray, model: LatentModel, shares: dict[str, float], positive: Sequence[str]
) -> np.ndarray:
    """Log posterior odds of the positive groups at the points ``z`` [N, D].

    ``shares`` are the groups' prior probabilities. Returns float64 [N]; ranking by it is the
    Bayes-optimal ranking, so its AUC is the highest any classifier of ``z`` can reach.
    """
    z = np.asarray(z, dtype=float)
    log_joint = {}
    for group, components in model.items():
        terms = [
            math.log(shares[group] * weight) - 0.5 * ((z - mean) ** 2).sum(axis=1)
            for weight, mean in components
        ]
        log_joint[group] = logsumexp(np.stack(terms), axis=0)
    positive_set = set(positive)
    if not positive_set <= set(model) or positive_set == set(model):
        raise ValueError(f"positive groups {sorted(positive_set)} must be a proper subset")
    pos = logsumexp(np.stack([log_joint[g] for g in model if g in positive_set]), axis=0)
    neg = logsumexp(np.stack([log_joint[g] for g in model if g not in positive_set]), axis=0)
    return pos - neg


def sample_factors(
    model: LatentModel, counts: dict[str, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[group]`` draws of z from each group's density: (z [N, D], group names [N])."""
    zs, groups = [], []
    for group, n in counts.items():
        weights = np.array([w for w, _ in model[group]])
        means = np.stack([m for _, m in model[group]])
        component = rng.choice(len(weights), size=n, p=weights / weights.sum())
        zs.append(means[component] + rng.standard_normal((n, means.shape[1])))
        groups.append(np.full(n, group, dtype=object))
    return np.concatenate(zs), np.concatenate(groups)


def _auc(y: np.ndarray, score: np.ndarray) -> float:

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def bayes_curve(
    kappas: Sequence[float],
    params: SynthParams | None = None,
    per_cohort: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """The Bayes ceiling of each task against kappa, from latent factors alone.

    For every kappa, ``per_cohort`` cohorts' worth of latents (the paper's 800 patients and
    class shares each: 160,000 patients by default) are drawn and ranked by the exact
    posterior. Returns columns kappa, invasion, high_grade (AUC).
    """
    params = params or SynthParams()
    counts = {group: n * per_cohort for group, n in PAPER_COUNTS.items()}
    shares = class_shares()
    rows = []
    for kappa in kappas:
        model = latent_model(_with_kappa(params, kappa))
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(kappa * 1e6),)))
        z, groups = sample_factors(model, counts, rng)
        row = {"kappa": float(kappa)}
        for task, positive in TASK_POSITIVE.items():
            y = np.isin(groups, positive).astype(int)
            row[task] = _auc(y, bayes_log_odds(z, model, shares, positive))
        rows.append(row)
    return pd.DataFrame(rows)


def _with_kappa(params: SynthParams, kappa: float) -> SynthParams:
    return replace(params, kappa=float(kappa))


# ----------------------------------------------------------------------------- from a manifest
def sign_features(table: pd.DataFrame, shared_only: bool = False) -> pd.DataFrame:
    """The sign values of each patient as numbers: the ``latent_*`` sign columns present in
    ``table`` (``shared_only``: the shared factor's alone) and, for the full set, the location
    one-hot (the class priors of skull-base tumours differ)."""
    groups = (SHARED_SIGNS,) if shared_only else (SHARED_SIGNS, GRADE_SIGNS, INVASION_SIGNS)
    columns = [c for group in groups for c in group if c in table]
    features = table[columns].astype(float)
    if not shared_only and "latent_location" in table:
        for place in LOCATIONS[1:]:  # skull base is the reference level
            features = features.assign(
                **{f"location_{place}": (table["latent_location"] == place).astype(float)}
            )
    return features


def _logistic(seed: int):

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in (*FACTORS, "latent_group") if c not in table]
    if missing:
        raise TclError(
            f"the manifest has no {', '.join(missing)} column(s): ceilings need the ground "
            "truth of a synthetic cohort (python -m tcl synth)"
        )
    unknown = sorted(set(table["latent_group"]) - set(CLASSES))
    if unknown:
        raise TclError(f"latent_group holds unknown group(s) {unknown}; expected {CLASSES}")


def _draw_ids(
    draw: dict[str, list[str]], k: int, known: pd.Index, where: str
) -> tuple[list[str], list[str]]:
    """Draw ``k``'s training and test ids as text; raises naming those absent from ``known``."""
    train, test = list(map(str, draw["train"])), list(map(str, draw["test"]))
    missing = sorted(set(train + test) - set(known))
    if missing:
        raise TclError(f"draw {k}: patient(s) {', '.join(missing[:5])} not in {where}")
    return train, test


def cohort_ceilings(
    table: pd.DataFrame,
    draws: list[dict[str, list[str]]],
    params: SynthParams | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Every ceiling, per task and draw, on the draws' test patients.

    Args:
        table: a synthetic manifest (or ``synth.sample_cohort_signs``): patient_id,
            latent_group, the factors and the sign columns.
        draws: ``[{"train": [ids], "test": [ids]}, ...]`` (splits.json).
        params: the generator's parameters (kappa sets the Bayes densities).

    Returns a tidy table: ceiling, task, draw, auc.
    """
    _check_table(table)
    table = table.assign(patient_id=table["patient_id"].astype(str)).set_index("patient_id")
    groups = table["latent_group"].to_numpy()
    counts = {g: int((groups == g).sum()) for g in CLASSES}
    shares = class_shares(counts)
    model = latent_model(params)
    z = table[list(FACTORS)].to_numpy(dtype=float)
    features = {
        "latent_lr": table[list(FACTORS)].astype(float),
        "sign_lr": sign_features(table),
        "shared_sign_lr": sign_features(table, shared_only=True),
    }
    bayes = {
        task: pd.Series(bayes_log_odds(z, model, shares, positive), index=table.index)
        for task, positive in TASK_POSITIVE.items()
    }
    rows = []
    for k, draw in enumerate(draws):
        train, test = _draw_ids(draw, k, table.index, "the manifest")
        for task, positive in TASK_POSITIVE.items():
            y = pd.Series(np.isin(groups, positive).astype(int), index=table.index)
            rows.append(("bayes", task, k, _auc(y[test].to_numpy(), bayes[task][test].to_numpy())))
            for name, frame in features.items():
                model_k = _logistic(seed + k).fit(frame.loc[train].to_numpy(), y[train].to_numpy())
                score = model_k.decision_function(frame.loc[test].to_numpy())
                rows.append((name, task, k, _auc(y[test].to_numpy(), score)))
    return pd.DataFrame(rows, columns=["ceiling", "task", "draw", "auc"])


# ----------------------------------------------------------------------------- the network input
INPUT_PERCENTILES: tuple[float, ...] = (5, 25, 50, 75, 95)
INPUT_SEQUENCES: tuple[str, ...] = ("t1c", "flairc", "adc")  # the cache's channel order


def input_features(volumes: np.ndarray, chunk: int = 64) -> np.ndarray:
    """The input ceiling's 42 statistics of cached volumes [N, 3, H, W, D] → float64 [N, 42].

    Per sequence and region (the whole volume; its central half in-plane, all slices): the
    INPUT_PERCENTILES, the SD and the mean gradient magnitude (central differences along the
    three axes, in voxels). Read ``chunk`` patients at a time (the cache is memory-mapped).
    """
    n, channels, height, width, _ = volumes.shape
    h0, w0 = height // 4, width // 4
    rows = []
    for start in range(0, n, chunk):
        x = np.asarray(volumes[start : start + chunk], dtype=np.float32)
        gradient = np.sqrt(sum(g**2 for g in np.gradient(x, axis=(2, 3, 4))))
        centre = (slice(None), slice(None), slice(h0, height - h0), slice(w0, width - w0))
        parts = []
        for values, grads in ((x, gradient), (x[centre], gradient[centre])):
            flat = values.reshape(len(x), channels, -1)
            parts.append(np.percentile(flat, INPUT_PERCENTILES, axis=2).transpose(1, 2, 0))
            parts.append(flat.std(axis=2)[..., None])
            parts.append(grads.reshape(len(x), channels, -1).mean(axis=2)[..., None])
        rows.append(np.concatenate(parts, axis=2).reshape(len(x), -1))
    return np.concatenate(rows).astype(np.float64)


def input_feature_names() -> list[str]:
    """Column names of :func:`input_features`, in its order."""
    stats = [f"p{q:g}" for q in INPUT_PERCENTILES] + ["sd", "gradient"]
    return [
        f"{region}_{sequence}_{stat}"
        for sequence in INPUT_SEQUENCES
        for region in ("whole", "centre")
        for stat in stats
    ]


def input_ceiling(
    volumes: np.ndarray,
    patient_ids: Sequence[str],
    labels: pd.DataFrame,
    draws: list[dict[str, list[str]]],
    seed: int = 0,
) -> pd.DataFrame:
    """The ``input_lr`` yardstick per task and draw (tidy: ceiling, task, draw, auc).

    Args:
        volumes: a preprocessing cache's [N, 3, H, W, D] array; ``patient_ids`` its rows' ids.
        labels: indexed by patient_id, with 0/1 columns ``invasion`` and ``high_grade``.
        draws: splits.json's draws; every patient must be in the cache.
    """
    features = pd.DataFrame(input_features(volumes), index=[str(p) for p in patient_ids])
    labels = labels.set_axis(labels.index.astype(str))
    rows = []
    for k, draw in enumerate(draws):
        train, test = _draw_ids(draw, k, features.index, "the cache")
        for task in TASK_POSITIVE:
            y = labels[task].astype(int)
            model = _logistic(seed + k).fit(features.loc[train].to_numpy(), y[train].to_numpy())
            score = model.decision_function(features.loc[test].to_numpy())
            rows.append(("input_lr", task, k, _auc(y[test].to_numpy(), score)))
    return pd.DataFrame(rows, columns=["ceiling", "task", "draw", "auc"])


def cache_input_ceiling(cache_dir: str | Path, draws: list[dict[str, list[str]]]) -> pd.DataFrame:
    """:func:`input_ceiling` of a preprocessing cache (its index holds the labels)."""
    cache = load_cache(cache_dir)
    index = cache.index.sort_values("row")
    if not np.array_equal(index["row"].to_numpy(), np.arange(len(cache.volumes))):
        raise TclError(f"{cache_dir}: index.csv's rows do not number the volumes 0..N-1")
    ids = index["patient_id"].astype(str).tolist()
    labels = index.assign(patient_id=ids).set_index("patient_id")[["invasion", "high_grade"]]
    return input_ceiling(cache.volumes, ids, labels, draws)


def summarise(tidy: pd.DataFrame) -> pd.DataFrame:
    """Ceilings as rows (in CEILINGS order), tasks as columns: mean over draws and each draw."""
    wide = tidy.pivot_table(index=["ceiling", "task"], columns="draw", values="auc")
    wide.columns = [f"draw{d}" for d in wide.columns]
    wide.insert(0, "mean", wide.mean(axis=1))
    order = [c for c in CEILINGS if c in wide.index.get_level_values(0)]
    return wide.reindex(order, level=0)


def paper_best() -> dict[str, float]:
    """The paper's best test AUC per task over every row of its Tables 2 and 3."""

    auc = paper_values().query("metric == 'auc'")
    return {task: float(auc.loc[auc.task == task, "paper"].max()) for task in TASK_POSITIVE}


CEILING_LABELS: dict[str, str] = {
    "bayes": "Bayes rule on the latent factors",
    "latent_lr": "logistic regression on the latent factors",
    "sign_lr": "logistic regression on every sign (what the images carry)",
    "shared_sign_lr": "logistic regression on the shared factor's signs only",
    "input_lr": "logistic regression on 42 statistics of the network input (yardstick)",
}


def cohort_means(summary: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{ceiling: {task: mean AUC over the draws}}`` of a :func:`summarise` table."""
    means = summary["mean"]
    return {name: means[name].to_dict() for name in means.index.get_level_values(0).unique()}


def ceiling_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarise`'s table for reading: one row per ceiling, then the paper's best row;
    columns = task (mean over draws) and task per draw."""
    wide = summary.unstack("task")
    wide.columns = [f"{task} ({'mean' if col == 'mean' else col})" for col, task in wide.columns]
    wide = wide[
        sorted(wide.columns, key=lambda c: (c.split(" ")[0] != "invasion", "mean" not in c, c))
    ]
    wide.index = [CEILING_LABELS.get(name, name) for name in wide.index]
    best = paper_best()
    paper_row = {c: best[c.split(" ")[0]] if c.endswith("(mean)") else np.nan for c in wide}
    wide.loc["the paper's best row (Tables 2-3)"] = paper_row
    return wide


def read_synth_params(manifest: str | Path) -> SynthParams:
    """The parameters a synthetic cohort was made with (``synth.json`` beside its manifest),
    or the defaults where the cohort has none (made before synth.json existed)."""
    path = Path(manifest).parent / "synth.json"
    if not path.is_file():
        return SynthParams()
    try:
        stored = json.loads(path.read_text())["params"]
        known = {f.name for f in fields(SynthParams)}
        return SynthParams(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known}
        )
    except (ValueError, KeyError, TypeError) as error:
        raise TclError(
            f"{path}: not a synth.json written by python -m tcl synth ({error})"
        ) from None


def main(args: argparse.Namespace) -> int:
    """``python -m tcl ceilings`` with its parsed options (tcl.cli)."""

    table = read_manifest(args.manifest)
    params = read_synth_params(args.manifest)
    draws = read_splits(args.splits)
    tidy = cohort_ceilings(table, draws, params)
    if args.cache:
        tidy = pd.concat([tidy, cache_input_ceiling(args.cache, draws)], ignore_index=True)
    if args.out:
        with atomic_path(args.out) as tmp:
            tidy.to_csv(tmp, index=False, float_format="%.6g")
    print(
        f"test AUC ceilings of {args.manifest} (kappa {params.kappa:g}; SYNTHETIC cohort)"
        + (f"; input_lr on {args.cache}" if args.cache else "")
    )
    print(summarise(tidy).to_string(float_format=lambda v: f"{v:.4f}"))
    if args.kappa:
        print("\nBayes ceiling against kappa (latent factors sampled)")
        curve = bayes_curve(args.kappa, params)
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


__all__ = [
    "CEILINGS",
    "CEILING_LABELS",
    "ceiling_table",
    "cohort_means",
    "paper_best",
    "TASK_POSITIVE",
    "bayes_curve",
    "cache_input_ceiling",
    "input_ceiling",
    "input_features",
    "input_feature_names",
    "bayes_log_odds",
    "class_shares",
    "cohort_ceilings",
    "latent_model",
    "read_synth_params",
    "sample_factors",
    "sign_features",
    "summarise",
    "main",
]
