"""Planning a release before any data is touched: the noise plan, its accounting, and what it would publish."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dpmap import grid
from dpmap._privacy.noise import NoisePlan
from dpmap._privacy.postprocess import (
    CountNoise,
    phantom_chance,
    phantom_threshold,
)
from dpmap.analysis.tables import count_terms, count_unit
from dpmap.designs import DesignOptions, adaptive_method, check_options, design_for
from dpmap.errors import SpecError, warn_negligible_noise
from dpmap.parameters import check_keywords
from dpmap.spec import ReleaseSpec


@dataclass(frozen=True)
class Explanation:
    """What a release with these parameters would spend and how accurate it would be.

    Computed from public parameters only (no data touched).
    """

    spec: ReleaseSpec
    plan: NoisePlan
    cells: int | None
    region: grid.Region | None
    adaptive: dict[str, Any] | None = None
    #: the planned design (see :mod:`dpmap.designs`)
    design: Any = None

    @property
    def rows(self) -> int | None:
        """Published rows (cells × categories, every level), when known before the data."""
        return None if self.design is None else self.design.rows()

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        out: dict[str, Any] = {
            "epsilon": p.epsilon,
            "delta": p.delta,
            "rho": p.rho,
            "measure": p.measure,
            "resolution": list(self.spec.levels)
            if self.spec.hierarchical
            else self.spec.resolution,
            "average_cell_area_km2": None
            if self.spec.zones is not None
            else grid.average_cell_area_km2(self.spec.finest),
            "cells": self.cells,
            "statistics": {
                k: {**v.describe(), "budget_share": share}
                for (k, v), share in zip(
                    p.statistics.items(), budget_shares(self.spec, p), strict=True
                )
            },
        }
        rows = self.rows  # None for adaptive releases: their leaves are drawn with the noise
        threshold, expected = threshold_of(self.spec, p, self.design.count_noise(), rows)
        out["suppression_threshold"] = threshold
        out["rows"] = rows
        if self.spec.suppress_below is None and not p.discovery:
            # per-row rule (least squares): rows · α; unknown rows: at most 1 by construction
            if expected is None and rows is not None:
                expected = rows * phantom_chance(rows)
            out["phantom_rows_expected"] = expected
        if p.discovery:
            out["discovery_threshold"] = p.threshold
        if self.adaptive is not None:
            out["adaptive"] = self.adaptive
        return out

    def __str__(self) -> str:
        d = self.as_dict()
        lines = [
            f"dpmap release plan — {d['measure']}",
            f"  total: ε = {d['epsilon']:.6g}, δ = {d['delta']:.3g}"
            + (f", ρ = {d['rho']:.6g}" if d["rho"] else ""),
            self._area_line(d),
        ]
        for name, s in d["statistics"].items():
            priv = f"ε = {s['epsilon']:.6g}" if s["epsilon"] is not None else f"ρ = {s['rho']:.6g}"
            lines.append(
                f"  {name}: {s['distribution']} noise, scale {s['scale']:.6g}, sensitivity L1 {s['sensitivity']['l1']}"
                f" / L2 {s['sensitivity']['l2']:.6g}, {priv} (share {s['budget_share']:.3g}),"
                f" 95% error per cell ± {s['moe_95']:.6g}"
            )
        lines.append(f"  count counts {count_unit(*count_terms(self.spec))}")
        if self.spec.people:
            lines.append(
                "  people counts distinct persons with a kept record in the cell (each person "
                "adds at most 1 per cell and category); hidden with the cell's count"
            )
        t = d["suppression_threshold"]
        phantoms = d.get("phantom_rows_expected")
        if self.spec.suppress_below is False:
            lines.append("  suppression: off (every noisy value is published)")
        elif self.spec.suppress_below is not None:
            lines.append(f"  suppression: cells with noisy count < {t:.6g} are hidden")
        elif self.plan.discovery:
            lines.append(
                "  suppression: cells whose noisy count is below its own 95% margin are hidden"
            )
        elif t is not None:
            lines.append(
                f"  suppression: cells with noisy count < {t:.6g} are hidden, so the smallest "
                f"count shown is {t:.6g}; if every cell were empty, about {phantoms:.2g} of the "
                f"{d['rows']:,} would show by chance (at most 1 per "
                f"{'panel' if self.spec.panel else 'map'}: no phantom hot spots)"
            )
        else:
            lines.append(
                "  suppression: cells whose estimate is below a map-wide multiple of its own "
                "standard deviation are hidden, so that at most 1 truly empty cell per map is "
                "expected to show by chance (no phantom hot spots)"
            )
        lines.extend(self.design.explain_lines())
        text = "\n".join(lines)
        if self.spec.zones is not None:  # the rows are zones, not cells
            for cell, zone in _ZONE_WORDS:
                text = text.replace(cell, zone)
        return text

    def _area_line(self, d: dict[str, Any]) -> str:
        """What is published: the zones, or the H3 resolution and its cells (× periods)."""
        periods = self.spec.periods
        per = ""
        if periods is not None:
            per = (
                f" × {len(periods)} public periods ({periods.labels[0]} to "
                f"{periods.labels[-1]}), {d['rows']:,} rows"
            )
        if self.spec.zones is not None:
            return (
                f"  {d['cells']} public zones (one row each, named by {self.spec.zones.by!r})" + per
            )
        cells = (
            f", {d['cells']} public cells" if d["cells"] is not None else ", cells chosen privately"
        )
        return (
            f"  H3 resolution {d['resolution']} (average cell {d['average_cell_area_km2']:.3g} km²)"
            + cells
            + per
        )


#: the words of ``explain`` about cells, as they read for a zone release
_ZONE_WORDS = (
    ("per cell", "per zone"),
    ("suppression: cells", "suppression: zones"),
    ("every cell", "every zone"),
    (" cells)", " zones)"),
    (" cell(s) per period", " zone(s) per period"),
)


def budget_shares(spec: ReleaseSpec, plan: NoisePlan) -> list[float | None]:
    """Each noised statistic's share of the total budget (ε share under pure DP, else the
    planned ρ share)."""
    queries = spec.queries()
    out: list[float | None] = []
    for key, st in plan.statistics.items():
        if plan.accounting == "pure-dp" and st.epsilon:
            out.append(st.epsilon / plan.epsilon)
        else:
            out.append(queries[key][2] if key in queries else None)
    return out


def threshold_of(
    spec: ReleaseSpec, plan: NoisePlan, noise: CountNoise | None, rows: int | None
) -> tuple[float | None, float | None]:
    """The suppression threshold when it is one number (None when off or per row), and the
    number of truly empty rows expected to show by chance (default rule)."""
    if spec.suppress_below is False:
        return None, None
    if spec.suppress_below is None:
        if plan.discovery:
            return plan.statistics["count"].moe95, None
        if noise is None or noise.scale is None or rows is None:
            return None, None  # a per-row rule, or rows unknown before the data
        k, expected = phantom_threshold(noise, rows)
        return float(k), expected
    return float(spec.suppress_below), None


#: the parameters of :func:`dpmap.release` that make up its :class:`~dpmap.ReleaseSpec`
SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(ReleaseSpec))


def make_spec(kw: dict[str, Any], by: str | None = None) -> ReleaseSpec:
    """The validated spec of these parameters (lists of bounds, categories or level weights
    become tuples; ``zones`` with their name column ``by`` become checked
    :class:`~dpmap.grid.Zones`); an unknown keyword is a :class:`~dpmap.SpecError`."""
    for key in ("bounds", "categories", "level_split"):
        if isinstance(kw.get(key), list):
            kw = {**kw, key: tuple(kw[key])}
    if kw.get("zones") is not None:
        kw = {**kw, "zones": grid.to_zones(kw["zones"], by)}
    elif by is not None:
        raise SpecError(f"by={by!r} names the zones' column; pass zones=<GeoDataFrame> with it")
    try:
        return ReleaseSpec(**kw)
    except TypeError as exc:  # unknown keyword
        raise SpecError(str(exc)) from None


def check_period_label(period: Any, spec: ReleaseSpec) -> None:
    """``period=`` labels a release of one period; a panel has its periods instead."""
    if period is not None and spec.panel:
        raise SpecError(
            f"period={period!r} labels a release of one period, but this is a panel over "
            "periods=; drop period= (each row has its period)"
        )


def resolve_region(region: Any, spec: ReleaseSpec) -> grid.Region | None:
    if spec.zones is not None:
        if region is not None:
            raise SpecError(
                "zones= and region= exclude each other: the zones are the public area; drop the region"
            )
        return None
    if region is None:
        if spec.delta == 0:
            raise SpecError(
                "no region was given and delta = 0: without a public region dpmap must choose cells "
                "privately, which needs delta > 0; pass region=<polygon of the area> or e.g. delta=1e-6"
            )
        return None
    return grid.to_region(region)


def design_options(
    adaptive: Any = False,
    adaptive_from: int | None = None,
    tree_share: float | None = None,
    internal_share: Any = None,
    integers: bool = False,
) -> DesignOptions:
    """The design parameters of :func:`dpmap.release` as :class:`DesignOptions`."""
    return DesignOptions(
        adaptive=adaptive_method(adaptive),
        adaptive_from=adaptive_from,
        tree_share=tree_share,
        internal_share=internal_share,
        integers=integers,
    )


def explain(*, region: Any = None, **params: Any) -> Explanation:
    """Plan a release without data: noise scale, ε/δ per statistic, expected error per cell.

    Takes the same keywords as :func:`release` (without ``points``).
    """
    check_keywords("explain", params)
    for key in ("ledger", "dataset", "diagnostics", "title", "integers", "engine", "period"):
        params.pop(key, None)
    through = params.pop("through", None)  # a continual release: what it publishes so far
    options = design_options(
        **{
            k: params.pop(k)
            for k in ("adaptive", "adaptive_from", "tree_share", "internal_share")
            if k in params
        }
    )
    spec = make_spec(params, params.pop("by", None))
    reg = resolve_region(region, spec)
    options = dataclasses.replace(options, through=through)
    check_options(spec, options)
    design = design_for(spec, reg, options)
    warn_negligible_noise(design.noise)
    return Explanation(
        spec=spec,
        plan=design.noise,
        cells=None if design.domain is None else len(design.domain),
        region=reg,
        adaptive=design.describe(),
        design=design,
    )
