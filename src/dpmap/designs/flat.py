"""The flat design: every public cell at one resolution, each count (and sum) noised once.

Measures the vector of bounded counts (and clamped sums) over the public cells of the region,
zeros included, with one composed OpenDP measurement (discrete Laplace or Gaussian; the
sensitivities follow from the contribution bounds, :mod:`dpmap._privacy.bounding`). Each
published value is its own noisy value: unbiased, independent of every other row, with the
exact margin of OpenDP's accuracy.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan, plan_noise
from dpmap._privacy.postprocess import CountNoise, Estimates
from dpmap.aggregates import BoundedAggregates
from dpmap.designs.base import (
    Correlation,
    DesignOptions,
    Measured,
    PeriodCovariance,
    RowsInfo,
    ncat,
    subrows,
)
from dpmap.designs.distribution import (
    check_histogram_size,
    distribution_manifest,
    explain_distribution,
    measure_dense,
)
from dpmap.spec import ReleaseSpec

__all__ = [
    "Flat",
    "category_index",
    "independent_correlation",
    "noisy_estimates",
    "region_selection",
]


def noisy_estimates(plan: NoisePlan, noisy: dict[str, np.ndarray]) -> Estimates:
    """Noisy values as published estimates: each one its own, with the plan's margins."""
    c = plan.statistics["count"]
    sm = plan.statistics.get("sum")
    pp = plan.statistics.get("people")
    return Estimates(
        count=noisy["count"],
        count_moe=c.moe95,
        count_moe975=c.moe975,
        count_var=c.variance,
        sum=noisy.get("sum"),
        sum_moe=sm.moe95 if sm else None,
        sum_moe975=sm.moe975 if sm else None,
        sum_var=sm.variance if sm else None,
        people=noisy.get("people"),
        people_moe=pp.moe95 if pp else None,
        people_var=pp.variance if pp else None,
    )


def category_index(rows: int, ncat: int) -> np.ndarray:
    """The category of each row of a dense (cell × category) vector."""
    return np.tile(np.arange(ncat), rows // ncat)


def independent_correlation(manifest: dict[str, Any], stats: tuple[str, ...]) -> Correlation:
    """Rows with independent noise, as the manifest's statistic entries describe it."""
    entries = manifest["statistics"]
    return Correlation(
        exact_moe={s: float(entries[s]["moe_95"]) for s in stats},
        laplace_scale={
            s: float(entries[s]["scale"])
            for s in stats
            if "laplace" in str(entries[s]["distribution"]).lower()
        },
    )


def region_selection(region: grid.Region, cells: int, rule: str) -> dict[str, Any]:
    """The manifest's ``cell_selection`` of a release over a public region."""
    return {"method": "public region", "rule": rule, "region": region.describe(), "cells": cells}


class Flat:
    """Every public cell of the region at one resolution (see the module docstring)."""

    kind: ClassVar[str] = "flat"
    several_levels: ClassVar[bool] = False
    mixed_resolutions: ClassVar[bool] = False
    integer = True

    def __init__(self, spec: ReleaseSpec, region: grid.Region, noise: NoisePlan) -> None:
        self.spec, self.region, self.noise = spec, region, noise
        self.domain: np.ndarray | None = grid.region_to_cells(region, spec.finest)

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return region is not None and not spec.hierarchical and options.adaptive is None

    @classmethod
    def plan(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> Flat:
        assert region is not None
        design = cls(spec, region, plan_noise(spec))
        check_histogram_size(spec, design.rows() or 0)
        return design

    def rows(self) -> int | None:
        assert self.domain is not None
        return len(self.domain) * ncat(self.spec)

    def count_noise(self) -> CountNoise | None:
        return CountNoise(str(self.spec.mechanism), self.noise.statistics["count"].scale)

    def describe(self) -> dict[str, Any] | None:
        return None

    def explain_lines(self) -> list[str]:
        return explain_distribution(self.spec, self.noise)

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        assert self.domain is not None
        cats = ncat(self.spec)
        noisy, distribution = measure_dense(self.spec, self.noise, aggregates, self.domain, cats)
        rows = len(self.domain) * cats
        category, period = subrows(self.spec, rows)
        return Measured(
            estimates=noisy_estimates(self.noise, noisy),
            cells=np.repeat(self.domain, cats),
            resolutions=np.full(rows, self.spec.finest),
            category=category,
            period=period,
            distribution=distribution,
            histogram=noisy.get("hist"),
        )

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        assert self.domain is not None
        rule = f"every H3 cell at resolution {self.spec.finest} overlapping the region, all noised"
        return {
            "cell_selection": region_selection(self.region, len(self.domain), rule),
            **distribution_manifest(self.spec, self.noise),
        }

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        selection = manifest.get("cell_selection") or {}
        return selection.get("method") == "public region" and not manifest.get("adaptive")

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        return independent_correlation(manifest, rows.stats)

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        return None  # each period of a panel has its own independent noise
