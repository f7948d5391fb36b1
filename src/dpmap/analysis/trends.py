"""Series and trends over periods: a sequence of releases of one design, lined up by period.

Everything here is post-processing of published releases: no data is read and no budget is
spent. The releases are the periods (one release per month, say, each charged to the same
ledger entry); their noise is independent across releases.

Series
    For each release, the rows asked for: every cell (the releases must publish the same
    cells) or public zones (``zones=``, ``by=``; each release's cells added up with the
    area-apportioned weights of :func:`dpmap.aggregate_to`), with the unbiased estimates and
    their exact noise variances (:mod:`dpmap.analysis.totals`).

Trend
    Per row (cell or zone, × category): the slope of the weighted least-squares line through
    the period estimates ŷ_t at times t (0, 1, …, or the periods' own spacing), weights
    1/Var(ŷ_t): β̂ = Σ w_t (t − t̄)ŷ_t / Σ w_t (t − t̄)², Var β̂ = 1 / Σ w_t (t − t̄)², exact for
    the independent noise of separate releases. β̂ is unbiased for the slope of the same
    line through the **true** values (the estimand: whether the published quantity rose or
    fell over the periods, not a model of a process behind it); its margin covers the noise
    only. Zones: the true values are the area-apportioned ones (points spread evenly in a
    cell a border splits), as in :func:`dpmap.aggregate_to`.

    ``slope_moe``: the 95% margin, 1.96·sd for Gaussian noise and ln(20)/√2·sd = 2.118·sd
    for (discrete) Laplace noise (the two-sided 95% point of one Laplace draw, whose tails
    are the heaviest of the weighted sums of Laplace draws that a slope is).
    ``p_value``: two-sided, of "no slope", from the normal tail for Gaussian noise, and for
    Laplace noise the larger of the normal and the Laplace tail (each is the heavier one on
    part of the range; below 0.09 it is the Laplace tail, so p-values that can be declared
    significant are conservative).
    ``significant``: the Benjamini–Hochberg (1995) procedure at false-discovery rate ``fdr``
    (default 5%) over every row tested: among the rows flagged, the expected share whose
    true slope is zero is at most ``fdr`` (the p-values of separate rows are independent —
    each row's noise is its own — or, for the correlated rows of a hierarchical release,
    positively dependent, where the procedure still holds). Testing every cell at 5% instead
    would flag 5% of flat cells: a map of "significant rises" that is mostly noise.
    A panel with ``time_levels`` (:mod:`dpmap.designs.time_levels`): its periods' estimates
    are correlated by the least-squares step along the time tree, so the slope is the
    generalised least-squares one (:func:`gls_slope`) with their exact covariance, rebuilt
    from the manifest (a zone roll-up's: the cells' covariance times Σ w²); the table's
    ``attrs["method"]`` says which was used.
    ``relative_change``: the fitted change over the whole span, β̂·(t_last − t_first), divided
    by the mean of the period estimates (NaN when that mean is not positive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap._privacy.postprocess import Z95, Z95_LAPLACE
from dpmap.analysis.totals import Rows, is_release, panel_periods, rows_of, weighted_totals
from dpmap.analysis.zones import overlay, zone_polygons
from dpmap.designs import design_of
from dpmap.designs.base import manifest_noise_variance
from dpmap.designs.zones import zone_column
from dpmap.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from dpmap.releases import Release

__all__ = [
    "FDR",
    "bh_significant",
    "gls_slope",
    "line_up",
    "margin_z",
    "panel_slope",
    "panel_views",
    "series",
    "trend",
    "two_sided_p",
    "wls_slope",
]

#: the default false-discovery rate of ``significant``
FDR = 0.05

#: what the trend table's ``method`` attribute says
METHOD = (
    "{method}; 95% margin {z}; p-values {p}; significant: Benjamini–Hochberg at "
    "false-discovery rate {fdr:g} over {m} rows"
)


@dataclass(frozen=True)
class Panel:
    """Period estimates lined up: (rows × periods) values and variances of one statistic."""

    keys: pd.DataFrame  # one row per series: the key column(s), [category]
    times: np.ndarray  # (periods,) float: each period's position
    labels: list[str]  # (periods,) the periods' names
    values: dict[str, np.ndarray]  # statistic -> (series, periods)
    variances: dict[str, np.ndarray]  # statistic -> (series, periods)
    laplace: bool  # the count noise is (discrete) Laplace
    geometry: np.ndarray | None  # one polygon per series
    #: statistic -> the T × T noise covariance of one row's periods (a panel with time
    #: levels, :func:`dpmap.designs.time_levels.period_covariance`); None: independent
    covariance: dict[str, np.ndarray] | None = None
    #: per period, statistic -> (variance, exact 95% margin) of ONE measured value of that
    #: period's release (OpenDP's accuracy for its noise): a row with exactly that variance
    #: is one noisy value and gets the exact margin instead of 1.96·sd
    single: list[dict[str, tuple[float, float]]] | None = None


def panel_views(releases: Any, periods: Sequence[Any] | None) -> tuple[Any, Any]:
    """A panel release as its periods (one Release each, ``panel.at``), with its public
    periods (pandas Periods when they have a frequency, so that their spacing counts). A
    list holding one panel is the panel."""
    if not is_release(releases) and isinstance(releases, (list, tuple)) and len(releases) == 1:
        only = releases[0]
        if is_release(only) and panel_periods(only.manifest) is not None:
            releases = only
    if not is_release(releases):
        return releases, periods
    m = releases.manifest
    labels = panel_periods(m)
    if labels is None:
        return releases, periods
    if periods is None:
        freq = ((m.get("parameters") or {}).get("periods") or {}).get("frequency")
        periods = [pd.Period(x, freq=freq) for x in labels] if freq else labels
    return [releases.at(x) for x in labels], periods


def _check_sequence(releases: Any, minimum: int = 2) -> list[Release]:
    if is_release(releases):
        raise SpecError(
            "series and trends need several releases (one per period), got one release; pass "
            "a list, e.g. dpmap.trend([rel_jan, rel_feb, ...])"
        )
    rels = list(releases)
    if len(rels) < minimum:
        raise SpecError(
            f"series and trends need at least two releases (periods), got {len(rels)}; pass "
            "one release per period, oldest first"
        )
    for i, r in enumerate(rels):
        if not is_release(r):
            raise SpecError(
                f"item {i} of the releases is a {type(r).__name__}, not a dpmap Release; "
                "read files with dpmap.read_release(path) first"
            )
    first = _shape(rels[0].manifest)
    for i, r in enumerate(rels[1:], start=1):
        other = _shape(r.manifest)
        for what, a in first.items():
            if other[what] != a:
                raise SpecError(
                    f"release {i} has {what} {other[what]!r} but release 0 has {a!r}; a series "
                    "lines up releases of one design, resolution, categories and statistics — "
                    "release every period the same way"
                )
    return rels


def _shape(m: dict[str, Any]) -> dict[str, Any]:
    """What must agree between the periods of one series."""
    bounds = m.get("contribution_bounds") or {}
    return {
        "design": m.get("design"),
        "resolution": m.get("resolution"),
        "categories": m.get("categories"),
        "statistics": sorted(m.get("statistics") or {}),
        "value": bounds.get("value"),
        "zones": (m.get("cell_selection") or {}).get("fingerprint") if zone_column(m) else None,
    }


def _periods(rels: list[Release], periods: Sequence[Any] | None) -> tuple[np.ndarray, list[str]]:
    """(positions, labels) of the periods: 0, 1, … unless pandas Periods give the spacing."""
    n = len(rels)
    if periods is None:
        given = [r.manifest.get("period") for r in rels]
        periods = given if all(p is not None for p in given) else list(range(n))
    periods = list(periods)
    if len(periods) != n:
        raise SpecError(
            f"periods lists {len(periods)} periods for {n} releases; give one period per "
            "release, in the releases' order"
        )
    labels = [str(p) for p in periods]
    if len(set(labels)) != n:
        dup = next(lab for lab in labels if labels.count(lab) > 1)
        raise SpecError(f"period {dup!r} appears twice; give each release its own period")
    if all(isinstance(p, pd.Period) for p in periods):
        freqs = {p.freqstr for p in periods}
        if len(freqs) > 1:
            raise SpecError(
                f"the periods mix frequencies {sorted(freqs)}; use periods of one frequency"
            )
        times = np.array([(p - periods[0]).n for p in periods], dtype=np.float64)
    else:
        times = np.arange(n, dtype=np.float64)
    if np.any(np.diff(times) <= 0):
        raise SpecError(
            f"the periods are not in order ({labels[0]} … {labels[-1]}); pass the releases "
            "oldest first with their periods in the same order"
        )
    return times, labels


def _rows_per_period(
    rels: list[Release], zones: Any, by: str | None, resolution: Any
) -> tuple[pd.DataFrame, list[dict[str, tuple[np.ndarray, np.ndarray]]], np.ndarray | None]:
    """Per release: statistic -> (values, variances) as (series,) arrays, in one row order."""
    out = []
    keys: pd.DataFrame | None = None
    geometry = None
    polys = names = name = None
    if zones is not None:
        polys, names, name = zone_polygons(zones, by)
    zone_name = zone_column(rels[0].manifest)
    if zone_name is not None:
        if zones is not None:
            raise SpecError(
                "these releases are already one row per zone, so zones= does not apply; drop "
                "zones= (and by=) to follow their own zones"
            )
        return _zone_release_rows(rels, zone_name)
    first_cells = None
    for i, rel in enumerate(rels):
        rows = rows_of(rel, resolution)
        if rows.hidden.any():
            raise SpecError(
                f"release {i} hides {int(rows.hidden.sum())} suppressed rows and has no "
                "unbiased estimates (read from a file written without them), so its totals "
                "would be biased; use the file written with to_file(..., include_unbiased=True)"
            )
        if polys is None:
            if first_cells is None:
                first_cells = rows.cells
            elif len(rows.cells) != len(first_cells) or (rows.cells != first_cells).any():
                raise SpecError(
                    f"release {i} publishes other cells than release 0, so its cells cannot be "
                    "lined up; pass zones= (and by=) to follow zones instead of cells"
                )
            stats = {s: (rows.values[s], rows.variances[s]) for s in rows.stats}
            if keys is None:
                keys, geometry = _keys(rows, "cell", rows.cells), rows.geometry
        else:
            assert names is not None and name is not None
            stats = _zone_totals(rows, polys, len(names))
            if keys is None:
                keys, geometry = _keys(rows, name, names.to_numpy()), polys
        out.append({s: (v.reshape(-1), var.reshape(-1)) for s, (v, var) in stats.items()})
    assert keys is not None
    return keys, out, geometry


def _zone_release_rows(
    rels: list[Release], name: str
) -> tuple[pd.DataFrame, list[dict[str, tuple[np.ndarray, np.ndarray]]], np.ndarray]:
    """The rows of zone releases (one per zone, same zones in every release: checked by the
    zones' fingerprint): unbiased estimates and their variances."""
    out = []
    for i, rel in enumerate(rels):
        m, table, est = rel.manifest, rel.cells, rel.estimates
        stats = [s for s in ("count", "sum") if s in table.columns]
        if est is None and table["suppressed"].to_numpy(dtype=bool).any():
            raise SpecError(
                f"release {i} hides suppressed zones and has no unbiased estimates (read from a "
                "file written without them), so its series would be biased; use the file "
                "written with to_file(..., include_unbiased=True)"
            )
        src = est if est is not None else table
        cols = [name, "category"] if "category" in table.columns else [name]
        order = _index(src, cols).get_indexer(_index(table, cols))
        if (order < 0).any():  # pragma: no cover - estimates are built from the same rows
            raise SpecError(f"release {i}'s estimates do not match its rows; read it again")
        per = {}
        for s in stats:
            v = pd.array(src[s], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            if est is not None:
                var = est[f"{s}_var"].to_numpy(dtype=np.float64)
            else:
                var = np.full(len(src), manifest_noise_variance(m["statistics"][s]))
            per[s] = (v[order], var[order])
        out.append(per)
    table = rels[0].cells
    cols = [name, "category"] if "category" in table.columns else [name]
    keys = pd.DataFrame({c: table[c].to_numpy(dtype=object) for c in cols})
    return keys, out, np.asarray(table.geometry.to_numpy(), dtype=object)


def _index(frame: pd.DataFrame, cols: list[str]) -> pd.Index:
    if len(cols) == 1:
        return pd.Index(frame[cols[0]].astype(object))
    return pd.MultiIndex.from_frame(frame[cols].astype(str))


def _keys(rows: Rows, name: str, values: np.ndarray) -> pd.DataFrame:
    ncat = rows.ncat
    data: dict[str, Any] = {name: np.repeat(np.asarray(values, dtype=object), ncat)}
    if rows.categories is not None:
        data["category"] = np.tile(np.asarray(rows.categories, dtype=object), len(values))
    return pd.DataFrame(data)


def _zone_totals(
    rows: Rows, polys: np.ndarray, npoly: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each statistic added up per zone (area-apportioned), NaN where no cell touches it."""
    if len(rows.cells):
        cell, group, weight, _area = overlay(rows.geometry, polys)
    else:  # pragma: no cover - a release always has cells
        cell = group = np.zeros(0, dtype=np.int64)
        weight = np.zeros(0)
    empty = np.bincount(group, minlength=npoly) == 0
    out = {}
    for s in rows.stats:
        est, var = weighted_totals(rows, s, cell, group, weight, npoly)
        est[empty] = np.nan
        var[empty] = np.nan
        out[s] = (est, var)
    return out


def _period_covariance(views: Any) -> dict[str, np.ndarray] | None:
    """The noise covariance across periods of one row of a panel whose periods share noise
    (time levels: least squares along time; a continual release: shared tree nodes), from
    its views' manifests; None when the periods' noise is independent."""
    if not isinstance(views, list) or not views or not is_release(views[0]):
        return None
    m = views[0].manifest
    if not isinstance(m.get("panel"), dict):
        return None
    labels = [str(x) for x in m["panel"]["periods"]]
    whole = {**m, "periods": labels}
    shared = design_of(whole).period_covariance(whole)
    if shared is None:
        return None
    cov = shared.covariance
    manifests = [v.manifest for v in views]
    if any(
        (x.get("panel") or {}).get("fingerprint") != m["panel"]["fingerprint"] for x in manifests
    ):
        raise SpecError(
            "the releases mix periods of different panels whose periods share noise; pass the "
            "periods of one panel (or the panel itself)"
        )
    passed = [str(x.get("period")) for x in manifests]
    if not set(passed) <= set(labels):
        raise SpecError(
            f"a trend runs over a panel's own periods ({labels[0]} … {labels[-1]}), got "
            f"{[p for p in passed if p not in labels][:3]}; pass the panel's periods"
        )
    idx = [labels.index(x) for x in passed]  # the periods passed, in their order
    return {s: c[np.ix_(idx, idx)] for s, c in cov.items()}


def _panel(
    releases: Any, zones: Any, by: str | None, periods: Sequence[Any] | None, resolution: Any
) -> Panel:
    releases, periods = panel_views(releases, periods)
    covariance = _period_covariance(releases)
    rels = _check_sequence(releases)
    times, labels = _periods(rels, periods)
    keys, per, geometry = _rows_per_period(rels, zones, by, resolution)
    stats = list(per[0])
    values = {s: np.column_stack([p[s][0] for p in per]) for s in stats}
    variances = {s: np.column_stack([p[s][1] for p in per]) for s in stats}
    entry = rels[0].manifest["statistics"]["count"]
    laplace = "laplace" in str(entry.get("distribution", "")).lower()
    single = [_single_value_margins(r.manifest, stats) for r in rels]
    return Panel(keys, times, labels, values, variances, laplace, geometry, covariance, single)


def _single_value_margins(m: dict[str, Any], stats: list[str]) -> dict[str, tuple[float, float]]:
    """Statistic -> (noise variance, exact 95% margin) of one measured value of a release."""
    out = {}
    for s in stats:
        entry = (m.get("statistics") or {}).get(s)
        if entry and entry.get("moe_95") is not None and entry.get("scale") is not None:
            out[s] = (manifest_noise_variance(entry), float(entry["moe_95"]))
    return out


def panel_slope(p: Panel, statistic: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Each row's slope and its exact sd, and the method's name: weighted least squares for
    independent periods, generalised least squares with the exact covariance for the
    correlated periods of a panel with time levels (row r's covariance is c_r·Σ with
    c_r = Var(ŷ_r0)/Σ₀₀: 1 for a cell or zone row, Σ w² for a roll-up of independent cells)."""
    y, var = p.values[statistic], p.variances[statistic]
    if p.covariance is None or statistic not in p.covariance:
        slope, sd = wls_slope(y, var, p.times)
        return slope, sd, "weighted least-squares slope over periods with the exact noise variances"
    cov = p.covariance[statistic]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = var[:, 0] / cov[0, 0] if var.size else np.zeros(0)
    ok = np.isfinite(scale) & (scale > 0)
    slope, sd = gls_slope(y, cov, p.times, np.where(ok, scale, 1.0))
    method = (
        "generalised least-squares slope over periods with the exact noise covariance of the "
        "periods' estimates, which share noise (time_levels: least squares along time; "
        "running_totals: the tree's nodes)"
    )
    return np.where(ok, slope, np.nan), np.where(ok, sd, np.nan), method


def series(
    releases: Sequence[Release] | Release,
    zones: Any = None,
    by: str | None = "name",
    *,
    periods: Sequence[Any] | None = None,
    resolution: int | None = None,
) -> pd.DataFrame:
    """A long table of every cell's (or zone's) estimates per period, with 95% margins.

    Parameters
    ----------
    releases
        One release per period, oldest first, all of one design, resolution, categories and
        statistics (e.g. twelve monthly releases charged to one ledger entry).
    zones, by
        Public polygons to follow instead of cells (as :func:`dpmap.aggregate_to`; the
        cells' unbiased estimates added up with area-apportioned weights).
    periods
        The periods' names, in the releases' order (e.g. ``pd.period_range("2026-01",
        periods=12, freq="M")``); default: the releases' ``period`` manifest entries if
        they all have one, else 0, 1, …
    resolution
        Hierarchical releases: the level to use (default the finest).

    Returns
    -------
    DataFrame: the key (``cell`` or ``by``), [``category``], ``period``, ``count``,
    ``count_moe`` [, ``sum``, ``sum_moe``]: the unbiased estimates (suppressed rows
    included) and the 95% margin of their noise: a row that is one noisy value of its
    release (a cell of a flat or zone release) gets that release's exact margin (OpenDP's
    accuracy, as its table shows), any other row (a roll-up, a least-squares estimate) 1.96
    times its exact standard deviation. Post-processing: no data read, no budget spent.
    """
    p = _panel(releases, zones, by, periods, resolution)
    nser, nper = next(iter(p.values.values())).shape
    out = p.keys.loc[np.repeat(np.arange(nser), nper)].reset_index(drop=True)
    out["period"] = np.tile(np.asarray(p.labels, dtype=object), nser)
    for s, v in p.values.items():
        out[s] = v.reshape(-1)
        moe = Z95 * np.sqrt(p.variances[s])
        for j, single in enumerate(p.single or []):
            if s in single:
                var, exact = single[s]
                moe[np.isclose(p.variances[s][:, j], var, rtol=1e-12, atol=0.0), j] = exact
        out[f"{s}_moe"] = moe.reshape(-1)
    return out


def wls_slope(y: np.ndarray, var: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares slopes of rows of ``y`` (series × periods) over times ``t``,
    weights 1/``var``; returns (slope, its exact standard deviation). Rows with any missing
    value or a non-positive variance get NaN."""
    y = np.asarray(y, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    ok = np.isfinite(y).all(axis=1) & (np.nan_to_num(var, nan=-1.0) > 0).all(axis=1)
    w = np.where(ok[:, None], 1.0 / np.where(var > 0, var, 1.0), 1.0)
    tbar = (w * t).sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)
    d = t[None, :] - tbar
    sxx = (w * d * d).sum(axis=1)
    slope = (w * d * np.nan_to_num(y)).sum(axis=1) / sxx
    sd = np.sqrt(1.0 / sxx)
    return np.where(ok, slope, np.nan), np.where(ok, sd, np.nan)


def gls_slope(
    y: np.ndarray, cov: np.ndarray, t: np.ndarray, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised least-squares slopes of rows of ``y`` (series × T periods) at times ``t``
    whose noise is correlated across periods: row r's noise covariance is
    ``scale[r]·cov`` (one public T × T matrix Σ, e.g. the covariance of a panel's months
    after the time-consistency step of :func:`dpmap.designs.timeline.consistent_panel`;
    ``scale`` a per-row factor, e.g. a zone's Σ w_c² in an area-apportioned roll-up; default
    1). Returns (slope, its exact standard deviation), NaN for a row with a missing value.

    With X = [1, t]: β̂ = e₂ᵀ(XᵀΣ⁻¹X)⁻¹XᵀΣ⁻¹y, a fixed linear combination cᵀy of the row
    (the per-row factor cancels), with Var β̂ = scale_r·[(XᵀΣ⁻¹X)⁻¹]₂₂ = scale_r·cᵀΣc,
    exact for any noise law with that covariance. β̂ is unbiased for cᵀμ, the slope of the
    same GLS line through the true values μ (the slope itself when μ lies on a line). It is
    the minimum-variance linear unbiased slope; with a diagonal Σ it is :func:`wls_slope`.
    Ignoring the correlations (``wls_slope`` with Σ's diagonal) misstates the variance.
    Vectorised: Σ is factored once (Cholesky) for every row.
    """
    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if y.ndim != 2 or t.shape != (y.shape[1],) or cov.shape != (len(t), len(t)):
        raise SpecError(
            f"gls_slope needs y of shape (rows, T), t of shape (T,) and a T × T covariance; got "
            f"y {y.shape}, t {t.shape}, cov {cov.shape}; pass them for the same periods"
        )
    if len(t) < 2 or np.ptp(t) == 0:
        raise SpecError(f"a slope needs at least two distinct times, got t={t.tolist()!r}")
    factor = np.ones(len(y)) if scale is None else np.asarray(scale, dtype=np.float64)
    if factor.shape != (len(y),) or not (np.isfinite(factor) & (factor > 0)).all():
        raise SpecError(
            f"scale must be one positive finite factor per row ({len(y)}), got shape "
            f"{factor.shape}; pass e.g. each zone's sum of squared weights"
        )
    try:
        chol = np.linalg.cholesky((cov + cov.T) / 2.0)
    except np.linalg.LinAlgError:
        raise SpecError(
            "the covariance is not positive definite; pass the noise covariance of the "
            "periods' estimates (e.g. TimeFit.covariance)"
        ) from None
    x = np.column_stack([np.ones(len(t)), t - t.mean()])
    wx = np.linalg.solve(chol.T, np.linalg.solve(chol, x))  # Σ⁻¹X
    inv = np.linalg.inv(x.T @ wx)
    c = wx @ inv[:, 1]  # the slope's weights: β̂ = cᵀy
    ok = np.isfinite(y).all(axis=1)
    slope = np.where(ok, np.nan_to_num(y) @ c, np.nan)
    sd = np.where(ok, np.sqrt(factor * float(inv[1, 1])), np.nan)
    return slope, sd


def margin_z(laplace: bool) -> float:
    """The factor of the slope's 95% margin: ln(20)/√2 for Laplace noise, else 1.96."""
    return Z95_LAPLACE if laplace else Z95


def two_sided_p(z: np.ndarray, laplace: bool) -> np.ndarray:
    """p-values of |slope|/sd = z (see the module docstring for the Laplace case)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    erfc = np.frompyfunc(math.erfc, 1, 1)
    normal = np.asarray(erfc(z / math.sqrt(2.0)), dtype=np.float64)  # 2·(1 − Φ(z))
    if not laplace:
        return normal
    return np.minimum(np.maximum(normal, np.exp(-math.sqrt(2.0) * z)), 1.0)


def bh_significant(p: np.ndarray, fdr: float) -> np.ndarray:
    """The Benjamini–Hochberg step-up procedure: True for the rows rejected at ``fdr``
    (NaN p-values are not tested)."""
    p = np.asarray(p, dtype=np.float64)
    tested = np.flatnonzero(np.isfinite(p))
    out = np.zeros(len(p), dtype=bool)
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    below = p[order] <= fdr * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.flatnonzero(below)[-1])
        out[order[: k + 1]] = True
    return out


def trend(
    releases: Sequence[Release] | Release,
    zones: Any = None,
    by: str | None = "name",
    *,
    periods: Sequence[Any] | None = None,
    statistic: str = "count",
    fdr: float = FDR,
    resolution: int | None = None,
) -> pd.DataFrame:
    """The trend of every cell (or zone) over the periods, with its 95% margin and a
    false-discovery-controlled ``significant`` flag.

    Parameters
    ----------
    releases, zones, by, periods, resolution
        As :func:`series`.
    statistic
        ``"count"`` (default) or ``"sum"`` (releases with a value).
    fdr
        The false-discovery rate of ``significant`` (Benjamini–Hochberg over every row), in
        (0, 0.09].

    Returns
    -------
    DataFrame (a GeoDataFrame with the cells' or zones' polygons): the key, [``category``],
    ``slope`` (per period), ``slope_moe``, ``slope_lo``, ``slope_hi``, ``p_value``,
    ``significant``, ``relative_change``, ``mean`` (of the period estimates) and
    ``periods``; ``attrs["method"]`` states the method. See the module docstring for the
    estimand, the margin, the p-values and the false-discovery control. Post-processing: no
    data read, no budget spent.
    """
    if not (isinstance(fdr, int | float) and 0 < fdr <= 0.09):
        raise SpecError(
            f"fdr must be a false-discovery rate in (0, 0.09], got {fdr!r}; e.g. fdr=0.05"
        )
    p = _panel(releases, zones, by, periods, resolution)
    if statistic not in p.values:
        raise SpecError(
            f"the releases have no statistic {statistic!r}; use one of {sorted(p.values)}"
        )
    y = p.values[statistic]
    slope, sd, method = panel_slope(p, statistic)
    z = margin_z(p.laplace)
    pv = two_sided_p(slope / sd, p.laplace)
    sig = bh_significant(pv, fdr)
    mean = np.nanmean(y, axis=1) if y.size else np.zeros(0)
    span = p.times[-1] - p.times[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mean > 0, slope * span / mean, np.nan)
    out = p.keys.copy()
    out["slope"], out["slope_moe"] = slope, z * sd
    out["slope_lo"], out["slope_hi"] = slope - z * sd, slope + z * sd
    out["p_value"], out["significant"] = pv, sig
    out["relative_change"], out["mean"] = rel, mean
    out["periods"] = len(p.labels)
    out = _with_geometry(out, p)
    out.attrs["method"] = METHOD.format(
        method=method,
        z=f"{z:.4g}·sd ({'Laplace' if p.laplace else 'normal'})",
        p="conservative for Laplace noise (larger of the normal and Laplace tails)"
        if p.laplace
        else "from the normal tail",
        fdr=fdr,
        m=int(np.isfinite(pv).sum()),
    )
    out.attrs["periods"] = list(p.labels)
    return out


def _with_geometry(frame: pd.DataFrame, p: Panel) -> Any:
    import geopandas as gpd

    if p.geometry is None:
        return frame
    geometry = p.geometry
    if len(geometry) != len(frame):  # one polygon per cell or zone, rows per category
        geometry = np.repeat(geometry, len(frame) // max(len(geometry), 1))
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def line_up(
    releases: Sequence[Release] | Release, periods: Sequence[Any] | None = None, *, minimum: int = 2
) -> tuple[list[Release], list[str]]:
    """The releases of one series, checked as :func:`series` checks them (one design,
    resolution, categories and statistics), and their period labels (``periods``, else the
    manifests' ``period`` entries, else 0, 1, …); at least ``minimum`` releases. A panel
    release stands for its periods."""
    releases, periods = panel_views(releases, periods)
    rels = _check_sequence(releases, minimum)
    return rels, _periods(rels, periods)[1]
