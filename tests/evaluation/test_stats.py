"""DeLong, Holm and bootstrap: checked against a pairwise implementation and against R pROC."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tcl.evaluation.stats import (
    bootstrap_ci,
    delong_ci,
    delong_test,
    holm,
    mann_whitney_auc,
    paired_scores,
)
from tcl.utils import TclError

DATA = Path(__file__).parent


# ----------------------------------------------------------------------------------------------
# 1. the fast midrank algorithm equals the O(m n) structural components of DeLong et al. (1988)
# ----------------------------------------------------------------------------------------------


def pairwise_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """DeLong by definition: kernel psi(x, y) = 1 if x > y, 1/2 if x == y, else 0, over every
    (positive, negative) pair; structural components are its row and column means."""

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, neg = s[y == 1], s[y == 0]
        psi = np.zeros((pos.size, neg.size))
        for i, x in enumerate(pos):
            for j, z in enumerate(neg):
                psi[i, j] = 1.0 if x > z else (0.5 if x == z else 0.0)
        return psi.mean(axis=1), psi.mean(axis=0)  # V10 [m], V01 [n]

    (v10_a, v01_a), (v10_b, v01_b) = components(a), components(b)
    m, n = v10_a.size, v01_a.size

    def s(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.sum((u - u.mean()) * (v - v.mean())) / (u.size - 1))

    var_a = s(v10_a, v10_a) / m + s(v01_a, v01_a) / n
    var_b = s(v10_b, v10_b) / m + s(v01_b, v01_b) / n
    cov = s(v10_a, v10_b) / m + s(v01_a, v01_b) / n
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    var_diff = var_a + var_b - 2 * cov
    z = (auc_a - auc_b) / math.sqrt(var_diff) if var_diff > 0 else math.nan
    return {"auc_a": auc_a, "auc_b": auc_b, "var_a": var_a, "var_b": var_b, "cov": cov, "z": z}


@pytest.mark.parametrize("seed, n, prevalence", [(0, 120, 0.5), (1, 200, 0.15), (2, 57, 0.3)])
def test_fast_delong_equals_pairwise_structural_components_with_many_ties(seed, n, prevalence):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2], y[2:4] = 1, 0  # at least two of each class
    # one decimal: ~20 distinct values for n patients, so ties within and across classes abound
    a = np.round(0.8 * y + rng.normal(0, 0.6, n), 1)
    b = np.round(0.5 * a + rng.normal(0, 0.5, n), 1)
    assert len(np.unique(a)) < n / 2 and len(np.unique(b)) < n / 2
    fast = delong_test(y, a, b)
    slow = pairwise_delong(y, a, b)
    for key, value in slow.items():
        assert getattr(fast, key) == pytest.approx(value, abs=1e-10, rel=0), key
    assert fast.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)


def test_fast_delong_single_auc_variance_equals_pairwise():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(30, int), np.zeros(70, int)]
    s = np.round(y + rng.normal(0, 1, 100), 1)
    slow = pairwise_delong(y, s, s)
    ci = delong_ci(y, s)
    assert ci.auc == pytest.approx(slow["auc_a"], abs=1e-12)
    assert ci.var == pytest.approx(slow["var_a"], abs=1e-12)


# ----------------------------------------------------------------------------------------------
# 2. published reference values: R pROC's own test suite on its aSAH dataset
# ----------------------------------------------------------------------------------------------
# Data: pROC's `aSAH` (Turck et al. 2010, Intensive Care Med 36:107-115; 113 patients, 41 with
# a poor outcome), columns outcome ("Poor" = 1), s100b, wfns (ordinal 1-5), ndka, in the order
# of the package. tests/evaluation/asah.csv holds those values; they were transcribed from a public
# file located through a code-search index (its repository was not shown), so they are checked
# here, not trusted: all of pROC's published numbers below are reproduced from them.
# Expected values, from the pROC repository (github.com/xrobin/pROC):
#   tests/testthat/test-roc.test.R @0bc764d2 roc.test(r.wfns, r.s100b) = t1, (r.wfns, r.ndka) =
#     t2, (r.ndka, r.s100b) = t3: statistic Z, p.value, conf.int (DeLong, paired, two-sided);
#   tests/testthat/test-var.R @2bacb194: var(r.wfns|r.ndka|r.s100b) (DeLong);
#   tests/testthat/helper-deLongPlacementsCpp-expected.R @13bdf2cf: theta (the AUC) per marker;
#   tests/testthat/test-ci.auc.R @13bdf2cf: ci.auc(r.ndka) = 0.501244999271703,
#     0.611957994579946, 0.722670989888189.
# pROC's r.* curves are roc(aSAH$outcome, aSAH$<marker>) with the automatic direction
# "controls < cases", i.e. a higher marker value means a poor outcome, our convention.
PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946, "s100b": 0.731368563685637}
PROC_VAR = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}
PROC_ROC_TEST = [  # (a, b, Z, p, ci_low, ci_high) for roc.test(r.a, r.b)
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882,
     0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098,
     0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054,
     -0.2876917446341914, 0.0488706064228094),
]  # fmt: skip


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    table = pd.read_csv(DATA / "asah.csv")
    assert len(table) == 113 and table["poor_outcome"].sum() == 41
    return table


@pytest.mark.parametrize("a, b, z, p, ci_low, ci_high", PROC_ROC_TEST)
def test_delong_reproduces_proc_roc_test_on_asah(asah, a, b, z, p, ci_low, ci_high):
    result = delong_test(asah["poor_outcome"], asah[a], asah[b])
    # pROC stores these to ~15 significant digits; expect_equal's tolerance is 1.5e-8
    assert result.z == pytest.approx(z, rel=1e-10)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.ci_low == pytest.approx(ci_low, rel=1e-9)
    assert result.ci_high == pytest.approx(ci_high, rel=1e-9)
    assert result.auc_a == pytest.approx(PROC_AUC[a], rel=1e-12)
    assert result.auc_b == pytest.approx(PROC_AUC[b], rel=1e-12)
    assert result.var_a == pytest.approx(PROC_VAR[a], rel=1e-10)
    assert result.var_b == pytest.approx(PROC_VAR[b], rel=1e-10)
    # pROC's documented property: reversing the curves flips Z and keeps p
    reverse = delong_test(asah["poor_outcome"], asah[b], asah[a])
    assert reverse.z == pytest.approx(-result.z) and reverse.p_value == pytest.approx(p, rel=1e-9)


def test_delong_ci_reproduces_proc_ci_auc_on_asah(asah):
    ci = delong_ci(asah["poor_outcome"], asah["ndka"])
    assert (ci.ci_low, ci.auc, ci.ci_high) == pytest.approx(
        (0.501244999271703, 0.611957994579946, 0.722670989888189), rel=1e-10
    )
    assert ci.var == pytest.approx(PROC_VAR["ndka"], rel=1e-10)


# ----------------------------------------------------------------------------------------------
# properties and errors
# ----------------------------------------------------------------------------------------------


def test_identical_scores_give_z_zero_p_one():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    result = delong_test(y, s, s.copy())
    assert (result.z, result.p_value, result.diff) == (0.0, 1.0, 0.0)
    assert result.ci_low == result.ci_high == 0.0


def test_ties_count_one_half_and_label_one_is_positive():
    y = np.array([1, 0, 1, 0])
    assert delong_ci(y, np.full(4, 0.5)).auc == 0.5
    # higher score on the positives gives AUC 1; reversing the labels gives 0
    s = np.array([0.9, 0.1, 0.8, 0.2])
    assert delong_ci(y, s).auc == 1.0 and delong_ci(1 - y, s).auc == 0.0


def _scores(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    a = y + rng.normal(0, 1, n)
    return y, a, a + rng.normal(0, 0.5, n)


def growth(test: Callable[..., object], n: int, repeats: int = 5) -> float:
    """Time of ``test`` on 10·n patients over its time on n, each the best of ``repeats`` runs
    (the minimum is the run least disturbed by other processes on a shared machine)."""

    def best(size: int) -> float:
        data = _scores(size)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            test(*data)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(10 * n) / best(n)


def _pairwise_aucs(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """The O(m·n) kernel matrix of DeLong's definition (vectorised), for both score sets."""
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = np.greater.outer(pos, neg) + 0.5 * np.equal.outer(pos, neg)
        psi.mean(axis=1), psi.mean(axis=0)


def test_delong_time_grows_like_n_log_n_not_like_n_squared():
    # Ten times the patients: ~10-13× the time for O(n log n) (measured 13× from 20k to 200k),
    # 100× for a pairwise O(n²) algorithm. 30 separates the two with room for timer noise.
    assert growth(delong_test, 20_000) < 30
    # The same measurement does see quadratic growth (measured 155× from 300 to 3000).
    assert growth(_pairwise_aucs, 300) > 30
    result = delong_test(*_scores(200_000))
    assert 0.5 < result.auc_b < result.auc_a < 1


@pytest.mark.parametrize(
    "y, a, b, message",
    [
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "single class"),
        ([0, 0, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "single class"),
        ([1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "at least 2"),
        ([1, 0, 1, 0], [0.1, np.nan, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "NaN/inf"),
        ([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4], [0.1, np.inf, 0.3, 0.4], "scores_b has 1 NaN/inf"),
        ([1, 0, 1, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4], "length mismatch"),
        ([1, 0, 2, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "0/1"),
    ],
)
def test_delong_refuses_bad_input(y, a, b, message):
    with pytest.raises(TclError, match=message):
        delong_test(np.array(y), np.array(a), np.array(b))


def _table(ids, labels, scores):
    return pd.DataFrame({"patient_id": ids, "invasion": labels, "p_invasion": scores})


def test_paired_scores_aligns_by_patient_and_names_mismatches():
    a = _table(["P2", "P1", "P3"], [0, 1, 0], [0.2, 0.9, 0.3])
    b = _table(["P1", "P3", "P2"], [1, 0, 0], [0.7, 0.1, 0.4])
    ids, y, sa, sb = paired_scores(a, b, "p_invasion", "invasion", "proposed", "efmt")
    assert list(ids) == ["P1", "P2", "P3"] and list(y) == [1, 0, 0]
    assert list(sa) == [0.9, 0.2, 0.3] and list(sb) == [0.7, 0.4, 0.1]

    c = _table(["P1", "P2", "P4"], [1, 0, 0], [0.7, 0.1, 0.4])
    with pytest.raises(TclError, match=r"patient mismatch between proposed and efmt.*P3.*P4"):
        paired_scores(a, c, "p_invasion", "invasion", "proposed", "efmt")
    d = _table(["P1", "P2", "P3"], [1, 1, 0], [0.7, 0.1, 0.4])
    with pytest.raises(TclError, match="disagree on invasion for patient.*P2"):
        paired_scores(a, d, "p_invasion", "invasion", "proposed", "efmt")
    e = _table(["P1", "P1", "P3"], [1, 1, 0], [0.7, 0.1, 0.4])
    with pytest.raises(TclError, match="efmt: patient.*twice.*P1"):
        paired_scores(a, e, "p_invasion", "invasion", "proposed", "efmt")


@pytest.mark.parametrize(
    "p, expected",
    [
        # sorted p: 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06; NaN left out
        ([0.01, 0.04, 0.03, np.nan], [0.03, 0.06, 0.06, np.nan]),
        # 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04, 0.06) = 0.06 (monotone)
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        # 0.02·3 = 0.06, 0.5·2 = 1.0, max(0.9, 1.0) = 1.0
        ([0.9, 0.02, 0.5], [1.0, 0.06, 1.0]),
        # 0.6·2 = 1.2 is capped at 1; max(0.7, 1) = 1
        ([0.7, 0.6], [1.0, 1.0]),
        # ties: 0.02·3 = 0.06, 0.02·2 = 0.04 → 0.06 (monotone), 0.2·1 = 0.2
        ([0.02, 0.2, 0.02], [0.06, 0.2, 0.06]),
        ([0.04], [0.04]),  # a family of one is not adjusted
        ([np.nan, 0.3], [np.nan, 0.3]),
    ],
)
def test_holm_matches_hand_computation(p, expected):
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_holm_refuses_what_is_not_a_p_value():
    with pytest.raises(TclError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])
    with pytest.raises(TclError, match="1-D"):
        holm([[0.1, 0.2]])


def test_bootstrap_is_stratified_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(25, int), np.zeros(75, int)]
    s = y + rng.normal(0, 1, 100)
    assert mann_whitney_auc(y, np.round(s, 1)) == pytest.approx(roc_auc_score(y, np.round(s, 1)))
    first = bootstrap_ci(mann_whitney_auc, y, s, n_boot=500, seed=7)
    again = bootstrap_ci(mann_whitney_auc, y, s, n_boot=500, seed=7)
    other = bootstrap_ci(mann_whitney_auc, y, s, n_boot=500, seed=8)
    assert first == again and first != other
    assert first.ci_low < first.estimate < first.ci_high and first.n_valid == 500
    # stratified: every resample keeps 25 positives (a plain bootstrap would vary)
    counts = bootstrap_ci(lambda yy, ss: yy.sum(), y, s, n_boot=50)
    assert counts.ci_low == counts.ci_high == 25
    # the DeLong interval and the bootstrap interval roughly agree on a 100-patient sample
    delong = delong_ci(y, s)
    assert abs((first.ci_high - first.ci_low) - (delong.ci_high - delong.ci_low)) < 0.06


def test_bootstrap_passes_predictions_when_given():
    y = np.array([1, 1, 0, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.2, 0.8])
    pred = (s > 0.5).astype(int)
    result = bootstrap_ci(lambda yy, ss, pp: float(np.mean(yy == pp)), y, s, pred, n_boot=20)
    assert result.estimate == pytest.approx(4 / 6)
    with pytest.raises(TclError, match="single class"):
        bootstrap_ci(roc_auc_score, np.ones(4), s[:4])


def test_alpha_sets_the_interval_from_procs_published_one(asah):
    # pROC's 95 % interval of wfns − s100b is 0.0923103 ± 0.0819041, i.e. SE = 0.0819041 / z₀.₉₇₅
    # with z₀.₉₇₅ = 1.959964; the 90 % interval is ± z₀.₉₅ SE, z₀.₉₅ = 1.644854.
    low95, high95 = 0.0104061769564846, 0.174214419249478
    centre, se = (low95 + high95) / 2, (high95 - low95) / 2 / 1.959963984540054
    result = delong_test(asah["poor_outcome"], asah["wfns"], asah["s100b"], alpha=0.1)
    assert result.ci_low == pytest.approx(centre - 1.6448536269514722 * se, rel=1e-9)
    assert result.ci_high == pytest.approx(centre + 1.6448536269514722 * se, rel=1e-9)
    assert result.p_value == pytest.approx(0.0271757822291882, rel=1e-9)  # alpha leaves p alone
    with pytest.raises(TclError, match="alpha"):
        delong_test(asah["poor_outcome"], asah["wfns"], asah["s100b"], alpha=1.0)
