"""Post-processing of noisy values only: suppression flags, means, margins of error.

Nothing here reads raw data: every function takes noisy outputs and public
parameters, so none of it costs privacy budget (the post-processing property of DP).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from dpmap.aggregates import SUM_LIMIT

__all__ = ["Estimates", "Published", "mean_and_margin", "publish"]

#: two-sided normal quantiles, for margins of sums of several noise draws
Z95, Z975 = 1.959963984540054, 2.241402727604947
#: the same for one Laplace draw, in standard deviations (ln 20/√2, ln 40/√2): margins of
#: least-squares combinations of Laplace noise use these, whose tails are heavier than any
#: such combination's (a normal 1.96 covers only about 94% of a hierarchical map's cells)
Z95_LAPLACE, Z975_LAPLACE = math.log(20.0) / math.sqrt(2.0), math.log(40.0) / math.sqrt(2.0)


def margin_factors(kind: str) -> tuple[float, float]:
    """Standard deviations in a 95% and a 97.5% margin of a least-squares estimate whose
    noise is a combination of ``kind`` ("laplace" or "gaussian") draws."""
    return (Z95_LAPLACE, Z975_LAPLACE) if kind == "laplace" else (Z95, Z975)


@dataclass(frozen=True)
class Estimates:
    """Unbiased noisy estimates of each published row, with their margins (all public).

    Margins are half-widths of 95% (and 97.5%) intervals of the noise; scalars apply to
    every row.
    """

    count: np.ndarray
    count_moe: np.ndarray | float
    count_moe975: np.ndarray | float
    sum: np.ndarray | None = None
    sum_moe: np.ndarray | float | None = None
    sum_moe975: np.ndarray | float | None = None
    count_var: np.ndarray | float = 0.0
    sum_var: np.ndarray | float | None = None
    #: distinct persons per row (``people=True``), with its margins and noise variance
    people: np.ndarray | None = None
    people_moe: np.ndarray | float | None = None
    people_var: np.ndarray | float | None = None


@dataclass(frozen=True)
class Published:
    """Columns of the cell table (float arrays with NaN for null, bool for 'suppressed')."""

    columns: dict[str, np.ndarray]
    threshold: float | None
    threshold_rule: str
    #: rows expected to be shown by chance if every row were truly empty (default rule)
    expected_phantom_rows: float | None = None
    #: published rows whose noisy sum may have reached the saturation limit
    sums_at_limit: int = 0


#: the default suppression shows, on average, at most this many truly empty rows per map
PHANTOM_ROWS = 1.0
#: ... and gives no single truly empty row more than this chance of being shown
PHANTOM_ROW_CHANCE = 0.025


@dataclass(frozen=True)
class CountNoise:
    """What :func:`publish` needs to know of the noise on the published counts (public).

    ``kind`` is ``"laplace"`` or ``"gaussian"``. ``scale``: the discrete noise's scale
    when every row carries exactly one draw of it (flat releases, PrivTree leaves without
    internal nodes); ``None`` when rows are least-squares combinations of several draws
    with their own variances (hierarchical and adaptive-grid releases).
    """

    kind: str
    scale: float | None = None


def phantom_chance(rows: int) -> float:
    """The chance a truly empty row may have of being shown: at most 1/``rows`` (so at most
    one phantom row per map on average) and at most 2.5%."""
    return min(PHANTOM_ROW_CHANCE, PHANTOM_ROWS / max(rows, 1))


def discrete_tail(kind: str, scale: float, k: np.ndarray) -> np.ndarray:
    """P(X ≥ k) for the integer noise X (k ≥ 1): exact for the discrete Laplace,
    P(X = x) ∝ exp(−|x|/scale), whose tail is q^k / (1 + q) with q = exp(−1/scale); for the
    discrete Gaussian, P(X = x) ∝ exp(−x²/(2·scale²)), summed numerically (the normal
    tail at k − ½ beyond 10⁴ of scale, where the two agree to many digits)."""
    k = np.atleast_1d(np.asarray(k, dtype=np.float64))
    if kind == "laplace":
        q = math.exp(-1.0 / scale)
        return np.exp(-k / scale) / (1.0 + q)
    if scale > 1e4:
        return np.asarray([NormalDist(0, scale).cdf(-(x - 0.5)) for x in k])
    top, tail = _gaussian_tails(scale)
    idx = np.clip(k.astype(np.int64) + top, 0, len(tail) - 1)
    return np.where(k > top, 0.0, tail[idx])


@functools.lru_cache(maxsize=8)
def _gaussian_tails(scale: float) -> tuple[int, np.ndarray]:
    """P(X ≥ x) of the discrete Gaussian for x = −top … top (``tail[x + top]``)."""
    top = math.ceil(40 * scale) + 2
    x = np.arange(-top, top + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2 * scale**2))
    return top, np.cumsum(w[::-1])[::-1] / w.sum()


def phantom_threshold(noise: CountNoise, rows: int) -> tuple[int, float]:
    """The smallest whole count k ≥ 1 such that a truly empty row shows a noisy count ≥ k
    with chance at most :func:`phantom_chance` (``rows``), and the expected number of rows
    shown if every row were empty (rows · P(X ≥ k)). Needs the discrete scale. The tail
    decreases in k, so k is found by bisection (any scale: no table of the noise)."""
    assert noise.scale is not None
    alpha = phantom_chance(rows)

    def tail(k: int) -> float:
        return float(discrete_tail(noise.kind, noise.scale, np.array([k]))[0])  # type: ignore[arg-type]

    lo, hi = 1, 2
    while tail(hi) > alpha:  # P(X ≥ hi) > α: the threshold lies above
        lo, hi = hi, hi * 2
    if tail(lo) <= alpha:
        return lo, rows * tail(lo)
    while hi - lo > 1:  # invariant: tail(lo) > α ≥ tail(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tail(mid) > alpha else (lo, mid)
    return hi, rows * tail(hi)


def phantom_factor(kind: str, rows: int) -> float:
    """Rows whose noise is a least-squares combination (standard deviation sd each) are hidden
    below ``factor · sd``: the normal quantile for Gaussian noise; for Laplace noise the
    quantile of a Laplace law of the same variance, whose tail is heavier than the tail of
    any such combination (its moment generating function dominates theirs)."""
    alpha = phantom_chance(rows)
    if kind == "laplace":
        return math.log(1.0 / (2.0 * alpha)) / math.sqrt(2.0)  # b = sd/√2, P(X ≥ t) = ½e^{−t/b}
    return NormalDist().inv_cdf(1.0 - alpha)


def publish(
    est: Estimates,
    bounds: tuple[int, int] | None,
    suppress_below: float | bool | None,
    noise: CountNoise | None = None,
) -> Published:
    """Suppression flags, means and margins from noisy estimates and public parameters.

    ``suppress_below``: ``None`` (the default) hides rows whose noisy count is below a
    map-wide threshold chosen so that, on average, at most one truly empty row of the whole
    map is shown (:func:`phantom_threshold`; with ``noise=None`` — private cell discovery,
    whose threshold mechanism already keeps empty cells out — rows below their own 95%
    margin); a number hides rows below it; ``False`` publishes every value.
    """
    count = np.asarray(est.count, dtype=np.float64)
    n = len(count)
    count_moe = np.broadcast_to(np.asarray(est.count_moe, dtype=np.float64), (n,))
    rule = _suppression(est, count, count_moe, suppress_below, noise)
    cols = _published_columns(est, bounds, count, count_moe, rule.suppressed)
    return Published(
        columns=cols,
        threshold=rule.threshold,
        threshold_rule=rule.text,
        expected_phantom_rows=rule.expected,
        sums_at_limit=int(cols["sum_at_limit"].sum()) if "sum_at_limit" in cols else 0,
    )


@dataclass(frozen=True)
class _Suppression:
    """Which rows :func:`publish` hides, and the rule as stated in the manifest."""

    suppressed: np.ndarray
    threshold: float | None
    text: str
    expected: float | None = None


def _suppression(
    est: Estimates,
    count: np.ndarray,
    count_moe: np.ndarray,
    suppress_below: float | bool | None,
    noise: CountNoise | None,
) -> _Suppression:
    """The suppression rule of :func:`publish` applied to the noisy counts (see there)."""
    n = len(count)
    if suppress_below is False:
        return _Suppression(
            np.zeros(n, dtype=bool),
            None,
            "none: every noisy value is published (unbiased; may be negative)",
        )
    if suppress_below is None and noise is None:
        uniform = np.ptp(count_moe) == 0 if n else True
        return _Suppression(
            count < count_moe,
            float(count_moe[0]) if n and uniform else None,
            "default for private cell discovery: rows whose noisy count is below its own 95% "
            "margin of error are published with null numbers",
        )
    if suppress_below is None:
        assert noise is not None
        return _phantom_suppression(est, count, noise)
    threshold = float(suppress_below)
    return _Suppression(
        count < threshold,
        threshold,
        "rows whose noisy count is below the threshold are published with null numbers",
    )


def _phantom_suppression(est: Estimates, count: np.ndarray, noise: CountNoise) -> _Suppression:
    """The default rule: at most about one truly empty row of the map shown by chance."""
    n = len(count)
    alpha = phantom_chance(n)
    threshold: float | None
    if noise.scale is not None:
        k, expected = phantom_threshold(noise, n)
        threshold = float(k)
        suppressed = count < k
        how = f"below {k}"
    else:
        sd = np.sqrt(np.broadcast_to(np.asarray(est.count_var, dtype=np.float64), (n,)))
        factor = phantom_factor(noise.kind, n)
        threshold = None
        suppressed = count < factor * sd
        expected = n * alpha
        how = f"below {factor:.3g} × its standard deviation"
    text = (
        f"default: rows whose noisy count is {how} are published with null numbers, so "
        f"that a truly empty row is shown with chance at most {alpha:.3g} and, over all "
        f"{n} rows, at most {min(n * alpha, PHANTOM_ROWS):.3g} truly empty row is expected "
        "to show by chance"
    )
    return _Suppression(suppressed, threshold, text, expected)


def _published_columns(
    est: Estimates,
    bounds: tuple[int, int] | None,
    count: np.ndarray,
    count_moe: np.ndarray,
    suppressed: np.ndarray,
) -> dict[str, np.ndarray]:
    """The cell table's numbers, null on suppressed rows; means and their margins from the
    noisy counts and sums."""
    n = len(count)
    cols: dict[str, np.ndarray] = {
        "count": np.where(suppressed, np.nan, count),
        "count_moe": np.where(suppressed, np.nan, count_moe),
    }
    if est.sum is not None:
        assert bounds is not None and est.sum_moe is not None and est.sum_moe975 is not None
        total = np.asarray(est.sum, dtype=np.float64)
        cols["sum"] = np.where(suppressed, np.nan, total)
        cols["sum_moe"] = np.where(suppressed, np.nan, np.broadcast_to(est.sum_moe, (n,)))
        mean, mean_moe = mean_and_margin(
            total,
            count,
            np.broadcast_to(est.count_moe975, (n,)),
            np.broadcast_to(est.sum_moe975, (n,)),
            bounds[0],
            bounds[1],
        )
        cols["mean"] = np.where(suppressed, np.nan, mean)
        cols["mean_moe"] = np.where(suppressed, np.nan, mean_moe)
        at_limit = sum_at_limit(total, est.sum_moe975) & ~suppressed
        if at_limit.any():  # a column only where it says something (a decision on noisy values)
            cols["sum_at_limit"] = at_limit
    if est.people is not None:  # hidden with the row: suppression reads the record count
        assert est.people_moe is not None
        cols["people"] = np.where(suppressed, np.nan, np.asarray(est.people, dtype=np.float64))
        cols["people_moe"] = np.where(suppressed, np.nan, np.broadcast_to(est.people_moe, (n,)))
    cols["suppressed"] = suppressed
    return cols


def sum_at_limit(total: np.ndarray, sum_moe975: np.ndarray | float) -> np.ndarray:
    """Rows whose noisy sum lies within its 97.5% margin of ±SUM_LIMIT.

    Every exact sum is saturated to ±SUM_LIMIT before noise (:mod:`dpmap.aggregates`), so
    near the limit the true (bounded) sum may be larger in magnitude than shown. The flag
    reads noisy values only (post-processing).
    """
    return np.abs(np.asarray(total, dtype=np.float64)) >= SUM_LIMIT - np.asarray(sum_moe975)


def mean_and_margin(
    total: np.ndarray,
    count: np.ndarray,
    count_moe975: np.ndarray | float,
    sum_moe975: np.ndarray | float,
    lo: float,
    hi: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean = noisy sum / noisy count (clamped to the bounds) and a conservative 95% margin.

    The true sum and count lie in their 97.5% intervals at the same time with probability
    ≥ 95% (Bonferroni), and on that event the true mean lies between the extreme ratios of
    the two intervals. The margin is the larger distance from the estimate to those
    extremes, clipped to the bounds; where the count's interval reaches 0 the mean is
    unknown within [lo, hi] and the margin is ``hi - lo``. The mean is null when the
    noisy count is below 1.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.clip(total / count, lo, hi)
        c_lo, c_hi = count - count_moe975, count + count_moe975
        s_lo, s_hi = total - sum_moe975, total + sum_moe975
        low = np.where(s_lo >= 0, s_lo / c_hi, s_lo / c_lo)
        high = np.where(s_hi >= 0, s_hi / c_lo, s_hi / c_hi)
        low, high = np.clip(low, lo, hi), np.clip(high, lo, hi)
        moe = np.maximum(est - low, high - est)
    moe = np.where(c_lo > 0, moe, hi - lo)
    valid = count >= 1
    return np.where(valid, est, np.nan), np.where(valid, moe, np.nan)
