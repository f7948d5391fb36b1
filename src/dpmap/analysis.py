"""Analyses of published releases: roll-ups to other polygons, comparisons, "around a point",
and planning ε or the resolution for a target margin of error.

Everything here is **post-processing**: it reads a release's noisy outputs and public
parameters only (never raw data), so it costs no privacy budget.

Which numbers are added up
    The *unbiased* noisy estimates of every row (:attr:`Release.estimates`), suppressed
    rows included. Suppression hides small noisy counts; adding up only the displayed
    values would bias every total (the README, "Using a release"). A release read
    from a file written without ``include_unbiased=True`` has no such estimates: then the
    published values of unsuppressed rows are used, and a question that needs a
    suppressed row raises :class:`~dpmap.errors.SpecError` saying how many cells are hidden
    and how to get the unbiased values.

Which rows
    Flat release: every row. Hierarchical release (several resolutions): the rows of one
    level, the finest by default or the one chosen with ``resolution=`` (the levels are
    consistent, so adding up the finest cells of a parent gives the parent's estimate).
    Adaptive release (PrivTree leaves or adaptive-grid cells at mixed resolutions, a
    partition): every leaf.
    Release without a public region (cells chosen privately): the published cells only;
    cells that were not published count as zero there, which biases totals downward,
    and ``coverage`` counts published cells only. With a category breakdown every
    statistic is computed per category.

Margins of error (95%)
    :func:`aggregate_to` publishes two things per polygon: ``count_lo``/``count_hi``, a 95%
    interval for the true total that includes the error of apportioning the cells a
    border splits (see its docstring), and ``count_moe``, the margin of the noise only
    (of the area-apportioned point estimate). The rest of this paragraph is about noise.
    Normal approximation: ``1.96 · √Var``. A flat (or leaf-only adaptive) release adds
    independent noise to every row, so the variance of a weighted total is ``Σ wᵢ² varᵢ``.
    The consistent estimates of a hierarchical release, the leaves of an adaptive
    release with noisy internal nodes (``internal_share > 0``) and the cells of an
    adaptive grid (tied to their first-level cell and the total) are correlated across
    cells; their total's variance is computed **exactly**: the least-squares estimate is
    ``x = P y`` with ``P Σ = Cov(x)`` symmetric (generalised least squares), so
    ``Var(wᵀx) = wᵀ P (Σ w)``, one run of :func:`dpmap.hierarchy.consistent` (or
    :func:`~dpmap.hierarchy.consistent_forest` on the adaptive tree or grid forest, rebuilt
    from the leaves' H3 parents) on the vector ``Σ w`` (the weights scaled by each node's noise
    variance). For one whole cell
    of a flat release the exact margin of the discrete noise (OpenDP's accuracy) is used.
    The normal approximation is slightly optimistic for totals of very few cells with
    Laplace noise (e.g. about 93.5% coverage for one cell with ε = 1) and accurate for
    totals of many cells.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import grid, hierarchy
from .errors import MechanismError, SpecError
from .postprocess import Z95, Z95_LAPLACE

if TYPE_CHECKING:  # pragma: no cover
    from .release import Release

__all__ = [
    "EQUAL_AREA_CRS",
    "Around",
    "CategoryAround",
    "EpsilonPlan",
    "aggregate_to",
    "around",
    "compare",
    "plan_epsilon",
    "plan_resolution",
]

#: Equal-area projection used for the areas of cell pieces and polygons
#: (WGS 84 / NSIDC EASE-Grid 2.0 Global, a Lambert cylindrical equal-area projection).
EQUAL_AREA_CRS = "EPSG:6933"

_STATS = ("count", "sum")
#: polygons are densified to this edge length (degrees) before their area is measured
_SEGMENT_DEG = 0.05
#: columns produced by aggregate_to that are not keys
_RESULT_COLUMNS = {
    "category",
    "count",
    "count_moe",
    "count_lo",
    "count_hi",
    "sum",
    "sum_moe",
    "sum_lo",
    "sum_hi",
    "coverage",
    "cells",
}
_CHUNK = 64  # weight vectors per run of the hierarchical variance
#: one-sided 97.5% quantile of a Laplace variable in standard deviations: −ln(0.05)/√2

#: shares of a cell below this (or above 1 minus this) are floating-point slivers of a shared edge
_SNAP = 1e-6


# ---------------------------------------------------------------------------------------
# the rows of a release to add up


@dataclass(frozen=True)
class _Hier:
    """What the exact variance of a hierarchical release's totals needs (all public)."""

    tree: hierarchy.Tree
    level: int  # position of the used resolution in tree.levels
    pos: np.ndarray  # position of each used cell in tree.levels[level]
    level_var: dict[str, list[float]]  # statistic -> noise variance of each level


@dataclass(frozen=True)
class _Forest:
    """What the exact variance of an adaptive release's totals needs when its leaves are
    least-squares estimates (internal nodes measured); all public."""

    parent: list[np.ndarray | None]  # per depth: parent positions in the depth above
    depth: np.ndarray  # depth of each used cell (row of _Rows)
    pos: np.ndarray  # position of each used cell among its depth's nodes
    node_var: dict[str, list[np.ndarray]]  # statistic -> per depth noise variance per node


@dataclass(frozen=True)
class _Rows:
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
    exact_moe: dict[str, float]  # margin of one row's noise (flat / adaptive releases)
    hier: _Hier | None
    value_name: str | None
    forest: _Forest | None = None
    value_bounds: tuple[float, float] | None = None  # public bounds of the summed value
    #: statistic -> discrete Laplace scale of every row's independent noise (flat releases)
    laplace_scale: dict[str, float] | None = None
    #: least-squares estimates (hierarchical / consistent adaptive) of Laplace noise
    laplace_ls: bool = False

    @property
    def ncat(self) -> int:
        return len(self.categories) if self.categories else 1

    @property
    def stats(self) -> tuple[str, ...]:
        return tuple(self.values)


def _levels_of(manifest: dict[str, Any]) -> list[int]:
    r = manifest.get("resolution")
    return [int(v) for v in r] if isinstance(r, list) else [int(r)]  # type: ignore[arg-type]


def _noise_variance(entry: dict[str, Any]) -> float:
    """Variance of one value's noise from a manifest statistic entry (as the release computed it)."""
    from .mechanisms import noise_variance
    from .spec import Mechanism

    mech = (
        Mechanism.GAUSSIAN
        if "gaussian" in str(entry["distribution"]).lower()
        else Mechanism.LAPLACE
    )
    return noise_variance(mech, float(entry["scale"]))


def _rows_of(rel: Release, resolution: Any = None) -> _Rows:
    m = rel._manifest
    table = rel._cells
    est = rel._estimates
    levels = _levels_of(m)
    hierarchical = bool(m.get("hierarchy")) and len(levels) > 1
    adaptive = bool(m.get("adaptive"))
    # adaptive release whose leaves are least-squares estimates (correlated, per-row margins)
    consistent_leaves = adaptive and bool((m.get("adaptive") or {}).get("consistency"))
    if resolution is not None:
        r = grid.check_resolution(resolution)
        if adaptive:
            raise SpecError(
                "resolution= does not apply to an adaptive release: its cells are a partition at "
                "mixed resolutions and all of them are used; drop resolution="
            )
        if r not in levels:
            raise SpecError(
                f"this release has no cells at resolution {r}; it has resolution(s) {levels}: pass "
                f"one of them or drop resolution= (the finest level, {levels[-1]}, is the default)"
            )
    else:
        r = levels[-1]
    sub = table[table["resolution"].to_numpy() == r] if hierarchical else table
    codes, uniq = pd.factorize(sub["cell"].astype(object))
    first = np.unique(codes, return_index=True)[1]
    cells = np.asarray(uniq, dtype=object)
    geometry = np.asarray(sub.geometry.to_numpy(), dtype=object)[first]
    res_col = np.asarray(sub["resolution"].to_numpy(), dtype=np.int64)[first]
    cats = m.get("categories")
    categories = tuple(str(c) for c in cats) if cats else None
    ncat = len(categories) if categories else 1
    stats = tuple(s for s in _STATS if s in table.columns)

    def cat_index(frame: Any) -> np.ndarray:
        if categories is None:
            return np.zeros(len(frame), dtype=np.int64)
        idx = pd.Index(categories).get_indexer(frame["category"].astype(str))
        if (idx < 0).any():
            raise SpecError(
                "the release lists categories that its manifest does not declare; the file was "
                "edited or is damaged: read it again from the publisher's copy"
            )
        return idx

    n = len(cells)
    values = {s: np.zeros((n, ncat)) for s in stats}
    variances = {s: np.zeros((n, ncat)) for s in stats}
    hidden = np.zeros((n, ncat), dtype=bool)
    if est is not None:
        e = est[est["resolution"].to_numpy() == r] if hierarchical else est
        ci = pd.Index(uniq).get_indexer(e["cell"].astype(object))
        ki = cat_index(e)
        if (ci < 0).any():  # pragma: no cover - the estimates are built from the same table
            raise SpecError("the release's estimates do not match its cells; read it again")
        for s in stats:
            values[s][ci, ki] = e[s].to_numpy(dtype=np.float64)
            variances[s][ci, ki] = e[f"{s}_var"].to_numpy(dtype=np.float64)
    else:
        ki = cat_index(sub)
        supp = sub["suppressed"].to_numpy(dtype=bool)
        for s in stats:
            v = pd.array(sub[s], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            values[s][codes, ki] = np.where(supp, 0.0, v)
            if hierarchical or consistent_leaves:
                moe = sub[f"{s}_moe"].to_numpy(dtype=np.float64, na_value=np.nan)
                var = np.where(supp, 0.0, (np.nan_to_num(moe) / Z95) ** 2)
            else:
                var = np.full(len(sub), _noise_variance(m["statistics"][s]))
            variances[s][codes, ki] = var
        hidden[codes, ki] = supp
    ids = grid.hex_to_cells(cells) if n else np.zeros(0, dtype=np.int64)
    hier = None
    exact: dict[str, float] = {}
    laplace: dict[str, float] = {}
    if hierarchical:
        fine_src = est if est is not None else table
        fine = fine_src[fine_src["resolution"].to_numpy() == levels[-1]]["cell"].astype(object)
        finest = np.unique(grid.hex_to_cells(pd.unique(fine)))
        tree = hierarchy.build_tree(finest, tuple(levels))
        j = levels.index(r)
        pos = np.searchsorted(tree.levels[j], ids)
        if n and (pos.max() >= len(tree.levels[j]) or (tree.levels[j][pos] != ids).any()):
            raise SpecError(  # pragma: no cover - the levels are built from the same cells
                "the release's coarser cells are not the H3 parents of its finest cells; the "
                "file was edited or is damaged"
            )
        level_var = {
            s: [_noise_variance(m["statistics"][f"{s}@{lr}"]) for lr in levels] for s in stats
        }
        hier = _Hier(tree=tree, level=j, pos=pos, level_var=level_var)
    elif not consistent_leaves:
        exact = {s: float(m["statistics"][s]["moe_95"]) for s in stats}
        laplace = {
            s: float(m["statistics"][s]["scale"])
            for s in stats
            if "laplace" in str(m["statistics"][s]["distribution"]).lower()
        }
    forest = _forest_of(m, ids, res_col, stats) if consistent_leaves and n else None
    return _Rows(
        cells=cells,
        ids=ids,
        resolutions=res_col,
        geometry=geometry,
        categories=categories,
        values=values,
        variances=variances,
        hidden=hidden,
        unbiased=est is not None,
        exact_moe=exact,
        hier=hier,
        value_name=(m.get("contribution_bounds") or {}).get("value"),
        forest=forest,
        value_bounds=_bounds_of(m),
        laplace_scale=laplace,
        laplace_ls=(hier is not None or forest is not None)
        and any(
            "laplace" in str(e.get("distribution", "")).lower() for e in m["statistics"].values()
        ),
    )


def _bounds_of(m: dict[str, Any]) -> tuple[float, float] | None:
    b = (m.get("contribution_bounds") or {}).get("bounds")
    return (float(b[0]), float(b[1])) if b else None


def _forest_of(
    m: dict[str, Any], ids: np.ndarray, res: np.ndarray, stats: tuple[str, ...]
) -> _Forest:
    """The PrivTree of an adaptive release, rebuilt from its (public) leaves: the internal
    nodes are exactly the leaves' H3 parents from the root resolution down. An adaptive
    grid's forest has two depths: its first-level cells (the leaves' parents at the first
    resolution, every one measured) and the leaves."""
    if m["adaptive"].get("kind") == "grid":
        return _grid_forest_of(m, ids, res, stats)
    root = int(m["adaptive"]["root_resolution"])
    finest = int(m["adaptive"]["finest_resolution"])
    nodes: list[np.ndarray] = []
    for r in range(root, finest + 1):
        deeper = res > r
        parents = hierarchy.cells_to_parents(ids[deeper], r) if deeper.any() else ids[:0]
        nodes.append(np.unique(np.concatenate([ids[res == r], parents])))
    depth = res - root
    pos = np.zeros(len(ids), dtype=np.int64)
    for d in range(len(nodes)):
        here = depth == d
        pos[here] = np.searchsorted(nodes[d], ids[here])
    parent: list[np.ndarray | None] = [None]
    for d in range(1, len(nodes)):
        up = hierarchy.cells_to_parents(nodes[d], root + d - 1)
        parent.append(np.searchsorted(nodes[d - 1], up))
    node_var: dict[str, list[np.ndarray]] = {}
    for s in stats:
        leaf_var = _noise_variance(m["statistics"][s])
        per_depth = []
        for d, level in enumerate(nodes):
            entry = m["statistics"].get(f"{s}_internal@{root + d}")
            v = np.full(len(level), math.inf if entry is None else _noise_variance(entry))
            v[pos[depth == d]] = leaf_var
            per_depth.append(v)
        node_var[s] = per_depth
    return _Forest(parent=parent, depth=depth, pos=pos, node_var=node_var)


def _grid_forest_of(
    m: dict[str, Any], ids: np.ndarray, res: np.ndarray, stats: tuple[str, ...]
) -> _Forest:
    from .adaptive_grid import TOTAL_KEY, first_key

    r1 = int(m["adaptive"]["first_resolution"])
    up = hierarchy.cells_to_parents(ids, r1)
    first = np.unique(up)
    total = m["statistics"].get(TOTAL_KEY)  # measured iff the first level was chosen from it
    node_var: dict[str, list[np.ndarray]] = {}
    for s in stats:
        first_entry = m["statistics"][first_key(s, None if total else r1)]
        node_var[s] = [
            # the total count chose the first level: it is not part of the estimates (∞)
            np.array([math.inf]),
            np.full(len(first), _noise_variance(first_entry)),
            np.full(len(ids), _noise_variance(m["statistics"][s])),
        ]
    return _Forest(
        parent=[None, np.zeros(len(first), dtype=np.int64), np.searchsorted(first, up)],
        depth=np.full(len(ids), 2, dtype=np.int64),
        pos=np.arange(len(ids)),
        node_var=node_var,
    )


def _hidden_error(n_hidden: int, n_needed: int, where: str, categories: bool = False) -> SpecError:
    rows = "(cell, category) rows" if categories else "cells"
    return SpecError(
        f"the release hides {n_hidden} of the {n_needed} {rows} needed {where} (suppressed: their "
        "noisy counts are below the display threshold), and it was read from a file without the "
        "unbiased estimates, so adding up only the visible cells would be biased; ask the publisher "
        "for the file written with to_file(..., include_unbiased=True), or for a release made with "
        "suppress_below=False"
    )


def _hidden_for_public(hidden: np.ndarray) -> SpecError:
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


def _totals(
    rows: _Rows, stat: str, cell: np.ndarray, group: np.ndarray, weight: np.ndarray, ngroups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted totals per (group, category) and their noise variances."""
    vals, var = rows.values[stat], rows.variances[stat]
    est = np.zeros((ngroups, rows.ncat))
    out_var = np.zeros((ngroups, rows.ncat))
    for k in range(rows.ncat):
        est[:, k] = np.bincount(group, weights=weight * vals[cell, k], minlength=ngroups)
        if rows.hier is None and rows.forest is None:
            out_var[:, k] = np.bincount(group, weights=weight**2 * var[cell, k], minlength=ngroups)
    if rows.hier is not None:
        out_var[:] = _hier_variance(rows.hier, stat, cell, group, weight, ngroups)[:, None]
    if rows.forest is not None:
        out_var[:] = _forest_variance(rows.forest, stat, cell, group, weight, ngroups)[:, None]
    return est, out_var


def _chunks_of_groups(group: np.ndarray, ngroups: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, rows of groups start..stop-1) for chunks of :data:`_CHUNK` groups with rows."""
    for start in range(0, ngroups, _CHUNK):
        stop = min(start + _CHUNK, ngroups)
        sel = (group >= start) & (group < stop)
        if sel.any():
            yield start, stop, sel


def _forest_variance(
    f: _Forest, stat: str, cell: np.ndarray, group: np.ndarray, weight: np.ndarray, ngroups: int
) -> np.ndarray:
    """Exact Var(Σ w x) of an adaptive release's least-squares leaf estimates: wᵀ P (Σ w),
    one run of :func:`dpmap.hierarchy.consistent_forest` per chunk of weight vectors (the
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
    h: _Hier, stat: str, cell: np.ndarray, group: np.ndarray, weight: np.ndarray, ngroups: int
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


def _margins(
    rows: _Rows, stat: str, var: np.ndarray, single: np.ndarray | None = None
) -> np.ndarray:
    """95% margins from variances; ``single`` marks totals that are one whole row of a flat release."""
    moe = Z95 * np.sqrt(var)
    if single is not None and stat in rows.exact_moe:
        moe = np.where(single[:, None], rows.exact_moe[stat], moe)
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


def _value_range(rows: _Rows) -> tuple[float, float]:
    """The range every record's published value lies in: the public bounds, widened to
    whole units (values are clamped to the bounds, then rounded half up)."""
    if rows.value_bounds is None:
        return (-math.inf, math.inf)
    a, b = rows.value_bounds
    return (float(math.floor(a)), float(math.ceil(b)))


def _interval(
    rows: _Rows, stat: str, cell: np.ndarray, group: np.ndarray, whole: np.ndarray, ngroups: int
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
        return _totals(rows, stat, cell[sel], group[sel], ones[sel], ngroups)

    def one_sided(var: np.ndarray, n: np.ndarray) -> np.ndarray:
        moe = _margins(rows, stat, var, n == 1)
        if rows.laplace_ls:
            # least-squares combinations of Laplace noise: the standardised one-sided 97.5%
            # quantile of one Laplace draw, −ln(0.05)/√2 = 2.118 (sums of several draws
            # have lighter tails: 2.03 for 3, 1.97 for 20), instead of the normal 1.96
            return moe * (Z95_LAPLACE / Z95)
        scale = (rows.laplace_scale or {}).get(stat)
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
    c_border, c_var = _totals(rows, "count", cell[border], group[border], ones[border], ngroups)
    lo = inside + low_v * c_border - Z95 * np.sqrt(var_in + low_v**2 * c_var)
    hi = inside + high_v * c_border + Z95 * np.sqrt(var_in + high_v**2 * c_var)
    # no border cells: the sum of the cells inside alone, with its exact margin
    none = (np.bincount(group[border], minlength=ngroups) == 0)[:, None]
    m_in = one_sided(var_in, n_in)
    return np.where(none, inside - m_in, lo), np.where(none, inside + m_in, hi)


# ---------------------------------------------------------------------------------------
# geometry helpers


def _transformer() -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", EQUAL_AREA_CRS, always_xy=True)


def _equal_area(geoms: np.ndarray) -> np.ndarray:
    """Areas (m²) of lon/lat geometries, measured in the equal-area projection."""
    import shapely

    if len(geoms) == 0:
        return np.zeros(0)
    tr = _transformer()

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.area(shapely.transform(geoms, project)), dtype=np.float64)


def _overlay(
    cells: np.ndarray, polys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (cell, polygon) that share area: (cell index, polygon index, weight, area m²).

    weight = area(cell ∩ polygon) / area(cell). Cells wholly inside a polygon (found with
    a prepared ``contains_properly`` query) get weight 1 without computing an intersection;
    weights within 1e-6 of 0 or 1 (slivers along shared edges) are snapped to 0 or 1.
    """
    import shapely

    tree = shapely.STRtree(cells)
    pj, pi = tree.query(polys, predicate="intersects")
    ij, ii = tree.query(polys, predicate="contains_properly")
    n = np.int64(len(cells))
    inside = np.isin(pj.astype(np.int64) * n + pi, ij.astype(np.int64) * n + ii)
    used = np.unique(pi)
    cell_area = np.zeros(len(cells))
    cell_area[used] = _equal_area(cells[used])
    area = cell_area[pi].copy()
    border = ~inside
    if border.any():
        pieces = shapely.intersection(cells[pi[border]], polys[pj[border]])
        area[border] = np.minimum(_equal_area(pieces), cell_area[pi[border]])
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(cell_area[pi] > 0, area / cell_area[pi], 0.0)
    # shared edges computed twice in floating point leave slivers: snap them
    weight = np.where(weight < _SNAP, 0.0, np.where(weight > 1 - _SNAP, 1.0, weight))
    area = weight * cell_area[pi]
    keep = weight > 0
    return pi[keep], pj[keep], weight[keep], area[keep]


def _polygons(polygons: Any, by: str | None) -> tuple[np.ndarray, pd.Series, str]:
    """User polygons -> (EPSG:4326 polygons, key values, key column name)."""
    import geopandas as gpd
    import shapely

    if isinstance(polygons, gpd.GeoSeries):
        polygons = gpd.GeoDataFrame(geometry=polygons)
    if not isinstance(polygons, gpd.GeoDataFrame):
        raise SpecError(
            f"polygons must be a GeoDataFrame (or GeoSeries), got {type(polygons).__name__}; "
            "read them with geopandas.read_file(...)"
        )
    if len(polygons) == 0:
        raise SpecError("polygons is empty; pass at least one polygon")
    if polygons.crs is None:
        raise SpecError(
            "the polygons have no CRS, so dpmap cannot tell whether they are in degrees; set it, "
            "e.g. polygons.set_crs('EPSG:4326') for lon/lat, or the CRS they were drawn in"
        )
    if by is None:
        name = polygons.index.name or "polygon"
        keys = pd.Series(polygons.index.to_numpy(), name=name)
    else:
        if by not in polygons.columns or by == polygons.geometry.name:
            cols = [c for c in polygons.columns if c != polygons.geometry.name]
            raise SpecError(
                f"the polygons have no column {by!r}; pass by=<the column naming each polygon> "
                f"(one of {cols}) or by=None to use the index"
            )
        name = by
        keys = pd.Series(polygons[by].to_numpy(), name=name)
    if name in _RESULT_COLUMNS or name == "geometry":
        raise SpecError(
            f"the polygons' key column is called {name!r}, a name the result uses for a statistic; "
            "rename it (e.g. polygons.rename(columns={...}))"
        )
    if keys.isna().any():
        raise SpecError(f"the key column {name!r} has missing values; name every polygon")
    dup = keys[keys.duplicated()]
    if len(dup):
        raise SpecError(
            f"the key column {name!r} repeats {dup.iloc[0]!r}; each polygon needs its own key, or "
            f"merge the parts first with polygons.dissolve(by={name!r})"
        )
    geoms = np.asarray(polygons.to_crs("EPSG:4326").geometry.to_numpy(), dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        raise SpecError(
            f"polygon {keys[missing].iloc[0]!r} has no geometry; drop it or give it its shape"
        )
    kinds = shapely.get_type_id(geoms)
    if not np.isin(kinds, (3, 6)).all():  # Polygon, MultiPolygon
        bad = int(np.flatnonzero(~np.isin(kinds, (3, 6)))[0])
        raise SpecError(
            f"polygon {keys.iloc[bad]!r} is a {geoms[bad].geom_type}, not an area; pass Polygons "
            "or MultiPolygons"
        )
    valid = shapely.is_valid(geoms)
    if not valid.all():
        bad = int(np.flatnonzero(~valid)[0])
        raise SpecError(
            f"polygon {keys.iloc[bad]!r} is not valid ({shapely.is_valid_reason(geoms[bad])}); "
            "repair it first, e.g. polygons.geometry = polygons.make_valid()"
        )
    return geoms, keys, name


# ---------------------------------------------------------------------------------------
# 1. roll-ups to user polygons


def aggregate_to(
    rel: Release, polygons: Any, by: str | None = "name", *, resolution: int | None = None
) -> Any:
    """Add up a release's cells within user polygons (districts, postcodes, ...).

    Parameters
    ----------
    rel
        A :class:`~dpmap.Release`.
    polygons
        GeoDataFrame (or GeoSeries) of Polygons/MultiPolygons in any CRS (reprojected to
        EPSG:4326; one without a CRS is refused). Polygons may overlap each other.
    by
        Column naming each polygon (unique); ``None``: the index.
    resolution
        Hierarchical releases only: which level to add up (default: the finest).

    Returns
    -------
    GeoDataFrame (EPSG:4326), one row per polygon (× category, in the release's order):
    ``by``, [``category``], ``count``, ``count_moe``, ``count_lo``, ``count_hi``,
    [``sum``, ``sum_moe``, ``sum_lo``, ``sum_hi``], ``coverage`` (share of the polygon's
    area covered by released cells), ``cells`` (released cells sharing area with it) and
    the polygon's ``geometry``. A polygon that no released cell touches has null numbers
    and coverage 0.

    ``count_lo`` … ``count_hi`` is the **95% interval** for the polygon's true count: it
    covers both the noise and the error of apportioning the cells its border splits.
    ``count`` is a point estimate inside it and ``count_moe`` is the margin of the
    **noise only** (kept for backward compatibility): ``count ± count_moe`` is not a 95%
    interval for the true count when the border splits cells (in a simulation with
    clustered points it covered 2% of zones at resolution 6 and about a third at
    resolution 8, flat, hierarchical or adaptive grid; ``[count_lo, count_hi]`` ≥ 99%).

    Method
    ------
    Point estimate: each cell contributes its unbiased noisy estimate times ``w`` = the
    share of the cell's area inside the polygon (areas in the equal-area projection
    :data:`EQUAL_AREA_CRS`), i.e. points are assumed spread evenly within a cell that a
    border splits. Only the part of the polygon covered by released cells is counted.
    ``count_moe``: ``1.96·√Var`` of that estimate (normal approximation; the exact
    variance of the correlated estimates of hierarchical and consistent adaptive
    releases, see the module docstring; the exact discrete margin for a polygon holding
    one whole cell of a flat release).

    Interval: every record lies in exactly one cell, so the true count T lies between L,
    the count of the cells **wholly inside** the polygon, and U, the count of **every
    cell touching** it (a polygon inside one cell: L = 0, U = that cell), whatever the
    data. ``count_lo = L̂ − m(L)`` and ``count_hi = Û + m(U)``, with m a one-sided 97.5%
    margin: the exact quantile of the summed discrete Laplace noise of a flat (or
    leaf-only adaptive) release; for the least-squares estimates of hierarchical and
    consistent adaptive releases with Laplace noise, 2.118 × the exact standard deviation
    (the one-sided 97.5% point of a single Laplace draw, whose tail is the heaviest of
    their combinations; the normal 1.96 fell short, about 94% for whole cells); with
    Gaussian noise 1.96 × the exact standard deviation. Each end misses with probability ≤ 2.5%, so the interval misses T
    with probability ≤ 5% (union bound); it is conservative, more so the more records
    the border cells hold. Both ends are moved into [0, ∞) (a true count is never
    negative), which can only add coverage. Sums: with public bounds ``lo ≥ 0`` the same
    (sum of the cells inside ≤ true sum ≤ sum of the cells touching; clamped at 0);
    ``hi ≤ 0`` mirrored; when ``lo < 0 < hi`` the border cells' records can pull either
    way, so ``sum_lo``/``sum_hi`` = sum inside + ``lo``/``hi`` × count of the border cells
    (values widened to whole units), ∓ 1.96·√(Var sum + bound² · Var count) (count and
    sum noise are independent), not clamped. Its width is what a roll-up of cells can
    honestly say: ``count_hi − count_lo`` grows with the records in border cells, so
    coarse cells give wide intervals for small polygons (see :func:`plan_resolution`).
    A release without a public region counts unpublished cells as zero, so there the
    interval (like the estimate) holds for the published cells only.

    Privacy
    -------
    Post-processing of the release's noisy values: no data read, no budget spent.
    """
    import geopandas as gpd

    rows = _rows_of(rel, resolution)
    polys, keys, name = _polygons(polygons, by)
    npoly = len(polys)
    if len(rows.cells):
        cell, group, weight, area = _overlay(rows.geometry, polys)
    else:  # pragma: no cover - a release always has cells over a region
        cell = group = np.zeros(0, dtype=np.int64)
        weight = area = np.zeros(0)
    _check_hidden(rows, cell, group, keys)
    import shapely

    poly_area = _equal_area(shapely.segmentize(polys, _SEGMENT_DEG))
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.bincount(group, weights=area, minlength=npoly) / poly_area
    coverage = np.clip(np.nan_to_num(coverage), 0.0, 1.0)
    ncells = np.bincount(group, minlength=npoly)
    single = (ncells == 1) & (np.bincount(group, weights=weight, minlength=npoly) == 1.0)
    ncat = rows.ncat
    data: dict[str, Any] = {name: np.repeat(keys.to_numpy(), ncat)}
    if rows.categories is not None:
        data["category"] = np.tile(np.asarray(rows.categories, dtype=object), npoly)
    empty = np.repeat(ncells == 0, ncat)
    whole = weight == 1.0  # cells wholly inside their polygon (weights are snapped)
    for stat in rows.stats:
        est, var = _totals(rows, stat, cell, group, weight, npoly)
        moe = _margins(rows, stat, var, single)
        lo, hi = _interval(rows, stat, cell, group, whole, npoly)
        data[stat] = np.where(empty, np.nan, est.reshape(-1))
        data[f"{stat}_moe"] = np.where(empty, np.nan, moe.reshape(-1))
        data[f"{stat}_lo"] = np.where(empty, np.nan, lo.reshape(-1))
        data[f"{stat}_hi"] = np.where(empty, np.nan, hi.reshape(-1))
    data["coverage"] = np.repeat(coverage, ncat)
    data["cells"] = np.repeat(ncells, ncat).astype(np.int64)
    out = gpd.GeoDataFrame(data, geometry=np.repeat(polys, ncat), crs="EPSG:4326")
    out.attrs["dpmap_by"] = name
    return out


def _check_hidden(rows: _Rows, cell: np.ndarray, group: np.ndarray, keys: pd.Series) -> None:
    if rows.unbiased or not rows.hidden.any():
        return
    hid = rows.hidden[cell]  # (pairs, ncat)
    if hid.any():
        where_ = keys.iloc[int(group[np.flatnonzero(hid.any(axis=1))[0]])]
        raise _hidden_error(
            int(hid.sum()),
            int(hid.size),
            f"for these polygons (e.g. in {where_!r})",
            rows.categories is not None,
        )


# ---------------------------------------------------------------------------------------
# 2. comparisons


def compare(a: Any, b: Any, *, by: str | None = None) -> Any:
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

    Raises :class:`SpecError` for releases of different regions, resolutions or
    categories, for releases whose cells were chosen privately (they differ between
    releases), and when a file without unbiased estimates hides cells.

    Privacy
    -------
    Post-processing of noisy values: no data read, no budget spent. Each release has
    its own ε; publishing both spends both (the ledger records that).
    """
    from .release import Release

    if isinstance(a, Release) and isinstance(b, Release):
        if by is not None:
            raise SpecError("by= applies to comparing roll-ups, not releases; drop by=")
        return _compare_releases(a, b)
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return _compare_tables(a, b, by)
    raise SpecError(
        f"compare takes two Releases or two roll-ups (results of aggregate_to), got "
        f"{type(a).__name__} and {type(b).__name__}"
    )


def _release_rows(rel: Release, label: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Every row's key, unbiased value and variance (published values when that is all there is)."""
    m = rel._manifest
    keys = [c for c in ("cell", "resolution", "category") if c in rel._cells.columns]
    stats = tuple(s for s in _STATS if s in rel._cells.columns)
    est = rel._estimates
    if est is not None:
        return est[keys + [c for s in stats for c in (s, f"{s}_var")]].copy(), stats
    table = rel._cells
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
            out[f"{s}_var"] = _noise_variance(m["statistics"][s])
    return out, stats


def _compare_releases(a: Release, b: Release) -> Any:
    import geopandas as gpd

    ma, mb = a._manifest, b._manifest
    if _levels_of(ma) != _levels_of(mb):
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
    ta, stats_a = _release_rows(a, "a")
    tb, stats_b = _release_rows(b, "b")
    keys = [c for c in ("cell", "resolution", "category") if c in ta.columns]
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
    geom_of = a._cells.drop_duplicates("cell").set_index("cell").geometry
    geometry = geom_of.reindex(merged["cell"]).to_numpy()
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
        candidates = [c for c in a.columns if c not in _RESULT_COLUMNS and c != geom]
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
        s for s in _STATS if {s, f"{s}_moe"} <= set(a.columns) and {s, f"{s}_moe"} <= set(b.columns)
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


# ---------------------------------------------------------------------------------------
# 3. around a point


@dataclass(frozen=True)
class CategoryAround:
    """One category's totals in the cells around a point."""

    category: str
    count: float
    count_moe: float
    sum: float | None = None
    sum_moe: float | None = None


@dataclass(frozen=True)
class Around:
    """What a release says about the whole H3 cells overlapping a circle around a point.

    ``count``/``sum`` are unbiased noisy totals over ``cells`` (every released cell that
    overlaps the geodesic disk of ``radius_m`` around (``lat``, ``lng``)), with 95%
    margins. They are totals over those **whole cells** (``area_km2`` in all, usually much
    more than the circle): not counts within ``radius_m``, which dpmap never publishes.
    ``coverage`` is the share of the circle's area that released cells cover (below 1
    near the edge of the published area). ``categories`` holds per-category totals for
    a release with a category breakdown (``count`` is then the total over categories).

    Display rule (one for every number of the answer): the sentence (``str``) shows each
    total within the range its true value can take — counts, and sums of a value whose
    public lower bound is ≥ 0, are shown as 0 when their noisy value is negative (a sum
    of values ≤ 0 is shown as 0 when positive; a sum of values of both signs as it is).
    The sentence says so whenever it moved a number. The fields and :meth:`as_dict`
    keep the unbiased values (which may be negative: that is what adding up needs);
    ``as_dict()["display"]`` holds the shown values and ``display_rule`` the rule.
    """

    lat: float
    lng: float
    radius_m: float
    count: float
    count_moe: float
    cells: tuple[str, ...]
    area_km2: float
    coverage: float
    resolution: int | None
    sum: float | None = None
    sum_moe: float | None = None
    value: str | None = None
    categories: tuple[CategoryAround, ...] | None = None
    noun: str = "records"
    value_bounds: tuple[float, float] | None = None

    @property
    def display_rule(self) -> str:
        """The display rule, in words (the same for every number of the answer)."""
        lo, hi = self.value_bounds or (0.0, math.inf)
        if self.sum is None or lo >= 0:
            return "noisy totals below 0 are shown as 0"
        if hi <= 0:
            return "noisy counts below 0, and noisy sums above 0, are shown as 0"
        return (
            "noisy counts below 0 are shown as 0 (sums can be negative and are shown as they are)"
        )

    def _show_count(self, x: float) -> float:
        return max(x, 0.0)

    def _show_sum(self, x: float) -> float:
        lo, hi = self.value_bounds or (0.0, math.inf)
        return max(x, 0.0) if lo >= 0 else min(x, 0.0) if hi <= 0 else x

    def _shown(self) -> list[tuple[float, float]]:
        """(unbiased, shown) for every number the sentence prints."""
        pairs = [(self.count, self._show_count(self.count))]
        if self.sum is not None:
            pairs.append((self.sum, self._show_sum(self.sum)))
        for c in self.categories or ():
            pairs.append((c.count, self._show_count(c.count)))
            if c.sum is not None:
                pairs.append((c.sum, self._show_sum(c.sum)))
        return pairs

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cells"] = list(self.cells)
        if self.value_bounds is not None:
            out["value_bounds"] = list(self.value_bounds)
        out["display"] = {"count": self._show_count(self.count)}
        if self.sum is not None:
            out["display"]["sum"] = self._show_sum(self.sum)
        if self.categories is not None:
            out["categories"] = [
                {
                    **asdict(c),
                    "display": {"count": self._show_count(c.count)}
                    | ({"sum": self._show_sum(c.sum)} if c.sum is not None else {}),
                }
                for c in self.categories
            ]
        out["display_rule"] = self.display_rule
        out["statement"] = str(self)
        return out

    def __str__(self) -> str:
        n = len(self.cells)
        digits = 0 if self.count_moe >= 1 else 1
        cells = "the one whole H3 cell" if n == 1 else f"the {n} whole H3 cells"
        verb = "overlaps" if n == 1 else "overlap"
        radius = _fmt_distance(self.radius_m)
        text = (
            f"about {_fmt(self._show_count(self.count), digits)} ± {_fmt(self.count_moe, digits)} "
            f"{self.noun} in {cells} ({_fmt_area(self.area_km2)} km²) that {verb} the {radius} "
            f"circle — not a count within {radius}"
        )
        if self.sum is not None and self.sum_moe is not None:
            d = 0 if self.sum_moe >= 1 else 1
            text += (
                f"; their {self.value or 'value'} adds up to about "
                f"{_fmt(self._show_sum(self.sum), d)} ± {_fmt(self.sum_moe, d)}"
            )
        if self.coverage < 0.995:
            text += (
                f" (the circle reaches beyond the published area: released cells cover "
                f"{self.coverage:.0%} of it)"
            )
        if any(shown != raw for raw, shown in self._shown()):
            text += f" ({self.display_rule})"
        for c in self.categories or ():
            d = 0 if c.count_moe >= 1 else 1
            text += (
                f"\n  {c.category}: about {_fmt(self._show_count(c.count), d)} ± "
                f"{_fmt(c.count_moe, d)}"
            )
            if c.sum is not None and c.sum_moe is not None:
                ds = 0 if c.sum_moe >= 1 else 1
                text += (
                    f", {self.value or 'value'} about {_fmt(self._show_sum(c.sum), ds)} ± "
                    f"{_fmt(c.sum_moe, ds)}"
                )
        return text


def _fmt(x: float, digits: int) -> str:
    s = f"{x:,.{digits}f}"
    return "0" if s in ("-0", "-0.0") else s


def _fmt_area(km2: float) -> str:
    return f"{km2:,.0f}" if km2 >= 100 else f"{km2:.3g}"


def _fmt_distance(m: float) -> str:
    return f"{m:g} m" if m < 1000 else f"{m / 1000:g} km"


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise SpecError(f"{what} must be a finite number, got {value!r}")
    return v


def _disk(lat: float, lng: float, radius_m: float, n: int = 64) -> Any:
    """A lon/lat polygon around the geodesic disk: n vertices at radius / cos(π/n), so its
    straight edges stay outside the circle (every cell overlapping the disk overlaps it)."""
    import shapely
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    az = np.linspace(0.0, 360.0, n, endpoint=False)
    lons, lats, _ = geod.fwd(
        np.full(n, lng), np.full(n, lat), az, np.full(n, radius_m / math.cos(math.pi / n))
    )
    lons = np.asarray(lons)
    if lons.max() - lons.min() > 180 or abs(lat) + radius_m / 111_000 >= 89.9:
        raise SpecError(
            "the circle crosses the antimeridian or reaches a pole, which around() does not "
            "support; use a smaller radius_m"
        )
    return shapely.Polygon(np.column_stack([lons, lats]))


def around(
    rel: Release,
    lat: float,
    lng: float,
    radius_m: float = 500.0,
    *,
    resolution: int | None = None,
    noun: str = "records",
) -> Around:
    """Totals of the released cells that overlap a circle around a point.

    Answers "how much is around here?" honestly: the result adds up every released cell
    that overlaps the geodesic disk of ``radius_m`` metres around (``lat``, ``lng``), and
    says so — it is a total over those whole cells (see :class:`Around`), never a count
    within ``radius_m``. Unbiased noisy estimates are used (suppressed cells included);
    margins as in :func:`aggregate_to` (exact for a single cell of a flat release, exact
    variance for a hierarchical one, normal approximation otherwise).

    Parameters
    ----------
    lat, lng
        The point, in degrees. It must lie in a released cell (else :class:`SpecError`).
    radius_m
        Radius of the circle in metres (> 0).
    resolution
        Hierarchical releases only: the level to use (default: the finest).
    noun
        What the count counts, for the sentence (e.g. ``"debts"``).

    Privacy
    -------
    Post-processing of the release's noisy values: no data read, no budget spent.
    """
    import h3
    import shapely

    lat = _finite(lat, "lat")
    lng = _finite(lng, "lng")
    radius_m = _finite(radius_m, "radius_m")
    if not -90 <= lat <= 90:
        raise SpecError(f"lat must be in [-90, 90] degrees, got {lat!r}")
    if not -180 <= lng <= 180:
        raise SpecError(f"lng must be in [-180, 180] degrees, got {lng!r}")
    if radius_m <= 0:
        raise SpecError(f"radius_m must be > 0 metres, got {radius_m!r}; e.g. radius_m=500")
    if not isinstance(noun, str) or not noun.strip():
        raise SpecError(f"noun must be a non-empty word such as 'debts', got {noun!r}")
    rows = _rows_of(rel, resolution)
    index = pd.Index(rows.cells)
    present = sorted({int(r) for r in np.unique(rows.resolutions)})
    finest = h3.latlng_to_cell(lat, lng, present[-1])
    own = {h3.latlng_to_cell(lat, lng, r) for r in present}  # geometric containment
    own |= {h3.cell_to_parent(finest, r) for r in present}  # and along the index tree
    if not (index.get_indexer(sorted(own)) >= 0).any():
        raise SpecError(
            f"the point ({lat:.6g}, {lng:.6g}) is outside the released area (it lies in no released "
            "H3 cell); pick a point inside the release's region"
        )
    disk = _disk(lat, lng, radius_m)
    candidates: list[int] = []
    for r in present:
        centre = h3.latlng_to_cell(lat, lng, r)
        edge = min(h3.edge_length(e, unit="m") for e in h3.origin_to_directed_edges(centre))
        # a cell overlapping the disk has its centre within radius + 2 edges of the centre
        # cell's centre; k rings reach at least 1.5·k edges (0.8: edges vary between cells)
        k = math.ceil((radius_m + 2 * edge) / (1.5 * edge * 0.8)) + 1
        level = np.flatnonzero(rows.resolutions == r)
        if 3 * k * (k + 1) + 1 >= len(level):
            candidates.extend(level.tolist())
        else:
            pos = index.get_indexer(list(h3.grid_disk(centre, k)))
            candidates.extend(int(p) for p in pos if p >= 0)
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    cand = cand[shapely.intersects(rows.geometry[cand], disk)]
    cand = cand[np.argsort(rows.cells[cand])]
    if not rows.unbiased and rows.hidden[cand].any():
        raise _hidden_for_public(rows.hidden[cand])
    pieces = shapely.intersection(rows.geometry[cand], disk)
    coverage = float(
        min(
            1.0,
            _equal_area(pieces).sum() / _equal_area(np.array([shapely.segmentize(disk, 0.01)]))[0],
        )
    )
    ones = np.ones(len(cand))
    group = np.zeros(len(cand), dtype=np.int64)
    single = np.array([len(cand) == 1])
    totals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for stat in rows.stats:
        est, var = _totals(rows, stat, cand, group, ones, 1)
        totals[stat] = (est[0], var[0])
    count, count_var = totals["count"]
    moe_c = _margins(rows, "count", count_var[None, :], single)[0]
    cats = None
    has_sum = "sum" in totals
    if has_sum:
        moe_s = _margins(rows, "sum", totals["sum"][1][None, :], single)[0]
    if rows.categories is not None:
        cats = tuple(
            CategoryAround(
                category=c,
                count=float(count[k]),
                count_moe=float(moe_c[k]),
                sum=float(totals["sum"][0][k]) if has_sum else None,
                sum_moe=float(moe_s[k]) if has_sum else None,
            )
            for k, c in enumerate(rows.categories)
        )
    one = rows.ncat == 1
    return Around(
        lat=lat,
        lng=lng,
        radius_m=radius_m,
        count=float(count.sum()),
        count_moe=float(moe_c[0]) if one else float(Z95 * math.sqrt(count_var.sum())),
        cells=tuple(str(c) for c in rows.cells[cand]),
        area_km2=float(sum(h3.cell_area(str(c), unit="km^2") for c in rows.cells[cand])),
        coverage=coverage,
        resolution=present[0] if len(present) == 1 else None,
        sum=float(totals["sum"][0].sum()) if has_sum else None,
        sum_moe=(
            (float(moe_s[0]) if one else float(Z95 * math.sqrt(totals["sum"][1].sum())))
            if has_sum
            else None
        ),
        value=rows.value_name,
        categories=cats,
        noun=noun.strip(),
        value_bounds=rows.value_bounds if has_sum else None,
    )


# ---------------------------------------------------------------------------------------
# 4. planning: ε or resolution for a target margin


@dataclass(frozen=True)
class EpsilonPlan:
    """The outcome of :func:`plan_epsilon` / :func:`plan_resolution` (public parameters only).

    ``moe`` is the 95% margin of error reached (≤ ``target_moe``): of one cell's value, or
    with ``area_km2`` of the total over an area of that size (``cells`` cells of average
    size at ``resolution``). With ``expected_total`` it is the expected half-width of the
    honest 95% interval ``[count_lo, count_hi]`` of :func:`aggregate_to` for that area,
    which adds the records of the cells its border cuts to the noise; ``noise_moe`` is
    then the noise-only margin.

    ``border_share`` (with ``area_km2``): the expected records in the cells cut by the
    area's border per record in the area, if records are spread evenly — from the public
    geometry only (the area, its ``perimeter_km`` and the average cell at ``resolution``):
    the width of the interval for the area's true total, U − L, is about
    ``border_share × total``.
    """

    epsilon: float
    moe: float
    target_moe: float
    statistic: str
    resolution: int | tuple[int, ...]
    mechanism: str
    delta: float
    area_km2: float | None = None
    cells: float | None = None
    border_share: float | None = None
    perimeter_km: float | None = None
    expected_total: float | None = None
    noise_moe: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.resolution, tuple):
            out["resolution"] = list(self.resolution)
        out["statement"] = str(self)
        return out

    def __str__(self) -> str:
        res = self.resolution
        finest = res[-1] if isinstance(res, tuple) else res
        where = (
            f"each cell's {self.statistic}"
            if self.area_km2 is None
            else f"the total {self.statistic} over {_fmt_area(self.area_km2)} km² "
            f"(≈{self.cells:.3g} cells)"
        )
        delta = f", δ = {self.delta:.3g}" if self.delta else ""
        levels = "/".join(map(str, res)) if isinstance(res, tuple) else str(res)
        what = (
            "a 95% margin of error"
            if self.expected_total is None
            else "an expected 95% interval (noise and cells cut by the border)"
        )
        text = (
            f"ε = {self.epsilon:.4g}{delta} ({self.mechanism}) gives {what} of "
            f"±{self.moe:.4g} (target ±{self.target_moe:.4g}) on {where} at H3 resolution {levels} "
            f"(average cell {_fmt_area(grid.average_cell_area_km2(finest))} km²)"
        )
        if self.border_share is None:
            return text
        share = (
            f"{self.border_share:.0%}" if self.border_share < 10 else f"{self.border_share:.3g}×"
        )
        if self.expected_total is None:
            return text + (
                f"; that margin covers the noise only: the cells cut by the area's border hold "
                f"about {share} as many records as the area (even spread assumed), which widens "
                "the 95% interval for its true total (count_lo … count_hi of aggregate_to); pass "
                "expected_total= to plan for that interval"
            )
        border = self.border_share * self.expected_total
        return text + (
            f": noise ±{self.moe - border / 2:.4g} plus half the ≈{border:.4g} expected in cells "
            f"cut by the border ({share} of the {self.expected_total:.4g} expected in the area, "
            "even spread assumed)"
        )


def _plan_spec(params: dict[str, Any], statistic: str) -> dict[str, Any]:
    params = dict(params)
    for k in ("region", "ledger", "dataset", "diagnostics", "title", "integers"):
        params.pop(k, None)  # they do not change the noise
    if statistic not in _STATS:
        raise SpecError(f"statistic must be 'count' or 'sum', got {statistic!r}")
    if statistic == "sum":
        if params.get("bounds") is None:
            raise SpecError(
                "statistic='sum' needs the public bounds of the value; pass bounds=(lo, hi)"
            )
        params.setdefault("value", "value")
    for k in ("categories", "bounds", "level_split"):
        if isinstance(params.get(k), list):
            params[k] = tuple(params[k])
    return params


def _noise_at(
    params: dict[str, Any], epsilon: float, resolution: Any, statistic: str
) -> tuple[Any, Any]:
    """The planned noise of one cell's ``statistic`` (OpenDP's calibration) and the plan."""
    from .mechanisms import plan_noise
    from .spec import ReleaseSpec

    try:
        spec = ReleaseSpec(epsilon=epsilon, resolution=resolution, **params)
    except TypeError as exc:  # unknown keyword
        raise SpecError(str(exc)) from None
    plan = plan_noise(spec)
    key = f"{statistic}@{spec.finest}" if spec.hierarchical else statistic
    return plan.statistics[key], plan


def _margin(noise: Any, cells: float | None) -> float:
    """95% margin of one cell (OpenDP's exact accuracy) or of a total over ``cells`` cells."""
    if cells is None or cells <= 1:
        return float(noise.moe95)
    return float(Z95 * math.sqrt(cells * noise.variance))


def _border_geometry(area: float, perimeter: float, r: int) -> tuple[float, float, float]:
    """Expected numbers of cells touching and wholly inside an area, and its border share
    ((touching − inside) × cell area / area), from public geometry only.

    The cells are taken as regular hexagons of the average area ``a`` at ``r`` (half mean
    width ρ = 3e/π, e the edge), the area as a shape of ``area`` and ``perimeter`` placed
    at random: E[cells touching] = (area + perimeter·ρ + a) / a (Steiner's formula for
    the Minkowski sum; exact for a disc), E[cells inside] ≈ (area − perimeter·ρ + a) / a
    when the area is wide enough to hold a cell (area > perimeter·ρ/2), else 0. Checked
    against H3 overlays of discs of 1-20 km radius at resolutions 5-8: the share is within
    about 20% (H3 cells away from the equator are smaller than average, which the
    average-cell figure overstates, i.e. conservatively)."""
    ac = grid.average_cell_area_km2(r)
    rho = 3 * math.sqrt(2 * ac / (3 * math.sqrt(3))) / math.pi
    touching = (area + perimeter * rho + ac) / ac
    inside = max(0.0, (area - perimeter * rho + ac) / ac) if area > perimeter * rho / 2 else 0.0
    return touching, inside, (touching - inside) * ac / area


def _interval_halfwidth(
    noise: Any, area: float, perimeter: float, r: int, expected_total: float
) -> tuple[float, float]:
    """(expected half-width of [lo, hi], border share) for a roll-up of ``area`` at ``r``:
    ½·(E[U − L] + m(L) + m(U)) with E[U − L] = expected_total × border share and m the
    one-sided 97.5% noise margins of the cells inside and touching (normal approximation)."""
    touching, inside, share = _border_geometry(area, perimeter, r)

    def m(n: float) -> float:
        return n * float(noise.moe95) if n <= 1 else Z95 * math.sqrt(n * noise.variance)

    return 0.5 * (expected_total * share + m(inside) + m(touching)), share


def _check_target(target_moe: Any, area_km2: Any) -> tuple[float, float | None]:
    target = _finite(target_moe, "target_moe")
    if target <= 0:
        raise SpecError(f"target_moe must be > 0, got {target_moe!r}")
    area = None
    if area_km2 is not None:
        area = _finite(area_km2, "area_km2")
        if area <= 0:
            raise SpecError(f"area_km2 must be > 0, got {area_km2!r}")
    return target, area


def _check_border(
    area: float | None,
    perimeter_km: Any,
    expected_total: Any,
    statistic: str,
    params: dict[str, Any],
) -> tuple[float | None, float | None]:
    """(perimeter, expected_total), checked; the perimeter defaults to a disc's."""
    if area is None:
        if perimeter_km is not None or expected_total is not None:
            raise SpecError(
                "perimeter_km= and expected_total= describe the area whose total is planned; "
                "pass area_km2= too"
            )
        return None, None
    shortest = 2 * math.sqrt(math.pi * area)  # a disc: the shortest border for the area
    perimeter = shortest
    if perimeter_km is not None:
        perimeter = _finite(perimeter_km, "perimeter_km")
        if perimeter < shortest * (1 - 1e-9):
            raise SpecError(
                f"perimeter_km={perimeter_km!r} is shorter than any shape of {area:g} km² can have "
                f"(a disc's, {shortest:.4g} km); pass the length of the area's border in km"
            )
    total = None
    if expected_total is not None:
        total = _finite(expected_total, "expected_total")
        if total < 0:
            raise SpecError(
                f"expected_total must be ≥ 0 (a rough public guess of the area's true total), "
                f"got {expected_total!r}"
            )
        bounds = params.get("bounds")
        if statistic == "sum" and bounds is not None and float(bounds[0]) < 0:
            raise SpecError(
                "expected_total= plans the border error of sums of values ≥ 0; with bounds "
                f"{tuple(bounds)} the border cells' records can pull either way: plan the count "
                "(statistic='count') instead"
            )
    return perimeter, total


def plan_epsilon(
    *,
    target_moe: float,
    resolution: int | list[int] | None = 7,
    statistic: str = "count",
    area_km2: float | None = None,
    rtol: float = 1e-6,
    expected_total: float | None = None,
    perimeter_km: float | None = None,
    **params: Any,
) -> EpsilonPlan:
    """The smallest ε whose 95% margin of error meets ``target_moe``, without data.

    Takes the keywords of :func:`dpmap.explain` except ``epsilon`` (``delta``,
    ``mechanism``, ``person``, ``max_cells``, ``value``/``bounds``, ``count_share``, ...;
    ``region`` is accepted and ignored: it does not change the noise). Every candidate ε
    is calibrated by :func:`dpmap.mechanisms.plan_noise`, i.e. by OpenDP's privacy maps
    and accuracy helpers, and the answer is found by bisection to relative precision
    ``rtol`` (the returned ε always meets the target).

    statistic
        ``"count"`` or ``"sum"`` (needs ``bounds``).
    area_km2
        Optional: target the margin of the *total* over an area of this size instead of
        one cell. With n = area_km2 / average cell area at ``resolution`` (at least 1),
        the margin is 1.96·√(n·var) (independent noise per cell, normal approximation) —
        the noise only. The plan's ``border_share`` says how much the cells cut by the
        area's border widen the honest interval for its true total.
    expected_total, perimeter_km
        With ``area_km2``: a rough public guess of the area's true total (e.g. from last
        year's published figures; never the private data) makes the target apply to the
        expected half-width of the honest interval ``[count_lo, count_hi]`` of
        :func:`aggregate_to`, noise *and* cells cut by the border (see
        :func:`plan_resolution`). ``perimeter_km``: the length of the area's border
        (default: a disc's, the shortest possible; real districts have longer borders).
    resolution
        H3 resolution (a list plans a hierarchical release, judged by the finest level's
        noise before consistency, an upper bound). ``None`` together with ``epsilon=`` and
        ``area_km2``: pick the resolution instead, see :func:`plan_resolution`.

    Privacy
    -------
    Touches no data and spends no budget.
    """
    if resolution is None:
        if "epsilon" not in params or area_km2 is None:
            raise SpecError(
                "resolution=None asks dpmap to choose the resolution, which needs epsilon= and "
                "area_km2=; otherwise pass resolution=<0..9> to choose ε"
            )
        eps = params.pop("epsilon")
        return plan_resolution(
            target_moe=target_moe,
            epsilon=eps,
            area_km2=area_km2,
            statistic=statistic,
            expected_total=expected_total,
            perimeter_km=perimeter_km,
            **params,
        )
    if "epsilon" in params:
        raise SpecError(
            "plan_epsilon finds ε; do not pass epsilon= (or pass resolution=None to choose the resolution)"
        )
    target, area = _check_target(target_moe, area_km2)
    if not 0 < rtol < 0.1:
        raise SpecError(f"rtol must be in (0, 0.1), got {rtol!r}")
    params = _plan_spec(params, statistic)
    perimeter, total = _check_border(area, perimeter_km, expected_total, statistic, params)
    if area is not None and isinstance(resolution, (list, tuple)):
        raise SpecError(
            "area_km2 plans the total over an area of a flat release; pass one resolution"
        )
    cells = None
    share = None
    r = -1
    if area is not None:
        r = grid.check_resolution(resolution)
        cells = area / grid.average_cell_area_km2(r)
        assert perimeter is not None
        share = _border_geometry(area, perimeter, r)[2]
        if total is not None and 0.5 * total * share >= target:
            raise SpecError(
                f"at resolution {r} the cells cut by the border of a {area:g} km² area hold about "
                f"{total * share:.4g} of its expected {total:g}, so the 95% interval for its total "
                f"is at least ±{0.5 * total * share:.4g} whatever ε, above the target "
                f"±{target:g}; choose a finer resolution (plan_resolution picks one) or raise "
                "target_moe"
            )

    def moe(eps: float) -> float:
        noise = _noise_at(params, eps, resolution, statistic)[0]
        if total is None or area is None or perimeter is None:
            return _margin(noise, cells)
        return _interval_halfwidth(noise, area, perimeter, r, total)[0]

    m1 = moe(1.0)
    guess = max(m1 / target, 1e-9)  # margins scale about like 1/ε
    hi = guess * 1.25
    unreachable = SpecError(
        f"no ε that OpenDP can calibrate (up to 1e6) reaches a margin of ±{target:g}; the target is "
        "below what this mechanism can deliver (e.g. below 1 for discrete Gaussian counts): raise "
        "target_moe"
    )
    try:
        while moe(hi) > target:
            hi *= 2
            if hi > 1e6:
                raise unreachable
    except MechanismError as exc:
        raise unreachable from exc
    lo = hi / 1.6
    while moe(lo) <= target:
        hi, lo = lo, lo / 2
    while hi / lo - 1 > rtol:
        mid = math.sqrt(lo * hi)
        if mid in (lo, hi):
            break
        if moe(mid) <= target:
            hi = mid
        else:
            lo = mid
    noise, plan = _noise_at(params, hi, resolution, statistic)
    res = tuple(resolution) if isinstance(resolution, (list, tuple)) else int(resolution)
    return EpsilonPlan(
        epsilon=hi,
        moe=moe(hi),
        target_moe=target,
        statistic=statistic,
        resolution=res if not (isinstance(res, tuple) and len(res) == 1) else res[0],
        mechanism=str(plan.spec.mechanism),
        delta=float(plan.delta),
        area_km2=area,
        cells=max(cells, 1.0) if cells is not None else None,
        border_share=share,
        perimeter_km=perimeter,
        expected_total=total,
        noise_moe=_margin(noise, cells) if total is not None else None,
    )


def plan_resolution(
    *,
    target_moe: float,
    epsilon: float,
    area_km2: float,
    statistic: str = "count",
    expected_total: float | None = None,
    perimeter_km: float | None = None,
    **params: Any,
) -> EpsilonPlan:
    """The finest resolution (≤ 9) at which the total over ``area_km2`` meets ``target_moe``.

    At a fixed ε every cell gets the same noise whatever the resolution, so finer cells
    mean more noise draws in an area of a given size: the noise margin of the area's
    total is 1.96·√(n·var) with n = max(1, area_km2 / average cell area) (the one cell's
    exact margin when the area fits in one cell). Coarser cells, on the other hand, make
    the error at the area's border larger: a roll-up (:func:`aggregate_to`) can only say
    that the true total lies between the cells wholly inside the area and all cells
    touching it, and the cells its border cuts hold a share ``border_share`` of the
    area's records (estimated from the public geometry alone; see :class:`EpsilonPlan`).

    Without ``expected_total`` the finest resolution whose noise margin meets the target
    is returned — among those, the one with the smallest border error — and the plan
    reports its ``border_share``. With ``expected_total`` (a rough *public* guess of the
    area's total) the target applies to the expected half-width of the honest interval,
    ½·(expected_total·border_share + m(inside) + m(touching)): the finest resolution that
    meets it is returned, or an error names the narrowest interval any resolution reaches.
    ``perimeter_km``: the length of the area's border (default: a disc's, the shortest; a
    longer border cuts more cells). Other keywords as for :func:`plan_epsilon`.

    Privacy
    -------
    Touches no data and spends no budget.
    """
    if "resolution" in params:
        raise SpecError("plan_resolution chooses the resolution; do not pass resolution=")
    target, area = _check_target(target_moe, area_km2)
    if area is None:
        raise SpecError("plan_resolution needs area_km2=<the size of the area whose total matters>")
    params = _plan_spec(params, statistic)
    perimeter, total = _check_border(area, perimeter_km, expected_total, statistic, params)
    assert perimeter is not None
    eps = _finite(epsilon, "epsilon")
    # the noise of one cell does not depend on the resolution (the sensitivities do not):
    # plan once, then count cells
    noise, plan = _noise_at(params, eps, grid.MAX_RESOLUTION, statistic)
    best: tuple[float, int] | None = None
    for r in range(grid.MAX_RESOLUTION, -1, -1):
        cells = area / grid.average_cell_area_km2(r)
        noise_moe = _margin(noise, cells)
        share = _border_geometry(area, perimeter, r)[2]
        reached = (
            noise_moe if total is None else _interval_halfwidth(noise, area, perimeter, r, total)[0]
        )
        if reached <= target:
            return EpsilonPlan(
                epsilon=float(plan.epsilon),
                moe=reached,
                target_moe=target,
                statistic=statistic,
                resolution=r,
                mechanism=str(plan.spec.mechanism),
                delta=float(plan.delta),
                area_km2=area,
                cells=max(cells, 1.0),
                border_share=share,
                perimeter_km=perimeter,
                expected_total=total,
                noise_moe=noise_moe if total is not None else None,
            )
        if best is None or reached < best[0]:
            best = (reached, r)
    assert best is not None
    if total is None:
        raise SpecError(
            f"at ε = {eps:g} even resolution 0 gives a margin of ±{best[0]:.4g} on the total over "
            f"{area:g} km², above the target ±{target:g}; raise epsilon (see plan_epsilon) or the "
            "target"
        )
    finest_border = 0.5 * total * _border_geometry(area, perimeter, grid.MAX_RESOLUTION)[2]
    fix = (
        "no ε helps: a roll-up of cells cannot reach it (even the finest cells leave "
        f"±{finest_border:.4g} from the border alone); release the area's total directly or "
        "raise the target"
        if finest_border >= target
        else "raise epsilon (see plan_epsilon) or the target"
    )
    raise SpecError(
        f"at ε = {eps:g} no resolution reaches ±{target:g} on the total over {area:g} km² with "
        f"about {total:g} expected in it: the narrowest expected 95% interval is ±{best[0]:.4g} "
        f"at resolution {best[1]} (finer cells add noise, coarser cells add border error); {fix}"
    )
