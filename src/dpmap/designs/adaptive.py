"""What the two adaptive designs (PrivTree, adaptive grid) share.

Both publish a partition of the region into cells of mixed resolutions, chosen with noise
from a public tree (the H3 parents of the region's finest cells, from a coarser root down).
The leaves' values are either their own noisy values (independent rows) or least-squares
estimates consistent with noisy values of the coarser nodes (correlated; the analyses rebuild
the forest from the published leaves). Their noise is discrete Laplace under pure ε-DP,
composed adaptively by OpenDP (the cells measured depend on earlier noisy values).

Value distributions (``quantiles=`` / ``value_bands=``). The published leaves also get a
value histogram (:mod:`dpmap.designs.distribution`): the engines give the exact bounded
histogram of every *finest* public cell; once the leaves are drawn (and public), the finest
cells' histograms are summed into the leaf that holds each of them, exactly and before any
noise, and the (leaves × value-tree nodes) vector is noised once, last, in the same adaptive
composition, with ``histogram_share·ε`` (the design divides the rest as it would without
a histogram). Its sensitivity is the flat release's L1: the leaves partition the public
cells, so a person's ≤ L0 cells fall in ≤ L0 leaves and each kept record still moves one
node per value-tree level by 1 (L1 = L0·L∞·D, :func:`~dpmap._privacy.bounding.
histogram_sensitivity`). Merging cells can only raise L2 and L∞ (up to min(L0, 7^Δ)·L∞
records of a person in one leaf Δ levels above the finest); discrete Laplace noise is
calibrated to L1 alone, and the manifest states L2 and L∞ at the coarsest possible leaf
(:func:`leaf_histogram_sensitivity`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.adaptive import gathered, then_laplace
from dpmap._privacy.bounding import Sensitivity, histogram_sensitivity, sqrt_up
from dpmap._privacy.noise import NoisePlan, StatisticNoise, statistic_noise
from dpmap._privacy.postprocess import CountNoise, Estimates, margin_factors
from dpmap.aggregates import BoundedAggregates
from dpmap.designs import hierarchy
from dpmap.designs.base import Measured, PeriodCovariance
from dpmap.designs.distribution import (
    check_histogram_size,
    distribution_columns,
    distribution_manifest,
    explain_distribution,
)
from dpmap.designs.flat import region_selection
from dpmap.errors import SpecError
from dpmap.spec import Mechanism, ReleaseSpec

__all__ = [
    "Adaptive",
    "FinestHistogram",
    "LeafRun",
    "histogram_chain",
    "leaf_histogram",
    "leaf_histogram_noise",
    "leaf_histogram_sensitivity",
    "leaf_of_finest",
]

#: what one adaptive run returns: the leaves as (depth, position) pairs, the leaves' noisy
#: values, what the manifest learns from the noise, and the least-squares estimates of a
#: statistic with their variances (for plans with noisy internal nodes)
LeafRun = tuple[
    list[tuple[int, int]],
    dict[str, np.ndarray],
    dict[str, Any],
    Callable[[str], tuple[np.ndarray, np.ndarray]],
]


#: the exact finest-cell histogram the engines give: (row in the finest public cells, value
#: leaf, count), as :meth:`~dpmap.aggregates.BoundedAggregates.histogram_leaves` returns it
FinestHistogram = tuple[np.ndarray, np.ndarray, np.ndarray]


def leaf_of_finest(tree: hierarchy.Tree, leaves: list[tuple[int, int]]) -> np.ndarray:
    """Position in ``leaves`` of the leaf that holds each finest public cell (public).

    ``leaves`` are (depth, index in ``tree.levels[depth]``) and must partition the tree's
    finest cells (PrivTree leaves and an adaptive grid's second level do)."""
    last = len(tree.levels) - 1
    anc = np.arange(len(tree.levels[last]))
    where = np.full(len(anc), -1, dtype=np.int64)
    depth = np.array([j for j, _ in leaves], dtype=np.int64)
    index = np.array([i for _, i in leaves], dtype=np.int64)
    for d in range(last, -1, -1):  # anc: each finest cell's ancestor at depth d
        lookup = np.full(len(tree.levels[d]), -1, dtype=np.int64)
        here = np.flatnonzero(depth == d)
        lookup[index[here]] = here
        hit = lookup[anc]
        if ((hit >= 0) & (where >= 0)).any():
            raise AssertionError("adaptive leaves overlap")
        where = np.where(hit >= 0, hit, where)
        parent = tree.parent[d]
        if parent is not None:
            anc = parent[anc]
    if (where < 0).any():
        raise AssertionError("adaptive leaves do not cover the public cells")
    return where


def leaf_histogram(
    spec: ReleaseSpec,
    tree: hierarchy.Tree,
    leaves: list[tuple[int, int]],
    finest: FinestHistogram,
) -> np.ndarray:
    """PRIVATE: the exact value histogram of every leaf (leaves × value-tree nodes,
    flattened, ``leaves`` order): each finest cell's bounded histogram added into its leaf."""
    row, leaf, count = finest
    into = leaf_of_finest(tree, leaves)[np.asarray(row, dtype=np.int64)]
    return spec.value_tree.node_vectors(into, leaf, count, len(leaves)).reshape(-1)


def histogram_chain(
    spec: ReleaseSpec, tree: hierarchy.Tree, leaves: list[tuple[int, int]], scale: float
) -> Any:
    """The leaves' value histogram (a fixed public partition, chosen by earlier noisy
    values) with discrete Laplace noise of ``scale``; L1 stability L0·L∞·D per person (the
    flat release's, see the module docstring). Reads the aggregates' ``tree_hist``."""
    l1 = histogram_sensitivity(spec).l1
    return then_laplace(
        gathered(lambda agg: leaf_histogram(spec, tree, leaves, agg["tree_hist"]), l1), scale
    )


def leaf_histogram_sensitivity(spec: ReleaseSpec, resolution: int) -> Sensitivity:
    """Sensitivity of the leaves' value histogram when leaves can be as coarse as
    ``resolution``: L1 and the coordinates touched are the flat release's (a leaf holding c
    of a person's cells touches at most c·min(L∞, b^d) nodes of level d); a leaf Δ levels
    up holds up to min(L0, 7^Δ)·L∞ of the person's records, so L∞ is that, and L2² is at
    most D·Σ_leaves (records in it)², largest with the cells packed 7^Δ per leaf."""
    flat = histogram_sensitivity(spec)
    children = 7 ** max(spec.finest - resolution, 0)
    l0, linf, depth = spec.l0, spec.linf, spec.value_tree.depth
    packed = (l0 // children) * children**2 + (l0 % children) ** 2  # Σ (cells per leaf)²
    return Sensitivity(
        l0=flat.l0,
        l1=flat.l1,
        l2=sqrt_up(depth * packed * linf**2),
        linf=min(l0, children) * linf,
    )


def leaf_histogram_noise(
    spec: ReleaseSpec, root: int, scale: float, epsilon: float | None
) -> dict[str, StatisticNoise]:
    """The manifest's ``hist`` statistic of an adaptive release, whose published leaves can
    be as coarse as ``root`` (L2 and L∞ there; L1, which the Laplace noise is calibrated to,
    is the flat release's)."""
    sensitivity = leaf_histogram_sensitivity(spec, root)
    return {"hist": statistic_noise("hist", "hist", sensitivity, Mechanism.LAPLACE, scale, epsilon)}


class Adaptive:
    """The common part of :class:`~dpmap.designs.privtree.PrivTree` and
    :class:`~dpmap.designs.adaptive_grid.AdaptiveGrid` (subclasses set ``kind`` and the plan)."""

    kind: ClassVar[str]
    several_levels: ClassVar[bool] = False
    mixed_resolutions: ClassVar[bool] = True

    def __init__(
        self, spec: ReleaseSpec, region: grid.Region, noise: NoisePlan, aplan: Any
    ) -> None:
        self.spec, self.region, self.noise, self.aplan = spec, region, noise, aplan
        self.integer = not aplan.has_internal
        self.domain: np.ndarray | None = grid.region_to_cells(region, spec.finest)
        check_histogram_size(spec, len(self.domain))  # at most one leaf per finest cell

    @classmethod
    def check(cls, spec: ReleaseSpec, region: grid.Region | None) -> grid.Region:
        """Refuse what no adaptive design can do; the region, when there is one."""
        if region is None or spec.categories is not None:
            raise SpecError(
                "adaptive releases need a public region and no category breakdown; pass "
                "region=... and drop category/categories"
            )
        return region

    def rows(self) -> int | None:
        return None  # the leaves are drawn with the noise

    def count_noise(self) -> CountNoise | None:
        scale = None if self.aplan.has_internal else self.aplan.scales["count"]
        return CountNoise(str(self.spec.mechanism), scale)

    def describe(self) -> dict[str, Any] | None:
        return dict(self.aplan.describe())

    def run(
        self, tree: hierarchy.Tree, counts: Any, sums: Any, hist: FinestHistogram | None
    ) -> LeafRun:
        """Draw the noise of the design on the exact level totals and, with ``hist``, the
        leaves' value histogram, returned as ``"hist"`` among the noisy values (subclasses)."""
        raise NotImplementedError

    def selection_rule(self, measured: Measured) -> str:
        raise NotImplementedError

    def distribution_lines(self) -> list[str]:
        """``explain``'s lines about the leaves' quantiles and value bands (none without)."""
        if not self.spec.histogram:
            return []
        return [
            *explain_distribution(self.spec, self.noise),
            "  value histogram per published leaf: the finest cells' exact histograms are "
            "added into their leaf before noise (one histogram per leaf, whatever its "
            "resolution)",
        ]

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        assert self.domain is not None
        finest = aggregates.densify(self.domain, 1)
        tree = hierarchy.build_tree(
            self.domain, tuple(range(self.aplan.root, self.spec.finest + 1))
        )
        counts = hierarchy.level_totals(tree, finest["count"])
        sums = hierarchy.level_totals(tree, finest["sum"]) if "sum" in finest else None
        hist = aggregates.histogram_leaves(self.domain) if self.spec.histogram else None
        leaves, noisy, drawn, consistent = self.run(tree, counts, sums, hist)
        order = np.lexsort(([i for _, i in leaves], [j for j, _ in leaves]))
        cells = np.array([tree.levels[j][i] for j, i in leaves], dtype=np.int64)[order]
        res = np.array([tree.resolutions[j] for j, _ in leaves], dtype=np.int64)[order]
        if self.aplan.has_internal:
            est = self._consistent_estimates(consistent, order)
        else:
            est = self._leaf_estimates(noisy, order)
        distribution = rows = None
        if self.spec.histogram:
            rows = noisy["hist"].reshape(len(leaves), -1)[order]
            distribution = distribution_columns(self.spec, self.noise, rows.reshape(-1))
        return Measured(
            est, cells, res, drawn=drawn, distribution=distribution, histogram=rows
        )  # every leaf's histogram has the measured noise variance: histogram_var=None

    def _consistent_estimates(
        self, consistent: Callable[[str], tuple[np.ndarray, np.ndarray]], order: np.ndarray
    ) -> Estimates:
        fields: dict[str, Any] = {}
        z95, z975 = margin_factors("laplace")  # adaptive releases use Laplace noise
        for stat in self.spec.statistics:
            x, var = consistent(stat)
            sd = np.sqrt(var)
            fields[stat] = x[order]
            fields[f"{stat}_moe"], fields[f"{stat}_moe975"] = z95 * sd[order], z975 * sd[order]
            fields[f"{stat}_var"] = var[order]
        return Estimates(**fields)

    def _leaf_estimates(self, noisy: dict[str, np.ndarray], order: np.ndarray) -> Estimates:
        a, has_sum = self.aplan, "sum" in noisy
        return Estimates(
            count=noisy["count"][order],
            count_moe=a.moe("count"),
            count_moe975=a.moe("count", 0.025),
            count_var=a.variance("count"),
            sum=noisy["sum"][order] if has_sum else None,
            sum_moe=a.moe("sum") if has_sum else None,
            sum_moe975=a.moe("sum", 0.025) if has_sum else None,
            sum_var=a.variance("sum") if has_sum else None,
        )

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        assert self.domain is not None
        out: dict[str, Any] = {
            "cell_selection": region_selection(
                self.region, len(self.domain), self.selection_rule(measured)
            ),
            "adaptive": {**self.aplan.describe(), **measured.drawn},
            **distribution_manifest(self.spec, self.noise),
        }
        if self.aplan.has_internal:
            out["margins"] = (
                "95% margin of each leaf's least-squares estimate: 2.118 × its exact standard "
                "deviation (the 95% point of one Laplace draw, whose tails are heavier than "
                "those of any combination of draws: at least 95% coverage)"
            )
        return out

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        return None  # each period of a panel has its own independent noise
