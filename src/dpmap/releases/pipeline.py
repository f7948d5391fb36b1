"""The release pipeline: spec, design, engine, ledger, noise, estimates, table."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from dpmap import grid
from dpmap._privacy.noise import NoisePlan
from dpmap._privacy.postprocess import publish
from dpmap.designs import check_options, design_for
from dpmap.designs.base import Design, Measured
from dpmap.designs.privtree import DEFAULT_INTERNAL_SHARE, DEFAULT_TREE_SHARE
from dpmap.diagnostics import Diagnostics
from dpmap.engines import engine_for
from dpmap.errors import BudgetError, ClaimTakenError, SpecError, warn_negligible_noise
from dpmap.ledger import Ledger, check_label
from dpmap.parameters import checked
from dpmap.releases.cells import cell_table, estimates_frame, histogram_frame
from dpmap.releases.manifest import build_manifest
from dpmap.releases.planning import (
    SPEC_FIELDS,
    check_period_label,
    design_options,
    make_spec,
    resolve_region,
)
from dpmap.releases.result import Release

__all__ = ["release"]


@checked("release")  # an unknown keyword: SpecError with a 'did you mean'
def release(
    points: Any,
    *,
    region: Any = None,
    zones: Any = None,
    by: str | None = None,
    resolution: int | None = None,
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
    quantiles: list[float] | None = None,
    value_bands: list[float] | None = None,
    histogram_share: float = 0.5,
    people: bool = False,
    people_share: float = 0.5,
    time: str | None = None,
    periods: Any = None,
    max_periods: int | None = None,
    time_levels: dict[str, float] | None = None,
    running_totals: bool = False,
    through: Any = None,
    previous: Any = None,
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
    period: str | None = None,
    title: str | None = None,
    engine: str | None = None,
) -> Release:
    """Publish a differentially private H3 map (or zone table) of ``points``.

    Parameters
    ----------
    points
        pandas / polars / GeoPandas DataFrame, polars LazyFrame, pyspark DataFrame, or a
        .csv / .parquet path.
    region
        The public area: shapely geometry, GeoDataFrame/GeoSeries, GeoJSON mapping or path.
        Every H3 cell overlapping it is published (with noise, zeros included). ``None``:
        cells are chosen privately with OpenDP's threshold mechanism (needs ``delta > 0``).
    zones, by
        Instead of ``region``/``resolution``: public, non-overlapping zones (districts) as a
        GeoDataFrame (any CRS; ``by`` names its zone-name column), a GeoSeries (its index
        names the zones) or the path of a GeoJSON/GeoPackage/GeoParquet file. One row per
        zone, every zone noised (empty ones too); each point goes to the zone that contains
        it (a point on a shared border to the first such zone by name) and points outside
        every zone are dropped. See :mod:`dpmap.designs.zones`.
    resolution
        H3 resolution, 0..9 (not with ``zones``).
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
        Hide cells whose noisy count is below this. ``None`` (default): a map-wide
        threshold chosen so that at most about one truly empty cell per map shows by chance
        (private discovery: each cell's own 95% margin); ``False``: publish every noisy
        value (unbiased, may be negative).
    count_share
        Share of ε spent on counts when ``value`` is given (the rest goes to sums).
    quantiles, value_bands, histogram_share
        Value distributions (with ``value`` and ``bounds``; one resolution over a public
        region, flat or adaptive — one histogram per published leaf — or zones; not with
        private discovery): public probabilities in (0, 1) (e.g. ``[0.25, 0.5, 0.75]``) and
        public band edges (e.g. ``[0, 1_000, 5_000, 20_000, 50_000]``, increasing, inside the
        bounds, each an edge of the public value tree). Each row then also gets a noisy
        hierarchical histogram of its clamped values, measured with ``histogram_share`` of ε
        (counts and sums share the rest), and publishes ``q50``, ``q50_lo``, ``q50_hi`` per
        probability (an interval that covers the true quantile with probability at least 95%)
        and ``band_a_b``, ``band_a_b_moe`` per band: all post-processing of that histogram
        (:mod:`dpmap.designs.distribution`). A suppressed row hides them too.
    people, people_share
        ``people=True`` also publishes ``people`` and ``people_moe`` per row: the noisy
        number of distinct persons with at least one kept record in the row, beside the
        record ``count`` (needs ``person`` and ``max_records_per_cell > 1``; one resolution
        over a public region, or zones). Sensitivity 1 per row, at most
        ``max_cells`` × min(``max_records_per_cell``, categories) rows per person. It gets
        ``people_share`` of the ε the value histogram leaves (count and sum share the rest);
        a row is hidden by its record count, people included.
    time, periods, max_periods
        A *panel* over time: ``time`` is the date column (dates, date-times or ISO text),
        ``periods`` the PUBLIC periods (``pd.period_range("2026-01", "2026-12", freq="M")``
        or explicit edges such as ``["2026-01-01", "2026-07-01", "2027-01-01"]``; never read
        from the data: a period with nobody in it still gets its noisy rows, and records
        outside every period are dropped) and ``max_periods`` the most periods one person
        may count in. One row per (cell, period) with a ``period`` column; each person keeps
        at most ``max_periods`` periods (those whose best record has the smallest
        priority), ``max_cells`` cells in each and ``max_records_per_cell`` records per
        (cell, period). The count's L1 sensitivity is then
        ``max_periods·max_cells·max_records_per_cell`` and its L2 sensitivity
        ``√(max_periods·max_cells)·max_records_per_cell``: with Gaussian noise a year of
        months costs far less than twelve separate releases. ``rel.at("2026-03")`` is one
        period as an ordinary release; ``dpmap.series`` and ``dpmap.trend`` take the panel.
        One resolution over a region, or zones.
    time_levels
        A panel only: spend part of each statistic's budget at coarser time levels, e.g.
        ``{"Y": 0.5}`` (pandas frequency → share; the panel's own periods get the rest,
        here 0.5; ``{"Q": 0.2, "Y": 0.2}`` for quarters too). The periods must be a
        ``pd.period_range`` whose frequency nests in each level (months in quarters and
        years; weeks nest in none). Each level's vector (cells × years, …: exact sums of the
        periods, formed before the noise) is noised with its own sensitivity in the same
        composed measurement, and every level is then made consistent by least squares
        along the time tree (quarters equal the sums of their months, years of their
        quarters). The table also gets the coarse periods as rows (``period`` "2026Q1",
        "2026"; column ``time_level``), estimates are floats with exact margins, and
        ``rel.periods`` stays the panel's own periods (``rel.at("2026")`` works). With
        Laplace noise, half the budget on the year cuts the yearly total's variance to
        0.31 of the plain panel's while each month's grows 3.7-fold; a level of g periods
        gains only with a share above 2/(g + 1) (years: 0.15, quarters: ½). With Gaussian
        noise a level gains only when ``max_periods`` is below its number of periods. ``explain``
        prints the exact numbers (``docs/how-to/trends.md``). The periods' estimates are
        then correlated: the trend uses generalised least squares with their exact
        covariance. Not with ``people=True``, ``quantiles`` or ``value_bands``.
    running_totals, through, previous
        A panel released *continually* (:mod:`dpmap.designs.continual_release`):
        ``running_totals=True`` plans the binary-tree mechanism over all the periods, charges
        the ledger once for the whole horizon and publishes, per (cell, period ≤ ``through``),
        ``count`` (the period's estimate) and ``count_to_date`` (the running total), with
        ``sum``/``sum_to_date`` for a value, each with an honest 95% margin. Each person keeps
        their EARLIEST ``max_periods`` periods. ``through`` (a period label, default the last
        one) is the last period with data. ``previous`` (the release of an earlier
        ``through``, same parameters, area, ledger and dataset) is extended: its published
        nodes are kept, nothing more is charged and only the nodes completed since are
        noised. A continuation needs ``ledger=``/``dataset=`` (those that charged the
        horizon): before any noise it records there an entry of ε = 0 claiming
        "continual:<charging entry>:from:<previous through>", so a release can be extended
        only once; extending it again (or an earlier one after a later was published) is
        refused, since it would draw the same nodes twice. Continue from the latest release.
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
    period
        The period one release of a monthly cadence covers (``"2026-01"`` or a
        ``pd.Period``), stored in the manifest: ``dpmap.series``/``dpmap.trend`` line a
        sequence of such releases up by it.
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
    given = locals()  # the parameters, before anything else is bound
    spec = make_spec({name: given[name] for name in SPEC_FIELDS}, by)
    options = design_options(adaptive, adaptive_from, tree_share, internal_share, integers)
    options = dataclasses.replace(options, through=through, previous=previous, dataset=dataset)
    check_options(spec, options)
    check_period_label(period, spec)
    book = open_ledger(ledger, dataset, title, previous)  # checked before any data
    stage = progress or (lambda _name: None)
    stage("plan")
    design, continued = plan_design(spec, resolve_region(region, spec), options, book, dataset)
    warn_negligible_noise(design.noise)  # ε so large that the counts are essentially exact
    stage("read and bound")
    polygons = polygons_ahead(design)  # drawn on a thread while the engine reads the data
    engine_module = engine_for(points, engine)
    aggregates = engine_module.bound_and_aggregate(points, spec, design.domain, diagnostics)
    stage("noise")
    with reserve_or_refuse(book, dataset, design, title, continued) as reservation:
        if reservation is not None:
            reservation.mark_noise_drawn()
        measured = design.measure(aggregates)
        del aggregates
        stage("table")
        table, manifest, estimates = _publish(design, measured, title, config, period, polygons)
        histogram = histogram_of(design, measured, table)
        rel = Release(table, manifest, estimates, histogram=histogram)
        if reservation is not None:
            reservation.finalize(fingerprint=rel.fingerprint)
            manifest["ledger"] = ledger_record(dataset, reservation.entry_id, continued)
            rel = Release(table, manifest, estimates, histogram=histogram)
    return rel


#: the most public cells whose polygons are drawn while the data is read (~22 MB per 46 k
#: cells, held beside the engine's rows; a larger set is drawn afterwards, as the table is)
POLYGONS_AHEAD_MAX = 250_000


def polygons_ahead(design: Design) -> grid.DomainPolygons | None:
    """The polygons of the public cells, started on a thread (None: a zone set, which has
    its own polygons, cells chosen privately, or more than :data:`POLYGONS_AHEAD_MAX` cells)."""
    domain = design.domain
    if domain is None or design.spec.zones is not None or len(domain) > POLYGONS_AHEAD_MAX:
        return None
    return grid.DomainPolygons(domain)


def _publish(
    design: Design,
    measured: Measured,
    title: str | None,
    config: dict[str, Any] | None,
    period: Any = None,
    polygons: grid.DomainPolygons | None = None,
) -> tuple[Any, dict[str, Any], Any]:
    """Post-processing of the noisy estimates: the cell table (suppression applied), the
    manifest and the unbiased estimates."""
    spec = design.spec
    shown = measured.shown or measured.estimates
    published = publish(shown, spec.bounds, spec.suppress_below, design.count_noise())
    table = cell_table(spec, measured, published, integer=design.integer, polygons=polygons)
    manifest = build_manifest(design, measured, published, title, len(table), config)
    if period is not None:
        manifest["period"] = str(period)
    zone_column = measured.zones.by if measured.zones is not None else None
    return table, manifest, estimates_frame(table, measured.estimates, zone_column)


def histogram_of(design: Design, measured: Measured, table: Any) -> Any:
    """The noisy value histogram of every row, to keep on the Release (None without one)."""
    if measured.histogram is None:
        return None
    zone_column = measured.zones.by if measured.zones is not None else None
    variance = design.noise.statistics["hist"].variance
    return histogram_frame(design.spec, table, measured, variance, zone_column)


def ledger_record(dataset: Any, entry_id: int, continued: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``ledger``: the entry that charged the release; for a continued one,
    the entry that charged the horizon and (``claim_entry_id``) the continuation's claim."""
    if continued is None:
        return {"dataset": dataset, "entry_id": entry_id}
    return {"dataset": dataset, "entry_id": continued["charged_in"], "claim_entry_id": entry_id}


def open_ledger(ledger: Any, dataset: str | None, title: str | None, previous: Any = None) -> Any:
    """The release's ledger, opened and checked before any data is read or noise drawn.

    (A continued release, ``previous=``, is not charged again: its manifest names the
    ledger entry of the release that charged the whole horizon. It needs that ledger, where
    it records its claim: without one it is refused here.)

    A release never creates a ledger or a dataset: a missing ledger file, a dataset not
    in it (with a "did you mean") or an unusable title (the entry's label) is an error here.
    """
    if (ledger is None) != (dataset is None):
        raise SpecError(
            "ledger and dataset go together; pass both (ledger=Ledger(path), dataset='name') or neither"
        )
    if ledger is None and previous is not None:
        raise SpecError(
            "previous= continues a continual release, which is recorded in the ledger that "
            "charged its horizon (so that no release is extended twice): pass the same "
            "ledger= and dataset= as the first release"
        )
    if ledger is None:
        return None
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


def plan_design(
    spec: Any, reg: Any, options: Any, book: Any, dataset: str | None
) -> tuple[Design, dict[str, Any] | None]:
    """The release's design and, for a continued release, its claim (checked against the
    ledger before any data is read; see :func:`continuation_of`)."""
    design = design_for(spec, reg, options)
    return design, continuation_of(design, book, dataset)


def continuation_of(design: Design, book: Any, dataset: str | None) -> dict[str, Any] | None:
    """A continued release (``previous=``): its claim, checked against the ledger before any
    data is read: the entry that charged the horizon must be in this ledger, of this
    dataset, and count. ``None`` for any other release."""
    method = getattr(design, "continuation", None)
    continued = method() if callable(method) else None
    if continued is None:
        return None
    entry_id = continued["charged_in"]
    try:
        charged = book.entry(entry_id)
    except BudgetError:
        charged = None
    if charged is None or charged.dataset != dataset or not charged.counts:
        raise BudgetError(
            f"previous= was charged in ledger entry {entry_id} of dataset "
            f"{continued['dataset']!r}, which ledger {book.location} does not hold as a "
            "charged entry of dataset "
            f"{dataset!r}; pass the ledger and dataset of the release that started the horizon"
        )
    return continued


@contextlib.contextmanager
def reserve_or_refuse(
    book: Any, dataset: str | None, design: Design, title: str | None, continued: Any
) -> Any:
    """The release's reservation: charged for a fresh release, an ε = 0 claim for a
    continued one (refused, before any noise, if that release was already extended)."""
    if continued is None:
        with reserve(book, dataset, design.noise, title) as reservation:
            yield reservation
        return
    try:
        reservation = reserve(book, dataset, design.noise, title, continued)
    except ClaimTakenError as err:
        raise already_extended(book, dataset, design, continued, err) from None
    with reservation:
        yield reservation


def already_extended(
    book: Ledger, dataset: Any, design: Any, continued: dict[str, Any], err: ClaimTakenError
) -> ClaimTakenError:
    """The one-line refusal of a second continuation of the same release."""
    prefix = f"continual:{continued['charged_in']}:from:"
    claims = [
        e.details for e in book.history(dataset) if e.counts and (e.claim or "").startswith(prefix)
    ]
    refusal = ClaimTakenError(
        f"periods after {continued['from']} of this continual release were already published "
        f"(ledger entry {err.entry_id}); continue from the latest release "
        f"(through={design.latest_through(claims)}), not from an earlier one. Nothing was "
        "recorded and no noise was drawn"
    )
    refusal.claim, refusal.entry_id = err.claim, err.entry_id
    return refusal


def reserve(
    ledger: Any,
    dataset: str | None,
    plan: NoisePlan,
    title: str | None = None,
    continued: dict[str, Any] | None = None,
) -> Any:
    if ledger is None:
        return contextlib.nullcontext()
    if not isinstance(ledger, Ledger):
        ledger = Ledger(ledger)  # opens an existing ledger; never creates one
    spec = plan.spec
    if continued is not None:  # nothing more is charged: the entry records the claim
        return ledger.reserve(
            dataset,
            epsilon=0,
            accounting="pure-dp",
            mechanism=str(spec.mechanism),
            statistics=list(spec.statistics),
            resolution=None if spec.zones is not None else spec.finest,
            details={"measure": "continual continuation", **continued},
            label=title,
            claim=continued["claim"],
        )
    return ledger.reserve(
        dataset,
        epsilon=plan.epsilon,
        delta=plan.delta,
        rho=plan.rho,
        accounting=plan.accounting,
        mechanism=str(spec.mechanism),
        statistics=list(spec.statistics),
        resolution=None if spec.zones is not None else spec.finest,
        details={
            "measure": plan.measure,
            "discovery": plan.discovery,
            "levels": [] if spec.zones else list(spec.levels),
        },
        label=title,  # the release's title: which release this entry was
    )
