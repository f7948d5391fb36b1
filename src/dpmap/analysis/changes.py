"""Comparing two releases (or two tables of zones): changes with their margins."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap._privacy.postprocess import Z95
from dpmap.analysis.totals import STATS, is_release, levels_of, panel_periods
from dpmap.analysis.zones import RESULT_COLUMNS
from dpmap.designs import design_of
from dpmap.designs.base import manifest_noise_variance
from dpmap.designs.zones import zone_column
from dpmap.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from dpmap.releases import Release


def compare(
    a: Any, b: Any = None, *, by: str | None = None, periods: tuple[Any, Any] | None = None
) -> Any:
    """Change from ``a`` to ``b``, with margins, cell by cell or polygon by polygon.

    Two :class:`~dpmap.Release` objects
        Releases of the same public region, resolution(s) and categories (e.g. two
        months). Returns a GeoDataFrame with one row per cell (× level × category):
        ``cell``, ``resolution``, [``category``], ``count_a``, ``count_b``, ``change`` (=
        b − a), ``change_moe`` = 1.96·√(var_a + var_b) (independent releases, normal
        approximation), ``significant`` (|change| > change_moe), and the same for sums
        (``sum_a``, ``sum_b``, ``sum_change``, ``sum_change_moe``, ``sum_significant``)
        when both releases have them, and the cell's ``geometry``. The values are the
        unbiased noisy estimates (suppressed rows included; they may be negative).
        With no real change about 5% of cells are flagged (a little more, about 6%, for
        Laplace noise, whose tails are heavier than the normal's), so expect false
        alarms on a large map.
    Two roll-ups (results of :func:`aggregate_to`)
        Matched on the ``by`` column (``by=`` or the one :func:`aggregate_to` recorded)
        and ``category``: ``count_a``, ``count_b``, ``change``, ``change_moe`` =
        √(moe_a² + moe_b²), ``significant`` (and the same for sums). These margins are
        the noise-only ``count_moe`` of the roll-ups: the error of apportioning cells cut
        by a border is not included (it cancels only as far as the records in those cells
        are spread the same way in both releases).

    One panel and ``periods=(p, q)``
        The change from period ``p`` to period ``q`` of a panel release (``time=``): the
        same as comparing ``panel.at(p)`` with ``panel.at(q)``. Both periods come from one
        measurement; their noise is independent (each (cell, period) is noised once), so
        the margins are as above. A panel with ``time_levels``: its periods' estimates are
        correlated by the consistency step, so ``change_moe`` is 1.96·√(dᵀΣd) with Σ the
        periods' exact covariance (either period may be a coarse one, e.g. "2026Q1").

    Raises :class:`SpecError` for releases of different regions, resolutions or
    categories, for releases whose cells were chosen privately (they differ between
    releases), and when a file without unbiased estimates hides cells.

    Privacy
    -------
    Post-processing of noisy values: no data read, no budget spent. Each release has
    its own ε; publishing both spends both (the ledger records that).
    """
    if periods is not None or (is_release(a) and panel_periods(a.manifest) is not None):
        panel = a
        a, b = _panel_periods(a, b, periods)
        if by is None and periods is not None:
            m, first, second = panel.manifest, str(periods[0]), str(periods[1])
            shared = design_of(m).period_covariance(m)
            if shared is not None:  # time levels or a continual tree: periods correlate
                variance = shared.change_variance(first, second)
                return _with_change_variance(_compare_releases(a, b), variance)
    if is_release(a) and is_release(b):
        if by is not None:
            raise SpecError("by= applies to comparing roll-ups, not releases; drop by=")
        return _compare_releases(a, b)
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return _compare_tables(a, b, by)
    raise SpecError(
        f"compare takes two Releases or two roll-ups (results of aggregate_to), got "
        f"{type(a).__name__} and {type(b).__name__}"
    )


def _with_change_variance(table: Any, variance: dict[str, float]) -> Any:
    """A comparison of two periods of a panel whose periods share noise, its margins from the exact
    variance of the change (the periods' covariance included; the same for every row)."""
    for s, v in variance.items():
        pre = "" if s == "count" else f"{s}_"
        if f"{pre}change" in table.columns:
            table[f"{pre}change_moe"] = Z95 * math.sqrt(v)
            change = table[f"{pre}change"].to_numpy(np.float64)
            table[f"{pre}significant"] = np.abs(change) > Z95 * math.sqrt(v)
    return table


def _panel_periods(panel: Any, b: Any, periods: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """The two periods of a panel that ``compare(panel, periods=(p, q))`` compares."""
    labels = panel_periods(panel.manifest) if is_release(panel) else None
    if labels is None:
        raise SpecError(
            "periods= compares two periods of one panel release (made with time= and periods=); "
            "pass compare(panel, periods=('2026-01', '2026-12')), or compare two releases"
        )
    if b is not None:
        raise SpecError(
            "compare(panel, other) mixes a panel with another release; pass "
            f"compare(panel, periods=({labels[0]!r}, {labels[-1]!r})) or compare(panel.at(p), other)"
        )
    if periods is None or isinstance(periods, str) or len(periods) != 2:
        raise SpecError(
            f"comparing a panel needs two of its periods, got periods={periods!r}; pass "
            f"periods=({labels[0]!r}, {labels[-1]!r})"
        )
    return panel.at(periods[0]), panel.at(periods[1])


def _release_rows(rel: Release, label: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Every row's key, unbiased value and variance (published values when that is all there is)."""
    m, table, est = rel.manifest, rel.cells, rel.estimates
    zone = zone_column(m)
    place = [zone] if zone is not None else ["cell", "resolution"]
    keys = [c for c in (*place, "category") if c in table.columns]
    stats = tuple(s for s in STATS if s in table.columns)
    if est is not None:
        return est[keys + [c for s in stats for c in (s, f"{s}_var")]].copy(), stats
    supp = table["suppressed"].to_numpy(dtype=bool)
    if supp.any():
        raise SpecError(
            f"release {label} hides {int(supp.sum())} of its {len(table)} cell rows (suppressed) and "
            "was read from a file without the unbiased estimates, so a comparison would be biased; "
            "ask the publisher for the file written with to_file(..., include_unbiased=True), or for "
            "a release made with suppress_below=False"
        )
    out = pd.DataFrame({k: table[k].to_numpy() for k in keys})
    hierarchical = bool(m.get("hierarchy"))
    for s in stats:
        out[s] = pd.array(table[s], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        if hierarchical:
            out[f"{s}_var"] = (table[f"{s}_moe"].to_numpy(dtype=np.float64) / Z95) ** 2
        else:
            out[f"{s}_var"] = manifest_noise_variance(m["statistics"][s])
    return out, stats


def _compare_releases(a: Release, b: Release) -> Any:

    ma, mb = a.manifest, b.manifest
    zone = _same_zones(ma, mb)
    if zone is not None:
        return _merge_releases(a, b, [zone])
    if levels_of(ma) != levels_of(mb):
        raise SpecError(
            f"the releases are at different resolutions ({ma['resolution']} and {mb['resolution']}); "
            "compare releases made at the same resolution (or roll both up to the same polygons "
            "with aggregate_to and compare those)"
        )
    if bool(ma.get("adaptive")) or bool(mb.get("adaptive")):
        raise SpecError(
            "adaptive releases have data-dependent cells that differ between releases, so they "
            "cannot be compared cell by cell; roll both up to the same polygons with aggregate_to "
            "and compare those"
        )
    ra = (ma.get("cell_selection") or {}).get("region")
    rb = (mb.get("cell_selection") or {}).get("region")
    if ra is None or rb is None:
        raise SpecError(
            "a release whose cells were chosen privately (no public region) publishes different "
            "cells each time, so it cannot be compared cell by cell; compare releases made over "
            "the same public region (region=...)"
        )
    if ra.get("fingerprint") != rb.get("fingerprint"):
        raise SpecError(
            f"the releases cover different regions ({ra.get('name') or ra.get('fingerprint')} and "
            f"{rb.get('name') or rb.get('fingerprint')}); compare releases of the same public "
            "region, or roll both up to the same polygons with aggregate_to and compare those"
        )
    if (ma.get("categories") or None) != (mb.get("categories") or None):
        raise SpecError(
            f"the releases have different categories ({ma.get('categories')} and "
            f"{mb.get('categories')}); compare releases with the same public category list"
        )
    return _merge_releases(a, b, ["cell", "resolution"])


def _same_zones(ma: dict[str, Any], mb: dict[str, Any]) -> str | None:
    """The name column when both releases are of the same public zones (None: both of H3
    cells); a zone release against a cell release, or different zones, is refused."""
    za, zb = zone_column(ma), zone_column(mb)
    if za is None and zb is None:
        return None
    if za is None or zb is None:
        raise SpecError(
            "one release is of zones and the other of H3 cells; roll the cells up to the zones "
            "with aggregate_to and compare two zone tables, or compare two zone releases"
        )
    fa = (ma.get("cell_selection") or {}).get("fingerprint")
    fb = (mb.get("cell_selection") or {}).get("fingerprint")
    if za != zb or fa != fb:
        raise SpecError(
            f"the zone releases use different zones ({za!r} {fa} and {zb!r} {fb}); compare "
            "releases of the same zones (same names and boundaries)"
        )
    if (ma.get("categories") or None) != (mb.get("categories") or None):
        raise SpecError(
            f"the releases have different categories ({ma.get('categories')} and "
            f"{mb.get('categories')}); compare releases with the same public category list"
        )
    return za


def _merge_releases(a: Release, b: Release, place: list[str]) -> Any:
    """The row-by-row changes of two releases of the same cells (or zones) ``place``."""
    import geopandas as gpd

    ta, stats_a = _release_rows(a, "a")
    tb, stats_b = _release_rows(b, "b")
    keys = [c for c in (*place, "category") if c in ta.columns]
    stats = tuple(s for s in stats_a if s in stats_b)
    merged = ta.merge(tb, on=keys, how="left", suffixes=("_a", "_b"), indicator=True, sort=False)
    if (merged["_merge"] != "both").any() or len(tb) != len(ta):
        raise SpecError(
            "the releases do not have the same cells although their region and resolution match; "
            "they were made by incompatible dpmap versions: compare roll-ups (aggregate_to) instead"
        )
    data = _change_columns(
        merged,
        keys,
        stats,
        lambda s: Z95 * np.sqrt(_col(merged, f"{s}_var_a") + _col(merged, f"{s}_var_b")),
    )
    geom_of = a.cells.drop_duplicates(place[0]).set_index(place[0]).geometry
    geometry = geom_of.reindex(merged[place[0]]).to_numpy()
    return gpd.GeoDataFrame(data, geometry=geometry, crs="EPSG:4326")


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(np.float64)


def _change_columns(
    merged: pd.DataFrame,
    keys: list[str],
    stats: Sequence[str],
    margin: Callable[[str], np.ndarray],
) -> dict[str, Any]:
    """The key columns, then per statistic: a, b, change (b − a), its 95% margin
    (``margin(stat)``) and whether the change exceeds it (NaN margins: not significant)."""
    data: dict[str, Any] = {k: merged[k].to_numpy() for k in keys}
    for s in stats:
        pre = "" if s == "count" else f"{s}_"
        va, vb = _col(merged, f"{s}_a"), _col(merged, f"{s}_b")
        change, moe = vb - va, margin(s)
        data[f"{s}_a"], data[f"{s}_b"] = va, vb
        data[f"{pre}change"], data[f"{pre}change_moe"] = change, moe
        with np.errstate(invalid="ignore"):
            data[f"{pre}significant"] = np.abs(change) > moe
    return data


def _compare_tables(a: pd.DataFrame, b: pd.DataFrame, by: str | None) -> Any:
    import geopandas as gpd

    for label, t in (("a", a), ("b", b)):
        if not {"count", "count_moe"} <= set(t.columns):
            raise SpecError(
                f"table {label} has no count/count_moe columns; compare takes two results of "
                "aggregate_to (or two Releases)"
            )
    if by is None:
        by = a.attrs.get("dpmap_by") or b.attrs.get("dpmap_by")
    if by is None:
        geom = a.geometry.name if isinstance(a, gpd.GeoDataFrame) else None
        candidates = [c for c in a.columns if c not in RESULT_COLUMNS and c != geom]
        if len(candidates) != 1:
            raise SpecError(
                f"cannot tell which column names the polygons ({candidates}); pass by=<column>"
            )
        by = candidates[0]
    for label, t in (("a", a), ("b", b)):
        if by not in t.columns:
            raise SpecError(
                f"table {label} has no column {by!r}; pass by=<the polygons' key column>"
            )
    if ("category" in a.columns) != ("category" in b.columns):
        raise SpecError(
            "one roll-up has a category column and the other does not; roll up releases with the same categories"
        )
    keys = [by] + (["category"] if "category" in a.columns else [])
    for label, t in (("a", a), ("b", b)):
        if t.duplicated(keys).any():
            raise SpecError(
                f"table {label} repeats keys {keys}; each polygon (× category) must appear once"
            )
    stats = [
        s for s in STATS if {s, f"{s}_moe"} <= set(a.columns) and {s, f"{s}_moe"} <= set(b.columns)
    ]
    cols = keys + [c for s in stats for c in (s, f"{s}_moe")]
    merged = pd.DataFrame(a[cols]).merge(
        pd.DataFrame(b[cols]),
        on=keys,
        how="left",
        suffixes=("_a", "_b"),
        indicator=True,
        sort=False,
    )
    if (merged["_merge"] != "both").any() or len(b) != len(a):
        only_a = merged.loc[merged["_merge"] != "both", by]
        only_b = pd.Index(b[by]).difference(pd.Index(a[by]))
        missing = only_a.iloc[0] if len(only_a) else (only_b[0] if len(only_b) else "?")
        raise SpecError(
            f"the roll-ups are over different polygons (e.g. {missing!r} is in only one); roll both "
            "releases up to the same polygons"
        )
    data = _change_columns(
        merged,
        keys,
        stats,
        lambda s: np.sqrt(_col(merged, f"{s}_moe_a") ** 2 + _col(merged, f"{s}_moe_b") ** 2),
    )
    if isinstance(a, gpd.GeoDataFrame):
        geom = a.set_index(keys).geometry.reindex(pd.MultiIndex.from_frame(merged[keys])).to_numpy()
        out = gpd.GeoDataFrame(data, geometry=geom, crs=a.crs)
    else:
        out = pd.DataFrame(data)
    out.attrs["dpmap_by"] = by
    return out
