"""The manifest: everything public about a release, written beside its cells."""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any

from dpmap._privacy.noise import NoisePlan, opendp_version
from dpmap._version import __version__
from dpmap.aggregates import SUM_LIMIT
from dpmap.analysis.tables import count_terms, count_unit
from dpmap.designs.base import Design, Measured
from dpmap.releases.planning import budget_shares
from dpmap.spec import ReleaseSpec

#: version of the file/manifest format
FORMAT_VERSION = 1


def _privacy_statement(spec: ReleaseSpec, plan: NoisePlan, created: str) -> str:
    unit = f"one person (all rows with the same {spec.person!r})" if spec.person else "one row"
    delta = "" if plan.delta == 0 else f", δ = {plan.delta:.3g}"
    place = "zone" if spec.zones is not None else "cell"
    return (
        f"This map satisfies {plan.measure} with ε = {plan.epsilon:.4g}{delta} for {unit}: "
        f"whatever it shows would have been almost as likely had any single person's records been "
        f"left out. Each person counts in at most {_places(spec, place)}, {spec.linf} record(s) "
        f"per {place}{' and period' if spec.panel else ''}"
        + (f", values clamped to [{spec.bounds[0]}, {spec.bounds[1]}]" if spec.bounds else "")
        + f". Noise from OpenDP; {_published_units(spec)}; released {created[:10]}."
    )


def _places(spec: ReleaseSpec, place: str) -> str:
    """How many keys one person may count in, in words."""
    if not spec.panel or spec.person is None:
        return f"{spec.l0} {place}(s)"
    return f"{spec.periods_per_person} period(s), {spec.max_cells} {place}(s) per period"


def _published_units(spec: ReleaseSpec) -> str:
    if spec.zones is not None:
        cells = f"{len(spec.zones)} public zones (by {spec.zones.by!r})"
    else:
        cells = f"H3 resolution {'/'.join(map(str, spec.levels))}"
    if spec.periods is not None:
        p = spec.periods
        cells += f", {len(p)} public periods ({p.labels[0]} to {p.labels[-1]})"
    return cells


def build_manifest(
    design: Design,
    measured: Measured,
    pub: Any,
    title: str | None,
    rows: int,
    config: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest of a release: public parameters, the noise, and the design's entries."""
    spec, plan = design.spec, design.noise
    entries = design.manifest_entries(measured)
    manifest = _common_entries(spec, plan, pub, title, rows)
    manifest["design"] = design.kind
    manifest["cell_selection"] = entries["cell_selection"]
    manifest["hierarchy"] = entries.get("hierarchy")
    manifest["margins"] = entries.get("margins", manifest["margins"])
    manifest["config"] = config
    if "adaptive" in entries:
        manifest["adaptive"] = entries["adaptive"]
    if "continual" in entries:  # running totals: the tree and its published nodes
        manifest["continual"] = entries["continual"]
        manifest["ledger"] = entries.get("ledger")  # continued: the entry that charged it
    if "value_distribution" in entries:  # quantiles and value bands
        manifest["value_distribution"] = entries["value_distribution"]
    if spec.periods is not None:  # a panel: one row per (cell, period)
        manifest["periods"] = list(spec.periods.labels)
    if "time_levels" in entries:  # a panel with coarse time levels
        manifest["time_levels"] = entries["time_levels"]
    return manifest


def _common_entries(
    spec: ReleaseSpec, plan: NoisePlan, pub: Any, title: str | None, rows: int
) -> dict[str, Any]:
    import geopandas
    import h3
    import polars

    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {
        "dpmap_release": FORMAT_VERSION,
        "title": title,
        "created": created,
        "privacy": {
            "unit": f"person identified by column {spec.person!r}"
            if spec.person
            else "row (each row is one person)",
            "neighbouring": "datasets differing by adding or removing all records of one person",
            "measure": plan.measure,
            "accounting": plan.accounting,
            "epsilon": plan.epsilon,
            "delta": plan.delta,
            "rho": plan.rho,
            "statement": _privacy_statement(spec, plan, created),
        },
        "statistics": {
            k: {**v.describe(), "budget_share": share}
            for (k, v), share in zip(
                plan.statistics.items(), budget_shares(spec, plan), strict=True
            )
        },
        "hierarchy": None,
        "contribution_bounds": _contribution_bounds(spec, pub),
        "resolution": list(spec.levels) if spec.hierarchical else spec.resolution,
        "cell_selection": None,
        "categories": list(spec.categories) if spec.categories else None,
        "suppression": {
            "rule": pub.threshold_rule,
            "threshold": pub.threshold,
            "default": spec.suppress_below is None,
            "expected_phantom_rows": pub.expected_phantom_rows,
        },
        "mean": (
            "noisy sum / noisy count clamped to the bounds; null when the noisy count < 1; margin from "
            "97.5% intervals of sum and count (Bonferroni), conservative"
        )
        if spec.value
        else None,
        "margins": "95% margin of error of the noise on each published number (from OpenDP's accuracy helpers)",
        "parameters": spec.public_dict(),
        "columns": None,
        "rows": rows,
        "versions": {
            "dpmap": __version__,
            "opendp": opendp_version(),
            "h3": h3.__version__,
            "polars": polars.__version__,
            "geopandas": geopandas.__version__,
            "python": platform.python_version(),
        },
        "ledger": None,
    }


def _contribution_bounds(spec: ReleaseSpec, pub: Any) -> dict[str, Any]:
    """The manifest's ``contribution_bounds``: what one person can add, and the sum limit."""
    return {
        "max_cells": spec.l0 // spec.periods_per_person,
        "max_records_per_cell": spec.linf,
        **({"max_periods": spec.periods_per_person} if spec.panel else {}),
        "count_counts": count_unit(*count_terms(spec)),
        "value": spec.value,
        "bounds": list(spec.bounds) if spec.bounds else None,
        "value_rule": "clamped to bounds, then rounded half up to whole units"
        if spec.value
        else None,
        "selection": str(spec.selection),
        "sum_limit": {
            "range": [-SUM_LIMIT, SUM_LIMIT],
            "rule": "every exact sum (cells and all coarser totals) is formed without "
            "overflow and saturated to this range before noise; saturation cannot raise "
            "the sensitivity",
            "rows_at_limit": pub.sums_at_limit,
            "flag": "column sum_at_limit (present only when some row is flagged): the noisy "
            "sum lies within its 97.5% margin of the limit, so the true sum may be larger",
        }
        if spec.value
        else None,
    }
