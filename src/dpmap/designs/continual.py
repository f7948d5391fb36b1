"""Continual release of running totals over periods: the binary-tree mechanism.

An agency that publishes every month wants the running total ("year to date") of each cell
at every month. Noising each month once and adding the months up gives a running total whose
noise variance grows like t; the tree mechanism (Dwork, Naor, Pitassi & Rothblum 2010; Chan,
Shi & Song 2011) instead noises the sums over *dyadic intervals* of periods, so that the
running total at month t is a sum of at most ⌊log2 T⌋ + 1 noisy nodes. Each node's noise grows
with the number of levels too (one person's period lies in one node per level), so the
variance grows polylogarithmically — like log² T with Gaussian noise, log³ T with Laplace —
instead of linearly. This module is the mechanism, self-contained: the public tree, the exact
sensitivity of its node vector, the noise plan (one composed OpenDP measurement, through
:func:`dpmap._privacy.noise.plan_vectors`) and the estimators (pure post-processing).

What it guarantees
------------------
Input: the panel's dense bounded matrix per statistic (rows × T, rows = cells × categories,
int64, PRIVATE), bounded per person to at most ``max_periods`` periods, ``max_cells`` cells per
period and ``max_records_per_cell`` records per (cell, period), values clamped to ``bounds``.
The node vector (rows × nodes) is noised by one OpenDP measurement whose privacy map, at one
person added or removed, is the release's ε (pure ε-DP, discrete Laplace calibrated to the
node vector's L1) or (ε, δ) (ρ-zCDP, discrete Gaussian calibrated to its L2, converted once
by OpenDP). The sensitivities are derived exactly (:func:`tree_factors`, checked by brute
force in the tests). Everything published — running totals, per-period values, variances —
is post-processing of the noisy nodes and of public numbers.

What monthly publication means
------------------------------
The horizon T (the number of periods, e.g. 12 months) and ``max_periods`` are public and
fixed in advance, and the whole ε is charged when the plan is made. Every node is a whole
dyadic interval inside [0, T) (partial intervals clipped at the right edge are *not* kept:
no running total uses them, and they would only raise the sensitivity), so each node is
complete as soon as its last period has arrived. At month t (0-based) the nodes ending at
t + 1 are noised (:func:`measure_continual` with the months so far and the nodes already
published), and the running total of month t uses only nodes ending at or before t + 1: the
values published up to month t never change when later months arrive. Each node is noised
exactly once, with the same measurement, so the nodes drawn month by month have exactly the
distribution of one call on the whole vector, whose privacy OpenDP's map accounts. Periods
must be final when they arrive (a late correction to an old month is a new release).

Trees and estimators
--------------------
``tree="full"``: every whole dyadic interval (≈ 2T nodes). ``tree="binary"``: only the
intervals the prefix decomposition uses (Chan–Shi–Song's p-sums: one node per period, the
one ending there) — a person's periods fill fewer, smaller nodes, so less noise per node
when ``max_periods`` > 1 (the same when it is 1).
``estimator="prefix"``: the running total is the sum of the disjoint nodes of the binary
decomposition of t + 1. ``estimator="ls"`` (full tree only; on the binary tree it equals
``"prefix"``): Honaker's (2015) least-squares estimate of each running total from *all*
nodes complete by then (online: still only nodes ending by t + 1). Every estimator is linear,
``totals = nodes @ Wᵀ``, so its variances are exact (``σ²·‖W_t‖²``). The default ``"auto"``
plans each sensible pair and keeps the one with the smallest mean variance (public numbers
only). The per-period values are differences of running totals, so they add up to them.

When to use it
--------------
Measured by ``benchmarks/bench_continual.py`` (ε = 1, δ = 1e-6; mean RMSE of the running
total over t, best tree configuration against noising each period once — the direct panel):

=================  ===========  ===========  ============
one cell           T = 12       T = 52       T = 365
=================  ===========  ===========  ============
Gaussian, m = 1    10.1 / 11.0  14.4 / 22.1  20.9 / 57.8
Laplace, m = 1     6.3 / 3.3    11.0 / 6.6   19.5 / 17.3
Gaussian, m = T    61 / 38      297 / 159    2615 / 1105
Laplace, m = T     53 / 41      387 / 358    4721 / 6588
=================  ===========  ===========  ============

So: the tree wins with the **Gaussian** when each person is in few periods (m = 1 here), a
little at T = 12 and by ×1.5 and ×2.8 at T = 52 and 365, its error growing like log T. With
**Laplace** the node vector's L1 carries a factor ⌊log2 T⌋ + 1, so the node variance grows
like log² T: the direct panel wins at T = 12 and 52 and on average at T = 365 (the tree wins
only the late periods there). When a person is in every period (m = T) their periods add up
inside the nodes and the direct panel wins, except Laplace at T = 365 (binary tree). Against
T separate releases at ε/T (what a ledger of loose monthly releases charges) the tree is
better in every case but Laplace with m = T at T ≤ 52. The tree is worth it for long
horizons, few periods per person, and the Gaussian; otherwise noise each period once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dpmap._privacy.bounding import Sensitivity, sqrt_up
from dpmap._privacy.noise import NoisePlan, plan_vectors
from dpmap.aggregates import SUM_LIMIT, saturate
from dpmap.errors import SpecError
from dpmap.spec import ReleaseSpec

__all__ = [
    "CONFIGS",
    "ESTIMATORS",
    "TREES",
    "ContinualEstimates",
    "ContinualPlan",
    "dyadic_nodes",
    "estimator_weights",
    "mean_variance",
    "measure_continual",
    "node_matrix",
    "node_sensitivities",
    "node_totals",
    "period_values",
    "plan_continual",
    "running_totals",
    "tree_factors",
]

TREES = ("full", "binary")
ESTIMATORS = ("prefix", "ls")


def _check_periods(periods: object, what: str = "periods") -> int:
    if isinstance(periods, bool) or not isinstance(periods, (int, np.integer)) or periods < 1:
        raise SpecError(f"{what} must be a whole number ≥ 1, got {periods!r}; pass e.g. 12")
    return int(periods)


def _check_choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise SpecError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


@lru_cache(maxsize=64)
def _nodes(periods: int, tree: str) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for end in range(1, periods + 1):
        top = (end & -end).bit_length() - 1  # trailing zeros: the longest node ending here
        levels = range(top + 1) if tree == "full" else (top,)
        out.extend((end - (1 << lvl), end) for lvl in levels)
    return tuple(out)


def dyadic_nodes(periods: int, tree: str = "full") -> list[tuple[int, int]]:
    """The public nodes [a, b) of the tree over periods 0..T-1, in the order they complete.

    A node is a dyadic interval [k·2ˡ, (k+1)·2ˡ) lying wholly inside [0, T), at level
    l = 0..⌊log2 T⌋ (= ⌈log2 T⌉ when T is a power of two). Intervals that would be clipped
    at T (partial nodes at the right edge) are not kept. ``tree="full"``: all of them;
    ``tree="binary"``: only those the prefix decomposition uses (for each end b, the longest
    node ending at b — one node per period). Ordered by end, then by length: the nodes
    completed at period t (ending at t + 1) follow all nodes completed before.
    """
    return list(_nodes(_check_periods(periods), _check_choice(tree, TREES, "tree")))


def node_matrix(periods: int, tree: str = "full") -> np.ndarray:
    """0/1 matrix (nodes × periods): entry (n, p) is 1 when period p lies in node n."""
    nodes = dyadic_nodes(periods, tree)
    a = np.zeros((len(nodes), periods), dtype=np.int64)
    for i, (lo, hi) in enumerate(nodes):
        a[i, lo:hi] = 1
    return a


def _maxplus(a: np.ndarray, b: np.ndarray, cap: int) -> np.ndarray:
    """(a ⊕ b)[k] = max over i + j = k of a[i] + b[j], for k ≤ cap."""
    n = min(len(a) + len(b) - 1, cap + 1)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    for i in range(min(len(a), n)):
        j = min(len(b), n - i)
        out[i : i + j] = np.maximum(out[i : i + j], a[i] + b[:j])
    return out


def _laminar_max(
    nodes: tuple[tuple[int, int], ...], periods: int, m: int, weight: Callable[[int], int]
) -> int:
    """max over sets S of at most m periods of Σ_nodes weight(|node ∩ S|) (weight(0) = 0).

    The nodes are dyadic intervals, so they form a forest under inclusion; a dynamic
    programme over it (best value for each number of chosen periods below a node, merged
    by max-plus convolution) is exact.
    """
    nodeset = set(nodes)
    children: dict[tuple[int, int] | None, list[tuple[int, int]]] = {}
    for lo, hi in nodes:
        parent = None  # None: the virtual root over [0, T), with no weight of its own
        size = (hi - lo) * 2
        while size <= periods:
            cand = (lo - lo % size, lo - lo % size + size)
            if cand in nodeset:
                parent = cand
                break
            size *= 2
        children.setdefault(parent, []).append((lo, hi))
    best: dict[tuple[int, int] | None, np.ndarray] = {}
    order: list[tuple[int, int] | None] = [*sorted(nodes, key=lambda n: n[1] - n[0]), None]
    for node in order:
        lo, hi = node if node is not None else (0, periods)
        kids = children.get(node, [])
        free = (hi - lo) - sum(k[1] - k[0] for k in kids)  # periods in no child node
        acc = np.zeros(min(free, m) + 1, dtype=np.int64)
        for kid in kids:
            acc = _maxplus(acc, best.pop(kid), m)
        if node is not None:
            acc = acc + np.array([weight(c) for c in range(len(acc))], dtype=np.int64)
        best[node] = acc
    return int(best[None].max())


@lru_cache(maxsize=256)
def tree_factors(periods: int, max_periods: int, tree: str = "full") -> tuple[int, int, int]:
    """(F1, F2, F∞) of the tree: how a person's periods spread over its nodes.

    With S the set of at most m = ``max_periods`` periods one person contributes to:

    * F1 = max_S Σ_n |n ∩ S| = the sum of the m largest *depths* (nodes containing a period);
    * F2 = max_S Σ_n |n ∩ S|²;
    * F∞ = max_n min(|n|, m).

    Derivation of the node vector's sensitivity (:func:`node_sensitivities`). Let x_p be the
    person's contribution to the per-period vector of period p (one entry per row): after
    bounding, x_p is zero outside S, has at most C = ``max_cells`` non-zero rows and each
    entry has |x_p,r| ≤ R·M (R = ``max_records_per_cell``, M = 1 for counts, max(|lo|, |hi|)
    for sums). Node n of row r moves by Σ_{p∈n} x_p,r, so

    * L1 = Σ_r Σ_n |Σ_{p∈n} x_p,r| ≤ Σ_p ‖x_p‖₁·depth(p) ≤ C·R·M·F1, attained by C rows each
      given R·M in the m deepest periods (all signs equal: no cancellation).
    * L2² = Σ_r Σ_n (Σ_{p∈n} x_p,r)². Since the node matrix is non-negative,
      |A y| ≤ A |y| entrywise, so row r contributes at most R²M²·f(S_r) with S_r the periods
      where row r is non-zero and f(U) = Σ_n |n ∩ U|². f is supermodular (it is a sum of
      convex functions of |n ∩ U|), so replacing two rows' sets (U, V) by (U ∪ V, U ∩ V)
      never lowers the total and keeps how many rows each period uses (≤ C); repeating gives
      a chain of sets, of which at most C are non-empty (a period lies in the first k ≤ C),
      each ⊆ S. Hence L2² ≤ C·R²·M²·max_S f(S) = C·R²·M²·F2, attained by C rows with R·M in
      every period of the maximising S. Several periods in one node add up before squaring:
      for a full tree with T = 2ᴸ and S = {0..m-1},
      F2 = Σ_l (⌊m/2ˡ⌋·4ˡ + (m mod 2ˡ)²) — m·(L+1) for m = 1, T·(2T − 1) for m = T.
    * L∞ = R·M·F∞. At most C·min(R, k)·F1 coordinates move (k categories): each period's
      at most C·min(R, k) rows times the period's depth; attained when the person uses
      different cells in different periods (a bound: the panel may have fewer rows).

    Categories split a (cell, period)'s R records over rows, which never raises L1 or L2.
    F1 and F2 are computed exactly by a dynamic programme over the nodes (checked against
    enumeration of S and of whole contributions in the tests).
    """
    periods = _check_periods(periods)
    m = min(_check_periods(max_periods, "max_periods"), periods)
    nodes = _nodes(periods, _check_choice(tree, TREES, "tree"))
    f1 = _laminar_max(nodes, periods, m, lambda c: c)
    f2 = _laminar_max(nodes, periods, m, lambda c: c * c)
    finf = max(min(hi - lo, m) for lo, hi in nodes)
    return f1, f2, finf


def node_sensitivities(
    spec: ReleaseSpec, periods: int, max_periods: int, tree: str = "full"
) -> dict[str, Sensitivity]:
    """Sensitivity of each statistic's node vector (rows × nodes), see :func:`tree_factors`."""
    f1, f2, finf = tree_factors(periods, max_periods, tree)
    c, r = spec.l0, spec.linf
    k = len(spec.categories) if spec.categories else 1
    touched = c * min(r, k) * f1
    out = {
        "count": Sensitivity(l0=touched, l1=c * r * f1, l2=sqrt_up(c * r * r * f2), linf=r * finf)
    }
    if spec.value is not None:
        mag = spec.value_magnitude
        out["sum"] = Sensitivity(
            l0=touched,
            l1=c * r * mag * f1,
            l2=sqrt_up(c * r * r * mag * mag * f2),
            linf=r * mag * finf,
        )
    return out


# ---------------------------------------------------------------------------------------
# estimators: pure post-processing of noisy nodes


def _prefix_weights(periods: int, tree: str) -> np.ndarray:
    index = {n: i for i, n in enumerate(_nodes(periods, tree))}
    w = np.zeros((periods, len(index)))
    for t in range(periods):
        start, s = 0, t + 1
        for lvl in range(s.bit_length() - 1, -1, -1):
            if s >> lvl & 1:
                w[t, index[(start, start + (1 << lvl))]] = 1.0
                start += 1 << lvl
    return w


def _ls_weights(periods: int, tree: str) -> np.ndarray:
    """Online least squares: at period t, x̂ = (A_tᵀA_t)⁻¹A_tᵀy over the nodes complete by t
    (A_t: those nodes × periods 0..t, all of equal variance), and total_t = 1ᵀx̂, so the
    weights on the nodes are A_t (A_tᵀA_t)⁻¹ 1. A_tᵀA_t grows by one node at a time."""
    nodes = _nodes(periods, tree)
    w = np.zeros((periods, len(nodes)))
    gram = np.zeros((periods, periods))
    i = 0
    for t in range(periods):
        while i < len(nodes) and nodes[i][1] <= t + 1:
            lo, hi = nodes[i]
            gram[lo:hi, lo:hi] += 1.0
            i += 1
        z = np.linalg.solve(gram[: t + 1, : t + 1], np.ones(t + 1))
        cz = np.concatenate([[0.0], np.cumsum(z)])
        lo_hi = np.array(nodes[:i])
        w[t, :i] = cz[lo_hi[:, 1]] - cz[lo_hi[:, 0]]  # (A_t z)_n: z summed over node n
    return w


@lru_cache(maxsize=32)
def _weights(periods: int, tree: str, estimator: str) -> np.ndarray:
    w = _prefix_weights(periods, tree) if estimator == "prefix" else _ls_weights(periods, tree)
    w.setflags(write=False)
    return w


def estimator_weights(periods: int, tree: str = "full", estimator: str = "prefix") -> np.ndarray:
    """W (periods × nodes): running total at period t = Σ_n W[t, n]·node_n (public, read-only).

    ``W[t, n] = 0`` for every node ending after t + 1 (each running total uses only nodes
    complete by its period). Rows × T estimates of independent node noise of variance σ²
    have covariance σ²·W Wᵀ across periods.
    """
    periods = _check_periods(periods)
    tree = _check_choice(tree, TREES, "tree")
    return _weights(periods, tree, _check_choice(estimator, ESTIMATORS, "estimator"))


def _check_nodes(noisy: np.ndarray, periods: int, tree: str) -> np.ndarray:
    arr = np.asarray(noisy, dtype=np.float64)
    n = len(_nodes(periods, tree))
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"noisy nodes must be rows × {n} for {periods} periods, got {arr.shape}")
    return arr


def running_totals(
    noisy_nodes: np.ndarray,
    periods: int,
    *,
    tree: str = "full",
    estimator: str = "prefix",
    node_var: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Running totals (rows × T) from noisy nodes (rows × nodes), and each period's variance.

    ``node_var``: the noise variance of one node (the plan's). The variance of the running
    total at t is node_var·Σ_n W[t, n]² — for ``"prefix"`` node_var × the number of one bits
    of t + 1.
    """
    w = estimator_weights(periods, tree, estimator)
    arr = _check_nodes(noisy_nodes, periods, tree)
    return arr @ w.T, node_var * (w**2).sum(axis=1)


def period_values(
    noisy_nodes: np.ndarray,
    periods: int,
    *,
    tree: str = "full",
    estimator: str = "prefix",
    node_var: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each period's own value (rows × T): the difference of consecutive running totals, so
    the values add up to the published running totals; with each period's variance
    node_var·‖W_t − W_{t−1}‖² (exact: both totals are linear in the same nodes)."""
    w = estimator_weights(periods, tree, estimator)
    d = np.diff(w, axis=0, prepend=np.zeros((1, w.shape[1])))
    arr = _check_nodes(noisy_nodes, periods, tree)
    return arr @ d.T, node_var * (d**2).sum(axis=1)


# ---------------------------------------------------------------------------------------
# plan and measure


@dataclass(frozen=True)
class ContinualPlan:
    """The public plan of a continual release: the tree, its sensitivities and the noise."""

    spec: ReleaseSpec
    periods: int
    max_periods: int
    tree: str
    estimator: str
    nodes: tuple[tuple[int, int], ...]
    sensitivity: dict[str, Sensitivity]
    noise: NoisePlan

    def node_var(self, stat: str) -> float:
        """Noise variance of one node of ``stat``."""
        return self.noise.statistics[stat].variance

    def completed_by(self, period: int) -> int:
        """How many nodes (a prefix of :attr:`nodes`) are complete once ``period`` (0-based) has
        arrived: the nodes published up to that period."""
        return sum(1 for _lo, hi in self.nodes if hi <= period + 1)


#: the (tree, estimator) pairs worth planning, simplest first (full/prefix has the binary
#: tree's weights and a sensitivity at least as large: never better, so not chosen by "auto")
CONFIGS = (("binary", "prefix"), ("full", "ls"), ("full", "prefix"))


def plan_continual(
    spec: ReleaseSpec,
    periods: int,
    max_periods: int,
    *,
    tree: str = "auto",
    estimator: str = "auto",
) -> ContinualPlan:
    """Plan the tree's noise for a panel of ``periods`` public periods (touches no data).

    The spec gives the budget, mechanism, count/sum split and per-period bounds; the node
    vectors' sensitivities are :func:`node_sensitivities`. Hierarchies, value histograms
    and people counts are not supported here. ``"auto"`` (tree, estimator or both): of the
    allowed :data:`CONFIGS`, the one whose running totals of the count have the smallest
    mean variance over the periods — computed from public numbers only (T, max_periods,
    the bounds and the budget), so choosing costs no privacy.
    """
    periods = _check_periods(periods)
    max_periods = _check_periods(max_periods, "max_periods")
    tree = _check_choice(tree, (*TREES, "auto"), "tree")
    estimator = _check_choice(estimator, (*ESTIMATORS, "auto"), "estimator")
    if estimator == "ls" and tree == "binary":
        raise SpecError("estimator='ls' needs tree='full' (on the binary tree it is the prefix)")
    if spec.hierarchical or spec.histogram or spec.people:
        raise SpecError(
            "a continual release publishes counts and sums at one resolution; drop the extra "
            "resolutions, quantiles/value bands and people=True"
        )
    configs = [(t, e) for t, e in CONFIGS if tree in (t, "auto") and estimator in (e, "auto")]
    plans = [_plan_one(spec, periods, max_periods, t, e) for t, e in configs]
    return min(plans, key=mean_variance)  # the first of equals: the simplest


def _plan_one(
    spec: ReleaseSpec, periods: int, max_periods: int, tree: str, estimator: str
) -> ContinualPlan:
    sens = node_sensitivities(spec, periods, max_periods, tree)
    noise = plan_vectors(spec, sens)
    nodes = _nodes(periods, tree)
    return ContinualPlan(spec, periods, max_periods, tree, estimator, nodes, sens, noise)


def mean_variance(plan: ContinualPlan, stat: str = "count") -> float:
    """Mean over the periods of the variance of the running total of ``stat`` (public)."""
    w = estimator_weights(plan.periods, plan.tree, plan.estimator)
    return float(plan.node_var(stat) * (w**2).sum(axis=1).mean())


def node_totals(matrix: np.ndarray, periods: int, tree: str = "full") -> np.ndarray:
    """Exact node sums (rows × nodes) of a bounded matrix (rows × k periods, k ≤ T), for the
    nodes complete within those k periods, saturated to ±SUM_LIMIT (1-Lipschitz, so the
    sensitivities hold). PRIVATE: the input of the noise only."""
    arr = np.asarray(matrix)
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or not 1 <= arr.shape[1] <= periods:
        raise ValueError(
            f"the bounded matrix must be integer rows × (1..{periods}) periods, got "
            f"{arr.dtype} {arr.shape}"
        )
    k = arr.shape[1]
    done = [i for i, (_lo, hi) in enumerate(_nodes(periods, tree)) if hi <= k]
    a = node_matrix(periods, tree)[done][:, :k]
    if arr.size and float(np.abs(arr.astype(np.float64)).max()) * k >= SUM_LIMIT:
        return saturate(arr.astype(object) @ a.T.astype(object))  # exact, no wrap-around
    return saturate(arr.astype(np.int64) @ a.T)


@dataclass(frozen=True)
class ContinualEstimates:
    """One statistic's published continual estimates (all post-processing of noisy nodes).

    Variances are exact; margins are not given here. A margin of sd × the factors of
    :func:`dpmap._privacy.postprocess.margin_factors` does not always reach 95% on these
    small discrete noises: measured with 40,000 rows at ε = 2, m = 1, T = 12 (discrete
    Laplace of scale 2), the least-squares per-period values of one period were covered only
    93.5% of the time, and one node alone would be covered exactly 1 − 2q⁶/(1+q) = 93.8%
    (q = e^{-1/2}). The exact per-node margin is the plan's (OpenDP's accuracy); sums of
    several nodes need their own.
    """

    nodes: np.ndarray  # noisy nodes (rows × nodes published so far), int64
    totals: np.ndarray  # running totals (rows × periods so far)
    totals_var: np.ndarray  # variance of each period's running total (periods so far)
    values: np.ndarray  # per-period values (differences of the running totals)
    values_var: np.ndarray  # variance of each period's value


def measure_continual(
    plan: ContinualPlan,
    matrices: Mapping[str, np.ndarray],
    previous: Mapping[str, np.ndarray] | None = None,
) -> dict[str, ContinualEstimates]:
    """Noise the nodes complete within the periods so far and estimate. Draws noise.

    ``matrices``: statistic -> the panel's bounded matrix (rows × k periods so far, k ≤ T,
    PRIVATE). ``previous``: statistic -> the noisy nodes already published (rows × the nodes
    complete at an earlier period), which are kept, not redrawn: only the nodes completed
    since are noised, with the plan's one measurement (see the module docstring).
    """
    stats = tuple(plan.spec.queries())
    if set(matrices) != set(stats):
        raise ValueError(f"matrices for {sorted(matrices)}, but the plan noises {sorted(stats)}")
    exact = {s: node_totals(matrices[s], plan.periods, plan.tree) for s in stats}
    shapes = {v.shape for v in exact.values()}
    if len(shapes) != 1:
        raise ValueError(f"the statistics' matrices differ in shape: {sorted(shapes)}")
    rows, done = shapes.pop()
    before = 0 if previous is None else np.asarray(previous[stats[0]]).shape[1]
    if previous is not None and any(np.shape(previous[s]) != (rows, before) for s in stats):
        raise ValueError(f"previous nodes must be rows × n for every statistic ({rows} rows)")
    if before > done:
        raise ValueError(f"{before} nodes were published before, only {done} are complete now")
    fresh = plan.noise.run_dense({s: exact[s][:, before:].reshape(-1) for s in stats})
    out = {}
    for s in stats:
        new = np.asarray(fresh[s], dtype=np.int64).reshape(rows, done - before)
        old = np.zeros((rows, 0), np.int64) if previous is None else np.asarray(previous[s])
        out[s] = _estimates(plan, s, np.concatenate([old.astype(np.int64), new], axis=1))
    return out


def _estimates(plan: ContinualPlan, stat: str, nodes: np.ndarray) -> ContinualEstimates:
    """Estimates of the periods whose nodes are all published (unpublished nodes: weight 0)."""
    n = nodes.shape[1]
    k = plan.nodes[n - 1][1] if n else 0  # every end has a node: k periods are complete
    padded = np.zeros((nodes.shape[0], len(plan.nodes)))
    padded[:, :n] = nodes
    var = plan.node_var(stat)
    tree, est = plan.tree, plan.estimator
    totals, tvar = running_totals(padded, plan.periods, tree=tree, estimator=est, node_var=var)
    values, vvar = period_values(padded, plan.periods, tree=tree, estimator=est, node_var=var)
    return ContinualEstimates(nodes, totals[:, :k], tvar[:k], values[:, :k], vvar[:k])
