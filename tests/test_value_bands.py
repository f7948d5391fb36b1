"""Value bands: the 95% margins ``band_a_b_moe`` cover the true band counts at the stated rate.

A simulation of the method in :mod:`dpmap.designs.distribution` (item 5 of its docstring):
the release's own noise plan and columns, with the histogram's noise drawn by numpy from the
plan's distribution at the plan's scale (:func:`common.numpy_noise`). OpenDP's exact samplers take
≈ 10 µs a draw, and the 2000 × 1110 coordinates took ≈ 25 s per mechanism; the OpenDP
histogram noise itself is tested in tests/test_quantiles.py (its variance, and the quantile
coverage for both mechanisms through ``plan.run_dense``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from common import numpy_noise
from dpmap._privacy.noise import plan_noise
from dpmap.designs.distribution import distribution_columns
from dpmap.spec import Mechanism, ReleaseSpec, band_name

BOUNDS = (0, 50_000)
EDGES = (0, 1000, 5000, 20_000, 50_000)
#: rows (independent trials: independent data and independent noise) and people per row
ROWS, PEOPLE = 2000, 60
#: the rate each band's margin claims, per mechanism: (lowest, highest) two-sided bracket
RATES = {
    # Laplace noise: the margin is z·sd with z = ln(20)/√2, so that for ONE (continuous)
    # Laplace variable (sd √2·b) it is ±ln(20)·b, which holds with probability exactly 95%.
    # A band's count is a weighted sum of 111 to 666 nodes' noise, whose tails are lighter:
    # its coverage moves towards the normal limit P(|N(0,1)| ≤ ln(20)/√2) = 96.585%.
    # (Measured with numpy's own discrete Laplace, 200,000 draws at this scale: 95.9% to
    # 96.1% for these four bands.)
    "laplace": (0.95, 0.96585),
    # Gaussian noise: a weighted sum of Gaussians is Gaussian and z = 1.96, so exactly 95%
    # (OpenDP's discrete Gaussian has a variance at most σ², so at least 95%; the excess is
    # negligible at this σ).
    "gaussian": (0.95, 0.95),
}


def spec_for(mechanism: str) -> ReleaseSpec:
    kw: dict[str, Any] = {"delta": 1e-6} if mechanism == "gaussian" else {}
    return ReleaseSpec(
        resolution=7,
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=BOUNDS,
        value_bands=EDGES,
        mechanism=mechanism,
        **kw,
    )


def limits(lowest: float, highest: float) -> tuple[int, int]:
    """The fewest and most rows (of ROWS) whose margin may cover a band's true count.

    Each band's covered rows are Binomial(ROWS, π) with lowest ≤ π ≤ highest (rows are
    independent). The test fails below the ``1e-8 / 8`` lower quantile of Bin(ROWS, lowest)
    or above the ``1e-8 / 8`` upper quantile of Bin(ROWS, highest): with a correct margin,
    the probability of a false failure is < 1e-8 per run (a union bound over 4 bands × 2
    sides; binomial tails are monotone in π). With ROWS = 2000 the window is 1837–1974
    rows (91.9%–98.7%) for Laplace and 1837–1953 (91.9%–97.7%) for Gaussian, while a margin
    of half its size covers about 70% of rows and a quarter of the noise about 100%.
    """
    tail = 1e-8 / 8
    lo = int(stats.binom.ppf(tail, ROWS, lowest))
    hi = int(stats.binom.isf(tail, ROWS, highest))
    assert stats.binom.cdf(lo - 1, ROWS, lowest) < tail
    assert stats.binom.sf(hi, ROWS, highest) < tail
    return lo, hi


def test_numpy_noise_has_the_stated_distribution() -> None:
    """The helper's draws against the exact pmf, two-sided: 200,000 draws per mechanism,
    P(X = 0) and P(|X| ≤ s) each within 6 binomial SE (normal tail 2e-9, four checks: < 1e-8).
    A Laplace at s/2 or a Gaussian at σ/2 misses both by ≫ 6 SE."""
    rng = np.random.default_rng()
    n = 200_000
    for mech, s in ((Mechanism.LAPLACE, 6.0), (Mechanism.GAUSSIAN, 4.5)):
        x = numpy_noise(mech, s, n, rng)
        k = np.arange(-2000, 2001)
        w = np.exp(-np.abs(k) / s) if mech is Mechanism.LAPLACE else np.exp(-(k**2) / (2 * s**2))
        pmf = w / w.sum()
        for got, want in ((x == 0, pmf[k == 0].sum()), (np.abs(x) <= s, pmf[np.abs(k) <= s].sum())):
            se = math.sqrt(want * (1 - want) / n)
            assert abs(float(got.mean()) - want) <= 6 * se, (mech, s, float(got.mean()), want)


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_value_band_margins_cover_the_true_counts_at_the_stated_rate(mechanism: str) -> None:
    """``band ± band_moe`` against the true band count of each of ROWS rows, two-sided."""
    spec = spec_for(mechanism)
    tree = spec.value_tree
    rng = np.random.default_rng(20261206)
    values = np.clip(np.floor(rng.lognormal(8.5, 1.2, (ROWS, PEOPLE)) + 0.5), *BOUNDS)
    values = values.astype(np.int64)
    row = np.repeat(np.arange(ROWS), PEOPLE)
    exact = tree.node_vectors(
        row, tree.leaf_of(values).reshape(-1), np.ones(row.size, np.int64), ROWS
    )
    plan = plan_noise(spec)
    hist = plan.statistics["hist"]
    assert hist.distribution == f"discrete {mechanism.capitalize()}"
    noise = numpy_noise(spec.mechanism, hist.scale, exact.size, np.random.default_rng())
    cols = distribution_columns(spec, plan, exact.reshape(-1) + noise)
    lo, hi = limits(*RATES[mechanism])
    for a, b in itertools.pairwise(EDGES):
        name = band_name(a, b)
        inside = (values >= a) & ((values < b) | (b == BOUNDS[1]))
        truth = inside.sum(axis=1)
        moe = cols[f"{name}_moe"]
        assert np.all(moe > 0) and np.all(np.isfinite(cols[name]))
        covered = int((np.abs(cols[name] - truth) <= moe).sum())
        assert lo <= covered <= hi, (
            f"{name}: {covered} of {ROWS} margins cover the true count (allowed {lo}–{hi})"
        )
        # the estimate is unbiased: its mean error is within 6 standard errors of 0
        err = cols[name] - truth
        assert abs(float(err.mean())) < 6 * float(err.std()) / math.sqrt(ROWS)
