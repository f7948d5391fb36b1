"""The zone design: one row per public zone (district), each count (and sum) noised once.

The public key set is the list of zones (:class:`dpmap.grid.Zones`: non-overlapping
polygons, sorted by name), every zone published, empty or not. The engines put each point in
the zone that contains it (exact point-in-polygon, :meth:`dpmap.grid.Zones.assign`) instead
of an H3 cell and bound each person with the same code as for cells, the zone index playing
the cell's role: a person reaches at most ``max_cells`` zones and ``max_records_per_cell``
records per zone. So the sensitivities are the flat design's, and so is the noise: one
composed OpenDP measurement (:func:`dpmap._privacy.noise.plan_noise`) over the dense vectors
of zones (× categories). Points outside every zone are dropped (counted only in the PRIVATE
diagnostics). Each published value is its own noisy value: unbiased, independent of every
other row, with the exact margin of OpenDP's accuracy.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan, plan_noise
from dpmap._privacy.postprocess import CountNoise
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
    distribution_manifest,
    explain_distribution,
    measure_dense,
)
from dpmap.designs.flat import independent_correlation, noisy_estimates
from dpmap.errors import SpecError
from dpmap.spec import ZONE_LEVEL, ReleaseSpec

__all__ = ["RESERVED_COLUMNS", "ZoneRelease", "check_zones", "zone_column"]

#: columns of a release table that a zones' name column may not be called
RESERVED_COLUMNS = frozenset(
    {
        "cell",
        "resolution",
        "category",
        "count",
        "count_moe",
        "sum",
        "sum_moe",
        "mean",
        "mean_moe",
        "people",
        "people_moe",
        "suppressed",
        "sum_at_limit",
        "geometry",
        "time_level",
    }
)


#: names of the columns that quantiles and value bands add (q50, q50_lo, band_0_1000, ...)
_RESERVED_PATTERN = re.compile(r"q\d+(_lo|_hi)?|band_.*")


def zone_column(manifest: dict[str, Any]) -> str | None:
    """The name column of a zone release, from its manifest (None: a release of H3 cells)."""
    selection = manifest.get("cell_selection") or {}
    return selection.get("by") if selection.get("method") == "public zones" else None


def check_zones(spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> None:
    """Refuse what a release over zones cannot take: a region, adaptive options, a name
    column that clashes with a column of the release table."""
    if region is not None:
        raise SpecError(
            "zones= and region= exclude each other: the zones are the public area; drop the region"
        )
    if options.adaptive is not None or options.adaptive_from is not None:
        raise SpecError("adaptive releases refine H3 cells, not zones; drop adaptive=")
    assert spec.zones is not None
    if spec.zones.by in RESERVED_COLUMNS or _RESERVED_PATTERN.fullmatch(spec.zones.by):
        raise SpecError(
            f"the zones' name column {spec.zones.by!r} clashes with a column of the release "
            "table; rename it first, e.g. zones.rename(columns={...: 'name'})"
        )


class ZoneRelease:
    """Every public zone, one noisy count (and sum) each (see the module docstring)."""

    kind: ClassVar[str] = "zones"
    several_levels: ClassVar[bool] = False
    mixed_resolutions: ClassVar[bool] = False
    integer = True

    def __init__(self, spec: ReleaseSpec, noise: NoisePlan) -> None:
        assert spec.zones is not None
        self.spec, self.noise, self.zones = spec, noise, spec.zones
        self.domain: np.ndarray | None = spec.zones.domain

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return spec.zones is not None

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> ZoneRelease:
        check_zones(spec, region, options)
        return cls(spec, plan_noise(spec))

    def rows(self) -> int | None:
        return len(self.zones) * ncat(self.spec)

    def count_noise(self) -> CountNoise | None:
        return CountNoise(str(self.spec.mechanism), self.noise.statistics["count"].scale)

    def describe(self) -> dict[str, Any] | None:
        return None

    def explain_lines(self) -> list[str]:
        z = self.zones
        return [
            f"  zones: {len(z)} public zones named by {z.by!r} (fingerprint {z.fingerprint[:19]}…), "
            "every zone published; points outside every zone are dropped",
            *explain_distribution(self.spec, self.noise),
        ]

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        cats = ncat(self.spec)
        domain = self.zones.domain
        noisy, distribution = measure_dense(self.spec, self.noise, aggregates, domain, cats)
        rows = len(domain) * cats
        category, period = subrows(self.spec, rows)
        return Measured(
            estimates=noisy_estimates(self.noise, noisy),
            cells=np.repeat(domain, cats),
            resolutions=np.full(rows, ZONE_LEVEL),
            category=category,
            period=period,
            zones=self.zones,
            distribution=distribution,
            histogram=noisy.get("hist"),
        )

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        rule = (
            "every public zone, all noised; each point in the zone that covers it (a point on "
            "a shared border: the first such zone by name); points outside every zone dropped"
        )
        selection = {"method": "public zones", "rule": rule, **self.zones.describe()}
        return {"cell_selection": selection, **distribution_manifest(self.spec, self.noise)}

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        selection = manifest.get("cell_selection") or {}
        return selection.get("method") == "public zones"

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        return independent_correlation(manifest, rows.stats)

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        return None  # each period of a panel has its own independent noise
