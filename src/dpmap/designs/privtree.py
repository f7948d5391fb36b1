"""Adaptive release: a PrivTree split on H3's index tree (Zhang, Xiao, Xie, SIGMOD 2016).

Dense areas are refined down to the requested resolution, sparse areas stay coarse, so
the map has a varying ``resolution`` column. The tree is built from the *public* tree of
the region's cells (the H3 parents of the finest public cells, from the root resolution
down), so which nodes can exist never depends on data; only which are split does.

Algorithm (one person's records are at most ``k = max_cells · max_records_per_cell``
records; β = 7 is H3's largest fan-out, pentagons and border parents have fewer children):

    λ: the smallest scale with k·(1/λ)(1 + e^{1/λ}·β/(β − 1)) ≤ ε_tree,   δ = ⌈λ · ln β⌉,   θ = 0
    every root (a cell at the root resolution) is visited at depth 0;
    for a visited node v at depth d:  b(v) = max(c(v) − d·δ, θ − δ)
        split v into its children iff b(v) + DiscreteLaplace(λ) > θ
        and v is coarser than the finest resolution; otherwise v is a leaf
    then each leaf gets a fresh noisy count (and sum) with the rest of the budget, and,
    if ``internal_share`` > 0, the split nodes of each measured depth get one too;
    least squares on the tree then makes every split node equal to the sum of its
    children (``hierarchy.consistent_forest``) and the leaves publish those estimates.

Budget: ε_tree = ``tree_share``·ε; statistic s gets share_s·(1 − ``tree_share``)·ε of
which the split nodes of depth d get the fraction ι_d (``internal_share``: one number,
split evenly over the depths, or one per depth) and the leaves 1 − Σ ι_d. Default ι = 0
(leaves only): measured on ``benchmarks/utility.py``, internal values did not lower the
error of rectangle queries (see :data:`DEFAULT_INTERNAL_SHARE`).

Privacy (the full argument is in ``docs/adaptive-privacy.md``): following PrivTree's proof
with the discrete Laplace's exact tails, the split decisions are
(1/λ)(1 + e^{1/λ}·β/(β − 1))-DP with respect to one *record* when δ ≥ λ·ln β; a person is
at most k records, so the tree is ε_tree-DP per person by group privacy (the factor k).
The leaves form a partition of the public cells, and the split nodes of one depth are
disjoint cells at one resolution, so one person moves each of these vectors by at most
L0·L∞ in L1 (times max(|lo|, |hi|) for sums) — the sensitivity of a flat release at that
resolution (``bounding.level_sensitivities``). They are chosen after the tree is public,
i.e. composed adaptively; vectors of different depths overlap, so they add up
(sequential composition). All noise is OpenDP's; OpenDP's adaptive compositor adds
ε_tree + Σ (leaf and internal vectors). The ε_tree term enters through a user
measurement whose privacy map is the theorem above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpmap import grid
from dpmap._privacy.adaptive import (
    OpenDPException,
    adaptive_compositor,
    gathered,
    then_laplace,
    user_measurement,
    vector_laplace,
)
from dpmap._privacy.bounding import histogram_sensitivity, level_sensitivities, sensitivities
from dpmap._privacy.noise import (
    NoisePlan,
    accuracy,
    check_noise_inputs,
    fit_scale,
    noise_variance,
    statistic_noise,
    within_budget,
)
from dpmap.designs import hierarchy
from dpmap.designs.adaptive import (
    Adaptive,
    FinestHistogram,
    LeafRun,
    histogram_chain,
    leaf_histogram_noise,
)
from dpmap.designs.base import (
    Correlation,
    DesignOptions,
    ForestCorrelation,
    Measured,
    RowsInfo,
    manifest_noise_variance,
)
from dpmap.designs.flat import independent_correlation
from dpmap.errors import MechanismError, SpecError
from dpmap.parameters import DEFAULT_INTERNAL_SHARE, DEFAULT_TREE_SHARE
from dpmap.spec import Mechanism, ReleaseSpec

__all__ = [
    "DEFAULT_INTERNAL_SHARE",
    "DEFAULT_TREE_SHARE",
    "AdaptivePlan",
    "PrivTree",
    "plan_adaptive",
]

BETA = 7  #: the largest fan-out of H3's index tree


@dataclass(frozen=True)
class AdaptivePlan:
    """A calibrated adaptive release (public; no data touched)."""

    spec: ReleaseSpec
    root: int
    tree_epsilon: float
    lam: float  # noise scale of the split decisions
    bias: int  # δ of PrivTree: the per-depth bias of the counts
    threshold: int
    scales: dict[str, float]  # leaf noise scale per statistic
    epsilons: dict[str, float]  # leaf ε per statistic (from OpenDP's maps)
    epsilon: float  # total, from OpenDP's adaptive compositor
    #: share of each statistic's post-tree budget spent on the internal nodes of each depth
    #: (coarse to fine, one per depth 0 .. finest − root − 1; 0: that depth is not measured)
    internal: tuple[float, ...] = ()
    #: noise scale / ε (OpenDP's map) of the internal nodes of each depth, per statistic
    #: (``None`` for a depth that is not measured)
    internal_scales: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    internal_epsilons: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    _leaf_sens: dict[str, int] = field(repr=False, default_factory=dict)
    _internal_sens: dict[str, tuple[int, ...]] = field(repr=False, default_factory=dict)
    #: noise scale / ε (OpenDP's map) of the leaves' value histogram (None: no histogram)
    hist_scale: float | None = None
    hist_epsilon: float | None = None

    @property
    def depths(self) -> int:
        """Number of depths with split decisions (finest − root); leaves can be at 0..depths."""
        return self.spec.finest - self.root

    @property
    def has_internal(self) -> bool:
        """Whether internal nodes get noisy values (then the leaves are least-squares estimates)."""
        return any(w > 0 for w in self.internal)

    def internal_variances(self, stat: str) -> list[float]:
        """Noise variance of one internal node's value at each depth (∞: not measured)."""
        return [
            math.inf if sc is None else noise_variance(Mechanism.LAPLACE, sc)
            for sc in self.internal_scales.get(stat, (None,) * self.depths)
        ]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": "PrivTree on H3's index tree (Zhang, Xiao, Xie 2016), discrete Laplace",
            "root_resolution": self.root,
            "finest_resolution": self.spec.finest,
            "fan_out": BETA,
            "tree_epsilon": self.tree_epsilon,
            "decision_scale": self.lam,
            "depth_bias": self.bias,
            "threshold": self.threshold,
            "records_per_person": self.spec.l0 * self.spec.linf,
            "proof": "docs/adaptive-privacy.md",
        }
        after_tree = self.spec.epsilon - self.tree_epsilon - (self.hist_epsilon or 0.0)
        out["budget_split"] = {
            # ε of each measurement as OpenDP's compositor accounts it (they add up to ε)
            "tree": _tree_map(self.spec.l0 * self.spec.linf, self.lam)(1),
            "leaves": {s: self.epsilons[s] for s in self.spec.statistics},
            "internal": {
                str(self.root + d): {
                    s: self.internal_epsilons[s][d] if self.internal_epsilons else None
                    for s in self.spec.statistics
                }
                for d in range(self.depths)
            },
            "internal_share": {str(self.root + d): w for d, w in enumerate(self.internal)},
            "rule": (
                "ε = tree + Σ over statistics of (leaves + internal nodes of each resolution); "
                f"statistic s gets share_s·{after_tree:.6g} after the tree, of which the internal "
                "nodes of resolution r get internal_share[r] and the leaves the rest"
            ),
        }
        if self.hist_epsilon is not None:
            out["budget_split"]["histogram"] = self.hist_epsilon
            out["budget_split"]["rule"] = (
                "ε = value histogram of the leaves (histogram_share·ε) + tree + Σ over "
                "statistics of (leaves + internal nodes of each resolution); the tree gets "
                "tree_share of the rest, and statistic s gets share_s of "
                f"{after_tree:.6g} after both, of which the internal nodes of resolution r get "
                "internal_share[r] and the leaves the rest"
            )
        if self.has_internal:
            out["consistency"] = (
                "the internal nodes' and leaves' noisy values are made consistent by weighted "
                "least squares on the PrivTree (Hay et al. 2010, exact noise variances): each "
                "internal node's estimate is the sum of its children's; the published leaves "
                "carry these estimates, margins are 2.118 × their exact standard deviation (the 95% "
                "point of one Laplace draw)"
            )
        return out

    def moe(self, stat: str, alpha: float = 0.05) -> float:
        """Margin of one leaf's raw noise (the leaf estimate's when no internal node is measured)."""
        return accuracy(Mechanism.LAPLACE, self.scales[stat], alpha)

    def variance(self, stat: str) -> float:
        return noise_variance(Mechanism.LAPLACE, self.scales[stat])


def default_root(finest: int) -> int:
    """Root resolution: four levels above the finest (e.g. 5 for 9), at least 0."""
    return max(0, finest - 4)


def record_epsilon(lam: float) -> float:
    """ε of the split decisions for one record, with discrete Laplace noise of scale λ.

    ``(1/λ)·(1 + e^{1/λ}·β/(β − 1))`` with δ ≥ λ·ln β (``docs/adaptive-privacy.md``):
    PrivTree's bound for continuous noise, (1/λ)(2β − 1)/(β − 1), with the factor e^{1/λ}
    that the discrete Laplace's tail adds to its geometric part. Rounded up slightly.
    """
    return (1.0 / lam) * (1.0 + math.exp(1.0 / lam) * BETA / (BETA - 1)) * (1 + 1e-12)


def decision_scale(records: int, epsilon_tree: float) -> float:
    """Smallest λ (to 1e-9 relative) with records · record_epsilon(λ) ≤ epsilon_tree."""
    lo = (2 * BETA - 1) / (BETA - 1) * records / epsilon_tree  # the continuous bound: too small
    hi = lo * 2
    while records * record_epsilon(hi) > epsilon_tree:
        hi *= 2
    while hi - lo > 1e-9 * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if records * record_epsilon(mid) <= epsilon_tree else (mid, hi)
    return hi


def _tree_map(records: int, lam: float) -> Any:
    """Privacy map of the split decisions: d_in persons are ≤ d_in·records records."""
    return lambda d_in: float(d_in) * records * record_epsilon(lam)


def internal_shares(internal_share: float | Sequence[float], depths: int) -> tuple[float, ...]:
    """Share of each statistic's post-tree budget per internal depth (coarse to fine).

    A number ``f`` is split evenly over the ``depths`` internal depths; a sequence gives
    one share per depth (0 leaves a depth unmeasured). The shares must sum to less than 1:
    the leaves get the rest.
    """
    if isinstance(internal_share, bool):
        raise SpecError(f"internal_share must be a number in [0, 1), got {internal_share!r}")
    if isinstance(internal_share, (int, float)):
        f = float(internal_share)
        if not (math.isfinite(f) and 0 <= f < 1):
            raise SpecError(f"internal_share must be in [0, 1), got {internal_share!r}")
        return tuple([f / depths] * depths) if depths else ()
    try:
        shares = tuple(float(w) for w in internal_share)
    except (TypeError, ValueError):
        raise SpecError(
            f"internal_share must be a number in [0, 1) or one share per internal resolution, "
            f"got {internal_share!r}"
        ) from None
    if len(shares) != depths:
        raise SpecError(
            f"internal_share lists {len(shares)} shares; this adaptive release has {depths} "
            f"internal resolutions (root to finest − 1): pass {depths} shares or one number"
        )
    if not all(math.isfinite(w) and w >= 0 for w in shares) or not sum(shares) < 1:
        raise SpecError(
            f"internal_share needs non-negative shares summing to less than 1, got {list(shares)!r}"
        )
    return shares


def plan_adaptive(
    spec: ReleaseSpec,
    *,
    root: int | None,
    tree_share: float,
    internal_share: float | Sequence[float] = 0.0,
) -> AdaptivePlan:
    """Calibrate the tree, internal-node and leaf noise for ``spec.epsilon`` (pure ε-DP).

    Privacy
    -------
    Unit: one person. The split decisions are ``tree_share·ε``-DP (group privacy over the
    person's ≤ L0·L∞ records, ``docs/adaptive-privacy.md``). Given the public tree, each
    statistic's leaves, and the internal nodes of each depth, are a vector over disjoint
    cells (L1 sensitivity L0·L∞, times M for sums, as a flat release at that resolution),
    noised by OpenDP's discrete Laplace; everything is composed by OpenDP's adaptive
    compositor, whose map gives the total (≤ ε). Laplace only.
    """
    if spec.mechanism is not Mechanism.LAPLACE:
        raise SpecError("adaptive=True uses the Laplace mechanism; pass mechanism='laplace'")
    if spec.hierarchical:
        raise SpecError("adaptive=True takes one (finest) resolution, not a list")
    if not 0 < tree_share < 1:
        raise SpecError(f"tree_share must be strictly between 0 and 1, got {tree_share!r}")
    if spec.finest < 1:
        raise SpecError(
            "adaptive=True needs a resolution of 1 or more (it splits from a coarser level); "
            f"got resolution={spec.finest}"
        )
    r0 = default_root(spec.finest) if root is None else int(root)
    if not 0 <= r0 < spec.finest:
        raise SpecError(
            f"adaptive_from={root!r} must be a resolution coarser than {spec.finest} (0..{spec.finest - 1})"
        )
    k = spec.l0 * spec.linf
    internal = internal_shares(internal_share, spec.finest - r0)
    shares = spec.shares()
    # a value histogram takes histogram_share·ε off the top; the rest is split as without one
    hist_share = shares.get("hist", 0.0)
    hist = (
        calibrate("hist", histogram_sensitivity(spec).l1, hist_share * spec.epsilon_parts_budget)
        if spec.histogram
        else None
    )
    budget = spec.epsilon_parts_budget * (1.0 - hist_share)
    eps_tree = tree_share * budget
    lam = decision_scale(k, eps_tree)
    bias = math.ceil(lam * math.log(BETA))
    sens = sensitivities(spec)
    eps_rest = budget - eps_tree
    shares = {s: shares[s] / (1.0 - hist_share) for s in spec.statistics}
    scales: dict[str, float] = {}
    epsilons: dict[str, float] = {}
    i_scales: dict[str, tuple[float | None, ...]] = {}
    i_epsilons: dict[str, tuple[float | None, ...]] = {}
    i_sens: dict[str, tuple[int, ...]] = {}
    leaf_share = 1.0 - sum(internal)
    for stat in spec.statistics:
        scales[stat], epsilons[stat] = calibrate(
            stat, sens[stat].l1, shares[stat] * eps_rest * leaf_share
        )
        # the internal nodes of one depth are disjoint cells at that resolution: the same
        # sensitivity as a flat release there (bounding.level_sensitivities)
        i_sens[stat] = tuple(
            level_sensitivities(spec, r0 + d)[stat].l1 for d in range(len(internal))
        )
        fitted = [
            calibrate(stat, i_sens[stat][d], shares[stat] * eps_rest * w) if w > 0 else None
            for d, w in enumerate(internal)
        ]
        i_scales[stat] = tuple(f[0] if f else None for f in fitted)
        i_epsilons[stat] = tuple(f[1] if f else None for f in fitted)
    plan = AdaptivePlan(
        spec=spec,
        root=r0,
        tree_epsilon=eps_tree,
        lam=lam,
        bias=bias,
        threshold=0,
        scales=scales,
        epsilons=epsilons,
        epsilon=0.0,
        internal=internal,
        internal_scales=i_scales,
        internal_epsilons=i_epsilons,
        _leaf_sens={s: sens[s].l1 for s in spec.statistics},
        _internal_sens=i_sens,
        hist_scale=hist[0] if hist else None,
        hist_epsilon=hist[1] if hist else None,
    )
    return seal_epsilon(plan, _compositor(plan), spec)


def seal_epsilon(plan: Any, compositor: Any, spec: ReleaseSpec) -> Any:
    """Set a frozen plan's ``epsilon`` to its compositor's map (refusing more than asked:
    never above the decimal the user wrote, see ``ReleaseSpec.epsilon_budget``)."""
    total = float(compositor.map(1))
    if not within_budget(total, spec.epsilon):
        raise MechanismError(
            f"adaptive budget {total} exceeds epsilon {spec.epsilon}"
        )  # pragma: no cover
    object.__setattr__(plan, "epsilon", total)
    return plan


def calibrate(stat: str, l1: int, target: float) -> tuple[float, float]:
    """Noise scale of a vector with L1 sensitivity ``l1`` for ``target`` ε, and OpenDP's ε."""

    def eps_of(sc: float) -> float:
        return float(leaf_chain(stat, l1, sc, []).map(1))

    scale = fit_scale(l1 / target, target, eps_of)
    return scale, eps_of(scale)


def adaptive_noise_plan(plan: AdaptivePlan) -> Any:
    """The release-level summary (a :class:`~dpmap._privacy.noise.NoisePlan`) of an adaptive plan."""

    sens = sensitivities(plan.spec)
    per = {
        s: statistic_noise(s, s, sens[s], Mechanism.LAPLACE, plan.scales[s], plan.epsilons[s])
        for s in plan.spec.statistics
    }
    for s in plan.spec.statistics:
        for d, scale in enumerate(plan.internal_scales[s]):
            if scale is None:
                continue
            r = plan.root + d
            key = internal_key(s, r)
            eps_d = plan.internal_epsilons[s][d]
            per[key] = statistic_noise(
                key, s, level_sensitivities(plan.spec, r)[s], Mechanism.LAPLACE, scale, eps_d
            )
    if plan.hist_scale is not None:
        per |= leaf_histogram_noise(plan.spec, plan.root, plan.hist_scale, plan.hist_epsilon)
    parts = "PrivTree split + " + ("internal-node and leaf" if plan.has_internal else "leaf")
    parts += " counts" + (" + leaf value histogram" if plan.hist_scale is not None else "")
    return pure_dp_plan(plan, per, parts, _compositor(plan))


def pure_dp_plan(plan: Any, statistics: dict[str, Any], what: str, compositor: Any) -> Any:
    """The :class:`~dpmap._privacy.noise.NoisePlan` of an adaptive plan: pure ε-DP, the noisy
    vectors ``statistics`` composed by OpenDP's ``compositor``."""

    return NoisePlan(
        spec=plan.spec,
        statistics=statistics,
        epsilon=plan.epsilon,
        delta=0.0,
        rho=None,
        measure=f"pure ε-differential privacy ({what}, composed by OpenDP)",
        accounting="pure-dp",
        discovery=False,
        threshold=None,
        _measurement=compositor,
    )


def internal_key(stat: str, resolution: int) -> str:
    """Name of the noisy vector of a statistic's internal nodes at ``resolution``."""
    return f"{stat}_internal@{resolution}"


def _queries(plan: AdaptivePlan) -> list[tuple[str, int | None, float]]:
    """The noisy vectors after the tree, in the order they are asked:
    (statistic, internal depth or None for the leaves, ε)."""
    out: list[tuple[str, int | None, float]] = []
    for s in plan.spec.statistics:
        out.append((s, None, plan.epsilons[s]))
        for d, eps_d in enumerate(plan.internal_epsilons.get(s, ())):
            if eps_d is not None:
                out.append((s, d, eps_d))
    return out


def _compositor(plan: AdaptivePlan) -> Any:
    tree_eps = _tree_map(plan.spec.l0 * plan.spec.linf, plan.lam)(1)
    d_mids = [tree_eps] + [eps for _s, _d, eps in _queries(plan)]
    if plan.hist_epsilon is not None:  # asked last, on the drawn leaves
        d_mids.append(plan.hist_epsilon)
    return adaptive_compositor(d_mids)


def leaf_chain(stat: str, l1: int, scale: float, leaves: list[tuple[int, int]]) -> Any:
    """Vector of ``stat`` over a fixed public list of disjoint tree nodes (the leaves, or
    the internal nodes of one depth) with discrete Laplace noise."""
    return then_laplace(gathered(lambda agg: _gather(agg[f"tree_{stat}"], leaves), l1), scale)


def _gather(levels: list[np.ndarray], leaves: list[tuple[int, int]]) -> np.ndarray:
    return np.array([levels[j][i] for j, i in leaves], dtype=np.int64)


@dataclass(frozen=True)
class AdaptiveOutput:
    """What an adaptive release drew (all noisy or public)."""

    leaves: list[tuple[int, int]]  # (depth, index in tree.levels[depth]) of every leaf
    internal: list[np.ndarray]  # per depth: indexes of the nodes that were split
    noisy: dict[str, np.ndarray]  # statistic -> noisy leaf values (in ``leaves`` order)
    #: statistic -> per depth noisy values of the internal nodes (None: not measured)
    noisy_internal: dict[str, list[np.ndarray | None]]


def run_adaptive(
    plan: AdaptivePlan,
    tree: hierarchy.Tree,
    level_counts: list[np.ndarray],
    level_sums: list[np.ndarray] | None,
    hist: FinestHistogram | None = None,
) -> AdaptiveOutput:
    """Grow the tree, then noise the leaves and the measured internal depths, and last the
    leaves' value histogram (with ``hist``, the finest cells' exact one). Draws noise."""
    data: dict[str, Any] = {"tree_count": level_counts}
    if level_sums is not None:
        data["tree_sum"] = level_sums
    if hist is not None:
        data["tree_hist"] = hist
    check_noise_inputs(data)
    decision_noise = vector_laplace(plan.lam)

    def grow(agg: dict[str, Any]) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
        counts = agg["tree_count"]
        active = np.arange(len(tree.levels[0]))
        leaves: list[tuple[int, int]] = []
        internal: list[np.ndarray] = []
        last = len(tree.levels) - 1
        for depth in range(last + 1):
            if depth == last:
                leaves += [(depth, int(i)) for i in active]
                break
            c = counts[depth][active]
            b = np.maximum(c - depth * plan.bias, plan.threshold - plan.bias)
            noisy = np.asarray(decision_noise(b.astype(np.int64)), dtype=np.int64)
            split = noisy > plan.threshold
            leaves += [(depth, int(i)) for i in active[~split]]
            internal.append(active[split])
            parent = tree.parent[depth + 1]
            assert parent is not None
            active = np.flatnonzero(np.isin(parent, active[split]))
        return leaves, internal

    tree_measure = user_measurement(grow, _tree_map(plan.spec.l0 * plan.spec.linf, plan.lam))
    try:
        queryable = _compositor(plan)(data)
        leaves, internal = queryable(tree_measure)
        out: dict[str, np.ndarray] = {}
        out_internal: dict[str, list[np.ndarray | None]] = {
            s: [None] * plan.depths for s in plan.spec.statistics
        }
        for stat, d, _eps in _queries(plan):  # in the compositor's order
            if d is None:
                chain = leaf_chain(stat, plan._leaf_sens[stat], plan.scales[stat], leaves)
                out[stat] = np.asarray(queryable(chain), dtype=np.int64)
            else:
                scale = plan.internal_scales[stat][d]
                assert scale is not None
                nodes = [(d, int(i)) for i in internal[d]]
                chain = leaf_chain(stat, plan._internal_sens[stat][d], scale, nodes)
                out_internal[stat][d] = np.asarray(queryable(chain), dtype=np.int64)
        if plan.hist_scale is not None:
            assert hist is not None
            chain = histogram_chain(plan.spec, tree, leaves, plan.hist_scale)
            out["hist"] = np.asarray(queryable(chain), dtype=np.int64)
    except OpenDPException as exc:  # pragma: no cover
        raise MechanismError(f"OpenDP failed while adding noise: {exc}") from exc
    return AdaptiveOutput(leaves=leaves, internal=internal, noisy=out, noisy_internal=out_internal)


# ---------------------------------------------------------------------------------------
# post-processing: least squares on the PrivTree (noisy values and public variances only)


def adaptive_forest(
    plan: AdaptivePlan, tree: hierarchy.Tree, out: AdaptiveOutput, stat: str
) -> tuple[list[np.ndarray | None], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The PrivTree of a release as input to :func:`dpmap.designs.hierarchy.consistent_forest`.

    Per depth, the visited nodes (split nodes and leaves, sorted by their index in
    ``tree.levels``): ``parent`` links, noisy values, noise variances (∞ for the internal
    nodes of an unmeasured depth) and, last, the positions of the depth's leaves among
    them (in ``out.leaves`` order). Noisy values may be ``(n,)`` or ``(n, k)``.
    """
    leaf_var = plan.variance(stat)
    internal_var = plan.internal_variances(stat)
    depth_of = np.array([j for j, _ in out.leaves], dtype=np.int64)
    index_of = np.array([i for _, i in out.leaves], dtype=np.int64)
    leaf_vals = np.asarray(out.noisy[stat], dtype=np.float64)
    extra = leaf_vals.shape[1:]
    parent: list[np.ndarray | None] = [None]
    y: list[np.ndarray] = []
    var: list[np.ndarray] = []
    where: list[np.ndarray] = []
    prev: np.ndarray | None = None
    for d in range(len(tree.levels)):
        leaf_here = depth_of == d
        inner = out.internal[d] if d < len(out.internal) else np.zeros(0, dtype=np.int64)
        n_in = len(inner)
        noisy_in = out.noisy_internal[stat][d] if d < plan.depths else None
        inner_vals = (
            np.zeros((n_in, *extra))
            if noisy_in is None
            else np.asarray(noisy_in, dtype=np.float64).reshape(n_in, *extra)
        )
        inner_var = internal_var[d] if d < plan.depths else math.inf
        nodes = np.concatenate([inner, index_of[leaf_here]])
        order = np.argsort(nodes, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        where.append(rank[n_in:])
        y.append(np.concatenate([inner_vals, leaf_vals[leaf_here]])[order])
        var.append(
            np.concatenate([np.full(n_in, inner_var), np.full(int(leaf_here.sum()), leaf_var)])[
                order
            ]
        )
        nodes = nodes[order]
        if d > 0:
            assert prev is not None
            tp = tree.parent[d]
            assert tp is not None
            parent.append(np.searchsorted(prev, tp[nodes]))
        prev = nodes
    return parent, y, var, where


def adaptive_consistent(
    plan: AdaptivePlan, tree: hierarchy.Tree, out: AdaptiveOutput, stat: str
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares leaf estimates of ``stat`` (in ``out.leaves`` order) and their exact
    variances, from the noisy leaves and internal nodes of an adaptive release.

    The PrivTree's nodes are public once the tree is drawn; they form a tree whose leaves
    lie at several depths, and :func:`dpmap.designs.hierarchy.consistent_forest` makes every
    internal node equal the sum of its children with minimum variance. Post-processing of
    noisy values only.
    """
    parent, y, var, where = adaptive_forest(plan, tree, out, stat)
    x, P = hierarchy.consistent_forest(parent, y, var)
    depth_of = np.array([j for j, _ in out.leaves], dtype=np.int64)
    shape = np.asarray(out.noisy[stat]).shape
    est = np.zeros(shape)
    est_var = np.zeros(shape)
    for d in range(len(y)):
        here = np.flatnonzero(depth_of == d)
        est[here] = x[d][where[d]]
        est_var[here] = P[d][where[d]]
    return est, est_var


def privtree_forest(
    m: dict[str, Any], ids: np.ndarray, res: np.ndarray, stats: tuple[str, ...]
) -> ForestCorrelation:
    """The PrivTree of an adaptive release, rebuilt from its (public) leaves: the internal
    nodes are exactly the leaves' H3 parents from the root resolution down."""
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
        leaf_var = manifest_noise_variance(m["statistics"][s])
        per_depth = []
        for d, level in enumerate(nodes):
            entry = m["statistics"].get(f"{s}_internal@{root + d}")
            v = np.full(len(level), math.inf if entry is None else manifest_noise_variance(entry))
            v[pos[depth == d]] = leaf_var
            per_depth.append(v)
        node_var[s] = per_depth
    return ForestCorrelation(parent=parent, depth=depth, pos=pos, node_var=node_var)


class PrivTree(Adaptive):
    """The PrivTree design (Zhang, Xiao, Xie 2016) on H3's index tree: cells are split from a
    coarse root while their noisy, depth-biased count exceeds a threshold; the leaves are
    published (see the module docstring and ``docs/adaptive-privacy.md``)."""

    kind = "privtree"

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return options.adaptive == "privtree"

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> PrivTree:
        reg = cls.check(spec, region)
        o = options
        tree_share = DEFAULT_TREE_SHARE if o.tree_share is None else o.tree_share
        internal_share = DEFAULT_INTERNAL_SHARE if o.internal_share is None else o.internal_share
        aplan = plan_adaptive(
            spec, root=options.adaptive_from, tree_share=tree_share, internal_share=internal_share
        )
        return cls(spec, reg, adaptive_noise_plan(aplan), aplan)

    def explain_lines(self) -> list[str]:
        a = self.aplan.describe()
        return [
            f"  adaptive: PrivTree split from resolution {a['root_resolution']} to "
            f"{a['finest_resolution']}, ε = {a['tree_epsilon']:.4g} for the tree (decision "
            f"noise scale {a['decision_scale']:.4g}); the statistics above are per leaf"
            + (
                " and per internal resolution; the leaves publish least-squares estimates "
                "consistent with the internal nodes (smaller margins than above)"
                if a.get("consistency")
                else ""
            ),
            *self.distribution_lines(),
        ]

    def run(
        self, tree: hierarchy.Tree, counts: Any, sums: Any, hist: FinestHistogram | None
    ) -> LeafRun:
        out = run_adaptive(self.aplan, tree, counts, sums, hist)
        return (
            out.leaves,
            out.noisy,
            {},
            lambda stat: adaptive_consistent(self.aplan, tree, out, stat),
        )

    def selection_rule(self, measured: Measured) -> str:
        return (
            f"PrivTree leaves: cells from resolution {self.aplan.root} down to "
            f"{self.spec.finest}, split where the noisy biased count exceeds the threshold; the "
            "tree of possible cells is the H3 parents of the cells overlapping the region"
        )

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        adaptive = manifest.get("adaptive") or {}
        return bool(adaptive) and adaptive.get("kind") != "grid"

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        if not manifest["adaptive"].get("consistency"):
            return independent_correlation(manifest, rows.stats)
        if not len(rows.ids):
            return Correlation(forest=None)
        forest = privtree_forest(manifest, rows.ids, rows.resolutions, rows.stats)
        return Correlation(forest=forest, laplace_ls=True)
