"""Consistency along the time hierarchy of a panel (dpmap.designs.timeline).

Exact checks: the two-pass estimates against a dense generalised least-squares solve, the
covariance's diagonal against the two passes' own variances, consistency, and the reduction
to the plain values without coarse budget. Statistical checks (simulated noise) have a
false-failure probability below 1e-8 per run, derived next to them; each was seen to go red
with the code broken on purpose (named in the docstrings).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dpmap._privacy.bounding import time_level_sensitivity
from dpmap._privacy.noise import noise_variance
from dpmap.designs.hierarchy import consistent_forest
from dpmap.designs.timeline import (
    consistent_panel,
    fit_covariance,
    level_covariance,
    level_noise_variances,
    split_variances,
    time_tree,
)
from dpmap.errors import SpecError
from dpmap.spec import Mechanism

MARCH_TO_FEB = pd.period_range("2025-03", periods=12, freq="M")  # partial first/last years


# --- the time tree --------------------------------------------------------------------------


def test_months_roll_up_to_calendar_quarters_and_years_with_partial_groups() -> None:
    tree = time_tree(MARCH_TO_FEB)
    assert tree.names == ("Y-DEC", "Q-DEC", "M")
    assert tree.labels[0] == ("2025", "2026")
    assert tree.labels[1] == ("2025Q1", "2025Q2", "2025Q3", "2025Q4", "2026Q1")
    assert tree.group_sizes(1).tolist() == [1, 3, 3, 3, 2]
    assert tree.group_sizes(0).tolist() == [10, 2]
    assert tree.parent[1].tolist() == [0, 0, 0, 0, 1]
    assert tree.parent[2].tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    truth = np.arange(12.0)
    assert tree.totals(truth)[0].tolist() == [45.0, 21.0]


def test_days_fiscal_quarters_skipped_levels_and_plain_groups() -> None:
    days = time_tree(pd.period_range("2025-12-30", periods=5, freq="D"))
    assert days.names == ("Y-DEC", "Q-DEC", "M", "D")
    assert days.group_sizes(2).tolist() == [2, 3]
    fiscal = time_tree(pd.period_range("2025Q3", periods=4, freq="Q-MAR"))
    assert fiscal.names[0] == "Y-MAR" and fiscal.group_sizes(0).tolist() == [2, 2]
    years_only = time_tree(MARCH_TO_FEB, levels=("Y",))
    assert years_only.names == ("Y-DEC", "M") and years_only.group_sizes(0).tolist() == [10, 2]
    plain = time_tree(10, groups=(3, 2))
    assert plain.labels[1] == ("0–2", "3–5", "6–8", "9")
    assert plain.labels[0] == ("0–5", "6–9")
    assert plain.group_sizes(0).tolist() == [6, 4]
    weeks = time_tree(pd.period_range("2025-01-06", periods=26, freq="W"), groups=(13,))
    assert weeks.group_sizes(0).tolist() == [13, 13]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"periods": pd.period_range("2025-01-01", periods=5, freq="W")}, "weekly periods"),
        (
            {"periods": pd.period_range("2025-01-01", periods=5, freq="W"), "levels": ("M",)},
            "not inside one M period",
        ),
        ({"periods": MARCH_TO_FEB[::-1]}, "in order without repeats"),
        ({"periods": MARCH_TO_FEB.append(MARCH_TO_FEB[:1])}, "in order without repeats"),
        ({"periods": MARCH_TO_FEB, "levels": ("M",)}, "not coarser"),
        ({"periods": MARCH_TO_FEB, "levels": ("Y",), "groups": (3,)}, "not both"),
        ({"periods": 12, "groups": (1,)}, "whole number ≥ 2"),
        ({"periods": 12, "levels": ("Q",)}, "need the periods as a pd.PeriodIndex"),
        ({"periods": 0}, "number of periods ≥ 1"),
        ({"periods": pd.period_range("2025-01-01", periods=3, freq="h")}, "pass levels="),
    ],
)
def test_bad_trees_are_refused_with_the_fix(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        time_tree(**kwargs)


# --- least squares: exact -------------------------------------------------------------------


def _dense(tree, noisy, variances):  # type: ignore[no-untyped-def]
    """Generalised least squares by brute force: θ̂ = (Hᵀ W H)⁻¹ Hᵀ W y per row."""
    h = np.vstack([tree.aggregation(j) for j in range(len(tree.labels))])
    w = np.concatenate([np.full(len(tree.labels[j]), 1 / v) for j, v in enumerate(variances)])
    y = np.hstack(noisy)
    theta = np.linalg.solve(h.T @ (w[:, None] * h), (h.T * w) @ y.T).T
    return theta


@pytest.mark.parametrize("levels", [None, ("Y",)])
def test_two_passes_equal_the_dense_solver_and_its_covariance(levels) -> None:  # type: ignore[no-untyped-def]
    tree = time_tree(MARCH_TO_FEB, levels=levels)
    rng = np.random.default_rng(7)
    variances = [float(v) for v in rng.uniform(0.5, 20, len(tree.labels))]
    noisy = [rng.normal(10, 5, (4, len(lab))) for lab in tree.labels]
    fit = consistent_panel(tree, noisy, variances)
    theta = _dense(tree, noisy, variances)
    assert np.allclose(fit.values[-1], theta, rtol=1e-10, atol=1e-9)
    # the two passes' own variances (as a Rauch–Tung–Striebel smoother) = diag of Σ
    _x, p = consistent_forest(list(tree.parent), [y.T for y in noisy], [
        np.full(len(lab), v) for lab, v in zip(tree.labels, variances, strict=True)
    ])  # fmt: skip
    for j in range(len(tree.labels)):
        assert np.allclose(fit.variances[j], p[j][:, 0], rtol=1e-10)
    # consistency: every level is the sum of its periods
    for j, level in enumerate(tree.totals(fit.values[-1])):
        assert np.allclose(fit.values[j], level, rtol=1e-12, atol=1e-9)
    assert fit.covariance.shape == (12, 12)
    assert np.allclose(fit.covariance, fit.covariance.T)
    # coarse levels measured: the months' estimates are correlated
    assert (np.abs(fit.covariance - np.diag(np.diag(fit.covariance))) > 1e-6).any()


def test_without_coarse_budget_the_values_are_the_plain_ones() -> None:
    tree = time_tree(MARCH_TO_FEB)
    rng = np.random.default_rng(2)
    months = rng.normal(0, 3, (3, 12))
    fit = consistent_panel(tree, [None, None, months], [None, math.inf, 9.0])
    assert np.allclose(fit.values[-1], months, rtol=1e-13, atol=1e-12)
    assert np.allclose(fit.values[0], tree.totals(months)[0])
    assert np.allclose(fit.covariance, 9.0 * np.eye(12))
    assert np.allclose(fit.variances[1], 9.0 * tree.group_sizes(1))
    one = consistent_panel(tree, [None, None, months[0]], [None, None, 9.0])  # one row
    assert np.allclose(one.values[-1], months[0], rtol=1e-13, atol=1e-12) and one.values[
        0
    ].shape == (2,)


def test_a_missing_value_spoils_its_row_and_top_group_only() -> None:
    tree = time_tree(MARCH_TO_FEB)
    months = np.ones((2, 12))
    months[1, 4] = np.nan  # July 2025
    fit = consistent_panel(tree, [np.full((2, 2), 5.0), None, months], [4.0, None, 1.0])
    assert np.isfinite(fit.values[-1][0]).all()
    assert np.isnan(fit.values[-1][1, :10]).all() and np.isfinite(fit.values[-1][1, 10:]).all()
    assert np.isnan(fit.values[0][1, 0]) and np.isfinite(fit.values[0][1, 1])


def test_bad_fit_inputs_are_refused() -> None:
    tree = time_tree(MARCH_TO_FEB)
    ok = np.zeros((1, 12))
    with pytest.raises(SpecError, match="3 levels"):
        consistent_panel(tree, [ok], [1.0])
    with pytest.raises(SpecError, match="finest level"):
        consistent_panel(tree, [None, None, ok], [1.0, None, None])
    with pytest.raises(SpecError, match="must be > 0"):
        consistent_panel(tree, [None, None, ok], [None, None, -1.0])
    with pytest.raises(SpecError, match="no noisy values"):
        consistent_panel(tree, [None, None, ok], [2.0, None, 1.0])
    with pytest.raises(SpecError, match=r"shape \(1, 3\)"):
        consistent_panel(tree, [np.zeros((1, 3)), None, ok], [2.0, None, 1.0])


# --- least squares: against simulation -----------------------------------------------------

RUNS = 20_000
#: checks below share a false-failure budget of 1e-8: each of at most 100 two-sided checks
#: gets 1e-10
ALPHA = 1e-10


def _contrasts(tree) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Linear combinations of the months whose variance tests Σ: each month, adjacent pairs
    (inside and across quarters and years), the two years, the quarters, the slope contrast
    and an alternating sum."""
    t = tree.periods
    eye = np.eye(t)
    out = list(eye)
    out += [eye[i] + eye[i + 1] for i in range(t - 1)]
    out += list(tree.aggregation(0)) + list(tree.aggregation(1))
    out += [np.arange(t) - (t - 1) / 2, (-1.0) ** np.arange(t)]
    return out


def test_estimates_are_unbiased_with_the_stated_covariance() -> None:
    """20,000 rows of Gaussian noise (the estimator is linear, so its covariance does not
    depend on the noise's law) on a panel from March to February, budget at every level.

    Unbiased: each consistent estimate's error is exactly N(0, P), so the mean error of n rows
    is N(0, P/n); two-sided at z_{1−α/2} (α = 1e-10, 19 nodes). Covariance: for each contrast
    a (53 of them), aᵀ(x̂ − μ) is exactly N(0, aᵀΣa), so n·(mean square)/aᵀΣa is χ²_n;
    two-sided at its α/2 quantiles. 72 checks at 1e-10: false failure < 1e-8.
    Broken on purpose: (1) Σ without its off-diagonal terms (as if the months stayed
    independent): the pair, quarter, year and slope contrasts go red; (2) the estimates
    computed with the coarse variances ×4 while Σ is stated for the true ones: red;
    (3) a bias of 0.05·sd added to the months: red."""
    tree = time_tree(MARCH_TO_FEB)
    rng = np.random.default_rng(20261206)
    variances = [30.0, 12.0, 4.0]
    truth = rng.uniform(20, 80, 12)
    true_levels = tree.totals(truth)
    noisy = [
        true_levels[j] + rng.normal(0, math.sqrt(v), (RUNS, len(tree.labels[j])))
        for j, v in enumerate(variances)
    ]
    fit = consistent_panel(tree, noisy, variances)
    z = stats.norm.ppf(1 - ALPHA / 2)
    for j in range(len(tree.labels)):
        err = fit.values[j].mean(axis=0) - true_levels[j]
        assert (np.abs(err) <= z * np.sqrt(fit.variances[j] / RUNS)).all(), (j, err)
    lo, hi = stats.chi2.ppf(ALPHA / 2, RUNS), stats.chi2.isf(ALPHA / 2, RUNS)
    errors = fit.values[-1] - truth
    for a in _contrasts(tree):
        stat = ((errors @ a) ** 2).sum() / (a @ fit.covariance @ a)
        assert lo <= stat <= hi, (a, stat / RUNS)


def test_level_covariance_of_the_quarters() -> None:
    tree = time_tree(MARCH_TO_FEB)
    cov = fit_covariance(tree, [30.0, 12.0, 4.0])
    quarters = level_covariance(tree, cov, 1)
    assert quarters.shape == (5, 5)
    a = tree.aggregation(1)
    assert np.allclose(quarters, a @ cov @ a.T)
    # a measured quarter is more precise than the sum of its noisy months alone
    assert (np.diag(quarters) < 4.0 * tree.group_sizes(1)).all()


# --- the budget across time levels ----------------------------------------------------------


def test_level_noise_follows_the_level_sensitivities() -> None:
    tree = time_tree(pd.period_range("2026-01", periods=12, freq="M"))
    eps = 2.0
    noise = level_noise_variances(
        tree, (0.5, 0.0, 0.5), mechanism=Mechanism.LAPLACE, budget=eps, max_periods=3,
        max_cells=2, max_records_per_cell=1,
    )  # fmt: skip
    assert noise[1] == math.inf
    l1 = 3 * 2  # P·L0·L∞, the same at every level
    assert noise[0] == pytest.approx(noise_variance(Mechanism.LAPLACE, l1 / (0.5 * eps)))
    assert noise[2] == pytest.approx(noise_variance(Mechanism.LAPLACE, l1 / (0.5 * eps)))
    rho = 0.5
    gauss = level_noise_variances(
        tree, (0.25, 0.25, 0.5), mechanism=Mechanism.GAUSSIAN, budget=rho, max_periods=3,
        max_cells=2,
    )  # fmt: skip
    year = time_level_sensitivity(
        max_cells=2, max_records_per_cell=1, max_periods=3, group_sizes=[12]
    )
    assert year.l2**2 == pytest.approx(2 * 9)  # all three periods in the one year
    assert gauss[0] == pytest.approx(year.l2**2 / (2 * 0.25 * rho))
    assert gauss[2] == pytest.approx(3 * 2 / (2 * 0.5 * rho))


def test_split_variances_without_coarse_budget_and_with() -> None:
    tree = time_tree(pd.period_range("2026-01", periods=12, freq="M"))
    kw = {"mechanism": Mechanism.LAPLACE, "budget": 1.0, "max_periods": 1}
    plain = split_variances(tree, (0.0, 0.0, 1.0), **kw)
    month = noise_variance(Mechanism.LAPLACE, 1.0)
    assert np.allclose(plain.fitted[-1], month)
    assert np.allclose(plain.fitted[0], 12 * month)
    coarse = split_variances(tree, (0.25, 0.0, 0.75), **kw)
    # one period per person: a year measured at ¼ of ε beats twelve months' sum at ¾
    assert coarse.fitted[0][0] < plain.fitted[0][0]
    assert coarse.noise[0] == pytest.approx(noise_variance(Mechanism.LAPLACE, 4.0))
    with pytest.raises(SpecError, match="add up to 1"):
        split_variances(tree, (0.5, 0.0, 0.4), **kw)
    with pytest.raises(SpecError, match="one per level"):
        split_variances(tree, (0.5, 0.5), **kw)
