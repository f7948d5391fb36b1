"""Post-processing of noisy values only: suppression flags, means, margins of error.

Nothing here reads raw data: every function takes noisy outputs and public
parameters, so none of it costs privacy budget (the post-processing property of DP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .aggregates import SUM_LIMIT

__all__ = ["Estimates", "Published", "mean_and_margin", "publish"]

#: two-sided normal quantiles, for margins of sums of several noise draws
Z95, Z975 = 1.959963984540054, 2.241402727604947


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


@dataclass(frozen=True)
class Published:
    """Columns of the cell table (float arrays with NaN for null, bool for 'suppressed')."""

    columns: dict[str, np.ndarray]
    threshold: float | None
    threshold_rule: str
    #: published rows whose noisy sum may have reached the saturation limit
    sums_at_limit: int = 0


def publish(
    est: Estimates, bounds: tuple[int, int] | None, suppress_below: float | bool | None
) -> Published:
    """Suppression flags, means and margins from noisy estimates and public parameters.

    ``suppress_below``: ``None`` hides rows whose noisy count is below their own 95%
    margin of error (statistically indistinguishable from an empty cell); a number hides
    rows below it; ``False`` publishes every value.
    """
    count = np.asarray(est.count, dtype=np.float64)
    n = len(count)
    count_moe = np.broadcast_to(np.asarray(est.count_moe, dtype=np.float64), (n,))
    if suppress_below is False:
        threshold, rule = None, "none: every noisy value is published (unbiased; may be negative)"
        suppressed = np.zeros(n, dtype=bool)
    elif suppress_below is None:
        uniform = np.ptp(count_moe) == 0 if n else True
        threshold = float(count_moe[0]) if n and uniform else None
        rule = (
            "default: rows whose noisy count is below its own 95% margin of error are "
            "published with null numbers"
        )
        suppressed = count < count_moe
    else:
        threshold = float(suppress_below)
        rule = "rows whose noisy count is below the threshold are published with null numbers"
        suppressed = count < threshold
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
    cols["suppressed"] = suppressed
    return Published(
        columns=cols,
        threshold=threshold,
        threshold_rule=rule,
        sums_at_limit=int(cols["sum_at_limit"].sum()) if "sum_at_limit" in cols else 0,
    )


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
