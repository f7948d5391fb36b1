"""The hierarchical design: several resolutions of one region, made consistent.

Measures the bounded counts (and sums) of every level — the finest public cells and their H3
parents at each coarser resolution in ``resolution=[...]`` — with the budget split across the
levels (``level_split``). A person changes one cell per level and bound, so each level's vector
has the flat design's sensitivity and the levels compose (OpenDP accounts the composition).
The noisy levels are then made consistent by weighted least squares on H3's index tree
(:func:`dpmap.designs.hierarchy.consistent`, exact noise variances): every parent equals the sum
of its children, and every estimate is unbiased with a smaller variance than its level's raw
noise. ``integers=True`` displays non-negative integers that still add up, beside the
unbiased estimates.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan, plan_noise
from dpmap._privacy.postprocess import CountNoise, Estimates, margin_factors
from dpmap.aggregates import BoundedAggregates
from dpmap.designs import hierarchy
from dpmap.designs.base import (
    Correlation,
    DesignOptions,
    Measured,
    PeriodCovariance,
    RowsInfo,
    TreeCorrelation,
    manifest_noise_variance,
    ncat,
)
from dpmap.designs.distribution import (
    check_histogram_size,
    distribution_columns,
    distribution_manifest,
    explain_distribution,
    with_histogram,
)
from dpmap.designs.flat import category_index, region_selection
from dpmap.errors import SpecError
from dpmap.spec import Mechanism, ReleaseSpec

__all__ = ["Hierarchical"]


class Hierarchical:
    """Several resolutions of a public region, consistent by least squares."""

    kind: ClassVar[str] = "hierarchical"
    several_levels: ClassVar[bool] = True
    mixed_resolutions: ClassVar[bool] = False

    def __init__(
        self, spec: ReleaseSpec, region: grid.Region, noise: NoisePlan, integers: bool
    ) -> None:
        self.spec, self.region, self.noise = spec, region, noise
        self.integers = integers
        self.integer = integers  # least-squares estimates are not whole numbers
        self.domain: np.ndarray | None = grid.region_to_cells(region, spec.finest)

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return spec.hierarchical and options.adaptive is None

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> Hierarchical:
        if region is None:
            raise SpecError(
                "a hierarchical release (several resolutions) needs a public region; pass region=..."
            )
        design = cls(spec, region, plan_noise(spec), options.integers)
        assert design.domain is not None
        check_histogram_size(spec, len(design.domain) * ncat(spec))  # the finest level only
        return design

    def rows(self) -> int | None:
        levels = (len(grid.region_to_cells(self.region, r)) for r in self.spec.levels)
        return ncat(self.spec) * sum(levels)

    def count_noise(self) -> CountNoise | None:
        return CountNoise(str(self.spec.mechanism), None)  # one variance per row

    def describe(self) -> dict[str, Any] | None:
        return None

    def explain_lines(self) -> list[str]:
        lines = [
            "  levels are made consistent (children sum to parents) by weighted least squares; "
            "margins after consistency are smaller than the per-level ones above"
        ]
        if self.spec.histogram:
            lines += [
                *explain_distribution(self.spec, self.noise),
                f"  the value histogram is measured at resolution {self.spec.finest} only; a "
                "coarser cell's quantiles and bands come from the sum of its children's noisy "
                "histograms (noise variance × children, so relatively less noise per record)",
            ]
        return lines

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        assert self.domain is not None
        cats = ncat(self.spec)
        tree = hierarchy.build_tree(self.domain, self.spec.levels)
        finest = aggregates.densify(self.domain, cats)
        vectors = with_histogram(self.spec, finest, aggregates, self.domain)
        noisy = self.noise.run_dense(self._level_vectors(tree, vectors, cats))
        est, shown = self._consistent(tree, noisy, cats)
        cells = np.repeat(np.concatenate(tree.levels), cats)
        res = np.repeat(
            np.concatenate(
                [np.full(len(lv), r) for lv, r in zip(tree.levels, tree.resolutions, strict=True)]
            ),
            cats,
        )
        category = category_index(len(cells), cats) if self.spec.categories is not None else None
        hist = self._histogram(tree, noisy)
        return Measured(
            est,
            cells,
            res,
            category,
            shown=shown if self.integers else None,
            distribution=hist[2] if hist else None,
            histogram=hist[0] if hist else None,
            histogram_var=hist[1] if hist else None,
        )

    def _histogram(
        self, tree: hierarchy.Tree, noisy: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None:
        """Every level's noisy value histograms (post-processing): the finest cells' measured
        ones, and each coarser cell's the sum of its finest children's (noise variance σ² ×
        children); with the per-row variances and the distribution columns of every row."""
        if not self.spec.histogram:
            return None
        fine = noisy["hist"].reshape(len(tree.levels[-1]), -1)
        sums = hierarchy.level_totals(tree, fine)
        children = hierarchy.level_totals(tree, np.ones(len(fine), dtype=np.int64))
        y = np.concatenate(sums)
        var = self.noise.statistics["hist"].variance * np.concatenate(children).astype(float)
        return y, var, distribution_columns(self.spec, self.noise, y, var)

    def _level_vectors(
        self, tree: hierarchy.Tree, finest: dict[str, np.ndarray], cats: int
    ) -> dict[str, np.ndarray]:
        """PRIVATE exact vectors of every level, summed up H3's index tree from the finest."""
        out = {"hist": finest["hist"]} if "hist" in finest else {}
        for stat, vec in finest.items():
            if stat == "hist":  # measured at the finest level only
                continue
            levels = hierarchy.level_totals(tree, vec.reshape(-1, cats))
            for r, level in zip(tree.resolutions, levels, strict=True):
                out[f"{stat}@{r}"] = level.reshape(-1)
        return {k: out[k] for k in self.spec.queries()}

    def _consistent(
        self, tree: hierarchy.Tree, noisy: dict[str, np.ndarray], cats: int
    ) -> tuple[Estimates, Estimates]:
        """Least-squares estimates of every level (post-processing of noisy values), and the
        values to display: the same, or non-negative integers that still add up."""
        fields: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        z95, z975 = margin_factors(str(self.spec.mechanism))
        for stat in self.spec.statistics:
            keys = [f"{stat}@{r}" for r in tree.resolutions]
            y = [noisy[k].reshape(-1, cats) for k in keys]
            variances = [self.noise.statistics[k].variance for k in keys]
            x, var = hierarchy.consistent(tree, y, variances)
            sd = np.sqrt(np.concatenate(var).reshape(-1))
            fields[stat] = np.concatenate(x).reshape(-1)
            fields[f"{stat}_moe"], fields[f"{stat}_moe975"] = z95 * sd, z975 * sd
            fields[f"{stat}_var"] = sd**2
            if self.integers:
                rounded = hierarchy.round_consistent(tree, x)
                shown[stat] = np.concatenate(rounded).reshape(-1).astype(np.float64)
        return Estimates(**fields), Estimates(**{**fields, **shown})

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        assert self.domain is not None
        spec = self.spec
        rule = (
            f"every H3 cell at resolution {spec.finest} overlapping the region, all noised, and "
            "their H3 parents at the coarser levels"
        )
        return {
            **self._distribution_manifest(),
            "cell_selection": region_selection(self.region, len(self.domain), rule),
            "hierarchy": {
                "levels": list(spec.levels),
                "level_split": {str(r): w for r, w in spec.level_shares().items()},
                "tree": "coarser cells are the H3 parents (cell_to_parent) of the finest public cells",
                "consistency": "weighted least squares (Hay et al. 2010), two passes; children sum to "
                "their parent exactly",
                "integers": self.integers,
                "margins": (
                    "2.118 × the exact standard deviation of the consistent estimate (the 95% "
                    "point of one Laplace draw: at least 95% coverage)"
                    if spec.mechanism is Mechanism.LAPLACE
                    else "1.96 × the exact standard deviation of the consistent estimate "
                    "(Gaussian noise)"
                ),
            },
        }

    def _distribution_manifest(self) -> dict[str, Any]:
        """The ``value_distribution`` entry, with how the coarser levels get theirs."""
        entry = distribution_manifest(self.spec, self.noise)
        if entry:
            entry["value_distribution"]["levels"] = (
                f"measured at resolution {self.spec.finest} only; a coarser cell's histogram is "
                "the sum of its finest children's noisy histograms (noise variance × children), "
                "its columns computed from that sum with the one-row band factor (conservative "
                "for sums)"
            )
        return entry

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        levels = manifest.get("resolution")
        return bool(manifest.get("hierarchy")) and isinstance(levels, list) and len(levels) > 1

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        levels = [int(r) for r in manifest["resolution"]]
        tree = hierarchy.build_tree(rows.finest, tuple(levels))
        j = levels.index(rows.resolution)
        pos = np.searchsorted(tree.levels[j], rows.ids)
        if len(rows.ids) and (
            pos.max() >= len(tree.levels[j]) or (tree.levels[j][pos] != rows.ids).any()
        ):
            raise SpecError(  # pragma: no cover - the levels are built from the same cells
                "the release's coarser cells are not the H3 parents of its finest cells; the "
                "file was edited or is damaged"
            )
        stats = manifest["statistics"]
        level_var = {
            s: [manifest_noise_variance(stats[f"{s}@{r}"]) for r in levels] for s in rows.stats
        }
        laplace = any("laplace" in str(e.get("distribution", "")).lower() for e in stats.values())
        return Correlation(
            tree=TreeCorrelation(tree=tree, level=j, pos=pos, level_var=level_var),
            laplace_ls=laplace,
        )

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        return None  # each period of a panel has its own independent noise
