"""The release pipeline: spec, design, engine, ledger, noise, estimates, table."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan, decode_keys, encode_keys
from dpmap._privacy.postprocess import (
    Estimates,
    margin_factors,
    publish,
)
from dpmap.designs import hierarchy
from dpmap.designs.privtree import DEFAULT_INTERNAL_SHARE, DEFAULT_TREE_SHARE
from dpmap.diagnostics import Diagnostics
from dpmap.engines import engine_for
from dpmap.errors import SpecError, warn_negligible_noise
from dpmap.release.cells import cell_table, estimates_frame
from dpmap.release.manifest import build_manifest
from dpmap.release.planning import adaptive_method, count_noise, make_spec, plan_for, resolve_region
from dpmap.release.result import Release
from dpmap.spec import ReleaseSpec


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
        adaptive grid instead (Qardaji et al. 2013 on H3, :mod:`dpmap.designs.adaptive_grid`): all
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
    spec = make_spec(
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
    reg = resolve_region(region, spec)
    stage = progress or (lambda _name: None)
    stage("plan")
    plan, aplan = plan_for(
        spec, reg, adaptive_method(adaptive), adaptive_from, tree_share, internal_share
    )
    warn_negligible_noise(plan)  # ε so large that the counts are essentially exact
    domain = grid.region_to_cells(reg, spec.finest) if reg is not None else None
    stage("read and bound")
    aggregates = engine_for(points, engine).bound_and_aggregate(points, spec, domain, diagnostics)
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
        noise = count_noise(spec, plan, aplan, discovery=domain is None)
        published = publish(shown or est, spec.bounds, spec.suppress_below, noise)
        integer = (not spec.hierarchical or integers) and not (
            aplan is not None and aplan.has_internal
        )
        table = cell_table(spec, cells, res_col, cat_idx, published, integer=integer)
        manifest = build_manifest(spec, plan, reg, domain, published, title, len(table), integers)
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
        estimates = estimates_frame(table, est)
        rel = Release(table, manifest, estimates)
        if reservation is not None:
            reservation.finalize(fingerprint=rel.fingerprint)
            manifest["ledger"] = {"dataset": dataset, "entry_id": reservation.entry_id}
            rel = Release(table, manifest, estimates)
    return rel


def _adaptive(
    aplan: Any, domain: np.ndarray, finest: dict[str, np.ndarray]
) -> tuple[Estimates, np.ndarray, np.ndarray, dict[str, Any]]:
    """Estimates, cells and resolutions of an adaptive release, and what the manifest's
    ``adaptive`` entry gains once noise is drawn (a grid's first resolution)."""
    from dpmap.designs.adaptive_grid import GridPlan, grid_consistent, run_grid
    from dpmap.designs.privtree import adaptive_consistent, run_adaptive

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
    from dpmap.ledger import Ledger, check_label

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
    from dpmap.ledger import Ledger

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
