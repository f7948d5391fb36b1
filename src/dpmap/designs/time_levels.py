"""A panel with budget at coarser time levels: months, quarters and years made consistent.

``time_levels={"Y": 0.5}`` (or ``{"Q": 0.2, "Y": 0.2}``) on a panel release (``time=``,
``periods=``, ``max_periods=``) over a public region at one resolution, or over zones. Each
statistic's budget is split between the panel's own periods (what the levels leave) and each
coarser calendar level of the public time tree (:func:`dpmap.designs.timeline.time_tree`).
``explain`` prints, per level, the count's sd after consistency against the same panel
without time levels: where it wins (``benchmarks/bench_time_levels.py``; with Laplace noise
a level of g periods gains for its own totals when its share exceeds 2/(g + 1): years above
0.15, quarters above ½; the months always lose).

Measurement
    One composed OpenDP measurement (:func:`dpmap._privacy.noise.plan_vectors`) of the
    finest (row, period) vector and of each coarse level's (row, group) vector, every one
    with its own sensitivity (:func:`dpmap._privacy.bounding.time_sensitivities` for the
    level's group sizes: a person's ``max_periods`` periods may fall in one quarter, so a
    quarter's coordinate moves by up to 3 records where a month's moves by 1; L1 is the
    same at every level, L2 and L∞ grow). The coarse vectors are exact sums of the
    engine's bounded finest vector, formed before any noise and saturated to ±2**62
    (:mod:`dpmap.aggregates`); so the design consumes the same bounded aggregates as the
    plain panel, on every engine.

Estimates
    Per row (cell or zone × category), the noisy values of every level are made consistent
    by weighted least squares along the time tree with the exact noise variances
    (:func:`dpmap.designs.timeline.consistent_panel`): every quarter is the sum of its
    months and every year the sum of its quarters, up to float rounding. The estimates are
    unbiased floats; their exact variances give the margins (z·sd, with the 95% point of one
    Laplace draw, 2.118, for Laplace noise: at least 95% coverage, as for hierarchical
    releases). The table holds the finest periods' rows and, after them, the coarse
    periods' rows (``period`` "2026Q1", "2026"; ``time_level`` names each row's level).
    ``rel.periods`` lists the finest periods only; ``rel.at("2026Q1")`` is one coarse period.

Correlation across periods
    The consistency step correlates a row's periods: their exact T × T covariance Σ (the
    same for every row, :func:`dpmap.designs.timeline.fit_covariance`) follows from the
    level noise variances the manifest records (``time_levels``); :func:`period_covariance`
    rebuilds it. Rows stay independent of each other (each is its own least-squares
    problem), so a period's roll-up of cells is as for a flat release, with each row's
    own variance. A trend uses generalised least squares with Σ
    (:func:`dpmap.analysis.trends.gls_slope`; a zone roll-up's covariance is Σ·Σ w²).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dpmap import grid
from dpmap._privacy.bounding import time_sensitivities
from dpmap._privacy.noise import NoisePlan, plan_noise, plan_vectors
from dpmap._privacy.postprocess import CountNoise, Estimates, margin_factors
from dpmap.aggregates import BoundedAggregates, saturate
from dpmap.designs.base import Correlation, DesignOptions, Measured, PeriodCovariance, RowsInfo
from dpmap.designs.flat import Flat
from dpmap.designs.timeline import TimeTree, consistent_panel, fit_covariance, time_tree
from dpmap.designs.zones import ZoneRelease, check_zones
from dpmap.errors import SpecError
from dpmap.spec import Mechanism, ReleaseSpec

__all__ = [
    "TimeLevels",
    "change_variance",
    "coarse_periods",
    "level_totals",
    "panel_tree",
    "period_covariance",
]


def panel_tree(spec_periods: Any, freqs: list[str]) -> TimeTree:
    """The time tree of a panel's periods (:class:`dpmap.periods.Periods`) over the coarse
    frequencies ``freqs`` (any order: sorted finest first by their number of groups)."""
    index = pd.PeriodIndex(spec_periods.pandas())

    def groups(freq: str) -> int:
        try:
            return len(index.start_time.to_period(freq).unique())
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"time_levels: {freq!r} is not a pandas period frequency ({exc}); use e.g. "
                "'Q' or 'Y'"
            ) from None

    ordered = sorted(freqs, key=lambda f: -groups(f))
    try:
        return time_tree(index, levels=tuple(ordered))
    except SpecError as exc:  # time_tree's fix names groups=, which a release does not take
        reason = str(exc).split("; ")[0]
        raise SpecError(
            f"time_levels: {reason}; pass calendar levels that hold whole periods, e.g. "
            "{'Y': 0.5} (or 'Q') above months"
        ) from None


def level_totals(finest: np.ndarray, tree: TimeTree, level: int) -> np.ndarray:
    """PRIVATE exact totals of ``finest`` (cells × T × categories, int64) over the groups of
    ``level`` (cells × groups × categories), formed without wrap-around and saturated to
    ±2**62 (one person moves a saturated total by at most as much as the exact one)."""
    ancestor = tree.ancestor(level)
    groups = len(tree.labels[level])
    big = np.abs(finest).astype(np.float64).sum(axis=1).max(initial=0.0) >= 2.0**62
    values = finest.astype(object) if big else finest
    out = np.zeros((finest.shape[0], groups, finest.shape[2]), dtype=values.dtype)
    for g in range(groups):
        out[:, g, :] = values[:, ancestor == g, :].sum(axis=1)
    return saturate(out)


def coarse_periods(manifest: dict[str, Any]) -> list[str]:
    """The coarse periods a release with time levels publishes beside its own ([] otherwise)."""
    entry = manifest.get("time_levels") or {}
    return [str(x) for level in entry.get("levels", [])[:-1] for x in level["labels"]]


def _manifest_tree(manifest: dict[str, Any]) -> TimeTree:
    """The time tree of a written panel with time levels, from its public manifest."""
    freq = ((manifest.get("parameters") or {}).get("periods") or {}).get("frequency")
    index = pd.PeriodIndex([pd.Period(x, freq=freq) for x in manifest["periods"]])
    names = [level["name"] for level in manifest["time_levels"]["levels"]]
    return time_tree(index, levels=tuple(reversed(names[:-1])))


def period_covariance(manifest: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Statistic -> the exact T × T noise covariance of one row's finest-period estimates
    of a panel with time levels (None for any other release), rebuilt from the manifest's
    public level variances and periods."""
    if not manifest.get("time_levels"):
        return None
    tree = _manifest_tree(manifest)
    return {
        stat: fit_covariance(tree, [np.inf if v is None else v for v in var])
        for stat, var in manifest["time_levels"]["variances"].items()
    }


def change_variance(manifest: dict[str, Any], first: str, second: str) -> dict[str, float] | None:
    """Statistic -> the exact noise variance of (period ``second`` − period ``first``) of one
    row of a panel with time levels (either may be a coarse period), None for any other
    release (see :meth:`TimeLevels.period_covariance`)."""
    shared = TimeLevels.period_covariance(manifest)
    return None if shared is None else shared.change_variance(first, second)


class TimeLevels:
    """A panel with budget at coarser time levels (see the module docstring)."""

    kind: ClassVar[str] = "time levels"
    several_levels: ClassVar[bool] = False
    mixed_resolutions: ClassVar[bool] = False
    integer = False  # least-squares estimates are not whole numbers

    def __init__(self, spec: ReleaseSpec, base: Flat | ZoneRelease, tree: TimeTree) -> None:
        self.spec, self.base, self.tree = spec, base, tree
        self.noise: NoisePlan = base.noise
        self.domain: np.ndarray | None = base.domain

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return bool(spec.time_levels) and options.adaptive is None

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> TimeLevels:
        assert spec.periods is not None and spec.time_levels
        tree = panel_tree(spec.periods, [f for f, _share in spec.time_levels])
        sens: dict[str, Any] = {}
        for j, name in enumerate(tree.names):
            level = time_sensitivities(spec, spec.periods_per_person, tree.group_sizes(j))
            for stat, s in level.items():
                sens[stat if j == len(tree.names) - 1 else f"{stat}@{name}"] = s
        noise = plan_vectors(spec, sens)
        if spec.zones is not None:
            check_zones(spec, region, options)
            return cls(spec, ZoneRelease(spec, noise), tree)
        if region is None:
            raise SpecError(
                "a panel with time_levels needs a public region (or zones); pass region=..."
            )
        return cls(spec, Flat(spec, region, noise), tree)

    @property
    def cats(self) -> int:
        """Categories per (cell, period) (1 without a breakdown)."""
        return len(self.spec.categories) if self.spec.categories else 1

    def rows(self) -> int | None:
        assert self.domain is not None
        return len(self.domain) * self.cats * sum(len(x) for x in self.tree.labels)

    def count_noise(self) -> CountNoise | None:
        return CountNoise(str(self.spec.mechanism), None)  # one variance per row

    def describe(self) -> dict[str, Any] | None:
        return None

    def explain_lines(self) -> list[str]:
        shares = self.spec.time_level_shares()
        parts = ", ".join(
            f"{name} ({len(labels)} periods, {shares.get(name, shares['']):.3g} of each "
            "statistic's budget)"
            for name, labels in zip(self.tree.names, self.tree.labels, strict=True)
        )
        return [
            *self.base.explain_lines(),
            f"  time levels: {parts}",
            "  every level is made consistent by least squares along the time tree (quarters "
            "sum their months, years their quarters); the periods' estimates become correlated",
            *self.gain_lines(),
        ]

    def gain_lines(self) -> list[str]:
        """Per level, the count's sd after consistency against the same panel without time
        levels (its coarse periods the sums of noisy periods): where this wins (public)."""
        plain = plan_noise(dataclasses.replace(self.spec, time_levels=None))
        var = plain.statistics["count"].variance
        cov = fit_covariance(self.tree, self.level_variances("count"))
        out = []
        for j, name in enumerate(self.tree.names):
            a = self.tree.aggregation(j)[0]  # the level's first node
            here, before = float(a @ cov @ a), float(a.sum()) * var
            out.append(
                f"  count of one {name} period ({self.tree.labels[j][0]}): sd {here**0.5:.4g} "
                f"after consistency, {before**0.5:.4g} in the same panel without time levels "
                f"(variance × {here / before:.3g})"
            )
        return out

    def _noisy_levels(self, aggregates: BoundedAggregates) -> dict[str, list[np.ndarray]]:
        """Draw the noise: statistic -> every level's noisy values (rows × nodes), coarse to
        fine, rows = cells × categories. Draws noise on PRIVATE aggregates."""
        assert self.domain is not None
        n, t, k = len(self.domain), self.tree.periods, self.cats
        finest = aggregates.densify(self.domain, t * k)
        vectors: dict[str, np.ndarray] = {}
        for stat in self.spec.statistics:
            cube = finest[stat].reshape(n, t, k)
            for j, name in enumerate(self.tree.names[:-1]):
                vectors[f"{stat}@{name}"] = level_totals(cube, self.tree, j).reshape(-1)
            vectors[stat] = finest[stat]
        noisy = self.noise.run_dense({key: vectors[key] for key in self.spec.queries()})
        out: dict[str, list[np.ndarray]] = {}
        for stat in self.spec.statistics:
            keys = [f"{stat}@{name}" for name in self.tree.names[:-1]] + [stat]
            out[stat] = [
                noisy[key].reshape(n, -1, k).transpose(0, 2, 1).reshape(n * k, -1) for key in keys
            ]
        return out

    def level_variances(self, stat: str) -> list[float]:
        """Each level's noise variance for ``stat``, coarse to fine."""
        keys = [f"{stat}@{name}" for name in self.tree.names[:-1]] + [stat]
        return [self.noise.statistics[key].variance for key in keys]

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        assert self.domain is not None
        noisy = self._noisy_levels(aggregates)
        n, k = len(self.domain), self.cats
        fields: dict[str, Any] = {}
        z95, z975 = margin_factors(str(self.spec.mechanism))
        order = [len(self.tree.names) - 1, *range(len(self.tree.names) - 1)]  # finest first
        for stat, levels in noisy.items():
            fit = consistent_panel(self.tree, levels, self.level_variances(stat))
            # rows (cell, category) × nodes -> (cell, node, category), flattened level by level
            values = [fit.values[j].reshape(n, k, -1).transpose(0, 2, 1) for j in order]
            var = [
                np.broadcast_to(fit.variances[j][None, :, None], v.shape)
                for j, v in zip(order, values, strict=True)
            ]
            fields[stat] = np.concatenate([v.reshape(-1) for v in values])
            sd = np.sqrt(np.concatenate([v.reshape(-1) for v in var]))
            fields[f"{stat}_moe"], fields[f"{stat}_moe975"] = z95 * sd, z975 * sd
            fields[f"{stat}_var"] = sd**2
        return self._measured(Estimates(**fields), n, k)

    def _measured(self, est: Estimates, n: int, k: int) -> Measured:
        """The rows: every level's (cell, period, category) in that order, finest level
        first; ``period`` indexes the finest labels, then every coarse level's."""
        assert self.domain is not None
        order = [len(self.tree.names) - 1, *range(len(self.tree.names) - 1)]
        cells, period, category, level = [], [], [], []
        offset = 0
        labels: list[str] = []
        for j in order:
            g = len(self.tree.labels[j])
            cells.append(np.repeat(self.domain, g * k))
            period.append(np.tile(np.repeat(np.arange(g) + offset, k), n))
            category.append(np.tile(np.arange(k), n * g))
            level.append(np.full(n * g * k, self.tree.names[j], dtype=object))
            labels += list(self.tree.labels[j])
            offset += g
        rows = sum(len(c) for c in cells)
        return Measured(
            estimates=est,
            cells=np.concatenate(cells),
            resolutions=np.full(rows, self.spec.finest),
            category=np.concatenate(category) if self.spec.categories is not None else None,
            period=np.concatenate(period),
            zones=self.spec.zones,
            period_labels=tuple(labels),
            time_level=np.concatenate(level),
        )

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        entries = self.base.manifest_entries(measured)
        shares = self.spec.time_level_shares()
        laplace = self.spec.mechanism is Mechanism.LAPLACE
        entries["time_levels"] = {
            "levels": [
                {"name": name, "share": shares.get(name, shares[""]), "labels": list(labels)}
                for name, labels in zip(self.tree.names, self.tree.labels, strict=True)
            ],
            "variances": {s: self.level_variances(s) for s in self.spec.statistics},
            "tree": "calendar periods of pandas: each period lies inside one period of every "
            "coarser level",
            "consistency": "weighted least squares along the time tree per row (Hay et al. "
            "2010, two passes); every coarse period equals the sum of its periods exactly",
            "margins": (
                "2.118 × the exact standard deviation of the consistent estimate (the 95% "
                "point of one Laplace draw: at least 95% coverage)"
                if laplace
                else "1.96 × the exact standard deviation of the consistent estimate "
                "(Gaussian noise)"
            ),
            "correlation": "a row's period estimates are correlated (covariance from the "
            "level variances); rows are independent of each other",
        }
        return entries

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        return bool(manifest.get("time_levels"))

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        laplace = "laplace" in str(manifest["statistics"]["count"]["distribution"]).lower()
        # rows independent of each other, each with its own (least-squares) variance
        return Correlation(laplace_ls=laplace, own_variances=True)

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        """A row's months (or days …) share noise through the least squares along time: their
        exact covariance from the manifest's level variances; a coarse period ("2026Q1") is
        the 0/1 sum of its finest periods."""
        cov = period_covariance(manifest)
        if cov is None:
            return None
        tree = _manifest_tree(manifest)

        def weights(label: str) -> np.ndarray:
            for j, labels in enumerate(tree.labels):
                if label in labels:
                    return np.asarray(tree.aggregation(j)[labels.index(label)], dtype=np.float64)
            raise SpecError(f"period {label!r} is not one of the panel's periods")

        return PeriodCovariance(tuple(str(x) for x in tree.labels[-1]), cov, weights)
