"""Panels with budget at coarser time levels: ``release(..., time_levels={"Q": 0.2, ...})``.

What is checked here:

* the privacy map, exactly: every level's vector carries the sensitivity of
  :func:`dpmap._privacy.bounding.time_level_sensitivity` for its groups (checked against
  hand-computed numbers and against the largest change one adversarial person makes), and
  OpenDP's map of each chain at those sensitivities gives the planned ε (Laplace) or ρ
  (Gaussian); the composed ε is the requested one;
* the measured vectors: the coarse levels are exact sums of the engine's bounded finest
  vector (noise replaced by the identity), so with no noise every row is its true value,
  and the local and streaming engines give identical releases;
* the pipeline's estimates are :func:`dpmap.designs.timeline.consistent_panel` of the very
  noisy vectors OpenDP drew, laid out per (cell, period, category); quarters are sums of
  their months and the year the sum of its quarters;
* unbiasedness and the exact covariance, by simulation with OpenDP's own noise: the error of
  a month, of the year total (1ᵀΣ1: off-diagonal terms included) and of the GLS slope has
  mean 0 and the stated variance;
* yearly totals from a Laplace panel with time levels have a smaller variance than the
  plain panel's sum of twelve months at the same ε;
* trends: generalised least squares with the exact covariance, per cell and for zone
  roll-ups (covariance Σ·Σ w²);
* bad input: one-line errors naming the fix.

Statistical tolerances (each check two-sided; ≤ 12 checks in this file):
* mean of N ≥ 2·10⁴ i.i.d. errors (linear combinations of independent discrete Laplace or
  Gaussian draws, every moment finite): |x̄| ≤ 6.5·sd/√N, P(|Z| > 6.5) = 8e-11 in the normal
  limit, which a mean of ≥ 2·10⁴ such draws reaches closely (skewness 0, excess kurtosis of
  the mean ≤ 3/N);
* second moment (true mean 0 known): |mean(x²) − V| ≤ 7.5·√((E[x⁴] − V²)/N), with E[x⁴] of
  the linear combination x = Σ aᵢXᵢ computed exactly: 3(Σaᵢ²Vᵢ)² + Σaᵢ⁴(m4ᵢ − 3Vᵢ²). The
  skewness of x² is at most that of one Laplace draw's square (≈ 6.6), so the mean of N has
  skewness ≤ 0.05 and the Cornish–Fisher shift at z = 6.5 is ≤ 0.35: 7.5 SE keeps the tail
  below 1e-10 per check, < 1e-8 for the file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest

import dpmap
from common import REGION, RESOLUTION, dlap_moments, panel_spec, region_gdf, vector_i64
from dpmap import SpecError
from dpmap._privacy.noise import NoisePlan, plan_noise
from dpmap.aggregates import BoundedAggregates
from dpmap.analysis.trends import gls_slope, wls_slope
from dpmap.designs import DesignOptions, design_for
from dpmap.designs.time_levels import TimeLevels, level_totals, period_covariance
from dpmap.designs.timeline import consistent_panel
from dpmap.grid import to_region
from dpmap.spec import ReleaseSpec

MONTHS = pd.period_range("2026-01", "2026-12", freq="M")
VEC_I64 = vector_i64()
Z_MEAN, Z_VAR = 6.5, 7.5


def tl_spec(**kw: Any) -> ReleaseSpec:
    return panel_spec(
        **{
            "periods": MONTHS,
            "max_periods": 12,
            "time_levels": {"Q": 0.2, "Y": 0.2},
            "suppress_below": False,
            **kw,
        }
    )


def plan(spec: ReleaseSpec) -> TimeLevels:
    design = design_for(spec, to_region(REGION), DesignOptions())
    assert isinstance(design, TimeLevels)
    return design


# ------------------------------------------------------------------------- privacy map


@pytest.mark.parametrize(
    ("max_periods", "l0", "linf"), [(12, 1, 1), (3, 2, 1), (5, 1, 3), (1, 1, 1)]
)
def test_level_sensitivities_and_laplace_map(max_periods: int, l0: int, linf: int) -> None:
    spec = tl_spec(max_periods=max_periods, max_cells=l0, max_records_per_cell=linf)
    design = plan(spec)
    stats = design.noise.statistics
    assert list(stats) == ["count@Q-DEC", "count@Y-DEC", "count"]
    # by hand: L1 = P·L0·L∞ at every level; L2² = L0·L∞²·Σ k_G² with the P periods packed
    # into the fewest groups (quarters of 3, one year of 12)
    p = max_periods
    quarters = [3] * (p // 3) + ([p % 3] if p % 3 else [])
    for key, packed in (("count", [1] * p), ("count@Q-DEC", quarters), ("count@Y-DEC", [p])):
        sens = stats[key].sensitivity
        assert sens.l1 == p * l0 * linf, key
        assert sens.l2 == pytest.approx(math.sqrt(l0 * linf**2 * sum(k * k for k in packed)))
        assert sens.linf == max(packed) * linf
    total = 0.0
    for entry in stats.values():
        hand = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=entry.scale)
        assert entry.epsilon == float(hand.map(entry.sensitivity.l1))
        total += entry.epsilon
    assert design.noise.epsilon <= 1.0 and design.noise.epsilon == pytest.approx(1.0, rel=1e-9)
    assert design.noise.epsilon == pytest.approx(total, rel=1e-12)
    # the shares: 0.2 of ε for quarters and years each, 0.6 for the months
    assert stats["count@Q-DEC"].epsilon == pytest.approx(0.2, rel=1e-9)
    assert stats["count"].epsilon == pytest.approx(0.6, rel=1e-9)


def test_gaussian_map_uses_each_levels_l2_and_one_person_attains_it() -> None:
    spec = tl_spec(mechanism="gaussian", delta=1e-6, max_periods=6, max_cells=2)
    design = plan(spec)
    rho = 0.0
    for entry in design.noise.statistics.values():
        hand = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=entry.scale)
        assert entry.rho == pytest.approx(float(hand.map(entry.sensitivity.l2)), rel=1e-12)
        rho += entry.rho
    assert design.noise.rho == pytest.approx(rho, rel=1e-9)
    # one person with records in 2 cells in each of 6 months packed into two quarters: the
    # most any level's vector can move in L2; it must equal (never exceed) the stated L2
    finest = np.zeros((5, 12, 1), dtype=np.int64)
    finest[[0, 1], :6, 0] = 1
    for j, name in enumerate(design.tree.names):
        moved = level_totals(finest, design.tree, j)
        key = "count" if j == len(design.tree.names) - 1 else f"count@{name}"
        stated = design.noise.statistics[key].sensitivity.l2
        assert math.sqrt(float((moved.astype(float) ** 2).sum())) == pytest.approx(stated)


def test_plain_noise_planning_refuses_time_levels() -> None:
    with pytest.raises(dpmap.MechanismError, match="plan_vectors"):
        plan_noise(tl_spec())


# --------------------------------------------------------------------- measured vectors


def aggregates(design: TimeLevels, truth: np.ndarray) -> BoundedAggregates:
    """Bounded aggregates holding ``truth`` (cells × T × categories) over the domain."""
    assert design.domain is not None
    _n, t, k = truth.shape
    cell, period, cat = np.nonzero(truth)
    return BoundedAggregates(
        cells=design.domain[cell],
        category=period * k + cat if (t * k) > 1 else None,
        count=truth[cell, period, cat].astype(np.int64),
        sum=None,
    )


def rows_of(design: TimeLevels, measured: Any) -> pd.DataFrame:
    """The measured rows as (cell position, period label, category, level, estimate, var)."""
    assert design.domain is not None and measured.period_labels is not None
    est = measured.estimates
    return pd.DataFrame(
        {
            "cell": np.searchsorted(design.domain, measured.cells),
            "period": np.asarray(measured.period_labels, dtype=object)[measured.period],
            "category": measured.category if measured.category is not None else 0,
            "level": measured.time_level,
            "count": est.count,
            "var": np.broadcast_to(est.count_var, est.count.shape),
        }
    )


def cube(rows: pd.DataFrame, labels: list[str], n: int, k: int, col: str = "count") -> Any:
    """(cells × periods × categories) of ``col`` for the periods ``labels``."""
    sub = rows[rows["period"].isin(labels)]
    out = np.full((n, len(labels), k), np.nan)
    pos = pd.Index(labels).get_indexer(sub["period"])
    out[sub["cell"].to_numpy(), pos, sub["category"].to_numpy()] = sub[col].to_numpy()
    return out


QUARTERS = [f"2026Q{q}" for q in range(1, 5)]
LABELS = [str(m) for m in MONTHS]


def test_coarse_levels_are_exact_sums_and_exact_inputs_give_exact_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = tl_spec(category="kind", categories=["bank"])
    design = plan(spec)
    assert design.domain is not None
    n, k = len(design.domain), 2
    truth = np.random.default_rng(3).integers(0, 4, size=(n, 12, k))
    seen: dict[str, np.ndarray] = {}

    def identity(self: NoisePlan, vectors: dict[str, np.ndarray], **_kw: Any) -> Any:
        seen.update(vectors)
        return dict(vectors)  # no noise: the exact vectors

    monkeypatch.setattr(NoisePlan, "run_dense", identity)
    rows = rows_of(design, design.measure(aggregates(design, truth)))
    np.testing.assert_array_equal(
        seen["count@Q-DEC"], truth.reshape(n, 4, 3, k).sum(axis=2).reshape(-1)
    )
    np.testing.assert_array_equal(seen["count@Y-DEC"], truth.sum(axis=1).reshape(-1))
    np.testing.assert_allclose(cube(rows, LABELS, n, k), truth, atol=1e-9)
    np.testing.assert_allclose(
        cube(rows, QUARTERS, n, k), truth.reshape(n, 4, 3, k).sum(axis=2), atol=1e-9
    )
    np.testing.assert_allclose(cube(rows, ["2026"], n, k)[:, 0], truth.sum(axis=1), atol=1e-9)
    assert set(rows["level"]) == {"M", "Q-DEC", "Y-DEC"}


@pytest.fixture(scope="module")
def drawn() -> dict[str, Any]:
    """One real measurement (OpenDP noise) over 7938 cells × 3 categories at resolution 9:
    the noisy vectors drawn and the design's rows."""
    spec = tl_spec(resolution=9, category="kind", categories=["bank", "utility"])
    design = plan(spec)
    assert design.domain is not None
    n, k = len(design.domain), 3
    truth = np.random.default_rng(5).integers(0, 200, size=(n, 12, k))
    noisy: dict[str, np.ndarray] = {}
    real = NoisePlan.run_dense

    def spy(self: NoisePlan, vectors: dict[str, np.ndarray], **kw: Any) -> Any:
        out = real(self, vectors, **kw)
        noisy.update(out)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(NoisePlan, "run_dense", spy)
    try:
        measured = design.measure(aggregates(design, truth))
    finally:
        mp.undo()
    return {"design": design, "truth": truth, "noisy": noisy, "rows": rows_of(design, measured)}


def test_estimates_are_least_squares_of_the_drawn_noise(drawn: dict[str, Any]) -> None:
    design, noisy, rows = drawn["design"], drawn["noisy"], drawn["rows"]
    n, k = drawn["truth"].shape[0], 3

    def per_row(key: str, g: int) -> np.ndarray:  # (cell, group, category) -> (cell·cat, group)
        return noisy[key].reshape(n, g, k).transpose(0, 2, 1).reshape(n * k, g)

    fit = consistent_panel(
        design.tree,
        [per_row("count@Y-DEC", 1), per_row("count@Q-DEC", 4), per_row("count", 12)],
        design.level_variances("count"),
    )
    months = cube(rows, LABELS, n, k).transpose(0, 2, 1).reshape(n * k, 12)
    np.testing.assert_allclose(months, fit.values[2], rtol=1e-12, atol=1e-9)
    quarters = cube(rows, QUARTERS, n, k)
    np.testing.assert_allclose(
        quarters.transpose(0, 2, 1).reshape(n * k, 4), fit.values[1], rtol=1e-12, atol=1e-9
    )
    # consistency: quarters are sums of their months, the year the sum of its quarters
    month_cube = cube(rows, LABELS, n, k)
    np.testing.assert_allclose(quarters, month_cube.reshape(n, 4, 3, k).sum(axis=2), atol=1e-6)
    np.testing.assert_allclose(cube(rows, ["2026"], n, k)[:, 0], quarters.sum(axis=1), atol=1e-6)
    # the published variances are the exact ones of the fit
    var = cube(rows, LABELS, n, k, "var")
    np.testing.assert_allclose(var[0, :, 0], fit.variances[2], rtol=1e-12)


def linear_map(design: TimeLevels) -> list[np.ndarray]:
    """Per level (coarse to fine), the matrix from that level's noise to the month estimates."""
    sizes = [len(x) for x in design.tree.labels]
    var = design.level_variances("count")
    out = []
    for j, g in enumerate(sizes):
        noisy = [np.zeros((g, s)) for s in sizes]
        noisy[j] = np.eye(g)
        out.append(consistent_panel(design.tree, noisy, var).values[-1].T)  # (12, g)
    return out


def check_linear_error(err: np.ndarray, coef: np.ndarray, design: TimeLevels, what: str) -> None:
    """err: N draws of a·noise (a: ``coef`` per level's nodes); two-sided mean and variance
    tests with the exact fourth moment of the combination (module docstring)."""
    moments = [
        dlap_moments(math.exp(-1.0 / design.noise.statistics[key].scale))
        for key in ("count@Y-DEC", "count@Q-DEC", "count")
    ]
    v = sum(float((a**2).sum()) * mv for a, (mv, _m4) in zip(coef, moments, strict=True))
    m4 = 3 * v**2 + sum(
        float((a**4).sum()) * (m4 - 3 * mv**2) for a, (mv, m4) in zip(coef, moments, strict=True)
    )
    n = len(err)
    assert abs(err.mean()) <= Z_MEAN * math.sqrt(v / n), f"{what}: biased"
    assert abs((err**2).mean() - v) <= Z_VAR * math.sqrt((m4 - v**2) / n), (
        f"{what}: variance {(err**2).mean():.6g}, stated {v:.6g}"
    )


def test_unbiased_with_the_exact_covariance(drawn: dict[str, Any]) -> None:
    design, truth, rows = drawn["design"], drawn["truth"], drawn["rows"]
    n, k = truth.shape[0], 3
    err = (cube(rows, LABELS, n, k) - truth).transpose(0, 2, 1).reshape(n * k, 12)
    maps = linear_map(design)
    cov = covariance_of(design)
    # the linear map's covariance is the stated Σ (so the checks below test Σ itself)
    var = design.level_variances("count")
    np.testing.assert_allclose(
        sum(m @ m.T * v for m, v in zip(maps, var, strict=True)), cov, rtol=1e-9
    )
    t = np.arange(12.0)
    x = np.column_stack([np.ones(12), t - t.mean()])
    wx = np.linalg.solve(cov, x)
    slope_w = wx @ np.linalg.inv(x.T @ wx)[:, 1]
    for what, w in (("March", np.eye(12)[2]), ("year", np.ones(12)), ("slope", slope_w)):
        check_linear_error(err @ w, [w @ m for m in maps], design, what)
    # the year's variance involves the off-diagonal terms: Σ's diagonal alone is far off
    assert np.ones(12) @ cov @ np.ones(12) < 0.8 * np.trace(cov)


def covariance_of(design: TimeLevels) -> np.ndarray:
    """Σ of a planned design, as a reader rebuilds it from the manifest."""
    entry = {
        "levels": [{"name": x} for x in design.tree.names],
        "variances": {"count": design.level_variances("count")},
    }
    manifest = {
        "time_levels": entry,
        "periods": LABELS,
        "parameters": {"periods": {"frequency": "M"}},
    }
    cov = period_covariance(manifest)
    assert cov is not None
    return cov["count"]


@pytest.mark.parametrize(
    ("levels", "ratio"), [({"Y": 0.5}, 0.31), ({"Y": 0.25}, 0.76), ({"Q": 0.2, "Y": 0.2}, 1.04)]
)
def test_yearly_totals_against_the_plain_panel_with_laplace(
    levels: dict[str, float], ratio: float
) -> None:
    """The exact variance of the yearly total against the plain panel's sum of twelve
    months at the same ε (benchmarks/bench_time_levels.py): half the budget on the year
    cuts it to 0.31, a quarter to 0.76; spending on quarters too gives the gain away."""
    cov = covariance_of(plan(tl_spec(time_levels=levels)))
    plain = plan_noise(tl_spec(time_levels=None)).statistics["count"].variance
    year = float(np.ones(12) @ cov @ np.ones(12))
    assert year / (12 * plain) == pytest.approx(ratio, abs=0.006)
    assert cov[0, 0] > 1.6 * plain  # the months lose


# -------------------------------------------------------------------- release and trend


def points(seed: int = 0) -> pd.DataFrame:
    from common import cell_centre, interior_cells

    rng = np.random.default_rng(seed)
    cells = interior_cells(6)
    rows = []
    for i in range(80):
        for m in rng.choice(12, 4, replace=False):
            lat, lng = cell_centre(cells[int(rng.integers(0, 6))])
            rows.append(
                {"lat": lat, "lng": lng, "pid": f"p{i}", "date": pd.Timestamp(2026, m + 1, 10)}
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def panel() -> Any:
    return dpmap.release(
        points(),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=2.0,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=4,
        time_levels={"Q": 0.2, "Y": 0.2},
        suppress_below=False,
    )


def test_release_rows_periods_and_at(panel: Any) -> None:
    cells = panel.cells
    assert panel.periods == LABELS and panel.manifest["design"] == "time levels"
    assert len(cells) == 187 * 17
    assert set(cells["time_level"]) == {"M", "Q-DEC", "Y-DEC"}
    q1 = panel.at("2026Q1")
    assert len(q1.cells) == 187 and "time_level" not in q1.cells.columns
    months = sum(panel.at(m).estimates["count"].to_numpy() for m in LABELS[:3])
    np.testing.assert_allclose(q1.estimates["count"].to_numpy(), months, atol=1e-6)
    assert (q1.estimates["count_var"] > panel.at("2026-01").estimates["count_var"]).all()
    with pytest.raises(SpecError, match="or a coarse period"):
        panel.at("2027Q1")


def test_trend_is_gls_with_the_exact_covariance(panel: Any) -> None:
    tr = panel.trend()
    assert tr.attrs["method"].startswith("generalised least-squares")
    cov = period_covariance(panel.manifest)["count"]
    y = np.column_stack([panel.at(m).estimates["count"].to_numpy() for m in LABELS])
    slope, sd = gls_slope(y, cov, np.arange(12.0))
    np.testing.assert_allclose(tr["slope"].to_numpy(), slope, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tr["slope_moe"].to_numpy(), 2.1183 * sd, rtol=1e-4)
    # ignoring the covariance (WLS on the diagonal) gives another answer
    _wls, wsd = wls_slope(y, np.broadcast_to(np.diag(cov), y.shape), np.arange(12.0))
    assert not np.allclose(wsd, sd, rtol=1e-3)
    # a zone roll-up: the cells' Σ times Σ w²
    zone = panel.trend(zones=region_gdf().assign(name="all"))
    series = panel.series(zones=region_gdf().assign(name="all"))
    yz = series["count"].to_numpy()[None, :]
    c = (series["count_moe"].to_numpy()[0] / 1.959963984540054) ** 2 / cov[0, 0]
    zs, zsd = gls_slope(yz, cov, np.arange(12.0), np.array([c]))
    np.testing.assert_allclose(zone["slope"].to_numpy(), zs, rtol=1e-9)
    np.testing.assert_allclose(zone["slope_moe"].to_numpy(), 2.1183 * zsd, rtol=1e-4)


def test_file_round_trip_keeps_the_covariance(panel: Any, tmp_path: Any) -> None:
    back = dpmap.read_release(panel.to_file(tmp_path / "p.parquet", include_unbiased=True))
    assert (
        back.periods == LABELS and back.at("2026Q2").fingerprint == panel.at("2026Q2").fingerprint
    )
    pd.testing.assert_frame_equal(
        back.trend().drop(columns="geometry"), panel.trend().drop(columns="geometry")
    )


def test_engines_feed_the_design_the_same_aggregates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NoisePlan, "run_dense", lambda self, v, **kw: dict(v))  # no noise
    kw: dict[str, Any] = {
        "region": REGION,
        "resolution": RESOLUTION,
        "epsilon": 1.0,
        "person": "pid",
        "time": "date",
        "periods": MONTHS,
        "max_periods": 4,
        "time_levels": {"Y": 0.3},
        "suppress_below": False,
        "selection": "hash",
        "seed": 7,
    }
    local = dpmap.release(points(1), engine="local", **kw)
    streaming = dpmap.release(points(1), engine="streaming", **kw)
    pd.testing.assert_frame_equal(local.estimates, streaming.estimates)
    year = local.at("2026").estimates["count"].sum()
    assert year == pytest.approx(len(points(1)))  # 4 records a person, all kept


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"time_levels": {"Q": 0.6, "Y": 0.4}}, "add up to 1, but"),
        ({"time_levels": {"Q": 0}}, "strictly between 0 and 1"),
        ({"time_levels": {"fortnight": 0.2}}, "not a pandas period frequency"),
        ({"time_levels": [0.2]}, "must map coarser frequencies"),
        ({"time_levels": {"W": 0.2}}, "does not nest"),
        ({"time_levels": {"D": 0.2}}, "D does not nest above it; pass calendar levels"),
        ({"time_levels": {"M": 0.2}}, "not coarser than 'M'"),
        ({"periods": ["2026-01-01", "2026-07-01", "2027-01-01"]}, "explicit edges"),
        ({"time": None, "periods": None, "max_periods": None}, "applies to a panel"),
        ({"value": "v", "bounds": (0, 9), "quantiles": [0.5]}, "quantiles/value_bands"),
        ({"people": True, "max_records_per_cell": 2}, "people=True"),
    ],
)
def test_bad_time_levels(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "region": REGION,
        "resolution": RESOLUTION,
        "epsilon": 1.0,
        "person": "pid",
        "time": "date",
        "periods": MONTHS,
        "max_periods": 3,
        "time_levels": {"Q": 0.2},
    }
    with pytest.raises(SpecError, match=message) as info:
        dpmap.explain(**{**base, **kw})
    assert "\n" not in str(info.value)


def test_time_levels_refuse_adaptive() -> None:
    with pytest.raises(SpecError, match="drop adaptive="):
        dpmap.explain(
            region=REGION,
            resolution=RESOLUTION,
            epsilon=1.0,
            person="pid",
            time="date",
            periods=MONTHS,
            max_periods=3,
            time_levels={"Q": 0.2},
            adaptive=True,
        )


def test_explain_reports_where_the_levels_win() -> None:
    text = str(
        dpmap.explain(
            region=REGION,
            resolution=RESOLUTION,
            epsilon=1.0,
            person="pid",
            time="date",
            periods=MONTHS,
            max_periods=12,
            time_levels={"Y": 0.5},
        )
    )
    assert "count of one Y-DEC period (2026)" in text and "variance × 0.308" in text
    assert "count of one M period (2026-01)" in text and "variance × 3.69" in text


def test_compare_two_periods_uses_their_covariance(panel: Any) -> None:
    cov = period_covariance(panel.manifest)
    assert cov is not None
    c = dpmap.compare(panel, periods=("2026-01", "2026-06"))
    d = np.eye(12)[5] - np.eye(12)[0]
    np.testing.assert_allclose(
        c["change_moe"].to_numpy(), 1.959963984540054 * math.sqrt(d @ cov["count"] @ d)
    )
    assert not np.allclose(  # the independent-noise margin would be another number
        c["change_moe"].to_numpy(), 1.959963984540054 * math.sqrt(2 * cov["count"][0, 0])
    )
    q = dpmap.compare(panel, periods=("2026Q1", "2026Q2"))
    np.testing.assert_allclose(
        q["change"].to_numpy(),
        panel.at("2026Q2").estimates["count"].to_numpy()
        - panel.at("2026Q1").estimates["count"].to_numpy(),
    )
    dq = np.r_[-np.ones(3), np.ones(3), np.zeros(6)]
    np.testing.assert_allclose(
        q["change_moe"].to_numpy(), 1.959963984540054 * math.sqrt(dq @ cov["count"] @ dq)
    )


def test_zone_panel_with_sums_categories_and_default_suppression() -> None:
    import geopandas as gpd
    from shapely.geometry import box

    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[box(116.0, 39.0, 116.15, 39.2), box(116.15, 39.0, 116.3, 39.2)],
        crs="EPSG:4326",
    )
    df = points(2).assign(
        amount=lambda d: (d.index % 7) * 100.0,
        kind=lambda d: np.where(d.index % 3 == 0, "bank", "utility"),
    )
    rel = dpmap.release(
        df,
        zones=zones,
        by="name",
        epsilon=4.0,
        person="pid",
        value="amount",
        bounds=(0, 600),
        category="kind",
        categories=["bank"],
        time="date",
        periods=MONTHS,
        max_periods=4,
        time_levels={"Y": 0.5},
    )
    assert len(rel.cells) == 2 * 13 * 2  # zones × (12 months + the year) × categories
    assert set(rel.manifest["statistics"]) == {"count", "count@Y-DEC", "sum", "sum@Y-DEC"}
    year, months = rel.at("2026").estimates, [rel.at(m).estimates for m in LABELS]
    for stat in ("count", "sum"):
        total = sum(m[stat].to_numpy() for m in months)
        np.testing.assert_allclose(year[stat].to_numpy(), total, rtol=1e-9, atol=1e-6)
    assert "mean" in rel.cells.columns and rel.cells["suppressed"].dtype == bool
    tr = rel.trend()
    assert len(tr) == 4 and tr.attrs["method"].startswith("generalised least-squares")
    cov = period_covariance(rel.manifest)
    assert cov is not None
    y = np.column_stack([m["count"].to_numpy() for m in months])
    np.testing.assert_allclose(
        tr["slope"].to_numpy(), gls_slope(y, cov["count"], np.arange(12.0))[0]
    )


def test_cli_release_with_time_levels_and_bad_flag(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from dpmap.cli.app import main

    pts = tmp_path / "points.csv"
    points().to_csv(pts, index=False)
    region = tmp_path / "region.geojson"
    region_gdf().to_file(region)
    out = tmp_path / "panel.parquet"
    args = ["release", pts, "--region", region, "--resolution", "7", "--epsilon", "1"]
    args += ["--person", "pid", "--time", "date", "--max-periods", "4"]
    args += ["--periods", "2026-01..2026-12"]
    code = main([str(a) for a in [*args, "--out", out, "--time-levels", "Q=0.1,Y=0.4"]])
    assert code == 0, capsys.readouterr().err
    back = dpmap.read_release(out)
    assert back.periods == LABELS and len(back.at("2026Q3").cells) == 187
    assert back.manifest["parameters"]["time_levels"] == {"Q-DEC": 0.1, "Y-DEC": 0.4}
    for bad, what in (("Y", "FREQ=SHARE"), ("Y=0.6,Q=0.5", "add up to")):
        other = tmp_path / "bad.parquet"
        code = main([str(a) for a in [*args, "--out", other, "--time-levels", bad]])
        err = capsys.readouterr().err
        assert code == 2 and what in err and "Traceback" not in err, err
        assert not other.exists()
