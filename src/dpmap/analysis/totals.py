"""The rows of a release to add up, and the exact noise variance of their weighted totals."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dpmap import grid
from dpmap._privacy.postprocess import Z95, Z95_LAPLACE
from dpmap.designs import design_of, hierarchy
from dpmap.designs.base import (
    Correlation,
    ForestCorrelation,
    RowsInfo,
    TreeCorrelation,
    manifest_noise_variance,
)
from dpmap.designs.zones import zone_column
from dpmap.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from dpmap.releases import Release


STATS = ("count", "sum")


_CHUNK = 64  # weight vectors per run of the hierarchical variance


@dataclass(frozen=True)
class Rows:
    """One set of disjoint cells of a release with their estimates, as (cell × category) arrays."""

    cells: np.ndarray  # hex ids (object), unique
    ids: np.ndarray  # int64 H3 indexes
    resolutions: np.ndarray  # int64, per cell
    geometry: np.ndarray  # shapely polygons, EPSG:4326
    categories: tuple[str, ...] | None
    values: dict[str, np.ndarray]  # statistic -> (n, ncat), 0 where hidden or absent
    variances: dict[str, np.ndarray]  # statistic -> (n, ncat)
    hidden: np.ndarray  # (n, ncat) suppressed with no unbiased value available
    unbiased: bool
    corr: Correlation  # how the rows' errors relate (from the release's design)
    value_name: str | None
    value_bounds: tuple[float, float] | None = None  # public bounds of the summed value

    @property
    def ncat(self) -> int:
        return len(self.categories) if self.categories else 1

    @property
    def stats(self) -> tuple[str, ...]:
        return tuple(self.values)


def is_release(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`dpmap.Release` (by its public accessors: the analyses sit
    below the release layer and never import it)."""
    return all(
        isinstance(getattr(type(obj), name, None), property)
        for name in ("cells", "manifest", "estimates", "fingerprint")
    )


def panel_periods(manifest: dict[str, Any]) -> list[str] | None:
    """The period labels of a panel release (one row per cell and period), None otherwise."""
    labels = manifest.get("periods")
    if labels is None:
        return None
    continual = manifest.get("continual")
    if isinstance(continual, dict):  # a continual release publishes the periods up to `through`
        labels = labels[: int(continual["through_index"]) + 1]
    return [str(p) for p in labels]


def check_not_panel(manifest: dict[str, Any], what: str) -> None:
    """Refuse a whole panel where one period is needed (its rows repeat every cell)."""
    labels = panel_periods(manifest)
    if labels is not None:
        raise SpecError(
            f"this release is a panel over {len(labels)} periods ({labels[0]} to {labels[-1]}), "
            f"one row per cell and period; {what} takes one period: pass rel.at({labels[-1]!r}), "
            "or use dpmap.series / dpmap.trend for all periods"
        )


def levels_of(manifest: dict[str, Any]) -> list[int]:
    """The H3 resolutions of a release (a zone release has none: refused with the fix)."""
    if zone_column(manifest) is not None:
        raise SpecError(
            "this release is already one row per zone, not H3 cells, so it cannot be rolled up "
            "or searched around a point; use its zone rows directly (rel.cells, rel.table())"
        )
    r = manifest.get("resolution")
    return [int(v) for v in r] if isinstance(r, list) else [int(r)]  # type: ignore[arg-type]


def _level_used(m: dict[str, Any], design: Any, resolution: Any) -> int:
    """The resolution whose cells are added up: ``resolution=`` or the finest."""
    levels = levels_of(m)
    if resolution is None:
        return levels[-1]
    r = grid.check_resolution(resolution)
    if design.mixed_resolutions:
        raise SpecError(
            "resolution= does not apply to an adaptive release: its cells are a partition at "
            "mixed resolutions and all of them are used; drop resolution="
        )
    if r not in levels:
        raise SpecError(
            f"this release has no cells at resolution {r}; it has resolution(s) {levels}: pass "
            f"one of them or drop resolution= (the finest level, {levels[-1]}, is the default)"
        )
    return r


def _category_index(categories: tuple[str, ...] | None, frame: Any) -> np.ndarray:
    if categories is None:
        return np.zeros(len(frame), dtype=np.int64)
    idx = pd.Index(categories).get_indexer(frame["category"].astype(str))
    if (idx < 0).any():
        raise SpecError(
            "the release lists categories that its manifest does not declare; the file was "
            "edited or is damaged: read it again from the publisher's copy"
        )
    return idx


def _finest_cells(design: Any, source: Any, levels: list[int]) -> np.ndarray:
    """Every finest-level cell the release published (only several-level designs need it)."""
    if not design.several_levels:
        return np.zeros(0, dtype=np.int64)
    fine = source[source["resolution"].to_numpy() == levels[-1]]["cell"].astype(object)
    return np.unique(grid.hex_to_cells(pd.unique(fine)))


def rows_of(rel: Release, resolution: Any = None) -> Rows:
    """The disjoint cells of ``rel`` to add up, with their estimates and how their errors relate
    (asked of the release's design, :func:`dpmap.designs.design_of`)."""
    m = rel.manifest
    check_not_panel(m, "a roll-up")
    table, est = rel.cells, rel.estimates
    design = design_of(m)
    r = _level_used(m, design, resolution)
    one_level = design.several_levels
    sub = table[table["resolution"].to_numpy() == r] if one_level else table
    codes, uniq = pd.factorize(sub["cell"].astype(object))
    first = np.unique(codes, return_index=True)[1]
    cells = np.asarray(uniq, dtype=object)
    res_col = np.asarray(sub["resolution"].to_numpy(), dtype=np.int64)[first]
    cats = m.get("categories")
    categories = tuple(str(c) for c in cats) if cats else None
    stats = tuple(s for s in STATS if s in table.columns)
    n, ncat = len(cells), len(categories) if categories else 1
    ids = grid.hex_to_cells(cells) if n else np.zeros(0, dtype=np.int64)
    info = RowsInfo(
        ids,
        res_col,
        stats,
        r,
        _finest_cells(design, est if est is not None else table, levels_of(m)),
    )
    corr = design.correlation(m, info)
    values = {s: np.zeros((n, ncat)) for s in stats}
    variances = {s: np.zeros((n, ncat)) for s in stats}
    hidden = np.zeros((n, ncat), dtype=bool)
    if est is not None:
        e = est[est["resolution"].to_numpy() == r] if one_level else est
        ci = pd.Index(uniq).get_indexer(e["cell"].astype(object))
        ki = _category_index(categories, e)
        if (ci < 0).any():  # pragma: no cover - the estimates are built from the same table
            raise SpecError("the release's estimates do not match its cells; read it again")
        for s in stats:
            values[s][ci, ki] = e[s].to_numpy(dtype=np.float64)
            variances[s][ci, ki] = e[f"{s}_var"].to_numpy(dtype=np.float64)
    else:
        ki = _category_index(categories, sub)
        supp = sub["suppressed"].to_numpy(dtype=bool)
        for s in stats:
            v = pd.array(sub[s], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            values[s][codes, ki] = np.where(supp, 0.0, v)
            if corr.independent and not corr.own_variances:
                var = np.full(len(sub), manifest_noise_variance(m["statistics"][s]))
            else:
                moe = sub[f"{s}_moe"].to_numpy(dtype=np.float64, na_value=np.nan)
                var = np.where(supp, 0.0, (np.nan_to_num(moe) / Z95) ** 2)
            variances[s][codes, ki] = var
        hidden[codes, ki] = supp
    return Rows(
        cells=cells,
        ids=ids,
        resolutions=res_col,
        geometry=np.asarray(sub.geometry.to_numpy(), dtype=object)[first],
        categories=categories,
        values=values,
        variances=variances,
        hidden=hidden,
        unbiased=est is not None,
        corr=corr,
        value_name=(m.get("contribution_bounds") or {}).get("value"),
        value_bounds=_bounds_of(m),
    )


def _bounds_of(m: dict[str, Any]) -> tuple[float, float] | None:
    b = (m.get("contribution_bounds") or {}).get("bounds")
    return (float(b[0]), float(b[1])) if b else None


def hidden_error(n_hidden: int, n_needed: int, where: str, categories: bool = False) -> SpecError:
    rows = "(cell, category) rows" if categories else "cells"
    return SpecError(
        f"the release hides {n_hidden} of the {n_needed} {rows} needed {where} (suppressed: their "
        "noisy counts are below the display threshold), and it was read from a file without the "
        "unbiased estimates, so adding up only the visible cells would be biased; ask the publisher "
        "for the file written with to_file(..., include_unbiased=True), or for a release made with "
        "suppress_below=False"
    )


def hidden_for_public(hidden: np.ndarray) -> SpecError:
    """around()'s refusal, worded for a member of the public; the publisher's fix is in a
    note (``exc.__notes__``: shown in tracebacks, not in the CLI's one-line error).
    ``hidden``: (cells needed, categories), True where a row is suppressed."""
    n_cells, n_hidden = len(hidden), int(hidden.any(axis=1).sum())
    if n_cells == 1:
        some = "the map cell needed here is hidden"
    elif n_hidden == n_cells:
        some = f"all {n_cells} map cells needed here are hidden"
    else:
        some = f"{n_hidden} of the {n_cells} map cells needed here are hidden"
    exc = SpecError(
        f"this map cannot answer for this place: {some} because too few records fall in them "
        "to show their numbers, and the publisher did not include the numbers needed to add "
        "hidden cells up without bias; ask the publisher for a version of the map that "
        "includes them"
    )
    rows = "(cell, category) rows" if hidden.shape[1] > 1 else "cells"
    exc.add_note(
        f"for the publisher: {int(hidden.sum())} of the {hidden.size} {rows} needed are "
        "suppressed and the file has no unbiased estimates; write it with "
        "to_file(..., include_unbiased=True), or release with suppress_below=False"
    )
    return exc


def weighted_totals(
    rows: Rows, stat: str, cell: np.ndarray, group: np.ndarray, weight: np.ndarray, ngroups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted totals per (group, category) and their noise variances."""
    vals, var = rows.values[stat], rows.variances[stat]
    est = np.zeros((ngroups, rows.ncat))
    out_var = np.zeros((ngroups, rows.ncat))
    for k in range(rows.ncat):
        est[:, k] = np.bincount(group, weights=weight * vals[cell, k], minlength=ngroups)
        if rows.corr.independent:
            out_var[:, k] = np.bincount(group, weights=weight**2 * var[cell, k], minlength=ngroups)
    if rows.corr.tree is not None:
        out_var[:] = _hier_variance(rows.corr.tree, stat, cell, group, weight, ngroups)[:, None]
    if rows.corr.forest is not None:
        out_var[:] = _forest_variance(rows.corr.forest, stat, cell, group, weight, ngroups)[:, None]
    return est, out_var


def _chunks_of_groups(group: np.ndarray, ngroups: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, rows of groups start..stop-1) for chunks of :data:`_CHUNK` groups with rows."""
    for start in range(0, ngroups, _CHUNK):
        stop = min(start + _CHUNK, ngroups)
        sel = (group >= start) & (group < stop)
        if sel.any():
            yield start, stop, sel


def _forest_variance(
    f: ForestCorrelation,
    stat: str,
    cell: np.ndarray,
    group: np.ndarray,
    weight: np.ndarray,
    ngroups: int,
) -> np.ndarray:
    """Exact Var(Σ w x) of an adaptive release's least-squares leaf estimates: wᵀ P (Σ w),
    one run of :func:`dpmap.designs.hierarchy.consistent_forest` per chunk of weight vectors (the
    same identity as for hierarchical releases, on the mixed-depth tree)."""
    var = f.node_var[stat]
    out = np.zeros(ngroups)
    for start, stop, sel in _chunks_of_groups(group, ngroups):
        u = [np.zeros((len(v), stop - start)) for v in var]
        w = [np.zeros((len(v), stop - start)) for v in var]
        for d in range(len(var)):
            at = sel & (f.depth[cell] == d)
            np.add.at(w[d], (f.pos[cell[at]], group[at] - start), weight[at])
            u[d] = w[d] * np.where(np.isfinite(var[d]), var[d], 0.0)[:, None]
        x, _ = hierarchy.consistent_forest(f.parent, u, var)
        out[start:stop] = sum((w[d] * x[d]).sum(axis=0) for d in range(len(var)))
    return np.maximum(out, 0.0)


def _hier_variance(
    h: TreeCorrelation,
    stat: str,
    cell: np.ndarray,
    group: np.ndarray,
    weight: np.ndarray,
    ngroups: int,
) -> np.ndarray:
    """Exact Var(Σ w x) of consistent estimates: wᵀ P (Σ w), one consistency run per chunk.

    The same for every category: each category is an independent tree with the same
    per-level noise variances.
    """
    tree, j, lv = h.tree, h.level, h.level_var[stat]
    nj = len(tree.levels[j])
    out = np.zeros(ngroups)
    for start, stop, sel in _chunks_of_groups(group, ngroups):
        w = np.zeros((nj, stop - start))
        np.add.at(w, (h.pos[cell[sel]], group[sel] - start), weight[sel])
        u = [np.zeros((len(level), stop - start)) for level in tree.levels]
        u[j] = w * lv[j]
        x, _ = hierarchy.consistent(tree, u, lv)
        out[start:stop] = (w * x[j]).sum(axis=0)
    return np.maximum(out, 0.0)


def total_margins(
    rows: Rows, stat: str, var: np.ndarray, single: np.ndarray | None = None
) -> np.ndarray:
    """95% margins from variances; ``single`` marks totals that are one whole row of a flat release."""
    moe = Z95 * np.sqrt(var)
    if single is not None and stat in rows.corr.exact_moe:
        moe = np.where(single[:, None], rows.corr.exact_moe[stat], moe)
    return moe


@functools.lru_cache(maxsize=512)
def _laplace_sum_quantile(scale: float, k: int, p: float = 0.975) -> float:
    """The smallest integer q with P(X₁ + … + X_k ≤ q) ≥ p for k independent discrete
    Laplace draws of ``scale`` (P(x) ∝ e^{−|x|/scale}), by inverting the characteristic
    function ((1 − a)² / (1 − 2a·cos t + a²))^k, a = e^{−1/scale}, with an FFT on a lattice
    wide enough (±14 standard deviations) that the wrapped mass is negligible.

    Large scales (sums) would need a lattice of more than 2¹⁸ points: then the quantile is
    computed at the largest scale that fits (≥ 300 for k ≤ 400) and scaled by the ratio of
    the standard deviations, rounded up — at such scales the standardised discrete Laplace
    is the continuous one to within about 1/scale."""
    sd_of = lambda b: math.sqrt(k * 2 * math.exp(-1 / b) / (1 - math.exp(-1 / b)) ** 2)  # noqa: E731
    max_half = (1 << 17) - 1
    fit = scale
    if 14 * sd_of(scale) + 20 > max_half:
        fit = (max_half - 20) / 14 / math.sqrt(2 * k)  # sd ≈ √(2k)·scale for large scales
    a = math.exp(-1.0 / fit)
    half = math.ceil(14 * sd_of(fit) + 20)
    size = 1 << (2 * half + 1).bit_length()
    t = 2 * np.pi * np.arange(size // 2 + 1) / size
    phi = ((1 - a) ** 2 / (1 - 2 * a * np.cos(t) + a * a)) ** k
    pmf = np.fft.irfft(phi, size)
    values = np.r_[np.arange(0, half + 1), np.arange(-half, 0)]
    keep = np.r_[np.arange(0, half + 1), np.arange(size - half, size)]
    order = np.argsort(values)
    cdf = np.cumsum(np.clip(pmf[keep][order], 0.0, None))
    cdf /= cdf[-1]
    q = float(values[order][int(np.searchsorted(cdf, p - 1e-12))])
    return q if fit == scale else float(math.ceil(q * sd_of(scale) / sd_of(fit)))


def _value_range(rows: Rows) -> tuple[float, float]:
    """The range every record's published value lies in: the public bounds, widened to
    whole units (values are clamped to the bounds, then rounded half up)."""
    if rows.value_bounds is None:
        return (-math.inf, math.inf)
    a, b = rows.value_bounds
    return (float(math.floor(a)), float(math.ceil(b)))


def total_interval(
    rows: Rows, stat: str, cell: np.ndarray, group: np.ndarray, whole: np.ndarray, ngroups: int
) -> tuple[np.ndarray, np.ndarray]:
    """An honest 95% interval for each polygon's true total: the apportioning error of the
    cells its border splits and the noise, as ``(lo, hi)`` arrays (ngroups, ncat).

    Every record lies in exactly one cell, so a polygon's true count T lies between L,
    the true count of the cells wholly inside it, and U, that of every cell touching it.
    ``lo = L̂ − m(L)`` and ``hi = Û + m(U)``, with m the one-sided 97.5% margin (for a flat
    release with Laplace noise the exact quantile of the summed noise of k cells,
    OpenDP's exact margin for one cell; for least-squares estimates of Laplace noise
    2.118 · the exact standard deviation; else 1.96 · it): P(T < lo) ≤ P(L < L̂ − m(L)) ≤ 2.5% and P(T > hi) ≤ 2.5%, so
    the interval misses T with probability at most 5% (union bound; it is conservative,
    more so the more records the border cells hold). Both ends are then moved to the
    range T can take (a count is ≥ 0), which can only help coverage.

    Sums of values in ``[a, b]``: with a ≥ 0 the same bounds hold (S_inside ≤ S ≤
    S_touching); with b ≤ 0 they swap. When a < 0 < b the records of the border cells can
    pull either way, so ``S_inside + a·C_border ≤ S ≤ S_inside + b·C_border`` with
    C_border the count of the border cells (its noise is independent of the sum's).
    """
    inner = whole.nonzero()[0]
    ones = np.ones(len(cell))
    n_in = np.bincount(group[inner], minlength=ngroups)
    n_all = np.bincount(group, minlength=ngroups)
    low_v, high_v = _value_range(rows) if stat == "sum" else (0.0, math.inf)

    def total(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return weighted_totals(rows, stat, cell[sel], group[sel], ones[sel], ngroups)

    def one_sided(var: np.ndarray, n: np.ndarray) -> np.ndarray:
        moe = total_margins(rows, stat, var, n == 1)
        if rows.corr.laplace_ls:
            # least-squares combinations of Laplace noise: the standardised one-sided 97.5%
            # quantile of one Laplace draw, −ln(0.05)/√2 = 2.118 (sums of several draws
            # have lighter tails: 2.03 for 3, 1.97 for 20), instead of the normal 1.96
            return moe * (Z95_LAPLACE / Z95)
        scale = rows.corr.laplace_scale.get(stat)
        if scale is None:
            return moe
        # flat release, Laplace noise: the exact one-sided 97.5% quantile of the noise of
        # k whole cells (the normal approximation's tail is up to 3.3% for 2-4 cells)
        for k in np.unique(n[n > 1]):
            moe[n == k] = _laplace_sum_quantile(scale, int(k))
        return moe

    inside, var_in = total(inner)
    if low_v >= 0 or high_v <= 0:
        touching, var_all = total(np.arange(len(cell)))
        lo_in = inside - one_sided(var_in, n_in)
        hi_in = inside + one_sided(var_in, n_in)
        lo_all = touching - one_sided(var_all, n_all)
        hi_all = touching + one_sided(var_all, n_all)
        if low_v >= 0:
            return np.maximum(lo_in, 0.0), np.maximum(hi_all, 0.0)
        return np.minimum(lo_all, 0.0), np.minimum(hi_in, 0.0)
    border = (~whole).nonzero()[0]
    c_border, c_var = weighted_totals(
        rows, "count", cell[border], group[border], ones[border], ngroups
    )
    lo = inside + low_v * c_border - Z95 * np.sqrt(var_in + low_v**2 * c_var)
    hi = inside + high_v * c_border + Z95 * np.sqrt(var_in + high_v**2 * c_var)
    # no border cells: the sum of the cells inside alone, with its exact margin
    none = (np.bincount(group[border], minlength=ngroups) == 0)[:, None]
    m_in = one_sided(var_in, n_in)
    return np.where(none, inside - m_in, lo), np.where(none, inside + m_in, hi)
