"""Planning a release before any data is touched: the noise plan, its accounting, and what it would publish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan, plan_noise
from dpmap._privacy.postprocess import (
    CountNoise,
    phantom_chance,
    phantom_threshold,
)
from dpmap.analysis.tables import count_unit
from dpmap.designs.privtree import DEFAULT_INTERNAL_SHARE, DEFAULT_TREE_SHARE
from dpmap.errors import SpecError, warn_negligible_noise
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

    @property
    def rows(self) -> int | None:
        """Published rows (cells × categories, every level), when known before the data."""
        if self.cells is None or self.adaptive is not None:
            return None
        ncat = len(self.spec.categories) if self.spec.categories else 1
        if not self.spec.hierarchical:
            return self.cells * ncat
        assert self.region is not None
        return ncat * sum(len(grid.region_to_cells(self.region, r)) for r in self.spec.levels)

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
            "average_cell_area_km2": grid.average_cell_area_km2(self.spec.finest),
            "cells": self.cells,
            "statistics": {
                k: {**v.describe(), "budget_share": share}
                for (k, v), share in zip(
                    p.statistics.items(), budget_shares(self.spec, p), strict=True
                )
            },
        }
        rows = self.rows  # None for adaptive releases: their leaves are drawn with the noise
        threshold, expected = (
            (None, None)
            if (self.adaptive or {}).get("consistency")
            else _threshold_of(self.spec, p, rows)
        )
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
            f"  H3 resolution {d['resolution']} (average cell {d['average_cell_area_km2']:.3g} km²)"
            + (
                f", {d['cells']} public cells"
                if d["cells"] is not None
                else ", cells chosen privately"
            ),
        ]
        for name, s in d["statistics"].items():
            priv = f"ε = {s['epsilon']:.6g}" if s["epsilon"] is not None else f"ρ = {s['rho']:.6g}"
            lines.append(
                f"  {name}: {s['distribution']} noise, scale {s['scale']:.6g}, sensitivity L1 {s['sensitivity']['l1']}"
                f" / L2 {s['sensitivity']['l2']:.6g}, {priv} (share {s['budget_share']:.3g}),"
                f" 95% error per cell ± {s['moe_95']:.6g}"
            )
        lines.append(f"  count counts {count_unit(self.spec.person, self.spec.linf, self.spec.l0)}")
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
                f"{d['rows']:,} would show by chance (at most 1 per map: no phantom hot spots)"
            )
        else:
            lines.append(
                "  suppression: cells whose estimate is below a map-wide multiple of its own "
                "standard deviation are hidden, so that at most 1 truly empty cell per map is "
                "expected to show by chance (no phantom hot spots)"
            )
        if self.adaptive is not None and self.adaptive.get("kind") == "grid":
            a = self.adaptive
            first = a["first_resolution"]
            where = (
                f"resolution {first}"
                if isinstance(first, int)
                else f"the resolution (from {a['root_resolution']} up) that AG's rule picks from "
                "a noisy total count ('count_total')"
            )
            lines.append(
                f"  adaptive grid: every cell at {where} is counted (the '_internal@' lines "
                f"above), then cut by its noisy count down to at most {a['finest_resolution']} "
                "and counted again (the lines without '@'); the published cells carry "
                "least-squares estimates of all of them (smaller margins than above)"
            )
        elif self.adaptive is not None:
            a = self.adaptive
            lines.append(
                f"  adaptive: PrivTree split from resolution {a['root_resolution']} to "
                f"{a['finest_resolution']}, ε = {a['tree_epsilon']:.4g} for the tree (decision "
                f"noise scale {a['decision_scale']:.4g}); the statistics above are per leaf"
                + (
                    " and per internal resolution; the leaves publish least-squares estimates "
                    "consistent with the internal nodes (smaller margins than above)"
                    if a.get("consistency")
                    else ""
                )
            )
        if self.spec.hierarchical:
            lines.append(
                "  levels are made consistent (children sum to parents) by weighted least squares; "
                "margins after consistency are smaller than the per-level ones above"
            )
        if "discovery_threshold" in d:
            lines.append(
                f"  discovery: a cell is published only if its noisy count exceeds {d['discovery_threshold']}"
            )
        return "\n".join(lines)


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


def count_noise(
    spec: ReleaseSpec, plan: NoisePlan, aplan: Any, *, discovery: bool
) -> CountNoise | None:
    """What the default suppression needs of the count noise (None: private discovery)."""
    if discovery:
        return None
    kind = str(spec.mechanism)
    if aplan is not None:
        scale = None if aplan.has_internal else aplan.scales["count"]
        return CountNoise(kind, scale)
    if spec.hierarchical:
        return CountNoise(kind, None)  # least-squares estimates: one variance per row
    return CountNoise(kind, plan.statistics["count"].scale)


def _threshold_of(
    spec: ReleaseSpec, plan: NoisePlan, rows: int | None
) -> tuple[float | None, float | None]:
    """The suppression threshold when it is one number (None when off or per row), and the
    number of truly empty rows expected to show by chance (default rule)."""
    if spec.suppress_below is False:
        return None, None
    if spec.suppress_below is None:
        if plan.discovery:
            return plan.statistics["count"].moe95, None
        noise = count_noise(spec, plan, None, discovery=False)
        if noise is None or noise.scale is None or rows is None:
            return None, None  # a per-row rule, or rows unknown before the data
        k, expected = phantom_threshold(noise, rows)
        return float(k), expected
    return float(spec.suppress_below), None


def make_spec(kw: dict[str, Any]) -> ReleaseSpec:
    try:
        return ReleaseSpec(**kw)
    except TypeError as exc:  # unknown keyword
        raise SpecError(str(exc)) from None


def resolve_region(region: Any, spec: ReleaseSpec) -> grid.Region | None:
    if region is None:
        if spec.delta == 0:
            raise SpecError(
                "no region was given and delta = 0: without a public region dpmap must choose cells "
                "privately, which needs delta > 0; pass region=<polygon of the area> or e.g. delta=1e-6"
            )
        return None
    return grid.to_region(region)


def explain(*, region: Any = None, **params: Any) -> Explanation:
    """Plan a release without data: noise scale, ε/δ per statistic, expected error per cell.

    Takes the same keywords as :func:`release` (without ``points``).
    """
    for key in ("ledger", "dataset", "diagnostics", "title", "integers", "engine"):
        params.pop(key, None)
    adaptive = adaptive_method(params.pop("adaptive", False))
    adaptive_from = params.pop("adaptive_from", None)
    tree_share = params.pop("tree_share", DEFAULT_TREE_SHARE)
    internal_share = params.pop("internal_share", DEFAULT_INTERNAL_SHARE)
    if isinstance(params.get("level_split"), list):
        params["level_split"] = tuple(params["level_split"])
    spec = make_spec(params)
    reg = resolve_region(region, spec)
    plan, aplan = plan_for(spec, reg, adaptive, adaptive_from, tree_share, internal_share)
    warn_negligible_noise(plan)
    cells = len(grid.region_to_cells(reg, spec.finest)) if reg is not None else None
    return Explanation(
        spec=spec,
        plan=plan,
        cells=cells,
        region=reg,
        adaptive=aplan.describe() if aplan is not None else None,
    )


def adaptive_method(adaptive: Any) -> str | None:
    """``adaptive=`` as a method name: None (not adaptive), "privtree" or "grid"."""
    if adaptive is None or isinstance(adaptive, (bool, np.bool_)):
        return "privtree" if adaptive else None
    if adaptive in ("privtree", "grid"):
        return str(adaptive)
    raise SpecError(
        f'adaptive must be True/"privtree" (PrivTree split), "grid" (two-level adaptive grid) '
        f"or False, got {adaptive!r}"
    )


def plan_for(
    spec: ReleaseSpec,
    reg: grid.Region | None,
    adaptive: str | None,
    adaptive_from: int | None,
    tree_share: float,
    internal_share: Any = DEFAULT_INTERNAL_SHARE,
) -> tuple[NoisePlan, Any]:
    """The calibrated noise plan of a release (and its adaptive plan, if adaptive)."""
    if reg is None and spec.hierarchical:
        raise SpecError(
            "a hierarchical release (several resolutions) needs a public region; pass region=..."
        )
    if adaptive:
        if reg is None or spec.categories is not None:
            raise SpecError(
                "adaptive releases need a public region and no category breakdown; pass "
                "region=... and drop category/categories"
            )
        if adaptive == "grid":
            from dpmap.designs.adaptive_grid import grid_noise_plan, plan_grid

            if isinstance(internal_share, bool) or internal_share != DEFAULT_INTERNAL_SHARE:
                raise SpecError(
                    'internal_share applies to PrivTree releases (adaptive=True); adaptive="grid" '
                    "always counts its first level: set its share with tree_share"
                )
            gplan = plan_grid(spec, root=adaptive_from, share=tree_share)
            return grid_noise_plan(gplan), gplan
        from dpmap.designs.privtree import adaptive_noise_plan, plan_adaptive

        aplan = plan_adaptive(
            spec, root=adaptive_from, tree_share=tree_share, internal_share=internal_share
        )
        return adaptive_noise_plan(aplan), aplan
    if adaptive_from is not None:
        raise SpecError("adaptive_from applies to adaptive releases; pass adaptive=True")
    if isinstance(internal_share, bool) or internal_share != DEFAULT_INTERNAL_SHARE:
        raise SpecError("internal_share applies to adaptive releases; pass adaptive=True")
    return plan_noise(spec, discovery=reg is None), None
