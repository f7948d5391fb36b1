"""Consistency along the time hierarchy of a panel: months → quarters → years.

A panel release publishes one noisy value per (row, period). Its periods roll up along a
PUBLIC calendar tree as H3 cells roll up to their parents: every quarter's true value is
the sum of its months', every year's the sum of its quarters'. Coarse levels may also be
measured (spending part of the budget on quarters or years); the noisy values of every
level are then made consistent by the same weighted least squares as the H3 hierarchy
(:func:`dpmap.designs.hierarchy.consistent_forest`, the two-pass estimator of Hay et al.
2010), per row, with one public noise variance per level.

The time tree (:func:`time_tree`)
    From a ``pd.PeriodIndex`` of the panel's periods (sorted, no repeats; gaps allowed), the
    coarser calendar levels by pandas' own periods: days → months → quarters → years,
    months → quarters → years, quarters → years (fiscal quarters ``Q-MAR`` roll up to
    fiscal years ``Y-MAR``). ``levels=`` picks other calendar levels (e.g. ``("Y",)`` to
    skip quarters); each must nest: every finer period lies inside one coarser period
    (its start and its end fall in the same one). **Weeks** have no coarser calendar level
    by default, because a week can straddle two months and two years; pass ``groups=``
    (blocks of whole weeks, e.g. ``(13, 4)``: 13-week quarters, 52-week years) instead.
    ``groups=`` also builds a tree over plain periods 0 … T−1 (the panel's explicit edges):
    each entry is how many nodes of the level below make one node, finest first; the last
    group of a level may be partial. A panel starting in March has a first quarter of one
    month and a first year of ten: partial groups are fine, their true value is the sum of
    the periods present.

Least squares (:func:`consistent_panel`)
    Per row, the minimum-variance linear unbiased estimates at every level under "every
    group equals the sum of its periods", and the exact covariance Σ of the finest
    estimates: Σ = (Hᵀ W H)⁻¹, H the 0/1 map from the T finest periods to every measured
    node and W the diagonal of 1/variance. Σ is the same for every row measured with the
    same variances (returned once); where a row's variances are c_r times the level
    variances (e.g. a zone's Σ w² in an area-apportioned roll-up), its estimates are the same
    linear map and its covariance is c_r·Σ. A coarse level given no budget (variance ∞)
    leaves the finest values unchanged. The consistency step makes the finest estimates
    correlated: trends over them should use :func:`dpmap.analysis.trends.gls_slope`.

Budget across time levels (:func:`split_variances`)
    The noise variance of each level for given budget shares, from the sensitivity of each
    level's vector (:func:`dpmap._privacy.bounding.time_level_sensitivity`), and the
    variances after least squares at every level. ``benchmarks/bench_time_levels.py`` is the
    study of when spending at coarse levels wins.

Everything here is post-processing of noisy values with public variances (and, for the
budget split, public parameters only); nothing reads data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dpmap._privacy.bounding import time_level_sensitivity
from dpmap._privacy.noise import noise_variance
from dpmap.designs.hierarchy import consistent_forest
from dpmap.errors import SpecError
from dpmap.spec import Mechanism

__all__ = [
    "SplitVariances",
    "TimeFit",
    "TimeTree",
    "consistent_panel",
    "fit_covariance",
    "level_covariance",
    "level_noise_variances",
    "split_variances",
    "time_tree",
]

#: the coarser calendar levels of each finest frequency (pandas period frequency strings)
CALENDAR: dict[str, tuple[str, ...]] = {
    "D": ("M", "Q-DEC", "Y-DEC"),
    "M": ("Q-DEC", "Y-DEC"),
}


@dataclass(frozen=True)
class TimeTree:
    """A public tree of periods, coarse to fine (as :class:`dpmap.designs.hierarchy.Tree`).

    ``names[j]`` names level j (a pandas frequency such as ``"Q-DEC"``, or ``"groups of
    3"``); ``labels[j]`` its nodes in time order (``"2026Q1"``); ``parent[j]`` (j ≥ 1) maps
    each node of level j to its parent's position in level j − 1 (``parent[0]`` is None).
    The last level holds the panel's own T periods.
    """

    names: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    parent: tuple[np.ndarray | None, ...]

    @property
    def periods(self) -> int:
        """T, the number of finest periods."""
        return len(self.labels[-1])

    def ancestor(self, level: int) -> np.ndarray:
        """For each finest period, the position of the node of ``level`` it lies in."""
        out = np.arange(self.periods)
        for j in range(len(self.labels) - 1, level, -1):
            parent = self.parent[j]
            assert parent is not None
            out = parent[out]
        return out

    def group_sizes(self, level: int) -> np.ndarray:
        """How many finest periods each node of ``level`` holds (1 at the finest level)."""
        return np.bincount(self.ancestor(level), minlength=len(self.labels[level]))

    def aggregation(self, level: int) -> np.ndarray:
        """The 0/1 matrix (nodes of ``level`` × T) that adds finest periods up to ``level``."""
        out = np.zeros((len(self.labels[level]), self.periods))
        out[self.ancestor(level), np.arange(self.periods)] = 1.0
        return out

    def totals(self, finest: np.ndarray) -> list[np.ndarray]:
        """Every level's values (coarse to fine) from the finest values, shape ``(T,)`` or
        ``(rows, T)``: each node is the sum of its periods (used on true values and
        equally on public estimates)."""
        x = np.asarray(finest, dtype=np.float64)
        return [x @ self.aggregation(j).T for j in range(len(self.labels))]


def time_tree(
    periods: pd.PeriodIndex | int,
    *,
    levels: Sequence[str] | None = None,
    groups: Sequence[int] | None = None,
) -> TimeTree:
    """The public time tree over a panel's periods (see the module docstring).

    ``periods``: the panel's periods (a ``pd.PeriodIndex``, oldest first, no repeats) or
    their number T. ``levels``: coarser calendar frequencies, finer first (default: the
    calendar above the periods' frequency). ``groups``: instead of ``levels``, fan-outs,
    finest first (``(3, 4)``: three periods a group, four groups a top node); the groups
    start at the first period and the last one may be partial (for groups aligned to the
    calendar, with a partial first group, use ``levels``).
    """
    if levels is not None and groups is not None:
        raise SpecError(
            f"pass levels= or groups=, not both (got levels={list(levels)!r}, "
            f"groups={list(groups)!r}); e.g. levels=('Q', 'Y') for calendar quarters and years"
        )
    if isinstance(periods, pd.PeriodIndex):
        index = _check_periods(periods)
        labels = [str(p) for p in index]
        if groups is not None:
            return _grouped(labels, groups)
        return _calendar(index, _default_levels(index) if levels is None else tuple(levels))
    if isinstance(periods, bool) or not isinstance(periods, int | np.integer) or periods < 1:
        raise SpecError(
            f"periods must be a pd.PeriodIndex or a number of periods ≥ 1, got {periods!r}; "
            "e.g. pd.period_range('2026-01', periods=12, freq='M')"
        )
    if levels is not None:
        raise SpecError(
            f"calendar levels={list(levels)!r} need the periods as a pd.PeriodIndex, got "
            f"{int(periods)} plain periods; pass groups= (e.g. groups=(3, 4)) instead"
        )
    return _grouped([str(i) for i in range(int(periods))], groups or ())


def _check_periods(periods: pd.PeriodIndex) -> pd.PeriodIndex:
    if len(periods) == 0:
        raise SpecError("the panel has no periods; pass at least one period")
    if periods.hasnans:
        raise SpecError("the periods contain a missing period (NaT); drop it or name it")
    order = periods.asi8
    if np.any(np.diff(order) <= 0):
        raise SpecError(
            f"the periods must be in order without repeats, got {periods[0]} … "
            f"{periods[-1]}; sort them (periods.sort_values().unique())"
        )
    return periods


def _default_levels(index: pd.PeriodIndex) -> tuple[str, ...]:
    freq = index.freqstr
    if freq in CALENDAR:
        return CALENDAR[freq]
    if freq.startswith("Q-"):
        return ("Y-" + freq[2:],)
    if freq.startswith("Y-"):
        return ()
    if freq.startswith("W"):
        raise SpecError(
            f"weekly periods ({freq}) do not nest in months, quarters or years (a week can "
            "straddle two); pass groups= for blocks of whole weeks, e.g. groups=(13, 4)"
        )
    raise SpecError(
        f"no calendar levels are known above periods of frequency {freq!r}; pass levels= "
        "(e.g. levels=('M', 'Y')) or groups= (e.g. groups=(3, 4))"
    )


def _calendar(index: pd.PeriodIndex, levels: tuple[str, ...]) -> TimeTree:
    """Coarse-to-fine tree from the periods ``index`` and coarser calendar ``levels``."""
    names = [index.freqstr]
    labels = [tuple(str(p) for p in index)]
    parents: list[np.ndarray | None] = []
    fine = index
    for freq in levels:
        try:
            start = fine.start_time.to_period(freq)
            end = fine.end_time.to_period(freq)
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"{freq!r} is not a pandas period frequency ({exc}); use e.g. 'M', 'Q', 'Y'"
            ) from exc
        straddle = np.flatnonzero(start != end)
        if len(straddle):
            raise SpecError(
                f"the {names[-1]} period {fine[straddle[0]]} is not inside one {freq} period "
                f"(it spans {start[straddle[0]]} and {end[straddle[0]]}), so {freq} does not "
                "nest above it; pass coarser levels that nest, or groups="
            )
        coarse = pd.PeriodIndex(start.unique())  # in time order, as the finer periods
        if len(coarse) == len(fine) and (coarse.start_time == fine.start_time).all():
            raise SpecError(
                f"the level {freq!r} is not coarser than {names[-1]!r}; drop it from levels="
            )
        parents.append(np.searchsorted(coarse.asi8, start.asi8))
        names.append(coarse.freqstr)
        labels.append(tuple(str(p) for p in coarse))
        fine = coarse
    return _reversed(names, labels, parents)


def _grouped(labels: list[str], groups: Sequence[int]) -> TimeTree:
    """Coarse-to-fine tree of fan-outs ``groups`` (finest first) over ``labels``."""
    names = ["periods"]
    level = [(lab, lab) for lab in labels]  # (first, last) finest label under each node
    out_labels = [tuple(labels)]
    parents: list[np.ndarray | None] = []
    span = 1
    for g in groups:
        if isinstance(g, bool) or not isinstance(g, int | np.integer) or g < 2:
            raise SpecError(
                f"every group size must be a whole number ≥ 2, got {g!r} in groups="
                f"{list(groups)!r}; e.g. groups=(3, 4) for quarters and years over months"
            )
        span *= int(g)
        parents.append(np.arange(len(level)) // int(g))
        starts = range(0, len(level), int(g))
        level = [(level[i][0], level[min(i + int(g), len(level)) - 1][1]) for i in starts]
        names.append(f"groups of {span}")
        out_labels.append(tuple(a if a == b else f"{a}–{b}" for a, b in level))
    return _reversed(names, out_labels, parents)


def _reversed(
    names: list[str], labels: list[tuple[str, ...]], parents: list[np.ndarray | None]
) -> TimeTree:
    """Fine-to-coarse lists (``parents[j]`` maps level j to j + 1) as a coarse-to-fine tree."""
    par: list[np.ndarray | None] = [None, *[p for p in reversed(parents)]]
    return TimeTree(names=tuple(reversed(names)), labels=tuple(reversed(labels)), parent=tuple(par))


@dataclass(frozen=True)
class TimeFit:
    """Consistent estimates along a time tree.

    ``values[j]``: the estimates at level j (coarse to fine), shaped as the noisy values
    (``(rows, n_j)`` or ``(n_j,)``); ``variances[j]``: their exact noise variance per node
    (``(n_j,)``, the same for every row); ``covariance``: the exact T × T noise covariance of
    the finest estimates (of every row; c_r·Σ for a row whose variances are scaled by c_r).
    Coarser levels' covariances: :func:`level_covariance`.
    """

    values: tuple[np.ndarray, ...]
    variances: tuple[np.ndarray, ...]
    covariance: np.ndarray


def _level_variances(tree: TimeTree, variances: Sequence[Any]) -> list[np.ndarray]:
    """Per level, one noise variance per node (∞: not measured), checked."""
    if len(variances) != len(tree.labels):
        raise SpecError(
            f"the time tree has {len(tree.labels)} levels ({', '.join(tree.names)}) but "
            f"{len(variances)} variances were given; pass one per level, coarse to fine "
            "(None for a level without budget)"
        )
    out = []
    for j, v in enumerate(variances):
        n = len(tree.labels[j])
        arr = np.full(n, math.inf) if v is None else np.broadcast_to(np.asarray(v, float), (n,))
        if np.isnan(arr).any() or (arr <= 0).any():
            raise SpecError(
                f"the noise variances of level {tree.names[j]} must be > 0 (∞ or None: not "
                f"measured), got {v!r}; pass the published noise variances"
            )
        out.append(np.array(arr, dtype=np.float64))
    if not np.isfinite(out[-1]).all():
        raise SpecError(
            f"the finest level ({tree.names[-1]}) must be measured, got variances "
            f"{variances[-1]!r}; pass its finite noise variance"
        )
    return out


def fit_covariance(tree: TimeTree, variances: Sequence[Any]) -> np.ndarray:
    """The exact T × T noise covariance of the least-squares finest estimates given each
    level's noise variances (coarse to fine; a scalar or one per node; ∞ or None: not
    measured): Σ = (Σ_j H_jᵀ W_j H_j)⁻¹, H_j the 0/1 aggregation to level j and W_j the
    diagonal of 1/variance (0 where not measured). O(T³); no values needed."""
    var = _level_variances(tree, variances)
    info = np.zeros((tree.periods, tree.periods))
    for j, v in enumerate(var):
        h = tree.aggregation(j)
        info += h.T @ (h / v[:, None])  # 1/∞ = 0: a level without budget adds nothing
    cov = np.linalg.inv(info)
    return (cov + cov.T) / 2.0


def level_covariance(tree: TimeTree, covariance: np.ndarray, level: int) -> np.ndarray:
    """The noise covariance of level ``level``'s consistent estimates (nodes × nodes), from
    the finest estimates' covariance: A Σ Aᵀ with A the aggregation to that level."""
    a = tree.aggregation(level)
    return a @ np.asarray(covariance, dtype=np.float64) @ a.T


def consistent_panel(tree: TimeTree, noisy: Sequence[Any], variances: Sequence[Any]) -> TimeFit:
    """Least-squares consistent estimates of a panel at every time level, per row.

    ``noisy[j]``: level j's noisy values (coarse to fine), shape ``(rows, n_j)`` or
    ``(n_j,)``; ``None`` for a level without budget. ``variances[j]``: level j's noise
    variance (a scalar or one per node; ``None`` or ∞ when not measured); the finest level
    must be measured. A missing value makes its row's estimates NaN throughout its top-level
    group (e.g. its year), and nowhere else. Returns the estimates
    (every group equals the sum of its periods), their exact variances and the finest
    estimates' covariance (see :class:`TimeFit`). The estimates come from the two-pass
    estimator of :func:`dpmap.designs.hierarchy.consistent_forest` (all rows at once), the
    variances from :func:`fit_covariance` (the tests check that both passes agree).
    """
    var = _level_variances(tree, variances)
    if len(noisy) != len(var):
        raise SpecError(
            f"the time tree has {len(var)} levels but {len(noisy)} noisy levels were given; "
            "pass one per level, coarse to fine (None for a level without budget)"
        )
    finest = np.asarray(noisy[-1], dtype=np.float64)
    single = finest.ndim == 1
    rows = 1 if single else finest.shape[0]
    ys = []
    for j, y in enumerate(noisy):
        n = len(tree.labels[j])
        if not np.isfinite(var[j]).any():  # not measured: its values (if any) are ignored
            ys.append(np.zeros((n, rows)))
            continue
        if y is None:
            raise SpecError(
                f"level {tree.names[j]} has a finite noise variance but no noisy values; pass "
                "its values, or None as its variance when it was not measured"
            )
        arr = np.asarray(y, dtype=np.float64)
        arr = arr[None, :] if single and arr.ndim == 1 else arr
        if arr.shape != (rows, n):
            raise SpecError(
                f"level {tree.names[j]} has {n} periods but its noisy values have shape "
                f"{np.shape(y)}; pass (rows, {n}) values in the tree's order"
            )
        ys.append(arr.T)
    x, _p = consistent_forest(list(tree.parent), ys, var)
    cov = fit_covariance(tree, var)
    return TimeFit(
        values=tuple(v[:, 0] if single else v.T for v in x),
        variances=tuple(np.diag(level_covariance(tree, cov, j)).copy() for j in range(len(var))),
        covariance=cov,
    )


def level_noise_variances(
    tree: TimeTree,
    shares: Sequence[float],
    *,
    mechanism: Mechanism,
    budget: float,
    max_periods: int,
    max_cells: int = 1,
    max_records_per_cell: int = 1,
    magnitude: int = 1,
) -> list[float]:
    """Each level's noise variance (coarse to fine; ∞ where the share is 0) when level j
    gets ``shares[j]`` of the budget: ε for Laplace (scale L1_j / (share·ε), basic
    composition), ρ for Gaussian (zCDP; σ = L2_j / √(2·share·ρ)), with L1_j and L2_j from
    :func:`dpmap._privacy.bounding.time_level_sensitivity` for the level's groups. The
    variances are those of OpenDP's integer noise (:func:`noise_variance`)."""
    if len(shares) != len(tree.labels) or any(
        not (isinstance(s, int | float) and 0 <= s <= 1) for s in shares
    ):
        raise SpecError(
            f"shares must be {len(tree.labels)} numbers in [0, 1], one per level "
            f"({', '.join(tree.names)}), got {list(shares)!r}; e.g. {_example(tree)}"
        )
    if abs(sum(shares) - 1.0) > 1e-9 or shares[-1] <= 0:
        raise SpecError(
            f"the shares must add up to 1 and give the finest level ({tree.names[-1]}) a "
            f"positive share, got {list(shares)!r}; e.g. {_example(tree)}"
        )
    if not (isinstance(budget, int | float) and budget > 0 and math.isfinite(budget)):
        raise SpecError(f"budget must be a positive ε (Laplace) or ρ (Gaussian), got {budget!r}")
    out = []
    for j, share in enumerate(shares):
        if share == 0:
            out.append(math.inf)
            continue
        sens = time_level_sensitivity(
            max_cells=max_cells,
            max_records_per_cell=max_records_per_cell,
            max_periods=max_periods,
            group_sizes=tree.group_sizes(j).tolist(),
            magnitude=magnitude,
        )
        if mechanism is Mechanism.LAPLACE:
            scale = sens.l1 / (share * budget)
        else:
            scale = sens.l2 / math.sqrt(2.0 * share * budget)
        out.append(noise_variance(mechanism, scale))
    return out


def _example(tree: TimeTree) -> str:
    return repr(tuple([0.0] * (len(tree.labels) - 1) + [1.0]))


@dataclass(frozen=True)
class SplitVariances:
    """What a budget split gives: each level's noise variance (``noise``, ∞ where not
    measured), the variance of every node after least squares (``fitted``, coarse to fine)
    and the finest estimates' covariance."""

    noise: tuple[float, ...]
    fitted: tuple[np.ndarray, ...]
    covariance: np.ndarray


def split_variances(
    tree: TimeTree,
    shares: Sequence[float],
    *,
    mechanism: Mechanism,
    budget: float,
    max_periods: int,
    max_cells: int = 1,
    max_records_per_cell: int = 1,
    magnitude: int = 1,
) -> SplitVariances:
    """The variance of every month, quarter and year (every node of every level) after least
    squares, for budget ``shares`` across the levels (coarse to fine; see
    :func:`level_noise_variances` for the budget and the bounds)."""
    noise = level_noise_variances(
        tree,
        shares,
        mechanism=mechanism,
        budget=budget,
        max_periods=max_periods,
        max_cells=max_cells,
        max_records_per_cell=max_records_per_cell,
        magnitude=magnitude,
    )
    cov = fit_covariance(tree, noise)
    fitted = tuple(np.diag(level_covariance(tree, cov, j)).copy() for j in range(len(noise)))
    return SplitVariances(noise=tuple(noise), fitted=fitted, covariance=cov)
