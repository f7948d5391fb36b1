"""The release pipeline and the immutable :class:`Release` with its manifest.

``points → validate → bin (H3) → bound per person → aggregate (engine, exact, PRIVATE)
→ one composed OpenDP measurement (the only noise, the only accounting)
→ post-processing (suppression, means, margins) → Release (cells + manifest)``
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import grid, hierarchy
from ._version import __version__
from .adaptive import DEFAULT_INTERNAL_SHARE, DEFAULT_TREE_SHARE
from .aggregates import SUM_LIMIT
from .diagnostics import Diagnostics
from .engines import local
from .errors import DataFileError, ReleaseFormatError, SpecError, warn_negligible_noise
from .io import atomic_write, manifest_path, read_manifest
from .mechanisms import NoisePlan, decode_keys, encode_keys, opendp_version, plan_noise
from .postprocess import (
    CountNoise,
    Estimates,
    margin_factors,
    phantom_chance,
    phantom_threshold,
    publish,
)
from .spec import Mechanism, ReleaseSpec
from .table import count_unit

__all__ = ["Explanation", "Release", "explain", "read_release", "release"]

#: version of the file/manifest format
FORMAT_VERSION = 1

_STAT_COLUMNS = ("count", "count_moe", "sum", "sum_moe", "mean", "mean_moe")


# ---------------------------------------------------------------------------------------
# planning without data


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
                    p.statistics.items(), _budget_shares(self.spec, p), strict=True
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


def _budget_shares(spec: ReleaseSpec, plan: NoisePlan) -> list[float | None]:
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


def _count_noise(
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
        noise = _count_noise(spec, plan, None, discovery=False)
        if noise is None or noise.scale is None or rows is None:
            return None, None  # a per-row rule, or rows unknown before the data
        k, expected = phantom_threshold(noise, rows)
        return float(k), expected
    return float(spec.suppress_below), None


def _make_spec(kw: dict[str, Any]) -> ReleaseSpec:
    try:
        return ReleaseSpec(**kw)
    except TypeError as exc:  # unknown keyword
        raise SpecError(str(exc)) from None


def _engine_for(points: Any, engine: str | None) -> Any:
    """The engine module that bins, bounds and aggregates: ``engine=`` if given, else
    Spark for a pyspark DataFrame and the local (polars) engine for anything else."""
    if engine is None:
        from .engines.spark import is_spark_dataframe

        engine = "spark" if is_spark_dataframe(points) else "local"
    if engine == "local":
        return local
    if engine == "spark":
        from .engines import spark

        return spark
    if engine == "streaming":
        from .engines import streaming

        return streaming
    raise SpecError(
        f"engine must be one of 'local', 'streaming', 'spark' or None (auto), got {engine!r}"
    )


def _resolve_region(region: Any, spec: ReleaseSpec) -> grid.Region | None:
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
    spec = _make_spec(params)
    reg = _resolve_region(region, spec)
    plan, aplan = _plan_for(spec, reg, adaptive, adaptive_from, tree_share, internal_share)
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


def _plan_for(
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
            from .adaptive_grid import grid_noise_plan, plan_grid

            if isinstance(internal_share, bool) or internal_share != DEFAULT_INTERNAL_SHARE:
                raise SpecError(
                    'internal_share applies to PrivTree releases (adaptive=True); adaptive="grid" '
                    "always counts its first level: set its share with tree_share"
                )
            gplan = plan_grid(spec, root=adaptive_from, share=tree_share)
            return grid_noise_plan(gplan), gplan
        from .adaptive import adaptive_noise_plan, plan_adaptive

        aplan = plan_adaptive(
            spec, root=adaptive_from, tree_share=tree_share, internal_share=internal_share
        )
        return adaptive_noise_plan(aplan), aplan
    if adaptive_from is not None:
        raise SpecError("adaptive_from applies to adaptive releases; pass adaptive=True")
    if isinstance(internal_share, bool) or internal_share != DEFAULT_INTERNAL_SHARE:
        raise SpecError("internal_share applies to adaptive releases; pass adaptive=True")
    return plan_noise(spec, discovery=reg is None), None


# ---------------------------------------------------------------------------------------
# the release


def release(
    points: Any,
    *,
    region: Any = None,
    resolution: int,
    epsilon: float,
    delta: float = 0.0,
    lat: str = "lat",
    lng: str = "lng",
    person: str | None = None,
    value: str | None = None,
    bounds: tuple[float, float] | None = None,
    max_cells: int = 1,
    max_records_per_cell: int = 1,
    category: str | None = None,
    categories: Any = None,
    mechanism: str = "laplace",
    suppress_below: float | bool | None = None,
    count_share: float = 0.5,
    selection: str = "random",
    seed: int | None = None,
    level_split: str | list[float] = "geometric",
    integers: bool = False,
    adaptive: bool | str = False,
    adaptive_from: int | None = None,
    tree_share: float = DEFAULT_TREE_SHARE,
    internal_share: float | list[float] = DEFAULT_INTERNAL_SHARE,
    config: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    diagnostics: Diagnostics | None = None,
    ledger: Any = None,
    dataset: str | None = None,
    title: str | None = None,
    engine: str | None = None,
) -> Release:
    """Publish a differentially private H3 map of ``points``.

    Parameters
    ----------
    points
        pandas / polars / GeoPandas DataFrame, polars LazyFrame, pyspark DataFrame, or a
        .csv / .parquet path.
    region
        The public area: shapely geometry, GeoDataFrame/GeoSeries, GeoJSON mapping or path.
        Every H3 cell overlapping it is published (with noise, zeros included). ``None``:
        cells are chosen privately with OpenDP's threshold mechanism (needs ``delta > 0``).
    resolution
        H3 resolution, 0..9.
    epsilon, delta
        The release's total privacy budget.
    lat, lng
        Coordinate columns in degrees (ignored for a GeoDataFrame of points).
    person
        Column identifying a person (the privacy unit); ``None``: each row is a person.
    value, bounds
        Optional value column, clamped to the public ``bounds=(lo, hi)`` (whole units).
    max_cells, max_records_per_cell
        Contribution bounds per person (L0 and L∞).
    category, categories
        Optional breakdown column with its public category list (others → ``"other"``).
    mechanism
        ``"laplace"`` (pure ε-DP) or ``"gaussian"`` (needs ``delta > 0``).
    suppress_below
        Hide cells whose noisy count is below this; ``None``: the count's 95% margin of
        error; ``False``: publish every noisy value (unbiased, may be negative).
    count_share
        Share of ε spent on counts when ``value`` is given (the rest goes to sums).
    selection, seed
        Which records are kept when a person exceeds the bounds: ``"random"`` (default)
        or ``"hash"`` (reproducible with ``seed``).
    diagnostics
        A :class:`Diagnostics` to fill with PRIVATE counts about the input (never published).
    ledger, dataset
        A :class:`~dpmap.Ledger` (or the path of a ledger file) and dataset name: the
        budget is reserved there before any noise is drawn, and the release is refused if
        it would exceed the cap. Both must exist (``dpmap budget init``): a release never
        creates a ledger or a dataset, and checks both before reading any data.
    title
        Optional title stored in the manifest and as the ledger entry's label.
    engine
        Where the exact bin/bound/aggregate step runs: ``"local"`` (polars, one machine,
        in memory; a points file over 1 GB is streamed), ``"streaming"`` (one machine,
        bounded memory: reads in batches and spills private rows to a temporary folder),
        ``"spark"`` (needs ``pip install 'dpmap[spark]'``; reads a path with Spark) or
        ``None``: Spark for a pyspark DataFrame, local otherwise. The aggregates and the
        noise are the same.
    level_split, integers
        Hierarchical releases (``resolution=[...]``): the budget split across levels
        (``"geometric"``, ``"even"`` or weights) and whether to publish non-negative
        integers that still add up (display) instead of the least-squares estimates.
    adaptive, adaptive_from, tree_share, internal_share
        Adaptive release: refine dense areas down to ``resolution`` from the coarser
        ``adaptive_from`` (default 4 levels up), spending ``tree_share`` of ε on the split
        (see ``docs/adaptive-privacy.md``). Of the rest, ``internal_share`` goes to noisy
        values of the tree's internal nodes (split evenly over the internal resolutions, or
        one share per resolution from ``adaptive_from`` to ``resolution − 1``) and the
        leaves get the remainder; the leaves then carry least-squares estimates consistent
        with the internal nodes: lower variance for totals over whole subtrees, but higher
        error for rectangle queries in ``benchmarks/utility.py``. ``internal_share=0`` (the
        default) publishes the raw noisy leaves only. ``adaptive="grid"``: a two-level
        adaptive grid instead (Qardaji et al. 2013 on H3, :mod:`dpmap.adaptive_grid`): all
        cells at ``adaptive_from`` (default: chosen by AG's rule from a noisy total) are
        counted with ``tree_share`` of ε, each is cut by its noisy count and counted again
        with the rest, and the levels are made consistent; more accurate than the PrivTree
        for large areas (districts, regions), less for small ones.
    progress
        Called with the name of each stage as it starts ("plan", "read and bound",
        "noise", "table"), e.g. to drive a progress display.
    config
        Settings to record in the manifest (the CLI's ``--config`` file: name, sha256 and
        contents).

    Returns
    -------
    Release
        ``cells`` (GeoDataFrame, one row per public cell [× category]) and ``manifest``.

    Privacy
    -------
    Unit: one person — neighbouring datasets add or remove all records of one person
    (or one row when ``person=None``). Each person is bounded to ``max_cells`` cells and
    ``max_records_per_cell`` records per cell; values are clamped to ``bounds``. The
    count vector then has L1 sensitivity ``max_cells·max_records_per_cell`` (L2
    ``√max_cells·max_records_per_cell``), the sum vector that times ``max(|lo|, |hi|)``.
    Noise: discrete Laplace (ε-DP) or discrete Gaussian (ρ-zCDP, reported as (ε, δ)),
    from OpenDP, with the total ε/δ returned by OpenDP's privacy map for the composed
    measurement. Outside the guarantee: the region, the resolution, the category list and
    all parameters are public; the number of rows is not released.

    Utility
    -------
    Each published count is within ± ``count_moe`` of the bounded true count with 95%
    probability (see :func:`explain` before touching data).
    """
    spec = _make_spec(
        dict(
            resolution=resolution,
            epsilon=epsilon,
            delta=delta,
            lat=lat,
            lng=lng,
            person=person,
            value=value,
            bounds=tuple(bounds) if isinstance(bounds, (list, tuple)) else bounds,
            max_cells=max_cells,
            max_records_per_cell=max_records_per_cell,
            category=category,
            categories=tuple(categories) if isinstance(categories, (list, tuple)) else categories,
            mechanism=mechanism,
            suppress_below=suppress_below,
            count_share=count_share,
            selection=selection,
            seed=seed,
            level_split=tuple(level_split) if isinstance(level_split, list) else level_split,
        )
    )
    if integers and not spec.hierarchical:
        raise SpecError(
            "integers=True applies to hierarchical releases (resolution=[...]); flat releases "
            "already publish integer counts"
        )
    if (ledger is None) != (dataset is None):
        raise SpecError(
            "ledger and dataset go together; pass both (ledger=Ledger(path), dataset='name') or neither"
        )
    ledger = _open_ledger(ledger, dataset, title)  # both must exist: checked before any data
    reg = _resolve_region(region, spec)
    stage = progress or (lambda _name: None)
    stage("plan")
    plan, aplan = _plan_for(
        spec, reg, adaptive_method(adaptive), adaptive_from, tree_share, internal_share
    )
    warn_negligible_noise(plan)  # ε so large that the counts are essentially exact
    domain = grid.region_to_cells(reg, spec.finest) if reg is not None else None
    stage("read and bound")
    aggregates = _engine_for(points, engine).bound_and_aggregate(points, spec, domain, diagnostics)
    stage("noise")

    reservation_cm = _reserve(ledger, dataset, plan, title)
    with reservation_cm as reservation:
        if reservation is not None:
            reservation.mark_noise_drawn()
        ncat = len(spec.categories) if spec.categories else 1
        shown: Estimates | None = None  # display values, when they differ from the estimates
        if aplan is not None:
            assert domain is not None
            est, cells, res_col, drawn = _adaptive(aplan, domain, aggregates.densify(domain, 1))
        elif domain is not None and spec.hierarchical:
            tree = hierarchy.build_tree(domain, spec.levels)
            noisy = plan.run_dense(
                _level_vectors(tree, aggregates.densify(domain, ncat), ncat, spec)
            )
            est, shown, cells, res_col = _consistent(tree, noisy, plan, ncat, integers)
        elif domain is not None:
            noisy = plan.run_dense(aggregates.densify(domain, ncat))
            cells, res_col = np.repeat(domain, ncat), np.full(len(domain) * ncat, spec.finest)
            est = _flat_estimates(plan, noisy)
        else:
            keys = encode_keys(aggregates.cells, aggregates.category)
            order = np.argsort(keys)
            kept, noisy = plan.run_discovery(
                keys[order],
                aggregates.count[order],
                aggregates.sum[order] if aggregates.sum is not None else None,
            )
            cells, res_col = kept, np.full(len(kept), spec.finest)
            est = _flat_estimates(plan, noisy)
        del aggregates
        cat_idx = None
        if spec.categories is not None:
            cells, cat_idx = (
                decode_keys(cells, True)
                if domain is None
                else (cells, _cat_index(len(cells), ncat))
            )
        stage("table")
        noise = _count_noise(spec, plan, aplan, discovery=domain is None)
        published = publish(shown or est, spec.bounds, spec.suppress_below, noise)
        integer = (not spec.hierarchical or integers) and not (
            aplan is not None and aplan.has_internal
        )
        table = _cell_table(spec, cells, res_col, cat_idx, published, integer=integer)
        manifest = _manifest(spec, plan, reg, domain, published, title, len(table), integers)
        manifest["config"] = config
        if aplan is not None:
            manifest["adaptive"] = {**aplan.describe(), **drawn}
            manifest["cell_selection"]["rule"] = (
                f"adaptive grid: every cell at resolution {drawn['first_resolution']} over the "
                "region, cut "
                f"down to at most {spec.finest} where its noisy first-level count is large; the "
                "possible cells are the H3 parents of the cells overlapping the region"
                if manifest["adaptive"].get("kind") == "grid"
                else f"PrivTree leaves: cells from resolution {aplan.root} down to "
                f"{spec.finest}, split where the noisy biased count exceeds the threshold; the "
                "tree of possible cells is the H3 parents of the cells overlapping the region"
            )
            if aplan.has_internal:
                manifest["margins"] = (
                    "95% margin of each leaf's least-squares estimate: 2.118 × its exact standard "
                    "deviation (the 95% point of one Laplace draw, whose tails are heavier than "
                    "those of any combination of draws: at least 95% coverage)"
                )
        estimates = _estimates_frame(table, est)
        rel = Release(table, manifest, estimates)
        if reservation is not None:
            reservation.finalize(fingerprint=rel.fingerprint)
            manifest["ledger"] = {"dataset": dataset, "entry_id": reservation.entry_id}
            rel = Release(table, manifest, estimates)
    return rel


_KEY_COLUMNS = ("cell", "resolution", "category")
#: columns of the unbiased estimates (written to files only on request)
UNBIASED_COLUMNS = {
    "count": "count_unbiased",
    "count_var": "count_var",
    "sum": "sum_unbiased",
    "sum_var": "sum_var",
}


def _estimates_frame(table: Any, est: Estimates) -> pd.DataFrame:
    """Unbiased noisy estimates and their noise variances for every row (suppressed included)."""
    n = len(table)
    out = pd.DataFrame({c: table[c].to_numpy() for c in _KEY_COLUMNS if c in table})
    out["count"] = np.asarray(est.count, dtype=np.float64)
    out["count_var"] = np.broadcast_to(np.asarray(est.count_var, dtype=np.float64), (n,))
    if est.sum is not None:
        out["sum"] = np.asarray(est.sum, dtype=np.float64)
        out["sum_var"] = np.broadcast_to(np.asarray(est.sum_var, dtype=np.float64), (n,))
    return out


def _adaptive(
    aplan: Any, domain: np.ndarray, finest: dict[str, np.ndarray]
) -> tuple[Estimates, np.ndarray, np.ndarray, dict[str, Any]]:
    """Estimates, cells and resolutions of an adaptive release, and what the manifest's
    ``adaptive`` entry gains once noise is drawn (a grid's first resolution)."""
    from .adaptive import adaptive_consistent, run_adaptive
    from .adaptive_grid import GridPlan, grid_consistent, run_grid

    tree = hierarchy.build_tree(domain, tuple(range(aplan.root, aplan.spec.finest + 1)))
    counts = hierarchy.level_totals(tree, finest["count"])
    sums = hierarchy.level_totals(tree, finest["sum"]) if "sum" in finest else None
    consistent: Callable[[str], tuple[np.ndarray, np.ndarray]]
    drawn: dict[str, Any] = {}
    if isinstance(aplan, GridPlan):
        gout = run_grid(aplan, tree, counts, sums)
        leaves, noisy = gout.leaves, gout.second
        drawn["first_resolution"] = gout.first_resolution(tree)
        consistent = lambda stat: grid_consistent(aplan, gout, stat)  # noqa: E731
    else:
        out = run_adaptive(aplan, tree, counts, sums)
        leaves, noisy = out.leaves, out.noisy
        consistent = lambda stat: adaptive_consistent(aplan, tree, out, stat)  # noqa: E731
    order = np.lexsort(([i for _, i in leaves], [j for j, _ in leaves]))
    cells = np.array([tree.levels[j][i] for j, i in leaves], dtype=np.int64)[order]
    res = np.array([tree.resolutions[j] for j, _ in leaves], dtype=np.int64)[order]
    if aplan.has_internal:
        fields: dict[str, Any] = {}
        for stat in aplan.spec.statistics:
            x, var = consistent(stat)
            sd = np.sqrt(var)
            fields[stat] = x[order]
            z95, z975 = margin_factors("laplace")  # adaptive releases use Laplace noise
            fields[f"{stat}_moe"], fields[f"{stat}_moe975"] = z95 * sd[order], z975 * sd[order]
            fields[f"{stat}_var"] = var[order]
        return Estimates(**fields), cells, res, drawn
    has_sum = "sum" in noisy
    return (
        Estimates(
            count=noisy["count"][order],
            count_moe=aplan.moe("count"),
            count_moe975=aplan.moe("count", 0.025),
            count_var=aplan.variance("count"),
            sum=noisy["sum"][order] if has_sum else None,
            sum_moe=aplan.moe("sum") if has_sum else None,
            sum_moe975=aplan.moe("sum", 0.025) if has_sum else None,
            sum_var=aplan.variance("sum") if has_sum else None,
        ),
        cells,
        res,
        drawn,
    )


def _cat_index(rows: int, ncat: int) -> np.ndarray:
    return np.tile(np.arange(ncat), rows // ncat)


def _flat_estimates(plan: NoisePlan, noisy: dict[str, np.ndarray]) -> Estimates:
    c = plan.statistics["count"]
    sm = plan.statistics.get("sum")
    return Estimates(
        count=noisy["count"],
        count_moe=c.moe95,
        count_moe975=c.moe975,
        count_var=c.variance,
        sum=noisy.get("sum"),
        sum_moe=sm.moe95 if sm else None,
        sum_moe975=sm.moe975 if sm else None,
        sum_var=sm.variance if sm else None,
    )


def _level_vectors(
    tree: hierarchy.Tree, finest: dict[str, np.ndarray], ncat: int, spec: ReleaseSpec
) -> dict[str, np.ndarray]:
    """PRIVATE exact vectors of every level, summed up H3's index tree from the finest."""
    out = {}
    for stat, vec in finest.items():
        levels = hierarchy.level_totals(tree, vec.reshape(-1, ncat))
        for r, level in zip(tree.resolutions, levels, strict=True):
            out[f"{stat}@{r}"] = level.reshape(-1)
    return {k: out[k] for k in spec.queries()}


def _consistent(
    tree: hierarchy.Tree, noisy: dict[str, np.ndarray], plan: NoisePlan, ncat: int, integers: bool
) -> tuple[Estimates, Estimates, np.ndarray, np.ndarray]:
    """Least-squares consistent estimates of every level (post-processing of noisy values).

    Returns the unbiased estimates, the values to display (the same, or non-negative
    integers that still add up when ``integers``), the cells and their resolutions.
    """
    spec = plan.spec
    fields: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for stat in spec.statistics:
        keys = [f"{stat}@{r}" for r in tree.resolutions]
        y = [noisy[k].reshape(-1, ncat) for k in keys]
        x, var = hierarchy.consistent(tree, y, [plan.statistics[k].variance for k in keys])
        sd = np.sqrt(np.concatenate(var).reshape(-1))
        fields[stat] = np.concatenate(x).reshape(-1)
        z95, z975 = margin_factors(str(spec.mechanism))
        fields[f"{stat}_moe"], fields[f"{stat}_moe975"] = z95 * sd, z975 * sd
        fields[f"{stat}_var"] = sd**2
        if integers:
            rounded = hierarchy.round_consistent(tree, x)
            shown[stat] = np.concatenate(rounded).reshape(-1).astype(np.float64)
    cells = np.repeat(np.concatenate(tree.levels), ncat)
    res = np.repeat(
        np.concatenate(
            [np.full(len(lv), r) for lv, r in zip(tree.levels, tree.resolutions, strict=True)]
        ),
        ncat,
    )
    return Estimates(**fields), Estimates(**{**fields, **shown}), cells, res


def _open_ledger(ledger: Any, dataset: str | None, title: str | None) -> Any:
    """The release's ledger, opened and checked before any data is read or noise drawn.

    A release never creates a ledger or a dataset: a missing ledger file, a dataset not
    in it (with a "did you mean") or an unusable title (the entry's label) is an error here.
    """
    if ledger is None:
        return None
    from .ledger import Ledger, check_label

    if not (isinstance(ledger, (Ledger, str)) or hasattr(ledger, "__fspath__")):
        raise SpecError(
            f"ledger must be a dpmap.Ledger or the path of a ledger file, "
            f"got {type(ledger).__name__}"
        )
    if not isinstance(dataset, str):
        raise SpecError(f"dataset must be the name of a dataset in the ledger, got {dataset!r}")
    book = ledger if isinstance(ledger, Ledger) else Ledger(ledger)  # never creates a file
    book.cap(dataset)  # the dataset must exist: BudgetError naming the existing ones
    check_label(title)
    return book


def _reserve(ledger: Any, dataset: str | None, plan: NoisePlan, title: str | None = None) -> Any:
    if ledger is None:
        return contextlib.nullcontext()
    from .ledger import Ledger

    if not isinstance(ledger, Ledger):
        ledger = Ledger(ledger)  # opens an existing ledger; never creates one
    spec = plan.spec
    return ledger.reserve(
        dataset,
        epsilon=plan.epsilon,
        delta=plan.delta,
        rho=plan.rho,
        accounting=plan.accounting,
        mechanism=str(spec.mechanism),
        statistics=list(spec.statistics),
        resolution=spec.finest,
        details={"measure": plan.measure, "discovery": plan.discovery, "levels": list(spec.levels)},
        label=title,  # the release's title: which release this entry was
    )


def _cell_table(
    spec: ReleaseSpec,
    cells: np.ndarray,
    res: np.ndarray,
    cat_idx: np.ndarray | None,
    pub: Any,
    *,
    integer: bool,
) -> Any:
    import geopandas as gpd

    data: dict[str, Any] = {
        "cell": grid.cells_to_hex(cells).astype(object),
        "resolution": np.asarray(res, dtype=np.int64),
    }
    if spec.categories is not None:
        cats = np.asarray(spec.categories, dtype=object)
        data["category"] = cats[cat_idx] if len(cells) else np.array([], dtype=object)
    for col in (*_STAT_COLUMNS, "sum_at_limit"):
        if col in pub.columns:
            data[col] = pub.columns[col]
    data["suppressed"] = pub.columns["suppressed"]
    df = _normalise_dtypes(pd.DataFrame(data), integer=integer)
    return gpd.GeoDataFrame(df, geometry=grid.cells_to_polygons(cells), crs="EPSG:4326")


def _normalise_dtypes(df: pd.DataFrame, *, integer: bool = True) -> pd.DataFrame:
    """The schema's dtypes: integer counts/sums (nullable; float for the least-squares
    estimates of a hierarchical release), float margins/means, bool flags."""
    for col in ("count", "sum"):
        if col in df:
            values = df[col].astype("float64")
            df[col] = (
                pd.array(np.round(values), dtype="Float64").astype("Int64")
                if integer
                else pd.array(values, dtype="Float64")
            )
    for col in ("count_moe", "sum_moe", "mean", "mean_moe"):
        if col in df:
            df[col] = df[col].astype("float64")
    if "resolution" in df:
        df["resolution"] = df["resolution"].astype("int64")
    for col in ("suppressed", "sum_at_limit"):
        if col in df:
            df[col] = df[col].astype(bool)
    for col in ("cell", "category"):
        if col in df:
            df[col] = df[col].astype(object)
    return df


def _privacy_statement(spec: ReleaseSpec, plan: NoisePlan, created: str) -> str:
    unit = f"one person (all rows with the same {spec.person!r})" if spec.person else "one row"
    delta = "" if plan.delta == 0 else f", δ = {plan.delta:.3g}"
    return (
        f"This map satisfies {plan.measure} with ε = {plan.epsilon:.4g}{delta} for {unit}: "
        f"whatever it shows would have been almost as likely had any single person's records been "
        f"left out. Each person counts in at most {spec.l0} cell(s), {spec.linf} record(s) per cell"
        + (f", values clamped to [{spec.bounds[0]}, {spec.bounds[1]}]" if spec.bounds else "")
        + f". Noise from OpenDP; H3 resolution {'/'.join(map(str, spec.levels))}; released {created[:10]}."
    )


def _manifest(
    spec: ReleaseSpec,
    plan: NoisePlan,
    reg: grid.Region | None,
    domain: np.ndarray | None,
    pub: Any,
    title: str | None,
    rows: int,
    integers: bool = False,
) -> dict[str, Any]:
    import geopandas
    import h3
    import polars

    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    if reg is not None:
        selection = {
            "method": "public region",
            "rule": f"every H3 cell at resolution {spec.finest} overlapping the region, all noised"
            + (", and their H3 parents at the coarser levels" if spec.hierarchical else ""),
            "region": reg.describe(),
            "cells": 0 if domain is None else len(domain),
        }
    else:
        selection = {
            "method": "private discovery",
            "rule": f"OpenDP {plan.spec.mechanism} threshold: a cell is published only if its noisy "
            f"count exceeds {plan.threshold}",
            "threshold": plan.threshold,
            "region": None,
        }
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
                plan.statistics.items(), _budget_shares(spec, plan), strict=True
            )
        },
        "hierarchy": (
            {
                "levels": list(spec.levels),
                "level_split": {str(r): w for r, w in spec.level_shares().items()},
                "tree": "coarser cells are the H3 parents (cell_to_parent) of the finest public cells",
                "consistency": "weighted least squares (Hay et al. 2010), two passes; children sum to "
                "their parent exactly",
                "integers": integers,
                "margins": (
                    "2.118 × the exact standard deviation of the consistent estimate (the 95% "
                    "point of one Laplace draw: at least 95% coverage)"
                    if spec.mechanism is Mechanism.LAPLACE
                    else "1.96 × the exact standard deviation of the consistent estimate "
                    "(Gaussian noise)"
                ),
            }
            if spec.hierarchical
            else None
        ),
        "contribution_bounds": {
            "max_cells": spec.l0,
            "max_records_per_cell": spec.linf,
            "count_counts": count_unit(spec.person, spec.linf, spec.l0),
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
        },
        "resolution": list(spec.levels) if spec.hierarchical else spec.resolution,
        "cell_selection": selection,
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


class Release:
    """An immutable differentially private map release: a cell table and its manifest.

    Attributes
    ----------
    cells
        GeoDataFrame (EPSG:4326), one row per public cell (× category): ``cell``,
        ``resolution``, ``count``, ``count_moe``, [``sum``, ``sum_moe``, ``mean``,
        ``mean_moe``], ``suppressed``, ``geometry``. A copy on every access.
    manifest
        JSON-serialisable dict describing the guarantee and the parameters (a copy).
    """

    __slots__ = ("_cells", "_estimates", "_manifest")
    _cells: Any
    _manifest: dict[str, Any]
    _estimates: pd.DataFrame | None

    def __init__(
        self, cells: Any, manifest: dict[str, Any], estimates: pd.DataFrame | None = None
    ) -> None:
        manifest = json.loads(json.dumps(manifest))  # deep copy, and proves it is JSON-serialisable
        manifest["columns"] = [c for c in cells.columns]
        object.__setattr__(self, "_cells", cells)
        object.__setattr__(self, "_manifest", manifest)
        object.__setattr__(self, "_estimates", estimates)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Release is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a Release is immutable")

    @property
    def cells(self) -> Any:
        return self._cells.copy()

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._manifest))

    @property
    def estimates(self) -> pd.DataFrame | None:
        """Unbiased noisy estimates and noise variances of every row, suppressed ones included.

        Columns: ``cell``, ``resolution``, [``category``], ``count``, ``count_var``,
        [``sum``, ``sum_var``]. These are the values to add up over areas (suppression
        hides small noisy counts and so biases sums upward); they are noisy outputs of the
        same measurement, so using them costs no privacy. ``None`` for a release read from a
        file written without them (see :meth:`to_file`), in which case the published
        values of unsuppressed rows are used where possible.
        """
        return None if self._estimates is None else self._estimates.copy()

    @property
    def epsilon(self) -> float:
        return float(self._manifest["privacy"]["epsilon"])

    @property
    def delta(self) -> float:
        return float(self._manifest["privacy"]["delta"])

    @property
    def privacy_statement(self) -> str:
        return str(self._manifest["privacy"]["statement"])

    @property
    def fingerprint(self) -> str:
        """sha256 of the published table (cells and numbers), to identify this output."""
        cols = [c for c in self._cells.columns if c != "geometry"]
        csv = self._cells[cols].to_csv(index=False).encode()
        return "sha256:" + hashlib.sha256(csv).hexdigest()

    def __repr__(self) -> str:
        m = self._manifest
        return (
            f"<dpmap.Release: {len(self._cells)} rows at H3 resolution {m['resolution']}, "
            f"ε = {m['privacy']['epsilon']:.4g}, δ = {m['privacy']['delta']:.3g}, "
            f"{int(self._cells['suppressed'].sum())} suppressed>"
        )

    # -- output --------------------------------------------------------------------------
    def to_file(self, path: str | Path, *, include_unbiased: bool = False) -> Path:
        """Write the release (``.geojson``, ``.parquet`` or ``.csv``) and ``<name>.manifest.json``.

        Both files are written to temporary names and renamed only when complete.
        Private diagnostics are never written (a Release does not hold any).

        ``include_unbiased=True`` adds the unbiased noisy estimates of every row (suppressed
        rows included) as ``count_unbiased``, ``count_var`` [``sum_unbiased``, ``sum_var``],
        so that readers can add up areas without the bias of suppression. They are noisy
        values of the same release: no privacy cost, but they show what suppression hides
        from the display.
        """
        path = Path(path)
        kind = _kind_of(path)
        targets = [path, manifest_path(path)]
        table = self._cells
        manifest = self._manifest
        if include_unbiased:
            if self._estimates is None:
                raise SpecError(
                    "this release holds no unbiased estimates (it was read from a file written "
                    "without them); write it with include_unbiased=False"
                )
            table = table.copy()
            for col, name in UNBIASED_COLUMNS.items():
                if col in self._estimates:
                    table.insert(len(table.columns) - 1, name, self._estimates[col].to_numpy())
            manifest = {
                **manifest,
                "unbiased_columns": [
                    UNBIASED_COLUMNS[c] for c in UNBIASED_COLUMNS if c in self._estimates
                ],
            }
        manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False)
        with atomic_write(targets) as (tmp_data, tmp_manifest):
            if kind == "geojson":
                obj = json.loads(table.to_json(drop_id=True, na="null"))
                obj["dpmap_manifest"] = manifest
                tmp_data.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
            elif kind == "parquet":
                _write_geoparquet(table, tmp_data, manifest_text)
            else:
                df = pd.DataFrame(table.drop(columns="geometry"))
                df["geometry"] = table.geometry.to_wkt(rounding_precision=-1)
                df.to_csv(tmp_data, index=False)
            tmp_manifest.write_text(manifest_text + "\n", encoding="utf-8")
        return path

    def plot(self, path: str | Path | None = None, **kwargs: Any) -> Any:
        """Static map (matplotlib); see :func:`dpmap.plot.plot_release`. A release with
        categories maps their total unless ``category=`` names one (as ``dpmap plot``)."""
        from .plot import plot_release

        cells, kwargs["category"] = self._cells_to_map(kwargs.get("category"), kwargs)
        return plot_release(cells, self._manifest, path, **kwargs)

    def _cells_to_map(self, category: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The rows a map of ``category`` draws: with a category breakdown and no category
        (or ``"all"``, when no category has that name), the total of all categories (and a
        title that says so, unless one is given)."""
        cells = self._cells
        if "category" not in cells.columns or category not in (None, "all"):
            return cells, category
        if category == "all" and "all" in set(cells["category"].astype(str)):
            return cells, category
        from .table import category_total_cells

        base = self._manifest.get("title") or "dpmap release"
        kwargs.setdefault("title", f"{base} — total of all categories")
        return category_total_cells(self), None

    # -- analysis (dpmap.analysis) -------------------------------------------------------
    def aggregate_to(
        self, polygons: Any, by: str | None = "name", *, resolution: int | None = None
    ) -> Any:
        """Totals with margins over user polygons; see :func:`dpmap.analysis.aggregate_to`."""
        from .analysis import aggregate_to

        return aggregate_to(self, polygons, by, resolution=resolution)

    def table(self, zones: Any = None, by: str | None = "name", **options: Any) -> Any:
        """Press-ready table of the cells, or of ``zones`` (rolled up with :meth:`aggregate_to`);
        see :func:`dpmap.table.press_table`."""
        from .table import press_table

        source = self if zones is None else self.aggregate_to(zones, by)
        return press_table(source, release=self, **options)

    def around(
        self,
        lat: float,
        lng: float,
        radius_m: float = 500.0,
        *,
        resolution: int | None = None,
        noun: str = "records",
    ) -> Any:
        """Totals of the whole cells overlapping a circle; see :func:`dpmap.analysis.around`."""
        from .analysis import around

        return around(self, lat, lng, radius_m, resolution=resolution, noun=noun)

    # -- end of analysis -----------------------------------------------------------------

    # -- interactive map (dpmap.html) ----------------------------------------------------
    def explore(
        self, column: str = "count", category: str | None = None, tiles: Any = None, **kwargs: Any
    ) -> Any:
        """Interactive map (a ``folium.Map``); see :func:`dpmap.html.explore_release`. A
        release with categories maps their total unless ``category=`` names one."""
        from .html import explore_release

        cells, category = self._cells_to_map(category, kwargs)
        return explore_release(
            cells, self._manifest, column=column, category=category, tiles=tiles, **kwargs
        )

    def to_html(
        self, path: str | Path, column: str = "count", category: str | None = None, **kwargs: Any
    ) -> Path:
        """Self-contained interactive HTML map (works offline); see
        :func:`dpmap.html.write_html`. A release with categories maps their total unless
        ``category=`` names one."""
        from .html import write_html

        cells, category = self._cells_to_map(category, kwargs)
        return write_html(cells, self._manifest, path, column=column, category=category, **kwargs)

    # -- end of interactive map ----------------------------------------------------------


def _kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    kinds = {".geojson": "geojson", ".json": "geojson", ".parquet": "parquet", ".csv": "csv"}
    if suffix not in kinds:
        raise DataFileError(
            f"cannot write a release as {suffix or '(no suffix)'!r} ({str(path)!r}); use .geojson, .parquet or .csv"
        )
    return kinds[suffix]


def _write_geoparquet(gdf: Any, path: Path, manifest_text: str) -> None:
    import pyarrow.parquet as pq

    gdf.to_parquet(path, index=False)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[b"dpmap_manifest"] = manifest_text.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def read_release(path: str | Path) -> Release:
    """Read a published release (GeoJSON, GeoParquet or CSV with its manifest)."""
    import geopandas as gpd
    import shapely

    path = Path(path)
    kind = _kind_of(path)
    if not path.is_file():
        raise DataFileError(f"release file {str(path)!r} does not exist; check the path")
    mpath = manifest_path(path)
    try:
        if kind == "geojson":
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
            embedded = obj.pop("dpmap_manifest", None) if isinstance(obj, dict) else None
            gdf = gpd.GeoDataFrame.from_features(obj["features"], crs="EPSG:4326")
        elif kind == "parquet":
            import pyarrow.parquet as pq

            gdf = gpd.read_parquet(path)
            raw = (pq.read_schema(path).metadata or {}).get(b"dpmap_manifest")
            embedded = json.loads(raw) if raw else None
        else:
            df = pd.read_csv(path, dtype={"cell": str, "category": str})
            gdf = gpd.GeoDataFrame(
                df.drop(columns="geometry"),
                geometry=shapely.from_wkt(df["geometry"].to_numpy()),
                crs="EPSG:4326",
            )
            embedded = None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseFormatError(f"{str(path)!r} is not a readable dpmap release ({exc})") from exc
    manifest = read_manifest(mpath) if (mpath.exists() or embedded is None) else embedded
    missing = {"cell", "count", "suppressed"} - set(gdf.columns)
    if missing:
        raise ReleaseFormatError(
            f"{str(path)!r} lacks the columns {sorted(missing)}; it is not a dpmap release"
        )
    unbiased = {
        c: gdf[n].astype("float64").to_numpy()
        for c, n in UNBIASED_COLUMNS.items()
        if n in gdf.columns
    }
    manifest.pop("unbiased_columns", None)
    order = [c for c in manifest.get("columns") or gdf.columns if c in gdf.columns]
    gdf = gdf[order]
    hier = manifest.get("hierarchy") or {}
    integer = not hier or bool(hier.get("integers"))
    if (manifest.get("adaptive") or {}).get("consistency"):
        integer = False  # least-squares leaf estimates of an adaptive release

    gdf = gpd.GeoDataFrame(
        _normalise_dtypes(pd.DataFrame(gdf), integer=integer), geometry="geometry", crs="EPSG:4326"
    )
    estimates = None
    if unbiased:
        estimates = pd.DataFrame({c: gdf[c].to_numpy() for c in _KEY_COLUMNS if c in gdf})
        for col, values in unbiased.items():
            estimates[col] = values
    return Release(gdf, manifest, estimates)
