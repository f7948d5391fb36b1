"""Series and trends over a sequence of releases (dpmap.series, dpmap.trend).

Statistical tolerances: every check below has a false-failure probability under 1e-8 per run
(derived next to it), and each was seen to go red with the code broken on purpose (the
breakages are named in the docstrings).
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from common import REGION, cell_centre, interior_cells, region_gdf
from dpmap.analysis.trends import bh_significant, margin_z, two_sided_p, wls_slope
from dpmap.errors import SpecError

T = 12
TIMES = np.arange(T, dtype=np.float64)
SXX = T * (T * T - 1) / 12  # Σ (t − t̄)² = 143 for 12 periods


def discrete_laplace(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    q = 1.0 - math.exp(-1.0 / scale)
    return (rng.geometric(q, shape) - rng.geometric(q, shape)).astype(np.float64)


def dl_variance(scale: float) -> float:
    a = math.exp(-1.0 / scale)
    return 2 * a / (1 - a) ** 2


# --- the slope itself -----------------------------------------------------------------------


def test_wls_slope_is_the_weighted_least_squares_line() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(50, 10, (5, T))
    var = rng.uniform(1, 9, (5, T))
    slope, sd = wls_slope(y, var, TIMES)
    for i in range(5):
        fit = np.polyfit(TIMES, y[i], 1, w=1 / np.sqrt(var[i]))
        assert slope[i] == pytest.approx(fit[0], rel=1e-9)
        w = 1 / var[i]
        tbar = (w * TIMES).sum() / w.sum()
        assert sd[i] == pytest.approx(1 / math.sqrt((w * (TIMES - tbar) ** 2).sum()), rel=1e-12)
    equal = wls_slope(y[:1], np.full((1, T), 4.0), TIMES)[1][0]
    assert equal == pytest.approx(2 / math.sqrt(SXX))  # σ/√143 with σ = 2


def test_wls_slope_of_a_row_with_a_gap_is_missing() -> None:
    y = np.vstack([np.arange(T, dtype=float), np.r_[np.nan, np.arange(1, T, dtype=float)]])
    slope, sd = wls_slope(y, np.ones((2, T)), TIMES)
    assert slope[0] == pytest.approx(1.0) and np.isnan(slope[1]) and np.isnan(sd[1])


def test_slope_variance_matches_simulation() -> None:
    """The stated sd of the slope against 40,000 simulated series of discrete Laplace noise.

    The sample variance of n = 40,000 draws has relative sd √((κ − 1)/n) with κ the slope's
    kurtosis (≤ 6, a single Laplace's, since the slope is a weighted sum): ≤ 1.1%; 6 sd
    (false failure < 2e-9, and the variance's own tail is lighter than normal here) is 6.7%,
    so the check is |ratio − 1| < 7%. Broken on purpose (sd from σ²/T instead of σ²/Σ(t−t̄)²,
    a 3.5× error): red."""
    rng = np.random.default_rng(20261206)
    scale = 4.0
    true = 100 + 3.0 * TIMES
    y = true + discrete_laplace(rng, scale, (40_000, T))
    var = np.full_like(y, dl_variance(scale))
    slope, sd = wls_slope(y, var, TIMES)
    assert np.allclose(sd, sd[0])
    ratio = np.var(slope) / sd[0] ** 2
    assert abs(ratio - 1) < 0.07, ratio
    assert abs(slope.mean() - 3.0) < 6 * sd[0] / math.sqrt(len(slope))  # unbiased


def test_slope_margin_covers_the_true_slope() -> None:
    """``slope ± slope_moe`` (2.118·sd for Laplace noise) covers the true slope in ≥ 95% of
    20,000 simulated series, one period of heavy noise and eleven light ones (the slope then
    is nearly one Laplace draw, the heaviest case). With coverage p ≥ 0.95 the count of misses
    is binomial; 6 sd above 5% (false failure < 1e-9) is 5% + 0.92%. Broken on purpose (the
    normal 1.96 margin for Laplace noise: 6.3% missed): red."""
    rng = np.random.default_rng(7)
    n = 20_000
    scales = np.r_[30.0, np.full(T - 1, 0.5)]
    noise = np.column_stack([discrete_laplace(rng, s, (n,)) for s in scales])
    var = np.array([dl_variance(s) for s in scales])
    slope, sd = wls_slope(5.0 + noise, np.broadcast_to(var, noise.shape), TIMES)
    assert margin_z(True) == pytest.approx(math.log(20) / math.sqrt(2))
    miss = np.mean(np.abs(slope) > margin_z(True) * sd)
    assert miss <= 0.05 + 6 * math.sqrt(0.05 * 0.95 / n), miss


# --- p-values and the false-discovery rate --------------------------------------------------


def test_laplace_p_values_are_never_below_either_tail() -> None:
    from scipy.special import ndtr

    z = np.linspace(0, 8, 200)
    p = two_sided_p(z, laplace=True)
    assert (p >= 2 * ndtr(-z) - 1e-15).all()
    assert (p >= np.exp(-math.sqrt(2) * z) - 1e-15).all()
    assert (p <= 1).all() and p[0] == 1
    assert np.allclose(two_sided_p(z, laplace=False), 2 * ndtr(-z))


def test_benjamini_hochberg_step_up() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, np.nan, 0.5])
    # m = 9 tested; thresholds 0.05·k/9: 0.0056, 0.0111, 0.0167, 0.0222, 0.0278, ...
    assert bh_significant(p, 0.05).tolist() == [True, True] + [False] * 8
    # step-up: a larger p-value under its threshold rescues every smaller one
    q = np.array([0.04, 0.04, 0.04, 0.04])
    assert bh_significant(q, 0.05).all()
    assert not bh_significant(np.array([np.nan, np.nan]), 0.05).any()


def test_no_trend_anywhere_flags_almost_nothing() -> None:
    """Under the global null (200 flat series, Laplace noise, the cells' own true levels),
    Benjamini–Hochberg flags anything in at most ``fdr`` = 5% of the 4,000 repetitions.
    Binomial: 6 sd above 5% (false failure < 1e-9) is 5% + 2.1%. Broken on purpose (flag
    p < 0.05 row by row, no BH): every repetition flags ~10 rows: red."""
    rng = np.random.default_rng(11)
    reps, rows, scale = 4_000, 200, 2.0
    levels = rng.integers(0, 300, rows)[:, None] + np.zeros(T)
    var = np.full((rows, T), dl_variance(scale))
    any_flag = 0
    for _ in range(reps):
        y = levels + discrete_laplace(rng, scale, (rows, T))
        slope, sd = wls_slope(y, var, TIMES)
        any_flag += bh_significant(two_sided_p(slope / sd, True), 0.05).any()
    rate = any_flag / reps
    assert rate <= 0.05 + 6 * math.sqrt(0.05 * 0.95 / reps), rate


def test_false_discoveries_are_controlled_among_real_rises() -> None:
    """20 rising rows among 200: the share of flagged rows that are flat averages ≤ 5%
    over 2,000 repetitions (each share in [0, 1], so the mean's sd ≤ 0.5/√2000 = 1.1%; 6 sd
    is 6.7%: false failure < 1e-9) and the rising rows are found (power near 1 at a slope
    of 6 sd per period: checked ≥ 0.9, far below its true value). Broken on purpose (no BH):
    the false share is ~0.3: red."""
    rng = np.random.default_rng(12)
    reps, rows, rising, scale = 2_000, 200, 20, 2.0
    sd_slope = math.sqrt(dl_variance(scale) / SXX)
    true = np.zeros((rows, T))
    true[:rising] += 6 * sd_slope * TIMES
    var = np.full((rows, T), dl_variance(scale))
    fdp, power = [], []
    for _ in range(reps):
        y = 50 + true + discrete_laplace(rng, scale, (rows, T))
        slope, sd = wls_slope(y, var, TIMES)
        flag = bh_significant(two_sided_p(slope / sd, True), 0.05)
        fdp.append(flag[rising:].sum() / max(flag.sum(), 1))
        power.append(flag[:rising].mean())
    assert np.mean(fdp) <= 0.05 + 6 * 0.5 / math.sqrt(reps), np.mean(fdp)
    assert np.mean(power) >= 0.9, np.mean(power)


# --- end to end: releases per period --------------------------------------------------------


def _zones() -> gpd.GeoDataFrame:
    x0, y0, x1, y1 = REGION.bounds
    xm = (x0 + x1) / 2
    return gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)],
        crs="EPSG:4326",
    )


def _register(month: int) -> tuple[pd.DataFrame, list[int]]:
    """Month ``month``'s register: every west cell holds 2 + month debtors, every east cell
    the same 3 debtors each month; returns it and the true count per zone (west, east)."""
    zones = _zones()
    rows, truth = [], [0, 0]
    for k, cell in enumerate(interior_cells(40)):
        lat, lng = cell_centre(cell)
        west = shapely.Point(lng, lat).within(zones.geometry[0])
        n = 2 + month if west else 3
        truth[0 if west else 1] += n
        rows += [{"lat": lat, "lng": lng, "pid": f"p{k}-{i}"} for i in range(n)]
    return pd.DataFrame(rows), truth


def _monthly(n_months: int = 6) -> tuple[list[dpmap.Release], np.ndarray]:
    rels, truth = [], []
    for m in range(n_months):
        people, true = _register(m)
        truth.append(true)
        rels.append(dpmap.release(people, zones=_zones(), by="name", epsilon=1.0, person="pid"))
    return rels, np.array(truth)


def test_trend_of_zone_releases_finds_the_rise() -> None:
    """West rises by one debtor per west cell a month, east is flat. Each slope lies within
    14 sd of the truth (the Laplace tail of one draw, the heaviest case, e^{-14√2} < 3e-9)."""
    rels, truth = _monthly()
    true_slope = np.polyfit(np.arange(6), truth, 1)[0]
    assert true_slope[0] > 15 and true_slope[1] == pytest.approx(0, abs=1e-9)
    periods = pd.period_range("2026-01", periods=6, freq="M")
    t = dpmap.trend(rels, periods=periods).set_index("name").loc[["west", "east"]]
    assert t.crs == "EPSG:4326"
    var = float(rels[0].estimates["count_var"].iloc[0])
    sd = math.sqrt(var / (6 * 35 / 12))  # Σ (t − t̄)² = 17.5 for six periods
    assert t["slope_moe"].to_numpy() == pytest.approx(math.log(20) / math.sqrt(2) * sd)
    assert np.all(np.abs(t["slope"].to_numpy() - true_slope) < 14 * sd)
    assert bool(t["significant"].loc["west"])  # z ≈ 20 / 0.7
    assert t.attrs["periods"] == [str(p) for p in periods]
    assert "Benjamini–Hochberg" in t.attrs["method"]
    s = dpmap.series(rels, periods=periods)
    assert list(s.columns) == ["name", "period", "count", "count_moe"]
    assert s["period"].tolist()[:2] == ["2026-01", "2026-02"] and len(s) == 12
    # each zone's monthly value is one noisy value: OpenDP's exact margin, as its table shows
    exact = rels[0].manifest["statistics"]["count"]["moe_95"]
    assert s["count_moe"].to_numpy() == pytest.approx(exact)
    assert exact > 1.959963984540054 * math.sqrt(var)  # the normal margin is short (Laplace)


def test_trend_of_cell_releases_per_cell_and_rolled_up() -> None:
    """Flat H3 releases over one public region: a trend per cell, and per zone by roll-up."""
    rels = []
    for m in range(4):
        people, _ = _register(m)
        rels.append(
            dpmap.release(people, region=region_gdf(), resolution=7, epsilon=1.0, person="pid")
        )
    per_cell = dpmap.trend(rels)
    assert len(per_cell) == len(rels[0].cells) and "cell" in per_cell.columns
    var = float(rels[0].estimates["count_var"].iloc[0])
    sd = math.sqrt(var / 5.0)  # Σ (t − t̄)² = 5 for four periods
    assert per_cell["slope_moe"].to_numpy() == pytest.approx(math.log(20) / math.sqrt(2) * sd)
    by_zone = dpmap.trend(rels, zones=_zones(), by="name")
    assert list(by_zone["name"]) == ["west", "east"]  # the zones' own order
    s = dpmap.series(rels, zones=_zones(), by="name")
    assert len(s) == 8 and s["period"].tolist()[:4] == ["0", "1", "2", "3"]
    # a zone total is the sum of its cells' estimates per period (area weights are 0 or 1
    # for these cells, which lie inside one zone each)
    west = s[s["name"] == "west"]["count"].to_numpy()
    assert np.all(np.isfinite(west))


# --- bad input ------------------------------------------------------------------------------


def test_sequences_that_cannot_be_lined_up_are_refused() -> None:
    rels, _ = _monthly(2)
    with pytest.raises(SpecError, match="several releases"):
        dpmap.trend(rels[0])
    with pytest.raises(SpecError, match="at least two"):
        dpmap.trend(rels[:1])
    with pytest.raises(SpecError, match="not a dpmap Release"):
        dpmap.trend([rels[0], "jan.geojson"])
    with pytest.raises(SpecError, match="2 periods for 3"):
        dpmap.trend([*rels, rels[0]], periods=["a", "b"])
    with pytest.raises(SpecError, match="appears twice"):
        dpmap.trend(rels, periods=["2026-01", "2026-01"])
    with pytest.raises(SpecError, match="not in order"):
        dpmap.trend(rels, periods=pd.period_range("2026-01", periods=2, freq="M")[::-1])
    with pytest.raises(SpecError, match="mix frequencies"):
        dpmap.trend(rels, periods=[pd.Period("2026-01", "M"), pd.Period("2026Q2", "Q")])
    with pytest.raises(SpecError, match="already one row per zone"):
        dpmap.trend(rels, zones=_zones())
    with pytest.raises(SpecError, match="fdr"):
        dpmap.trend(rels, fdr=0.5)
    with pytest.raises(SpecError, match="no statistic 'sum'"):
        dpmap.trend(rels, statistic="sum")
    people, _ = _register(0)
    cells = dpmap.release(people, region=region_gdf(), resolution=7, epsilon=1.0, person="pid")
    with pytest.raises(SpecError, match="release 1 has design"):
        dpmap.trend([rels[0], cells])
    coarse = dpmap.release(people, region=region_gdf(), resolution=6, epsilon=1.0, person="pid")
    with pytest.raises(SpecError, match="release 1 has resolution"):
        dpmap.trend([cells, coarse])


# --- GLS slopes with periods correlated by a consistency step --------------------------------


def _ar1(t: int, rho: float, var: np.ndarray) -> np.ndarray:
    """A strongly correlated covariance: AR(1) correlations with unequal variances."""
    sd = np.sqrt(var)
    lag = np.abs(np.subtract.outer(np.arange(t), np.arange(t)))
    return rho**lag * np.outer(sd, sd)


def test_gls_slope_with_a_diagonal_covariance_is_wls_slope() -> None:
    from dpmap.analysis.trends import gls_slope

    rng = np.random.default_rng(11)
    y = rng.normal(50, 10, (6, T))
    diag = rng.uniform(1, 9, T)
    scale = rng.uniform(0.5, 3, 6)
    slope, sd = gls_slope(y, np.diag(diag), TIMES, scale)
    ref, ref_sd = wls_slope(y, scale[:, None] * diag[None, :], TIMES)
    assert np.allclose(slope, ref, rtol=1e-10) and np.allclose(sd, ref_sd, rtol=1e-10)
    times = np.cumsum(rng.uniform(0.5, 2, T))  # uneven spacing
    assert np.allclose(
        gls_slope(y, np.diag(diag), times)[0], wls_slope(y, np.tile(diag, (6, 1)), times)[0]
    )


def test_gls_slope_is_the_generalised_least_squares_line() -> None:
    """Against a dense solve of (XᵀΣ⁻¹X)⁻¹XᵀΣ⁻¹y; a row with a gap is missing."""
    from dpmap.analysis.trends import gls_slope

    rng = np.random.default_rng(5)
    cov = _ar1(T, 0.7, rng.uniform(1, 5, T))
    y = rng.normal(20, 4, (3, T))
    y[2, 3] = np.nan
    slope, sd = gls_slope(y, cov, TIMES)
    x = np.column_stack([np.ones(T), TIMES])
    inv = np.linalg.inv(x.T @ np.linalg.solve(cov, x))
    beta = inv @ x.T @ np.linalg.solve(cov, y[:2].T)
    assert np.allclose(slope[:2], beta[1], rtol=1e-10)
    assert np.allclose(sd[:2], math.sqrt(inv[1, 1]), rtol=1e-12)
    assert np.isnan(slope[2]) and np.isnan(sd[2])


@pytest.mark.parametrize("kind", ["ar1", "timeline"])
def test_gls_slope_variance_matches_simulation(kind: str) -> None:
    """40,000 rows of correlated Gaussian noise around a rising line (half the rows with their
    covariance scaled ×4, as zones with a larger Σ w²): each (β̂ − β)/sd is exactly N(0, 1), so
    Σ z² is χ²_n and the mean z is N(0, 1/n); both two-sided at α = 1e-10 per check (4 checks
    per Σ, 8 in all: false failure < 1e-9). The Σ are correlated enough that ignoring the
    correlations misstates the slope's variance by more than 20% (checked first).
    Broken on purpose: (1) the variance from Σ's diagonal only (as wls_slope would state it):
    red for both Σ; (2) the per-row scale ignored: red; (3) the slope weights from Σ's
    diagonal (WLS) with the GLS variance stated: red for AR(1)."""
    from scipy import stats

    from dpmap.analysis.trends import gls_slope
    from dpmap.designs.timeline import fit_covariance, time_tree

    rng = np.random.default_rng(20261207)
    if kind == "ar1":
        cov = _ar1(T, 0.8, rng.uniform(1, 6, T))
    else:  # twelve months after least squares with budget at the quarters and the year
        cov = fit_covariance(time_tree(pd.period_range("2026-01", periods=T, freq="M")), [
            2.0, 6.0, 8.0
        ])  # fmt: skip
    naive = wls_slope(np.zeros((1, T)), np.diag(cov)[None, :], TIMES)[1][0]
    exact = gls_slope(np.zeros((1, T)), cov, TIMES)[1][0]
    assert abs(naive**2 / exact**2 - 1) > 0.2, (naive, exact)
    n = 40_000
    scale = np.where(np.arange(n) % 2 == 0, 1.0, 4.0)
    noise = rng.standard_normal((n, T)) @ np.linalg.cholesky(cov).T * np.sqrt(scale)[:, None]
    y = 100 + 2.5 * TIMES + noise
    slope, sd = gls_slope(y, cov, TIMES, scale)
    z = (slope - 2.5) / sd
    alpha = 1e-10
    zq = stats.norm.isf(alpha / 2)
    for part in (z, z[scale == 4.0]):  # all rows, and the rows with the scaled covariance
        m = len(part)
        assert stats.chi2.ppf(alpha / 2, m) <= (part**2).sum() <= stats.chi2.isf(alpha / 2, m)
        assert abs(part.mean()) <= zq / math.sqrt(m)


def test_gls_slope_refuses_bad_inputs() -> None:
    from dpmap.analysis.trends import gls_slope

    y = np.zeros((2, T))
    with pytest.raises(SpecError, match="T × T covariance"):
        gls_slope(y, np.eye(T - 1), TIMES)
    with pytest.raises(SpecError, match="not positive definite"):
        gls_slope(y, -np.eye(T), TIMES)
    with pytest.raises(SpecError, match="one positive finite factor per row"):
        gls_slope(y, np.eye(T), TIMES, np.array([1.0, 0.0]))
    with pytest.raises(SpecError, match="two distinct times"):
        gls_slope(y, np.eye(T), np.zeros(T))
