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
    then each leaf gets a fresh noisy count (and sum) with the rest of the budget.

Privacy (the full argument is in ``docs/adaptive-privacy.md``): following PrivTree's proof
with the discrete Laplace's exact tails, the split decisions are
(1/λ)(1 + e^{1/λ}·β/(β − 1))-DP with respect to one *record* when δ ≥ λ·ln β; a person is
at most k records, so the tree is ε_tree-DP per person by group privacy (the factor k). The leaves form a
partition of the public cells, so one person moves the leaf-count vector by at most L0·L∞
(L1); the leaf measurements are chosen after the tree is public, i.e. composed adaptively.
All noise is OpenDP's; OpenDP's adaptive compositor adds ε_tree + ε_leaves. The ε_tree
term enters through a user measurement whose privacy map is the theorem above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp

from . import hierarchy
from .bounding import sensitivities
from .errors import MechanismError, SpecError
from .mechanisms import _AGGREGATES, _PERSONS, _VEC_I64, _accuracy, _fit_scale, noise_variance
from .spec import Mechanism, ReleaseSpec

__all__ = ["DEFAULT_TREE_SHARE", "AdaptivePlan", "plan_adaptive"]

BETA = 7  #: the largest fan-out of H3's index tree

#: Default share of ε for the split decisions. Measured by benchmarks/utility.py over three
#: regions, N = 1e4..1e6 and ε = 0.1..1: 0.3 gave lower range-query error than 0.5 in
#: 81 of 81 settings (median −19%); 0.2 was about level, 0.1 worse at small N.
DEFAULT_TREE_SHARE = 0.3


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
    _leaf_sens: dict[str, int] = field(repr=False, default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
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

    def moe(self, stat: str, alpha: float = 0.05) -> float:
        return _accuracy(Mechanism.LAPLACE, self.scales[stat], alpha)

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


def plan_adaptive(spec: ReleaseSpec, *, root: int | None, tree_share: float) -> AdaptivePlan:
    """Calibrate the tree and leaf noise for ``spec.epsilon`` (pure ε-DP, Laplace only)."""
    if spec.mechanism is not Mechanism.LAPLACE:
        raise SpecError("adaptive=True uses the Laplace mechanism; pass mechanism='laplace'")
    if spec.hierarchical:
        raise SpecError("adaptive=True takes one (finest) resolution, not a list")
    if not 0 < tree_share < 1:
        raise SpecError(f"tree_share must be strictly between 0 and 1, got {tree_share!r}")
    r0 = default_root(spec.finest) if root is None else int(root)
    if not 0 <= r0 < spec.finest:
        raise SpecError(
            f"adaptive_from={root!r} must be a resolution coarser than {spec.finest} (0..{spec.finest - 1})"
        )
    k = spec.l0 * spec.linf
    eps_tree = tree_share * spec.epsilon
    lam = decision_scale(k, eps_tree)
    bias = math.ceil(lam * math.log(BETA))
    sens = sensitivities(spec)
    eps_leaves = spec.epsilon - eps_tree
    shares = spec.shares()
    scales: dict[str, float] = {}
    epsilons: dict[str, float] = {}
    for stat in spec.statistics:
        target = shares[stat] * eps_leaves
        l1 = sens[stat].l1

        def leaf_eps(sc: float, stat: str = stat, l1: int = l1) -> float:
            return float(_leaf_chain(stat, l1, sc, []).map(1))

        scales[stat] = _fit_scale(l1 / target, target, leaf_eps)
        epsilons[stat] = float(_leaf_chain(stat, sens[stat].l1, scales[stat], []).map(1))
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
        _leaf_sens={s: sens[s].l1 for s in spec.statistics},
    )
    total = float(_compositor(plan).map(1))
    if total > spec.epsilon * (1 + 1e-12):
        raise MechanismError(
            f"adaptive budget {total} exceeds epsilon {spec.epsilon}"
        )  # pragma: no cover
    object.__setattr__(plan, "epsilon", total)
    return plan


def adaptive_noise_plan(plan: AdaptivePlan) -> Any:
    """The release-level summary (a :class:`~dpmap.mechanisms.NoisePlan`) of an adaptive plan."""
    from .mechanisms import NoisePlan, _statistic

    sens = sensitivities(plan.spec)
    per = {
        s: _statistic(s, s, sens[s], Mechanism.LAPLACE, plan.scales[s], plan.epsilons[s])
        for s in plan.spec.statistics
    }
    return NoisePlan(
        spec=plan.spec,
        statistics=per,
        epsilon=plan.epsilon,
        delta=0.0,
        rho=None,
        measure="pure ε-differential privacy (PrivTree split + leaf counts, composed by OpenDP)",
        accounting="pure-dp",
        discovery=False,
        threshold=None,
        _measurement=_compositor(plan),
    )


def _compositor(plan: AdaptivePlan) -> Any:
    tree_eps = _tree_map(plan.spec.l0 * plan.spec.linf, plan.lam)(1)
    d_mids = [tree_eps] + [plan.epsilons[s] for s in plan.spec.statistics]
    return dp.c.make_adaptive_composition(
        _AGGREGATES, _PERSONS, dp.max_divergence(), d_in=1, d_mids=d_mids
    )


def _leaf_chain(stat: str, l1: int, scale: float, leaves: list[tuple[int, int]]) -> Any:
    """Leaf vector of ``stat`` (fixed public leaf list) with discrete Laplace noise."""
    t = dp.t.make_user_transformation(
        _AGGREGATES,
        _PERSONS,
        _VEC_I64,
        dp.l1_distance(T="i64"),
        function=lambda agg: _gather(agg[f"tree_{stat}"], leaves),
        stability_map=lambda d: d * l1,
    )
    return t >> dp.m.then_laplace(scale=scale)


def _gather(levels: list[np.ndarray], leaves: list[tuple[int, int]]) -> np.ndarray:
    return np.array([levels[j][i] for j, i in leaves], dtype=np.int64)


def run_adaptive(
    plan: AdaptivePlan,
    tree: hierarchy.Tree,
    level_counts: list[np.ndarray],
    level_sums: list[np.ndarray] | None,
) -> tuple[list[tuple[int, int]], dict[str, np.ndarray]]:
    """Grow the tree and noise the leaves. Draws noise. Returns (level, index) leaves."""
    data: dict[str, Any] = {"tree_count": level_counts}
    if level_sums is not None:
        data["tree_sum"] = level_sums
    decision_noise = dp.m.make_laplace(_VEC_I64, dp.l1_distance(T="i64"), scale=plan.lam)

    def grow(agg: dict[str, Any]) -> list[tuple[int, int]]:
        counts = agg["tree_count"]
        active = np.arange(len(tree.levels[0]))
        leaves: list[tuple[int, int]] = []
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
            parent = tree.parent[depth + 1]
            assert parent is not None
            active = np.flatnonzero(np.isin(parent, active[split]))
        return leaves

    tree_measure = dp.m.make_user_measurement(
        _AGGREGATES,
        _PERSONS,
        dp.max_divergence(),
        function=grow,
        privacy_map=_tree_map(plan.spec.l0 * plan.spec.linf, plan.lam),
        TO="ExtrinsicObject",
    )
    try:
        queryable = _compositor(plan)(data)
        leaves = queryable(tree_measure)
        out = {
            stat: np.asarray(
                queryable(_leaf_chain(stat, plan._leaf_sens[stat], plan.scales[stat], leaves)),
                dtype=np.int64,
            )
            for stat in plan.spec.statistics
        }
    except dp.OpenDPException as exc:  # pragma: no cover
        raise MechanismError(f"OpenDP failed while adding noise: {exc}") from exc
    return leaves, out
