"""Statistics on prediction scores: DeLong tests for paired AUCs, Holm adjustment, bootstrap CIs.

Conventions shared by every function here:

- ``y_true`` is a 1-D array of shape ``[n_patients]`` holding 0/1 labels; **1 is the positive
  class** (invasive / high grade).
- A score is a 1-D float array of shape ``[n_patients]``; a **higher score means more likely
  positive** (the model's p(class 1)).
- Ties between a positive and a negative patient count as one half (the Mann-Whitney AUC).

The DeLong et al. (1988) variance of the AUC and covariance of two AUCs on the same patients is
computed with the O(n log n) midrank algorithm of Sun & Xu (2014), "Fast implementation of
DeLong's algorithm for comparing the areas under correlated receiver operating characteristic
curves", IEEE Signal Processing Letters 21(11):1389-1393. With ``m`` positives and ``n``
negatives, and midranks taken within the positives (``T_x``), within the negatives (``T_y``) and
within all patients (``T_z``):

    V10_i = (T_z(x_i) - T_x(x_i)) / n        (share of negatives below positive i, ties 1/2)
    V01_j = 1 - (T_z(y_j) - T_y(y_j)) / m    (share of positives above negative j, ties 1/2)
    AUC   = mean(V10) = mean(V01)
    S     = cov(V10) / m + cov(V01) / n      (sample covariances over patients, ddof 1)

These are exactly the structural components of DeLong et al., which pROC (R) also uses; the
tests check them against an O(m n) pairwise implementation and against pROC's published values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from statsmodels.stats.multitest import multipletests

from tcl.utils import TclError


@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong comparison of two AUCs on the same patients.

    ``z = (auc_a - auc_b) / sqrt(var_a + var_b - 2 cov)``; ``p_value`` is two-sided;
    ``[ci_low, ci_high]`` is the (1 - alpha) Wald interval of ``auc_a - auc_b``.
    """

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    cov: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float

    @property
    def diff(self) -> float:
        """``auc_a - auc_b``."""
        return self.auc_a - self.auc_b

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class AucCI:
    """One AUC with its DeLong variance and (1 - alpha) Wald interval, clipped to [0, 1]."""

    auc: float
    var: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class BootstrapCI:
    """A metric on the full sample and its stratified-bootstrap percentile interval.

    ``n_valid`` counts the resamples on which the metric was finite; the interval uses those.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n_boot: int
    n_valid: int
    alpha: float


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def check_labels(y_true: object, what: str = "y_true", min_per_class: int = 1) -> np.ndarray:
    """Return ``y_true`` as an int array [n]; raise TclError unless it is 1-D, 0/1, both classes.

    ``min_per_class`` is the fewest patients each class must have (2 where a variance over
    patients is needed).
    """
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise TclError(f"{what} must be a non-empty 1-D array of 0/1 labels, got shape {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    try:
        y_float = y.astype(np.float64)
    except (TypeError, ValueError):
        raise TclError(f"{what} must hold 0/1 labels, got values of type {y.dtype}") from None
    if not np.all(np.isin(y_float, (0.0, 1.0))):
        bad = sorted({str(v) for v in y[~np.isin(y_float, (0.0, 1.0))]})[:5]
        raise TclError(f"{what} must hold only 0/1 labels; found {', '.join(bad)}")
    y = y_float.astype(np.int64)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        present = "1 (positive)" if n_neg == 0 else "0 (negative)"
        raise TclError(
            f"{what} has a single class present (only label {present}, {y.size} patients); "
            "AUC and sensitivity/specificity need both classes"
        )
    if n_pos < min_per_class or n_neg < min_per_class:
        raise TclError(
            f"{what} has {n_pos} positive and {n_neg} negative patients; this needs at least "
            f"{min_per_class} of each class"
        )
    return y


def check_scores(scores: object, n: int, what: str = "scores") -> np.ndarray:
    """Return ``scores`` as a float64 array [n]; raise TclError on wrong length or NaN/inf."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise TclError(f"{what} must be a 1-D array, got shape {s.shape}")
    if s.size != n:
        raise TclError(f"length mismatch: {what} has {s.size} values but y_true has {n}")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError):
        raise TclError(f"{what} must be numeric, got values of type {s.dtype}") from None
    finite = np.isfinite(s)
    if not finite.all():
        where = np.flatnonzero(~finite)
        raise TclError(
            f"{what} has {where.size} NaN/inf value(s) (first at position(s) "
            f"{', '.join(map(str, where[:5]))})"
        )
    return s


def check_labels_any(values: object, n: int, what: str) -> np.ndarray:
    """Return ``values`` as an int 0/1 array [n] (one class allowed, e.g. predictions)."""
    v = check_scores(values, n, what)
    if not np.all(np.isin(v, (0.0, 1.0))):
        raise TclError(f"{what} must hold only 0/1 values")
    return v.astype(np.int64)


def paired_scores(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    score_column: str,
    label_column: str,
    name_a: str = "a",
    name_b: str = "b",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Align two prediction tables on ``patient_id`` for a paired comparison.

    Returns ``(patient_id [n], y_true [n], score_a [n], score_b [n])`` sorted by patient_id.
    Raises TclError when a table lacks a column or repeats a patient, when the two tables do not
    hold the same patients (naming a few on each side), or when they disagree on a label.
    ``name_a``/``name_b`` (e.g. the run folders) appear in the messages.
    """
    columns = ["patient_id", label_column, score_column]
    for name, table in ((name_a, table_a), (name_b, table_b)):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise TclError(f"{name}: missing column(s) {', '.join(missing)}")
        dup = table["patient_id"][table["patient_id"].duplicated()]
        if len(dup):
            raise TclError(f"{name}: patient(s) listed twice: {', '.join(map(str, dup[:5]))}")
    ids_a, ids_b = set(table_a["patient_id"]), set(table_b["patient_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(map(str, ids_a - ids_b)), sorted(map(str, ids_b - ids_a))
        raise TclError(
            f"patient mismatch between {name_a} and {name_b}: "
            f"{len(only_a)} only in {name_a} ({', '.join(only_a[:5])}), "
            f"{len(only_b)} only in {name_b} ({', '.join(only_b[:5])})"
        )
    merged = (
        table_a[columns]
        .merge(table_b[columns], on="patient_id", suffixes=("_a", "_b"), validate="one_to_one")
        .sort_values("patient_id", kind="stable")
    )
    disagree = merged[merged[f"{label_column}_a"] != merged[f"{label_column}_b"]]
    if len(disagree):
        raise TclError(
            f"{name_a} and {name_b} disagree on {label_column} for patient(s) "
            f"{', '.join(map(str, disagree['patient_id'][:5]))}"
        )
    return (
        merged["patient_id"].to_numpy(),
        merged[f"{label_column}_a"].to_numpy(),
        merged[f"{score_column}_a"].to_numpy(dtype=np.float64),
        merged[f"{score_column}_b"].to_numpy(dtype=np.float64),
    )


# ----------------------------------------------------------------------------------------------
# DeLong
# ----------------------------------------------------------------------------------------------


def delong_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` score sets on the same patients.

    ``y_true``: [n] 0/1 (checked by the caller); ``scores``: [k, n] float. Returns ``aucs`` [k]
    and ``cov`` [k, k]. O(k n log n): three midrank passes (Sun & Xu 2014), no pairwise matrix.
    """
    positive = y_true == 1
    pos, neg = scores[:, positive], scores[:, ~positive]  # [k, m], [k, n]
    m, n = pos.shape[1], neg.shape[1]
    # midranks (ties get the average rank): within each class and over everyone
    rank_pos = rankdata(pos, axis=1)
    rank_neg = rankdata(neg, axis=1)
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n  # [k, m] placement of each positive
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # [k, n] placement of each negative
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def mann_whitney_auc(y_true: object, score: object) -> float:
    """AUC of ``score`` [n] for ``y_true`` [n] 0/1 by midranks, O(n log n), ties count 1/2.

    Equal to sklearn's roc_auc_score, without its input-validation overhead: meant as the
    ``metric_fn`` of ``bootstrap_ci``, which calls it thousands of times.
    """
    y = np.asarray(y_true) == 1
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    m, n = int(y.sum()), int(y.size - y.sum())
    if m == 0 or n == 0:
        return math.nan
    return float((ranks[y].sum() - m * (m + 1) / 2.0) / (m * n))


def delong_test(
    y_true: object, scores_a: object, scores_b: object, alpha: float = 0.05
) -> DeLongResult:
    """DeLong test of ``AUC(scores_a) == AUC(scores_b)`` on the same patients.

    ``y_true`` [n] 0/1 (1 positive), ``scores_a``/``scores_b`` [n] (higher = more positive).
    Two-sided p from the normal distribution; the CI is that of ``auc_a - auc_b``.
    Two identical score sets give ``z = 0, p = 1`` (zero variance of the difference).
    """
    if not 0 < alpha < 1:
        raise TclError(f"alpha must lie in (0, 1), got {alpha}")
    y = check_labels(y_true, min_per_class=2)
    a = check_scores(scores_a, y.size, "scores_a")
    b = check_scores(scores_b, y.size, "scores_b")
    aucs, cov = delong_components(y, np.vstack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    # round-off can leave a tiny (even negative) variance where the two placements coincide
    if var_diff <= 1e-15 * max(float(cov[0, 0] + cov[1, 1]), 1e-300):
        var_diff = 0.0
    half_width = norm.ppf(1.0 - alpha / 2.0) * math.sqrt(var_diff)
    if var_diff > 0:
        z = diff / math.sqrt(var_diff)
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return DeLongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        var_a=float(cov[0, 0]),
        var_b=float(cov[1, 1]),
        cov=float(cov[0, 1]),
        z=float(z),
        p_value=float(2.0 * norm.sf(abs(z))),
        ci_low=diff - half_width,
        ci_high=diff + half_width,
    )


def delong_ci(y_true: object, scores: object, alpha: float = 0.05) -> AucCI:
    """One AUC, its DeLong variance and (1 - alpha) Wald interval clipped to [0, 1]."""
    if not 0 < alpha < 1:
        raise TclError(f"alpha must lie in (0, 1), got {alpha}")
    y = check_labels(y_true, min_per_class=2)
    s = check_scores(scores, y.size, "scores")
    aucs, cov = delong_components(y, s[None, :])
    auc, var = float(aucs[0]), max(float(cov[0, 0]), 0.0)
    half_width = norm.ppf(1.0 - alpha / 2.0) * math.sqrt(var)
    return AucCI(auc, var, float(max(auc - half_width, 0.0)), float(min(auc + half_width, 1.0)))


# ----------------------------------------------------------------------------------------------
# multiplicity and bootstrap
# ----------------------------------------------------------------------------------------------


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values [k] for the family ``p_values`` [k] (statsmodels multipletests).

    NaN entries (comparisons that could not be made) stay NaN and are left out of the family.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise TclError(f"p_values must be 1-D, got shape {p.shape}")
    present = ~np.isnan(p)
    if np.any((p[present] < 0) | (p[present] > 1)):
        raise TclError("p_values must lie in [0, 1]")
    adjusted = np.full_like(p, np.nan)
    if present.sum() == 1:  # a family of one needs no adjustment (and multipletests is slow)
        adjusted[present] = p[present]
    elif present.any():
        adjusted[present] = multipletests(p[present], method="holm")[1]
    return adjusted


def bootstrap_ci(
    metric_fn: Callable[..., float],
    y_true: object,
    score: object,
    y_pred: object | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Stratified percentile-bootstrap interval for ``metric_fn``.

    Each resample draws the positives with replacement from the positives and the negatives
    from the negatives, so every resample keeps the class counts (and both classes). The metric
    is called as ``metric_fn(y_true, score)`` or, when ``y_pred`` [n] is given,
    ``metric_fn(y_true, score, y_pred)``. Seeded with ``numpy.random.default_rng(seed)``.
    """
    if n_boot < 1:
        raise TclError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise TclError(f"alpha must lie in (0, 1), got {alpha}")
    y = check_labels(y_true)
    s = check_scores(score, y.size, "score")
    pred = None if y_pred is None else check_labels_any(y_pred, y.size, "y_pred")

    def call(index: np.ndarray) -> float:
        if pred is None:
            return float(metric_fn(y[index], s[index]))
        return float(metric_fn(y[index], s[index], pred[index]))

    estimate = call(np.arange(y.size))
    rng = np.random.default_rng(seed)
    pos_index, neg_index = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    values = np.empty(n_boot)
    for b in range(n_boot):
        index = np.concatenate(
            [rng.choice(pos_index, pos_index.size), rng.choice(neg_index, neg_index.size)]
        )
        values[b] = call(index)
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return BootstrapCI(estimate, math.nan, math.nan, n_boot, 0, alpha)
    low, high = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(estimate, float(low), float(high), n_boot, int(valid.size), alpha)
