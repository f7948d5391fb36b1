"""Post-processing of noisy values only: suppression flags, means, margins of error.

Nothing here reads raw data: every function takes noisy outputs and public
parameters, so none of it costs privacy budget (the post-processing property of DP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mechanisms import NoisePlan

__all__ = ["Published", "default_threshold", "publish"]


def default_threshold(plan: NoisePlan) -> float:
    """Default suppression threshold: the count's own 95% margin of error.

    A cell whose noisy count is below its margin is statistically indistinguishable
    from an empty cell, so showing its value would mostly show noise.
    """
    return plan.statistics["count"].moe95


@dataclass(frozen=True)
class Published:
    """Columns of the cell table derived from the noisy vectors (masked arrays → nulls)."""

    columns: dict[str, np.ndarray]  # float arrays with NaN for null, bool for 'suppressed'
    threshold: float | None


def publish(
    plan: NoisePlan, noisy: dict[str, np.ndarray], suppress_below: float | bool | None
) -> Published:
    """Suppression, means and margins from noisy counts/sums and the public plan."""
    count = noisy["count"].astype(np.float64)
    n = len(count)
    if suppress_below is False:
        threshold = None
        suppressed = np.zeros(n, dtype=bool)
    else:
        threshold = default_threshold(plan) if suppress_below is None else float(suppress_below)
        suppressed = count < threshold
    cols: dict[str, np.ndarray] = {}
    cs = plan.statistics["count"]
    cols["count"] = np.where(suppressed, np.nan, count)
    cols["count_moe"] = np.where(suppressed, np.nan, cs.moe95)
    if "sum" in noisy:
        ss = plan.statistics["sum"]
        total = noisy["sum"].astype(np.float64)
        cols["sum"] = np.where(suppressed, np.nan, total)
        cols["sum_moe"] = np.where(suppressed, np.nan, ss.moe95)
        lo, hi = plan.spec.bounds  # type: ignore[misc]
        mean, mean_moe = mean_and_margin(total, count, cs.moe975, ss.moe975, lo, hi)
        cols["mean"] = np.where(suppressed, np.nan, mean)
        cols["mean_moe"] = np.where(suppressed, np.nan, mean_moe)
    cols["suppressed"] = suppressed
    return Published(columns=cols, threshold=threshold)


def mean_and_margin(
    total: np.ndarray,
    count: np.ndarray,
    count_moe975: float,
    sum_moe975: float,
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
