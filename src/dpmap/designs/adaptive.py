"""What the two adaptive designs (PrivTree, adaptive grid) share.

Both publish a partition of the region into cells of mixed resolutions, chosen with noise
from a public tree (the H3 parents of the region's finest cells, from a coarser root down).
The leaves' values are either their own noisy values (independent rows) or least-squares
estimates consistent with noisy values of the coarser nodes (correlated; the analyses rebuild
the forest from the published leaves). Their noise is discrete Laplace under pure ε-DP,
composed adaptively by OpenDP (the cells measured depend on earlier noisy values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan
from dpmap._privacy.postprocess import CountNoise, Estimates, margin_factors
from dpmap.aggregates import BoundedAggregates
from dpmap.designs import hierarchy
from dpmap.designs.base import Measured
from dpmap.designs.flat import region_selection
from dpmap.errors import SpecError
from dpmap.spec import ReleaseSpec

__all__ = ["Adaptive", "LeafRun"]

#: what one adaptive run returns: the leaves as (depth, position) pairs, the leaves' noisy
#: values, what the manifest learns from the noise, and the least-squares estimates of a
#: statistic with their variances (for plans with noisy internal nodes)
LeafRun = tuple[
    list[tuple[int, int]],
    dict[str, np.ndarray],
    dict[str, Any],
    Callable[[str], tuple[np.ndarray, np.ndarray]],
]


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

    def run(self, tree: hierarchy.Tree, counts: Any, sums: Any) -> LeafRun:
        """Draw the noise of the design on the exact level totals (subclasses)."""
        raise NotImplementedError

    def selection_rule(self, measured: Measured) -> str:
        raise NotImplementedError

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        assert self.domain is not None
        finest = aggregates.densify(self.domain, 1)
        tree = hierarchy.build_tree(
            self.domain, tuple(range(self.aplan.root, self.spec.finest + 1))
        )
        counts = hierarchy.level_totals(tree, finest["count"])
        sums = hierarchy.level_totals(tree, finest["sum"]) if "sum" in finest else None
        leaves, noisy, drawn, consistent = self.run(tree, counts, sums)
        order = np.lexsort(([i for _, i in leaves], [j for j, _ in leaves]))
        cells = np.array([tree.levels[j][i] for j, i in leaves], dtype=np.int64)[order]
        res = np.array([tree.resolutions[j] for j, _ in leaves], dtype=np.int64)[order]
        if self.aplan.has_internal:
            est = self._consistent_estimates(consistent, order)
        else:
            est = self._leaf_estimates(noisy, order)
        return Measured(est, cells, res, drawn=drawn)

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
        }
        if self.aplan.has_internal:
            out["margins"] = (
                "95% margin of each leaf's least-squares estimate: 2.118 × its exact standard "
                "deviation (the 95% point of one Laplace draw, whose tails are heavier than "
                "those of any combination of draws: at least 95% coverage)"
            )
        return out
