"""Consistency along H3's index hierarchy: post-processing of noisy counts at several levels.

A hierarchical release noises the same statistic at several resolutions. Its levels are
tied by H3's *exact* index hierarchy (``cell_to_parent``), never by re-binning points:
the coarser cells are the parents of the finest public cells, so every parent's true
value is the sum of its children's. The noisy values are made consistent by weighted
least squares (Hay, Rastogi, Miklau, Suciu, PVLDB 2010), in two passes over the tree
(any fan-out: pentagons have six children, border parents fewer):

    bottom-up   leaf: z = y, V = σ²;   node: s = Σ z_child, S = Σ V_child,
                z = (y/σ² + s/S) / (1/σ² + 1/S),   V = 1 / (1/σ² + 1/S)
    top-down    x_root = z_root;       x_child = z_child + (V_child / S_parent)·(x_parent − s_parent)

The result is the minimum-variance linear unbiased estimate subject to every parent equal
to the sum of its children. Its exact variance follows the same passes (as in a
Rauch–Tung–Striebel smoother): P_root = V_root, P_child = V_child + (V_child/S)²·(P_parent − S).

:func:`consistent_forest` runs the same passes on a *mixed-depth* tree (an adaptive
release's PrivTree: leaves at several depths) with one variance per node; a node that was
not measured has variance ∞ (its own weight 1/σ² is 0) and a node without children is a
leaf (z = y, V = σ²). :func:`consistent` is the special case of a full tree with one
variance per level.
Everything here reads noisy values and public variances only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import polars_h3 as plh3

from dpmap.aggregates import saturate

__all__ = [
    "Tree",
    "build_tree",
    "consistent",
    "consistent_forest",
    "level_totals",
    "round_consistent",
]


@dataclass(frozen=True)
class Tree:
    """Public tree of cells: ``levels[j]`` are sorted int64 cells at ``resolutions[j]``
    (coarse to fine); ``parent[j]`` maps each cell of level j (j ≥ 1) to its parent's
    position in level j − 1."""

    resolutions: tuple[int, ...]
    levels: tuple[np.ndarray, ...]
    parent: tuple[np.ndarray | None, ...]

    @property
    def size(self) -> int:
        return sum(len(level) for level in self.levels)


def cells_to_parents(cells: np.ndarray, resolution: int) -> np.ndarray:
    """int64 cells -> int64 parents at ``resolution`` (H3's exact index hierarchy)."""
    s = pl.Series("c", np.asarray(cells, dtype=np.int64)).cast(pl.UInt64)
    out = pl.DataFrame({"c": s}).select(plh3.cell_to_parent("c", resolution))["c"]
    return out.cast(pl.Int64).to_numpy()


def build_tree(finest: np.ndarray, resolutions: tuple[int, ...]) -> Tree:
    """The tree whose leaves are the sorted public cells ``finest`` at ``resolutions[-1]``."""
    res = tuple(sorted(resolutions))
    levels: list[np.ndarray] = [np.asarray(finest, dtype=np.int64)]
    parents: list[np.ndarray | None] = []
    for r in reversed(res[:-1]):
        par = cells_to_parents(levels[0], r)
        uniq = np.unique(par)
        parents.insert(0, np.searchsorted(uniq, par))
        levels.insert(0, uniq)
    parents.insert(0, None)
    return Tree(resolutions=res, levels=tuple(levels), parent=tuple(parents))


def level_totals(tree: Tree, finest: np.ndarray) -> list[np.ndarray]:
    """Exact totals of every level (coarse to fine), summed up the index tree from the
    finest level's values (shape ``(n,)`` or ``(n, k)``). Used on PRIVATE aggregates
    before noise, and equally on public values.

    Integer totals never wrap around: where int64 could overflow they are formed with
    exact Python integers, and every level is saturated to ±``SUM_LIMIT``
    (:mod:`dpmap.aggregates`), which keeps each coordinate a 1-Lipschitz function of the
    data, so the level sensitivities hold.
    """
    base = np.asarray(finest)
    integer = base.dtype.kind in "iu"
    wide = integer and base.size and np.abs(base, dtype=np.float64).sum() >= 2.0**62
    out = [base.astype(object) if wide else base]
    for j in range(len(tree.levels) - 1, 0, -1):
        parent = tree.parent[j]
        assert parent is not None
        level = out[0]
        up = np.zeros((len(tree.levels[j - 1]), *level.shape[1:]), dtype=level.dtype)
        np.add.at(up, parent, level)
        out.insert(0, up)
    if integer:
        out = [saturate(level) for level in out]
    return out


def consistent(
    tree: Tree, noisy: list[np.ndarray], variances: list[float]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weighted least-squares consistent estimates and their exact variances, per level.

    ``noisy[j]`` has shape ``(len(tree.levels[j]),)`` or ``(len(...), k)`` for k
    independent trees side by side (e.g. categories); ``variances[j]`` is the noise
    variance of every value at level j.
    """
    k = len(tree.levels)
    y = [np.asarray(v, dtype=np.float64) for v in noisy]
    z: list[np.ndarray] = [np.empty(0)] * k
    V: list[np.ndarray] = [np.empty(0)] * k
    s: list[np.ndarray] = [np.empty(0)] * k
    S: list[np.ndarray] = [np.empty(0)] * k
    z[-1] = y[-1]
    V[-1] = np.full(y[-1].shape, float(variances[-1]))
    for j in range(k - 2, -1, -1):
        p = tree.parent[j + 1]
        assert p is not None
        s[j] = _sum_by(p, z[j + 1], len(tree.levels[j]))
        S[j] = _sum_by(p, V[j + 1], len(tree.levels[j]))
        w_own, w_kids = 1.0 / variances[j], 1.0 / S[j]
        z[j] = (y[j] * w_own + s[j] * w_kids) / (w_own + w_kids)
        V[j] = 1.0 / (w_own + w_kids)
    x: list[np.ndarray] = [np.empty(0)] * k
    P: list[np.ndarray] = [np.empty(0)] * k
    x[0], P[0] = z[0], V[0]
    for j in range(1, k):
        p = tree.parent[j]
        assert p is not None
        gain = V[j] / S[j - 1][p]
        x[j] = z[j] + gain * (x[j - 1][p] - s[j - 1][p])
        P[j] = V[j] + gain**2 * (P[j - 1][p] - S[j - 1][p])
    return x, P


def consistent_forest(
    parent: list[np.ndarray | None], noisy: list[np.ndarray], variances: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weighted least squares on a tree whose leaves lie at several depths.

    ``parent[j]`` (j ≥ 1) maps each node of depth j to its parent's position in depth
    j − 1 (``parent[0]`` is ``None``: the roots); a node with no child in depth j + 1 is a
    leaf. ``noisy[j]`` holds each node's noisy value (shape ``(n_j,)`` or ``(n_j, k)`` for
    k independent trees side by side) and ``variances[j]`` its noise variance (shape
    ``(n_j,)``): finite and > 0 for every leaf; ``math.inf`` for an internal node that was
    not measured (its value is then ignored). Returns, per depth, the minimum-variance
    unbiased estimates under "every internal node equals the sum of its children" and their
    exact variances (the same two passes as :func:`consistent`).
    """
    k = len(noisy)
    y = [np.asarray(v, dtype=np.float64) for v in noisy]
    var = [np.asarray(v, dtype=np.float64) for v in variances]
    z: list[np.ndarray] = [np.empty(0)] * k
    V: list[np.ndarray] = [np.empty(0)] * k
    s: list[np.ndarray] = [np.empty(0)] * k
    S: list[np.ndarray] = [np.empty(0)] * k
    for j in range(k - 1, -1, -1):
        n = len(var[j])
        shape = y[j].shape
        if j + 1 < k and len(var[j + 1]):
            p = parent[j + 1]
            assert p is not None
            kids = np.bincount(p, minlength=n)
            s[j] = _sum_by(p, z[j + 1], n)
            S[j] = _sum_by(p, V[j + 1], n)
        else:
            kids = np.zeros(n, dtype=np.int64)
            s[j] = np.zeros(shape)
            S[j] = np.zeros(shape)
        leaf = kids == 0
        if not np.isfinite(var[j][leaf]).all() or (var[j][leaf] <= 0).any():
            raise ValueError("every leaf needs a finite, positive noise variance")
        measured = np.isfinite(var[j])
        lf = _column(leaf, shape)
        w_own = _column(np.where(measured, 1.0 / np.where(measured, var[j], 1.0), 0.0), shape)
        own = np.where(_column(measured, shape), y[j], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            w_kids = np.where(lf, 0.0, 1.0 / np.where(lf, 1.0, S[j]))
            V[j] = np.where(lf, _column(var[j], shape), 1.0 / (w_own + w_kids))
            z[j] = np.where(lf, own, (own * w_own + s[j] * w_kids) * V[j])
    x: list[np.ndarray] = [np.empty(0)] * k
    P: list[np.ndarray] = [np.empty(0)] * k
    x[0], P[0] = z[0], V[0]
    for j in range(1, k):
        p = parent[j]
        assert p is not None
        gain = V[j] / S[j - 1][p]
        x[j] = z[j] + gain * (x[j - 1][p] - s[j - 1][p])
        P[j] = V[j] + gain**2 * (P[j - 1][p] - S[j - 1][p])
    return x, P


def _column(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-node array broadcast against values of ``shape`` ((n,) or (n, k))."""
    a = np.asarray(a)
    return np.broadcast_to(a[:, None], shape) if len(shape) == 2 else a


def _sum_by(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    if values.ndim == 1:
        return np.bincount(index, weights=values, minlength=n)
    out = np.zeros((n, values.shape[1]))
    np.add.at(out, index, values)
    return out


def round_consistent(tree: Tree, values: list[np.ndarray]) -> list[np.ndarray]:
    """Non-negative integers for display that still add up: children sum to their parent.

    Top-down: the roots are rounded (half up) after clipping at 0; each parent's integer
    total is then shared among its children in proportion to their clipped estimates
    (equally if all are ≤ 0), with largest-remainder rounding. Post-processing only.
    """
    out: list[np.ndarray] = [np.floor(np.clip(values[0], 0, None) + 0.5)]
    for j in range(1, len(tree.levels)):
        p = tree.parent[j]
        assert p is not None
        out.append(_share(p, np.clip(values[j], 0, None), out[j - 1]))
    return [o.astype(np.int64) for o in out]


def _share(parent: np.ndarray, weight: np.ndarray, totals: np.ndarray) -> np.ndarray:
    if weight.ndim == 2:
        return np.stack(
            [_share(parent, weight[:, i], totals[:, i]) for i in range(weight.shape[1])], axis=1
        )
    n_par = len(totals)
    wsum = np.bincount(parent, weights=weight, minlength=n_par)
    nkids = np.bincount(parent, minlength=n_par)
    even = wsum[parent] <= 0
    frac = np.where(even, 1.0 / nkids[parent], weight / np.where(even, 1.0, wsum[parent]))
    ideal = frac * totals[parent]
    base = np.floor(ideal)
    remainder = ideal - base
    missing = totals - np.bincount(parent, weights=base, minlength=n_par)  # integers ≥ 0
    # within each parent, give +1 to the children with the largest remainders
    order = np.lexsort((-remainder, parent))
    first = np.searchsorted(parent[order], np.arange(n_par))
    rank = np.empty(len(parent), dtype=np.int64)
    rank[order] = np.arange(len(parent)) - first[parent[order]]
    return base + (rank < np.round(missing[parent])).astype(np.float64)
