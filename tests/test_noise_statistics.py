"""Statistical tests of the published noise that cannot (realistically) flake.

OpenDP's noise cannot be seeded, so every check here is a test of a distribution with a
tolerance wide enough that a correct implementation fails with probability < 1e-10 per
check (≈40 checks in this file: < 1e-8 for the whole file). The statements checked:

* noisy − true has mean 0 and the variance of the stated distribution at the stated scale:
  discrete Laplace with scale s (P(k) ∝ e^{−|k|/s}, q = e^{−1/s}):
      Var = Σ k² P(k) = 2·(1−q)/(1+q)·Σ_{k≥1} k² q^k = 2q/(1−q)²,
      E[X⁴] = 2q(1 + 11q + 11q² + q³) / ((1+q)(1−q)⁴);
  discrete Gaussian with σ (P(k) ∝ e^{−k²/2σ²}): moments summed numerically from the pmf
  (Var ≤ σ², ≈ σ² for σ ≳ 1).
* the published 95% margins cover: P(|noise| ≤ moe) ≥ 0.95 — exactly, from the pmf, and
  empirically; for integer noise the coverage is P(|X| ≤ ⌊moe⌋), a little above 95%.
* mean_moe is the documented Bonferroni margin (from two 97.5% intervals), exactly, and
  covers the true mean at its nominal rate (≥ 95%, simulated), two-sided.

Tolerances (N draws, all checks two-sided unless stated):
* mean: |x̄| ≤ 6.5·sd/√N. x̄ is a mean of ≥ 1e4 i.i.d. draws with all moments finite, so it is
  normal to high accuracy; P(|Z| > 6.5) = 8e-11.
* second moment (true mean 0 is known): |mean(x²) − Var| ≤ 7.5·√((E[X⁴] − Var²)/N). The
  skewness of x² for Laplace noise is ≈ 6.6, so the mean of N = 1e5 has skewness ≈ 0.021;
  the Cornish–Fisher correction at z = 6.5 is γ(z² − 1)/6 ≈ 0.15: 7.5 SE leaves ample room.
* coverage counts: exact binomial quantiles (scipy) at 1e-10 in each tail around the exact
  coverage p computed from the pmf; for the mean margin, whose per-cell coverage has no
  closed form, a two-sided window around the coverage simulated with exact noise at the
  stated scales (:func:`check_mean_margin`).
"""

from __future__ import annotations

import math
from typing import Any

import h3
import numpy as np
import polars as pl
import pytest
import shapely
from scipy import stats

import dpmap
from common import dlap_moments
from dpmap import grid
from dpmap._privacy import noise as mechanisms
from dpmap._privacy.noise import plan_noise
from dpmap.spec import ReleaseSpec

Z_MEAN = 6.5
Z_VAR = 7.5
TAIL = 1e-10


# ---------------------------------------------------------------------------------------
# exact distributions


def dlap(scale: float) -> dict[str, float]:
    q = math.exp(-1.0 / scale)
    var, m4 = dlap_moments(q)
    return {"q": q, "var": var, "m4": m4}


def dlap_cover(scale: float, a: float) -> float:
    """P(|X| ≤ a) for discrete Laplace: P(|X| ≥ t) = 2q^t / (1+q) for integers t ≥ 1."""
    q = math.exp(-1.0 / scale)
    t = math.floor(a) + 1
    return 1 - 2 * q**t / (1 + q)


def dgauss_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    k_max = math.ceil(13 * sigma) + 10  # the mass beyond 13σ is < e^{-84}
    k = np.arange(-k_max, k_max + 1, dtype=np.float64)
    w = np.exp(-(k**2) / (2 * sigma**2))
    return k, w / w.sum()


def dgauss(sigma: float) -> dict[str, float]:
    k, p = dgauss_pmf(sigma)
    return {"var": float((p * k**2).sum()), "m4": float((p * k**4).sum())}


def dgauss_cover(sigma: float, a: float) -> float:
    k, p = dgauss_pmf(sigma)
    return float(p[np.abs(k) <= a].sum())


def exact(distribution: str, scale: float) -> dict[str, float]:
    return dlap(scale) if distribution == "discrete Laplace" else dgauss(scale)


def cover(distribution: str, scale: float, a: float) -> float:
    return dlap_cover(scale, a) if distribution == "discrete Laplace" else dgauss_cover(scale, a)


# ---------------------------------------------------------------------------------------
# checks


def check_noise(err: np.ndarray, distribution: str, scale: float, moe: float, what: str) -> None:
    """mean 0, the stated variance, and the stated coverage of ``moe`` (see module docstring)."""
    err = np.asarray(err, dtype=np.float64)
    n = len(err)
    assert n >= 10_000
    ex = exact(distribution, scale)
    var, m4 = ex["var"], ex["m4"]
    mean = float(err.mean())
    assert abs(mean) <= Z_MEAN * math.sqrt(var / n), (
        f"{what}: mean {mean} (sd {math.sqrt(var)}, n {n})"
    )
    m2 = float((err**2).mean())
    se2 = math.sqrt((m4 - var**2) / n)
    assert abs(m2 - var) <= Z_VAR * se2, f"{what}: E[X²] {m2} vs {var} (±{se2})"
    # coverage of the margin
    p = cover(distribution, scale, moe)
    assert p >= 0.95, f"{what}: the margin {moe} covers only {p} (exact)"
    covered = int((np.abs(err) <= moe).sum())
    lo, hi = stats.binom.ppf(TAIL, n, p), stats.binom.isf(TAIL, n, p)
    assert lo <= covered <= hi, f"{what}: coverage {covered / n} vs exact {p}"


# =========================================================================================
# deterministic: the margins are valid (and not much wider than needed)


LAPLACE_SCALES = [0.3, 1.0, 2.0, 24.0, 200.0, 120_000.0]
GAUSS_SCALES = [0.5, 1.0, 3.3, 22.2, 155.0, 10_000.0]


@pytest.mark.parametrize(
    ("distribution", "scale"),
    [("discrete Laplace", s) for s in LAPLACE_SCALES]
    + [("discrete Gaussian", s) for s in GAUSS_SCALES],
)
def test_margins_are_tail_bounds(distribution: str, scale: float) -> None:
    import opendp.prelude as dp

    helper = (
        dp.discrete_laplacian_scale_to_accuracy
        if distribution == "discrete Laplace"
        else dp.discrete_gaussian_scale_to_accuracy
    )
    for alpha in (0.05, 0.025):
        a = float(helper(scale=scale, alpha=alpha))
        assert 1 - cover(distribution, scale, a) <= alpha  # P(|X| > a) ≤ α
        assert 1 - cover(distribution, scale, a - 2) > alpha  # at most one unit too wide
    ex = exact(distribution, scale)
    if distribution == "discrete Gaussian":
        assert ex["var"] <= scale**2 * (1 + 1e-12)
        if scale >= 3:
            assert ex["var"] == pytest.approx(scale**2, rel=1e-9)
    else:
        # discrete Laplace: Var = 2q/(1−q)², → 2s² for large s
        if scale >= 24:
            assert ex["var"] == pytest.approx(2 * scale**2, rel=2e-3)


def test_planned_variance_matches_the_distribution() -> None:
    """The variance the plan reports (used by roll-ups and hierarchical consistency)."""
    for spec in [
        ReleaseSpec(
            resolution=7,
            epsilon=0.5,
            person="p",
            max_cells=3,
            max_records_per_cell=2,
            value="v",
            bounds=(-1000, 5000),
        ),
        ReleaseSpec(
            resolution=7,
            epsilon=1.0,
            delta=1e-6,
            mechanism="gaussian",
            person="p",
            max_cells=2,
            value="v",
            bounds=(0, 300),
        ),
    ]:
        plan = plan_noise(spec)
        for st in plan.statistics.values():
            var = exact(st.distribution, st.scale)["var"]
            if st.distribution == "discrete Laplace":
                assert st.variance == pytest.approx(var, rel=1e-12)
            else:
                assert var <= st.variance <= var * (1 + 1e-9)  # σ², conservative and tight


# =========================================================================================
# end to end: dpmap.release on a fixed dataset with known truth


REGION = shapely.box(13.30, 52.48, 13.50, 52.56)
RES = 9
PUBLIC_CATS = ["a", "b", "c"]
ALL_CATS = [*PUBLIC_CATS, "other"]
BOUNDS = (0, 100)


def _dataset() -> tuple[pl.DataFrame, dict[tuple[str, str], tuple[int, int]]]:
    """Points at cell centres: a quarter of the (cell, category) pairs hold 40–80 rows
    (values −20..130, clamped to [0, 100]), the rest none; plus rows far outside."""
    rng = np.random.default_rng(20240611)
    domain = grid.region_to_cells(grid.to_region(REGION), RES)
    hexes = [h3.int_to_str(int(c)) for c in domain]
    latlng = np.array([h3.cell_to_latlng(c) for c in hexes])
    n = np.where(rng.random((len(domain), 4)) < 0.25, rng.integers(40, 81, (len(domain), 4)), 0)
    ci, ki = np.nonzero(n)
    cell_of, cat_of = np.repeat(ci, n[ci, ki]), np.repeat(ki, n[ci, ki])
    values = rng.integers(-20, 131, len(cell_of)).astype(np.float64)
    raw_cats = np.array(["a", "b", "c", "zz"])[cat_of]  # "zz" is not public: -> "other"
    truth: dict[tuple[str, str], tuple[int, int]] = {}
    clamped = np.clip(values, *BOUNDS).astype(np.int64)
    sums = np.zeros((len(domain), 4), dtype=np.int64)
    np.add.at(sums, (cell_of, cat_of), clamped)
    for i, h in enumerate(hexes):
        for k, cat in enumerate(ALL_CATS):
            truth[(h, cat)] = (int(n[i, k]), int(sums[i, k]))
    far = 50  # rows outside the region must not count anywhere
    df = pl.DataFrame(
        {
            "lat": np.concatenate([latlng[cell_of, 0], np.full(far, 48.0)]),
            "lng": np.concatenate([latlng[cell_of, 1], np.full(far, 2.0)]),
            "amount": np.concatenate([values, np.full(far, 100.0)]),
            "kind": np.concatenate([raw_cats, np.full(far, "a")]),
        }
    )
    return df, truth


def _run(
    df: pl.DataFrame, truth: dict[tuple[str, str], tuple[int, int]], reps: int, **kw: Any
) -> dict[str, Any]:
    params: dict[str, Any] = dict(
        region=REGION,
        resolution=RES,
        value="amount",
        bounds=BOUNDS,
        category="kind",
        categories=PUBLIC_CATS,
        suppress_below=False,
        **kw,
    )
    spec_kw = {k: v for k, v in params.items() if k != "region"}
    spec_kw["categories"] = tuple(PUBLIC_CATS)
    plan = plan_noise(ReleaseSpec(**spec_kw))
    out: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "count_err",
            "sum_err",
            "count_moe",
            "sum_moe",
            "mean",
            "mean_moe",
            "true_count",
            "true_sum",
            "true_mean",
        )
    }
    for _ in range(reps):
        rel = dpmap.release(df, **params)
        cells = rel.cells
        assert len(cells) == len(truth)
        assert not cells["suppressed"].any()
        # the manifest tells the truth: the numbers of the plan
        man = rel.manifest
        assert man["privacy"]["epsilon"] == plan.epsilon and man["privacy"]["delta"] == plan.delta
        for stat, st in plan.statistics.items():
            assert man["statistics"][stat]["scale"] == st.scale
            assert man["statistics"][stat]["moe_95"] == st.moe95
        tc = np.array(
            [truth[(c, k)][0] for c, k in zip(cells["cell"], cells["category"], strict=True)]
        )
        ts = np.array(
            [truth[(c, k)][1] for c, k in zip(cells["cell"], cells["category"], strict=True)]
        )
        out["count_err"].append(cells["count"].to_numpy(dtype=np.int64) - tc)
        out["sum_err"].append(cells["sum"].to_numpy(dtype=np.int64) - ts)
        out["count_moe"].append(cells["count_moe"].to_numpy(dtype=np.float64))
        out["sum_moe"].append(cells["sum_moe"].to_numpy(dtype=np.float64))
        out["mean"].append(cells["mean"].to_numpy(dtype=np.float64))
        out["mean_moe"].append(cells["mean_moe"].to_numpy(dtype=np.float64))
        out["true_count"].append(tc)
        out["true_sum"].append(ts)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["true_mean"].append(np.where(tc > 0, ts / np.maximum(tc, 1), np.nan))
    res: dict[str, Any] = {k: np.concatenate(v) for k, v in out.items()}
    res["plan"] = plan
    return res


@pytest.fixture(scope="module")
def dataset() -> tuple[pl.DataFrame, dict[tuple[str, str], tuple[int, int]]]:
    return _dataset()


@pytest.fixture(scope="module")
def laplace_runs(dataset: Any) -> dict[str, Any]:
    df, truth = dataset
    reps = math.ceil(100_000 / len(truth))  # ≥ 100k draws of each statistic
    return _run(df, truth, reps, epsilon=1.0)


@pytest.mark.slow
def test_release_laplace_noise(laplace_runs: dict[str, Any]) -> None:
    r = laplace_runs
    plan = r["plan"]
    c, s = plan.statistics["count"], plan.statistics["sum"]
    # person=None, ε = 1 split 50/50: count scale 1/0.5 = 2, sum scale 100/0.5 = 200
    assert (c.scale, s.scale) == (2.0, 200.0)
    assert len(r["count_err"]) >= 100_000
    assert np.all(r["count_moe"] == c.moe95) and np.all(r["sum_moe"] == s.moe95)
    check_noise(r["count_err"], c.distribution, c.scale, c.moe95, "count")
    check_noise(r["sum_err"], s.distribution, s.scale, s.moe95, "sum")
    # noise is not correlated with the truth (no cell got someone else's count)
    big, empty = r["true_count"] > 0, r["true_count"] == 0
    for mask in (big, empty):
        n = int(mask.sum())
        assert abs(r["count_err"][mask].mean()) <= Z_MEAN * math.sqrt(dlap(c.scale)["var"] / n)


def documented_mean_margin(
    count: np.ndarray, total: np.ndarray, c975: float, s975: float, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """The mean and its margin as the release documents them (postprocess.mean_and_margin's
    docstring), written out independently: mean = clamp(sum/count); the true (count, sum)
    lie in [count ∓ c975] × [sum ∓ s975] with probability ≥ 95% (Bonferroni over two 97.5%
    intervals), and the margin is the larger distance from the mean to the extreme ratios
    over that box, clamped to [lo, hi]; hi − lo when the count's interval reaches 0."""
    c_lo, c_hi = count - c975, count + c975
    s_lo, s_hi = total - s975, total + s975
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.clip(total / count, lo, hi)
        ratios = np.stack([s_lo / c_lo, s_lo / c_hi, s_hi / c_lo, s_hi / c_hi])
        low = np.clip(ratios.min(axis=0), lo, hi)
        high = np.clip(ratios.max(axis=0), lo, hi)
        moe = np.where(c_lo > 0, np.maximum(mean - low, high - mean), hi - lo)
    return mean, moe


def draw_noise(rng: np.random.Generator, distribution: str, scale: float, shape: Any) -> Any:
    """Exact draws of OpenDP's integer noise (numpy): discrete Laplace as the difference of
    two Geometric(1 − q) failure counts; discrete Gaussian from its pmf (mass beyond 13σ
    < e^{−84})."""
    if distribution == "discrete Laplace":
        p = -math.expm1(-1.0 / scale)
        return rng.geometric(p, shape) - rng.geometric(p, shape)
    k, pmf = dgauss_pmf(scale)
    return rng.choice(k, size=shape, p=pmf)


def check_mean_margin(r: dict[str, Any], sims: int = 100) -> None:
    """The published mean margins are the documented ones, and cover two-sided around
    their nominal rate.

    Exact part: mean and mean_moe equal :func:`documented_mean_margin` of the published
    count and sum and the manifest's 97.5% margins (a margin twice too wide fails here).

    Statistical part: over the n ≥ 20,000 occupied (cell, category, run) values, the
    number H of means within their margin of the true mean is a sum of independent
    Bernoulli(p_i), p_i the coverage at that cell's true (count, sum) — known only to be
    ≥ 95% and not in closed form, so it is simulated: ``sims`` exact draws of the stated
    noise per cell give p̂_i, μ̂ = Σ p̂_i (standard error √(Σ p_i(1 − p_i)/sims)) and
    V̂ = Σ p̂_i(1 − p̂_i)·sims/(sims − 1) for Var(H). Check: |H − μ̂| ≤ 7.5·√(V̂(1 + 1/sims)).
    H's skewness is ≤ 1/√V ≤ 0.15 (asserted V̂ ≥ 45), so the Cornish–Fisher shift at
    6.5 SD is ≤ 1 SD: 7.5 leaves P < 1e-10.

    Power: a margin half the documented one moves the coverage by more than two
    half-widths (simulated and asserted); twice the documented one fails the exact part.
    The Bonferroni margin covers ≈ 99.7%, so the coverage moves little with the noise: at
    n ≈ 25,000 noise at 1.15× moves H by ≈ 1.4 half-widths and 0.85× by ≈ 0.8 — the noise
    scale itself is checked two-sided, with power, on the same runs (check_noise of count
    and sum in test_release_laplace_noise / test_release_gaussian_noise)."""
    plan = r["plan"]
    c, s = plan.statistics["count"], plan.statistics["sum"]
    lo, hi = BOUNDS
    count = r["true_count"] + r["count_err"]
    total = r["true_sum"] + r["sum_err"]
    want_mean, want_moe = documented_mean_margin(
        count.astype(np.float64), total.astype(np.float64), c.moe975, s.moe975, lo, hi
    )
    valid = count >= 1
    np.testing.assert_array_equal(np.isnan(r["mean"]), ~valid)
    np.testing.assert_allclose(r["mean"][valid], want_mean[valid], rtol=1e-12)
    np.testing.assert_allclose(r["mean_moe"][valid], want_moe[valid], rtol=1e-12, atol=1e-9)

    enough = r["true_count"] >= 40  # every occupied cell: 40–80 rows
    n = int(enough.sum())
    assert n >= 20_000
    mean, moe, truth = r["mean"][enough], r["mean_moe"][enough], r["true_mean"][enough]
    assert not np.isnan(mean).any()
    assert np.all((mean >= lo) & (mean <= hi))
    hits = int((np.abs(mean - truth) <= moe + 1e-9).sum())

    tc = r["true_count"][enough].astype(np.float64)
    ts = r["true_sum"][enough].astype(np.float64)
    rng = np.random.default_rng(99)

    def coverage(factor: float, margin: float = 1.0) -> np.ndarray:
        shape = (n, sims)
        nc = tc[:, None] + draw_noise(rng, c.distribution, c.scale * factor, shape)
        ns = ts[:, None] + draw_noise(rng, s.distribution, s.scale * factor, shape)
        m, e = documented_mean_margin(nc, ns, c.moe975, s.moe975, lo, hi)
        e = e * margin
        ok = (nc >= 1) & (np.abs(m - (ts / tc)[:, None]) <= e + 1e-9)
        return np.asarray(ok.mean(axis=1))

    p = coverage(1.0)
    mu = float(p.sum())
    var = float((p * (1 - p)).sum()) * sims / (sims - 1)
    assert var >= 45
    half = 7.5 * math.sqrt(var * (1 + 1 / sims))
    assert abs(hits - mu) <= half, f"mean margin coverage {hits / n:.5f}, nominal {mu / n:.5f}"
    assert mu / n >= 0.95  # the Bonferroni margin is conservative
    # power: a margin half as wide as documented moves the coverage far outside the window
    assert mu - float(coverage(1.0, margin=0.5).sum()) > 2 * half
    # the margin is informative, not the trivial hi − lo
    assert np.median(moe) < (hi - lo) / 2


@pytest.mark.slow
def test_release_mean_margin_covers(laplace_runs: dict[str, Any]) -> None:
    check_mean_margin(laplace_runs)


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
def test_release_gaussian_noise(dataset: Any) -> None:
    df, truth = dataset
    r = _run(df, truth, 16, epsilon=1.0, delta=1e-6, mechanism="gaussian")
    plan = r["plan"]
    for stat in ("count", "sum"):
        st = plan.statistics[stat]
        assert st.distribution == "discrete Gaussian"
        check_noise(r[f"{stat}_err"], st.distribution, st.scale, st.moe95, f"gaussian {stat}")
    check_mean_margin(r)


# =========================================================================================
# the composed measurement directly (plan.run_dense): more draws, other scales


N_DENSE = 110_000


def _true_vectors(n: int, bounds: tuple[int, int] | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    out = {"count": rng.integers(0, 50, n).astype(np.int64)}
    if bounds is not None:
        out["sum"] = out["count"] * rng.integers(bounds[0], bounds[1] + 1, n)
    return out


DENSE_SPECS = [
    # Laplace: count scale 3·2/0.25 = 24, sum scale 3·2·5000/0.25 = 120000
    pytest.param(
        dict(
            epsilon=0.5,
            person="p",
            max_cells=3,
            max_records_per_cell=2,
            value="v",
            bounds=(-1000, 5000),
        ),
        id="laplace-L0=3-Linf=2",
    ),
    # Laplace, tiny scale: count scale 1/3.0 (discreteness matters)
    pytest.param(dict(epsilon=3.0), id="laplace-small-scale"),
    # Gaussian: moderate σ for counts, large σ for sums
    pytest.param(
        dict(
            epsilon=1.0,
            delta=1e-6,
            mechanism="gaussian",
            person="p",
            max_cells=2,
            value="v",
            bounds=(0, 300),
        ),
        id="gaussian-L0=2",
    ),
    # Gaussian, small σ (< 1: the discrete variance is below σ²)
    pytest.param(dict(epsilon=8.0, delta=1e-3, mechanism="gaussian"), id="gaussian-small-scale"),
]


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["one-call", "parallel-chunks"])
@pytest.mark.parametrize("kw", DENSE_SPECS)
def test_dense_noise(kw: dict[str, Any], chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """One call on the whole vectors, and chunks of 7,000 noised on 3 threads: the same law."""
    spec = ReleaseSpec(resolution=7, suppress_below=False, **kw)
    plan = plan_noise(spec)
    true = _true_vectors(N_DENSE, spec.bounds)
    if chunked:
        monkeypatch.setattr(mechanisms, "NOISE_CHUNK", 7_000)
    noisy = plan.run_dense(true, workers=3 if chunked else 1)
    assert set(noisy) == set(true)
    for stat, st in plan.statistics.items():
        assert noisy[stat].dtype == np.int64 and noisy[stat].shape == true[stat].shape
        check_noise(noisy[stat] - true[stat], st.distribution, st.scale, st.moe95, f"{stat}")
        # the 97.5% margin (used for means) is valid too
        err = noisy[stat] - true[stat]
        p975 = cover(st.distribution, st.scale, st.moe975)
        assert p975 >= 0.975
        covered = int((np.abs(err) <= st.moe975).sum())
        assert (
            stats.binom.ppf(TAIL, N_DENSE, p975) <= covered <= stats.binom.isf(TAIL, N_DENSE, p975)
        )
    if kw.get("epsilon") == 3.0:
        # discrete Laplace at scale 1/3: P(X = 0) = (1 − q)/(1 + q) exactly
        q = math.exp(-1 / plan.statistics["count"].scale)
        p0 = (1 - q) / (1 + q)
        zeros = int((noisy["count"] == true["count"]).sum())
        assert stats.binom.ppf(TAIL, N_DENSE, p0) <= zeros <= stats.binom.isf(TAIL, N_DENSE, p0)


def test_noise_is_fresh_and_integer() -> None:
    """Two runs of the same plan give different noise (not a fixed seed), all integers."""
    plan = plan_noise(ReleaseSpec(resolution=7, epsilon=1.0))
    true = {"count": np.zeros(2_000, dtype=np.int64)}
    a, b = plan.run_dense(true)["count"], plan.run_dense(true)["count"]
    assert a.dtype == np.int64
    # P(identical) = P(X = X')^2000 ≤ 0.5^2000 for scale 1
    assert not np.array_equal(a, b)


def test_parallel_chunks_keep_every_coordinate_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectors of different lengths (a hierarchy's levels) cut into chunks on 2 threads:
    each output coordinate is its own input plus noise of its level's law.

    The true values are 10⁶·index, so a coordinate moved to another position would be off by
    at least 10⁶ (the noise of these scales exceeds 10⁴ with probability < 1e-30); the
    noise itself passes the distribution checks per level.
    """
    monkeypatch.setattr(mechanisms, "NOISE_CHUNK", 5_000)
    spec = ReleaseSpec(resolution=[5, 6, 7], epsilon=1.0, suppress_below=False)
    plan = plan_noise(spec)
    lengths = dict(zip(spec.queries(), (12_001, 30_000, 61_111), strict=True))
    true = {k: np.arange(n, dtype=np.int64) * 1_000_000 for k, n in lengths.items()}
    noisy = plan.run_dense(true, workers=2)
    assert list(noisy) == list(true)
    for k, st in plan.statistics.items():
        err = noisy[k] - true[k]
        assert noisy[k].shape == true[k].shape and np.abs(err).max() < 10_000
        check_noise(err, st.distribution, st.scale, st.moe95, k)


def test_noise_workers_must_be_positive() -> None:
    plan = plan_noise(ReleaseSpec(resolution=7, epsilon=1.0))
    with pytest.raises(ValueError, match="workers must be at least 1"):
        plan.run_dense({"count": np.zeros(10, dtype=np.int64)}, workers=0)


def test_every_core_gets_a_chunk_of_a_mid_sized_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 46k-cell map (two statistics) is noised in one chunk per thread, not in one call;
    a vector below NOISE_PARALLEL_FROM in one call."""
    plan = plan_noise(ReleaseSpec(resolution=7, epsilon=1.0, value="v", bounds=(0, 10)))
    sizes: list[int] = []
    original = mechanisms.NoisePlan._invoke

    def spy(self: Any, vectors: dict[str, np.ndarray]) -> list[Any]:
        sizes.append(len(vectors["count"]))
        return original(self, vectors)

    monkeypatch.setattr(mechanisms.NoisePlan, "_invoke", spy)
    true = {"count": np.zeros(46_000, dtype=np.int64), "sum": np.zeros(46_000, dtype=np.int64)}
    out = plan.run_dense(true, workers=2)
    assert sorted(sizes) == [23_000, 23_000] and len(out["sum"]) == 46_000
    sizes.clear()
    small = mechanisms.NOISE_PARALLEL_FROM - 1
    plan.run_dense({k: v[:small] for k, v in true.items()}, workers=2)
    assert sizes == [small]
