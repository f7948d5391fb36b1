"""Adaptive release by a two-level grid on H3 (Adaptive Grid, Qardaji, Yang, Li, ICDE 2013).

``adaptive="grid"``: the whole region is first counted at a coarse resolution (the *first
level*, ``adaptive_from``, default three above the finest). Each first-level cell's noisy
count then chooses how finely that cell is cut, and the cut cells are counted again:

    first level   v_c = count(c) + DiscreteLaplace(b₁)             every public cell c at r₁
    depth         k_c = round(log₇(v_c / (c₂·b₂)))  clipped to [0, finest − r₁]
                  (k_c = 0 when v_c ≤ c₂·b₂: the cell is not cut)
    second level  u_d = count(d) + DiscreteLaplace(b₂)             every descendant d of c
                                                                    at r₁ + k_c (c itself if 0)
    consistency   weighted least squares makes every c equal to the sum of its d's

b₁, b₂ are the count's noise scales at the two levels and c₂ = 5 (AG's constant). It is AG's
rule m₂² = N′(1−α)ε/c₂ on H3's seven-way tree: a second-level cell should hold about c₂·b₂
people, i.e. c₂ times its own noise scale, so cutting a cell into 7^k trades the uniformity
error of a big cell against the noise of 7^k small ones; the log rounding picks the
nearest power of seven. Sparse cells stay whole (measured twice, so the consistent value
has the variance of one measurement with the whole budget), dense ones are cut down to
the finest resolution at most. The published map has one row per second-level cell: its
``resolution`` column varies, as in a PrivTree release.

Compared with the PrivTree method (``adaptive=True``) no budget goes to a separate split
decision: the first level's counts decide the cuts *and* are published information that
the least squares uses. Large areas (districts, regions) get the first level's precision;
the PrivTree refines dense spots more finely and wins on small areas
(``benchmarks/utility.py``; README "Utility").

Privacy: each level is a vector over disjoint cells (a partition of the public cells at
one resolution, or at mixed resolutions), so one person moves it by at most the
sensitivity of a flat release at that resolution (``bounding.level_sensitivities``). The
second level's cells are chosen from the first level's *noisy* counts (post-processing),
which is adaptive sequential composition: OpenDP's adaptive compositor adds the two
levels' ε (per statistic), and its map is the release's ε. All noise is OpenDP's discrete
Laplace. ``docs/adaptive-privacy.md`` has the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp

from . import hierarchy
from .adaptive import _calibrate, _leaf_chain, internal_key
from .bounding import level_sensitivities, sensitivities
from .errors import MechanismError, SpecError
from .mechanisms import _AGGREGATES, _PERSONS, _accuracy, noise_variance
from .spec import Mechanism, ReleaseSpec

__all__ = ["C2", "DEFAULT_FIRST_SHARE", "GridPlan", "plan_grid"]

#: AG's constant c₂: a second-level cell is cut to hold about c₂ times its noise scale.
C2 = 5.0

#: Default share of each statistic's ε for the first level (AG uses 0.5). Measured with the
#: random rectangles of ``benchmarks/utility.py`` (Pennsylvania and Switzerland at N = 1e4,
#: 1e5, ε = 0.5, 1, and Hebei at two settings; six repetitions, 500 rectangles per size),
#: as the geometric mean of the error over AG's, small / medium / large rectangles:
#: 0.3 gave 0.87 / 0.88 / 0.90 and 0.5 gave 0.96 / 0.98 / 0.97 (first level from AG's own
#: rule), and with dpmap's default first level 0.3 gave 0.81 / 0.86 / 0.91 and 0.4 gave
#: 0.85 / 0.90 / 0.94. c₂ = 8 instead of 5 was worse (0.94 / 0.98 / 0.98).
DEFAULT_FIRST_SHARE = 0.3

#: Levels between the first level and the finest resolution by default. In the runs above,
#: with the finest resolution two above the Uniform Grid rule (first level one below it)
#: the error was 0.81 / 0.86 / 0.91 of AG's; one above (first level two below it)
#: 0.97 / 1.07 / 1.05: the first level matters most, as AG's first grid does.
DEFAULT_LEVELS = 3


def default_first(finest: int) -> int:
    """First-level resolution: three above the finest (e.g. 6 for 9), at least 0."""
    return max(0, finest - DEFAULT_LEVELS)


@dataclass(frozen=True)
class GridPlan:
    """A calibrated two-level adaptive-grid release (public; no data touched)."""

    spec: ReleaseSpec
    root: int  # the first-level resolution
    share: float  # share of each statistic's ε spent on the first level
    scales: dict[str, float]  # second-level noise scale per statistic
    epsilons: dict[str, float]  # second-level ε per statistic (OpenDP's maps)
    first_scales: dict[str, float]
    first_epsilons: dict[str, float]
    epsilon: float  # total, from OpenDP's adaptive compositor
    _sens: dict[str, int] = field(repr=False, default_factory=dict)
    _first_sens: dict[str, int] = field(repr=False, default_factory=dict)

    has_internal = True  # published values are least-squares estimates

    @property
    def depths(self) -> int:
        return self.spec.finest - self.root

    def variance(self, stat: str) -> float:
        """Noise variance of one second-level value."""
        return noise_variance(Mechanism.LAPLACE, self.scales[stat])

    def first_variance(self, stat: str) -> float:
        return noise_variance(Mechanism.LAPLACE, self.first_scales[stat])

    def moe(self, stat: str, alpha: float = 0.05) -> float:
        """Margin of one second-level value's raw noise."""
        return _accuracy(Mechanism.LAPLACE, self.scales[stat], alpha)

    def depth_of(self, noisy_first_counts: np.ndarray) -> np.ndarray:
        """Levels each first-level cell is cut by, from its noisy count (post-processing)."""
        unit = C2 * self.scales["count"]
        v = np.asarray(noisy_first_counts, dtype=np.float64)
        with np.errstate(divide="ignore"):
            k = np.round(np.log(np.maximum(v, unit) / unit) / math.log(7.0))
        return np.clip(k, 0, self.depths).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        s = self.spec
        return {
            "kind": "grid",
            "method": (
                "two-level adaptive grid on H3's index tree (Adaptive Grid, Qardaji, Yang, Li "
                "2013), discrete Laplace"
            ),
            "root_resolution": self.root,
            "finest_resolution": s.finest,
            "first_level_share": self.share,
            "c2": C2,
            "rule": (
                "every public cell at the first resolution gets a noisy count v; it is cut "
                "k = round(log7(v / (c2 · second-level count noise scale))) levels down "
                "(0 if v is below that, at most to the finest resolution) and its cells "
                "there get a second noisy count; least squares makes each first-level cell "
                "equal to the sum of its second-level cells"
            ),
            "proof": "docs/adaptive-privacy.md",
            "budget_split": {
                "first_level": {st: self.first_epsilons[st] for st in s.statistics},
                "second_level": {st: self.epsilons[st] for st in s.statistics},
                "rule": (
                    f"ε = Σ over statistics of (first level + second level); statistic s gets "
                    f"share_s·ε, of which the first level gets {self.share:g}"
                ),
            },
            "consistency": (
                "the two levels' noisy values are made consistent by weighted least squares "
                "(Hay et al. 2010, exact noise variances): each first-level cell's estimate is "
                "the sum of its published cells; margins are 1.96 × their exact standard "
                "deviation"
            ),
        }


def plan_grid(spec: ReleaseSpec, *, root: int | None, share: float) -> GridPlan:
    """Calibrate both levels' noise for ``spec.epsilon`` (pure ε-DP, Laplace only).

    Privacy
    -------
    Unit: one person. The first level is a vector over the public cells at ``root``
    (sensitivity of a flat release there); the second level is a vector over disjoint
    cells at mixed resolutions chosen from the first level's noisy counts (sensitivity at
    most that of the finest level: a person's records fall in at most L0 of them). OpenDP's
    adaptive compositor adds the levels' ε over all statistics; its map is the total (≤ ε).
    """
    if spec.mechanism is not Mechanism.LAPLACE:
        raise SpecError('adaptive="grid" uses the Laplace mechanism; pass mechanism="laplace"')
    if spec.hierarchical:
        raise SpecError('adaptive="grid" takes one (finest) resolution, not a list')
    if isinstance(share, bool) or not (isinstance(share, (int, float)) and 0 < share < 1):
        raise SpecError(
            f"tree_share (the first level's share of ε) must be strictly between 0 and 1, "
            f"got {share!r}"
        )
    r0 = default_first(spec.finest) if root is None else int(root)
    if not 0 <= r0 < spec.finest:
        raise SpecError(
            f"adaptive_from={root!r} must be a resolution coarser than {spec.finest} "
            f"(0..{spec.finest - 1})"
        )
    sens = sensitivities(spec)
    first = level_sensitivities(spec, r0)
    shares = spec.shares()
    scales: dict[str, float] = {}
    epsilons: dict[str, float] = {}
    f_scales: dict[str, float] = {}
    f_epsilons: dict[str, float] = {}
    for stat in spec.statistics:
        budget = shares[stat] * spec.epsilon
        f_scales[stat], f_epsilons[stat] = _calibrate(stat, first[stat].l1, budget * share)
        scales[stat], epsilons[stat] = _calibrate(stat, sens[stat].l1, budget * (1 - share))
    plan = GridPlan(
        spec=spec,
        root=r0,
        share=float(share),
        scales=scales,
        epsilons=epsilons,
        first_scales=f_scales,
        first_epsilons=f_epsilons,
        epsilon=0.0,
        _sens={s: sens[s].l1 for s in spec.statistics},
        _first_sens={s: first[s].l1 for s in spec.statistics},
    )
    total = float(_compositor(plan).map(1))
    if total > spec.epsilon * (1 + 1e-12):
        raise MechanismError(
            f"adaptive-grid budget {total} exceeds epsilon {spec.epsilon}"
        )  # pragma: no cover
    object.__setattr__(plan, "epsilon", total)
    return plan


def _compositor(plan: GridPlan) -> Any:
    stats = plan.spec.statistics
    d_mids = [plan.first_epsilons[s] for s in stats] + [plan.epsilons[s] for s in stats]
    return dp.c.make_adaptive_composition(
        _AGGREGATES, _PERSONS, dp.max_divergence(), d_in=1, d_mids=d_mids
    )


def grid_noise_plan(plan: GridPlan) -> Any:
    """The release-level summary (a :class:`~dpmap.mechanisms.NoisePlan`) of a grid plan."""
    from .mechanisms import NoisePlan, _statistic

    sens = sensitivities(plan.spec)
    first = level_sensitivities(plan.spec, plan.root)
    per: dict[str, Any] = {}
    for s in plan.spec.statistics:
        per[s] = _statistic(s, s, sens[s], Mechanism.LAPLACE, plan.scales[s], plan.epsilons[s])
    for s in plan.spec.statistics:
        key = internal_key(s, plan.root)
        per[key] = _statistic(
            key, s, first[s], Mechanism.LAPLACE, plan.first_scales[s], plan.first_epsilons[s]
        )
    return NoisePlan(
        spec=plan.spec,
        statistics=per,
        epsilon=plan.epsilon,
        delta=0.0,
        rho=None,
        measure="pure ε-differential privacy (first- and second-level counts, composed by OpenDP)",
        accounting="pure-dp",
        discovery=False,
        threshold=None,
        _measurement=_compositor(plan),
    )


@dataclass(frozen=True)
class GridOutput:
    """What a grid release drew (all noisy or public)."""

    leaves: list[tuple[int, int]]  # (depth, index in tree.levels[depth]), sorted
    parent: np.ndarray  # each leaf's first-level cell (index in tree.levels[0])
    first: dict[str, np.ndarray]  # statistic -> noisy first-level values
    second: dict[str, np.ndarray]  # statistic -> noisy second-level values (leaves order)


def _first_ancestor(tree: hierarchy.Tree) -> list[np.ndarray]:
    """Per depth, each node's depth-0 ancestor (index in tree.levels[0])."""
    out = [np.arange(len(tree.levels[0]))]
    for d in range(1, len(tree.levels)):
        p = tree.parent[d]
        assert p is not None
        out.append(out[-1][p])
    return out


def second_level(
    tree: hierarchy.Tree, depth: np.ndarray
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The second-level cells for per-first-level-cell cut depths: (leaves, their first-level
    cell), every first-level cell's descendants at its depth (itself at depth 0)."""
    anc = _first_ancestor(tree)
    leaves: list[tuple[int, int]] = []
    parents: list[np.ndarray] = []
    for d, a in enumerate(anc):
        here = np.flatnonzero(depth[a] == d)
        leaves += [(d, int(i)) for i in here]
        parents.append(a[here])
    return leaves, np.concatenate(parents)


def run_grid(
    plan: GridPlan,
    tree: hierarchy.Tree,
    level_counts: list[np.ndarray],
    level_sums: list[np.ndarray] | None,
) -> GridOutput:
    """Noise the first level, choose the cuts from its noisy counts, noise the second level."""
    data: dict[str, Any] = {"tree_count": level_counts}
    if level_sums is not None:
        data["tree_sum"] = level_sums
    stats = plan.spec.statistics
    roots = [(0, i) for i in range(len(tree.levels[0]))]
    try:
        queryable = _compositor(plan)(data)
        first = {
            s: np.asarray(
                queryable(_leaf_chain(s, plan._first_sens[s], plan.first_scales[s], roots)),
                dtype=np.int64,
            )
            for s in stats
        }
        leaves, parent = second_level(tree, plan.depth_of(first["count"]))
        second = {
            s: np.asarray(
                queryable(_leaf_chain(s, plan._sens[s], plan.scales[s], leaves)), dtype=np.int64
            )
            for s in stats
        }
    except dp.OpenDPException as exc:  # pragma: no cover
        raise MechanismError(f"OpenDP failed while adding noise: {exc}") from exc
    return GridOutput(leaves=leaves, parent=parent, first=first, second=second)


def grid_consistent(plan: GridPlan, out: GridOutput, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares second-level estimates of ``stat`` (``out.leaves`` order) and their exact
    variances: every first-level cell equals the sum of its second-level cells
    (:func:`dpmap.hierarchy.consistent_forest` on the two-level forest). Post-processing."""
    v = np.asarray(out.first[stat], dtype=np.float64)
    u = np.asarray(out.second[stat], dtype=np.float64)
    x, P = hierarchy.consistent_forest(
        [None, out.parent],
        [v, u],
        [np.full(len(v), plan.first_variance(stat)), np.full(len(u), plan.variance(stat))],
    )
    return x[1], P[1]
