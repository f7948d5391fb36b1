"""Adaptive release by a two-level grid on H3 (Adaptive Grid, Qardaji, Yang, Li, ICDE 2013).

``adaptive="grid"``: the whole region is first counted at a coarse resolution (the *first
level*), each first-level cell's noisy count chooses how finely that cell is cut, and the
cut cells are counted again:

    total         N = count(region) + DiscreteLaplace(b_N)    (without ``adaptive_from``)
    first level   r₁ = ``adaptive_from``, or the resolution with about
                  max(100, N/(16·c·b)) public cells (AG's first grid, m₁² = max(100, Nε/16c))
                  d_c = count(c) + DiscreteLaplace(b_d)           decisions, every cell c at r₁
                  v_c = count(c) + DiscreteLaplace(b₁)            values, drawn apart
    depth         k_c = ⌊log₇(d_c / (c₂·b₂)) + θ⌋  clipped to [0, finest − r₁]
                  (k_c = 0 when d_c ≤ c₂·b₂: the cell is not cut)
    second level  u_d = count(d) + DiscreteLaplace(b₂)            every descendant d of c
                                                                   at r₁ + k_c (c itself if 0)
    consistency   weighted least squares of the v's and u's makes every c equal to the
                  sum of its second-level cells (N and the d's only choose the cells)

b is the count's noise scale with its whole budget, b₁, b₂ its scales at the two levels,
c = 10 and c₂ = 5 AG's constants, θ = 0.85. The depth is AG's rule m₂² = N′(1−α)ε/c₂ on
H3's seven-way tree: a second-level cell should hold about c₂·b₂ people, i.e. c₂ times its
own noise scale, so cutting a cell into 7^k trades the uniformity error of a big cell
against the noise of 7^k small ones. Sparse cells stay whole (measured twice, so the
consistent value has about the variance of one measurement with the whole budget), dense
ones are cut down to the finest resolution at most. The published map has one row per
second-level cell: its ``resolution`` column varies, as in a PrivTree release.

Compared with the PrivTree method (``adaptive=True``) the first level's counts are also
published information that the least squares uses; unlike AG's original design they do
not decide the cuts themselves (separate decision counts do, see :data:`DECISION_SHARE`:
reusing one draw for both biases the estimates). Large areas (districts, regions) get the
first level's precision; the PrivTree refines dense spots more finely and wins on small areas
(``benchmarks/utility.py``; the docs' benchmarks page, "Utility").

Privacy: the total is one number with the count's sensitivity; each level is a vector over
disjoint cells (a partition of the public cells at one resolution, or at mixed
resolutions), so one person moves it by at most the sensitivity of a flat release
(``bounding.level_sensitivities``). The first level's resolution is chosen from the noisy
total and the second level's cells from the *noisy* decision counts (post-processing),
which is adaptive sequential composition: OpenDP's adaptive compositor adds every vector's ε, and its map is the release's ε. All noise is OpenDP's discrete
Laplace. ``docs/adaptive-privacy.md`` has the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpmap import grid
from dpmap._privacy.adaptive import (
    OpenDPException,
    adaptive_compositor,
    gathered,
    laplace_epsilon,
    then_laplace,
)
from dpmap._privacy.bounding import (
    Sensitivity,
    histogram_sensitivity,
    level_sensitivities,
    sensitivities,
)
from dpmap._privacy.noise import (
    accuracy,
    check_noise_inputs,
    fit_scale,
    noise_variance,
    statistic_noise,
)
from dpmap.aggregates import exact_total
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
from dpmap.designs.privtree import (
    DEFAULT_INTERNAL_SHARE,
    calibrate,
    internal_key,
    leaf_chain,
    pure_dp_plan,
    seal_epsilon,
)
from dpmap.errors import MechanismError, SpecError
from dpmap.spec import Mechanism, ReleaseSpec

__all__ = ["C2", "DEFAULT_FIRST_SHARE", "AdaptiveGrid", "GridPlan", "plan_grid"]

#: AG's constant c₂: a second-level cell is cut to hold about c₂ times its noise scale.
C2 = 5.0
#: AG's constant c of the first grid: m₁ = max(10, ¼·√(N·ε/c)) cells per side.
C_UG = 10.0
#: AG's floor of the first grid, 10 × 10 cells.
MIN_FIRST_CELLS = 100

#: Default share of each statistic's ε for the first level (AG uses 0.5). Measured with the
#: random rectangles of ``benchmarks/utility.py`` (Pennsylvania and Switzerland at N = 1e4,
#: 1e5, ε = 0.5, 1, and Hebei at two settings; six repetitions, 500 rectangles per size),
#: as the geometric mean of the error over AG's, small / medium / large rectangles:
#: 0.3 gave 0.87 / 0.88 / 0.90 and 0.5 gave 0.96 / 0.98 / 0.97, and c₂ = 8 instead of 5
#: 0.94 / 0.98 / 0.98 (first level from AG's rule, rounded cuts).
DEFAULT_FIRST_SHARE = 0.3

#: θ of the cut rule k = ⌊log₇(v / (c₂·b₂)) + θ⌋: 0.5 rounds to the nearest power of seven;
#: AG rounds its side up (m₂ = ⌈√…⌉). In the runs above 0.85 gave 0.82 / 0.84 / 0.88,
#: 0.5 gave 0.87 / 0.90 / 0.90 and 1.0 (always up) 0.83 / 0.84 / 0.90.
CUT_OFFSET = 0.85

#: Share of the count's budget for the noisy total that picks the first level (only when
#: ``adaptive_from`` is not given). The rule reads it on a log-7 scale, so a rough total
#: will do; the total also joins the least squares as the parent of the first level.
TOTAL_SHARE = 0.02

#: The automatic first level is at most this many levels above the finest resolution.
MAX_LEVELS = 6

#: Name of the noisy total's entry in the manifest (present iff the first level was chosen).
TOTAL_KEY = "count_total"

#: Share of the count's first-level budget spent on the *decision* counts that choose the
#: cuts; the rest buys the first-level counts that join the least squares. Two independent
#: draws keep the estimates unbiased: with one draw deciding the cuts and entering the least
#: squares (AG's original design), a cell's noise and the weight its value gets are
#: correlated (cells pushed up by their noise are cut into more cells, whose sum then leans
#: on that value), which biased whole-region totals by +1.4 standard deviations (95%
#: intervals covered 69%). Not tuned: 0.5 splits the first level evenly.
DECISION_SHARE = 0.5


@dataclass(frozen=True)
class GridPlan:
    """A calibrated two-level adaptive-grid release (public; no data touched)."""

    spec: ReleaseSpec
    root: int  # coarsest possible first level (the public tree starts here)
    first: int | None  # the first-level resolution, or None: chosen from the noisy total
    share: float  # share of each statistic's ε (after the total) spent on the first level
    scales: dict[str, float]  # second-level noise scale per statistic
    epsilons: dict[str, float]  # second-level ε per statistic (OpenDP's maps)
    first_scales: dict[str, float]
    first_epsilons: dict[str, float]
    decision_scale: float  # noise scale of the first-level decision counts
    decision_epsilon: float
    total_scale: float | None  # noise scale of the total count (automatic first level)
    total_epsilon: float | None
    epsilon: float  # total, from OpenDP's adaptive compositor
    _sens: dict[str, int] = field(repr=False, default_factory=dict)
    #: noise scale / ε (OpenDP's map) of the second level's value histogram (None: none)
    hist_scale: float | None = None
    hist_epsilon: float | None = None

    has_internal = True  # published values are least-squares estimates

    def variance(self, stat: str) -> float:
        """Noise variance of one second-level value."""
        return noise_variance(Mechanism.LAPLACE, self.scales[stat])

    def first_variance(self, stat: str) -> float:
        return noise_variance(Mechanism.LAPLACE, self.first_scales[stat])

    def total_variance(self) -> float:
        assert self.total_scale is not None
        return noise_variance(Mechanism.LAPLACE, self.total_scale)

    def moe(self, stat: str, alpha: float = 0.05) -> float:
        """Margin of one second-level value's raw noise."""
        return accuracy(Mechanism.LAPLACE, self.scales[stat], alpha)

    def cut_depths(self, noisy_first_counts: np.ndarray, most: int) -> np.ndarray:
        """Levels each first-level cell is cut by, from its noisy count (post-processing):
        k = ⌊log₇(v / (c₂·b₂)) + θ⌋, 0 when v ≤ c₂·b₂, at most ``most``."""
        unit = C2 * self.scales["count"]
        v = np.asarray(noisy_first_counts, dtype=np.float64)
        # v ≤ unit gives log 1 = 0 and ⌊θ⌋ = 0: not cut
        k = np.floor(np.log(np.maximum(v, unit) / unit) / math.log(7.0) + CUT_OFFSET)
        return np.clip(k, 0, most).astype(np.int64)

    def first_cells_wanted(self, noisy_total: float) -> float:
        """AG's first grid, m₁² = max(100, N·ε/(16c)) cells, for the noisy total N and the
        count's whole budget (noise scale b = L1/ε_count: N·ε/(16c) = N/(16·c·b))."""
        b = self._sens["count"] / (self.spec.shares()["count"] * self.spec.epsilon)
        return max(float(MIN_FIRST_CELLS), max(float(noisy_total), 0.0) / (16 * C_UG * b))

    def choose_first(self, noisy_total: float, tree: hierarchy.Tree) -> int:
        """The resolution (root .. finest − 1) whose number of public cells is nearest, in
        log, to :meth:`first_cells_wanted` (the coarser one on a tie). Post-processing."""
        want = math.log(self.first_cells_wanted(noisy_total))
        have = [math.log(max(len(tree.levels[d]), 1)) for d in range(len(tree.levels) - 1)]
        d = min(range(len(have)), key=lambda j: (abs(have[j] - want), j))
        return tree.resolutions[d]

    def describe(self) -> dict[str, Any]:
        s = self.spec
        split: dict[str, Any] = {
            "decision": self.decision_epsilon,
            "first_level": {st: self.first_epsilons[st] for st in s.statistics},
            "second_level": {st: self.epsilons[st] for st in s.statistics},
        }
        rule = (
            "ε = count decisions + Σ over statistics of (first level + second level); "
            f"statistic s gets share_s·ε, of which the first level gets {self.share:g} (for "
            f"the count, {DECISION_SHARE:g} of that goes to the decision counts)"
        )
        if self.total_epsilon is not None:
            split["total_count"] = self.total_epsilon
            rule = (
                "ε = total count + count decisions + Σ over statistics of (first level + "
                f"second level); the total gets {TOTAL_SHARE:g} of the count's share_count·ε, "
                f"and of what each statistic has left the first level gets {self.share:g} "
                f"(for the count, {DECISION_SHARE:g} of that goes to the decision counts)"
            )
        if self.hist_epsilon is not None:
            split["histogram"] = self.hist_epsilon
            rule = (
                "value histogram of the published cells (histogram_share·ε) + "
                + rule
                + "; share_s already excludes the histogram's share"
            )
        split["rule"] = rule
        return {
            "kind": "grid",
            "method": (
                "two-level adaptive grid on H3's index tree (Adaptive Grid, Qardaji, Yang, Li "
                "2013), discrete Laplace"
            ),
            "root_resolution": self.root,
            "first_resolution": self.first
            if self.first is not None
            else "chosen from the noisy total count (AG's rule)",
            "finest_resolution": s.finest,
            "first_level_share": self.share,
            "c2": C2,
            "rule": (
                "the first-level resolution is given, or the one whose number of cells over "
                f"the region is nearest (in log) to max({MIN_FIRST_CELLS}, N/(16·{C_UG:g}·b)) "
                "for the noisy total count N and the count's whole-budget noise scale b; every "
                "cell there gets a noisy decision count d and is cut k = floor(log7(d / (c2 · "
                f"second-level count noise scale)) + {CUT_OFFSET:g}) levels down (0 if d is "
                "below that unit, at most to the finest resolution), and its cells there get "
                "a second noisy count; every first-level cell also gets noisy counts v, "
                "independent of the decisions, and least squares makes each first-level cell "
                "equal to the sum of its published cells. The decision counts and the total "
                "only choose the cells: they do not enter the estimates, which keeps these "
                "unbiased"
            ),
            "proof": "docs/adaptive-privacy.md",
            "budget_split": split,
            "consistency": (
                "the levels' noisy values are made consistent by weighted least squares (Hay "
                "et al. 2010, exact noise variances); margins are 2.118 × the exact standard "
                "deviation of each published estimate"
            ),
        }


def plan_grid(spec: ReleaseSpec, *, root: int | None, share: float) -> GridPlan:
    """Calibrate the total, first- and second-level noise for ``spec.epsilon`` (pure ε-DP).

    Privacy
    -------
    Unit: one person. The total count has L1 sensitivity L0·L∞. The first level is a
    vector over the public cells at one resolution, the second over disjoint cells at mixed
    resolutions chosen from the noisy decision counts: either has the L1 sensitivity
    of a flat release (L0·L∞, times max(|lo|, |hi|) for sums; merging cells cannot raise
    it, ``bounding.level_sensitivities``). OpenDP's adaptive compositor adds every vector's
    ε; its map is the total (≤ ε). The first level's resolution, when chosen, is a function
    of the noisy total (post-processing).
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
    if spec.finest < 1:
        raise SpecError(
            'adaptive="grid" needs a resolution of 1 or more (it starts from a coarser level); '
            f"got resolution={spec.finest}"
        )
    if root is not None and not 0 <= int(root) < spec.finest:
        raise SpecError(
            f"adaptive_from={root!r} must be a resolution coarser than {spec.finest} "
            f"(0..{spec.finest - 1})"
        )
    first = None if root is None else int(root)
    sens = sensitivities(spec)  # L1 is the same at every level (bounding.level_sensitivities)
    shares = spec.shares()
    scales: dict[str, float] = {}
    epsilons: dict[str, float] = {}
    f_scales: dict[str, float] = {}
    f_epsilons: dict[str, float] = {}
    total_scale = total_eps = None
    decision_scale = decision_eps = 0.0
    for stat in spec.statistics:
        budget = shares[stat] * spec.epsilon_parts_budget
        first_budget = budget * share
        if stat == "count":
            if first is None:
                total_scale, total_eps = _fit(_total_chain(sens[stat].l1), budget * TOTAL_SHARE)
                budget *= 1 - TOTAL_SHARE
                first_budget = budget * share
            decision_scale, decision_eps = calibrate(
                stat, sens[stat].l1, first_budget * DECISION_SHARE
            )
            first_budget *= 1 - DECISION_SHARE
        f_scales[stat], f_epsilons[stat] = calibrate(stat, sens[stat].l1, first_budget)
        scales[stat], epsilons[stat] = calibrate(stat, sens[stat].l1, budget * (1 - share))
    # the published cells' value histogram: histogram_share·ε (the shares above exclude it)
    hist = (
        calibrate(
            "hist", histogram_sensitivity(spec).l1, shares["hist"] * spec.epsilon_parts_budget
        )
        if spec.histogram
        else None
    )
    plan = GridPlan(
        spec=spec,
        root=first if first is not None else max(0, spec.finest - MAX_LEVELS),
        first=first,
        share=float(share),
        scales=scales,
        epsilons=epsilons,
        first_scales=f_scales,
        first_epsilons=f_epsilons,
        decision_scale=decision_scale,
        decision_epsilon=decision_eps,
        total_scale=total_scale,
        total_epsilon=total_eps,
        epsilon=0.0,
        _sens={s: sens[s].l1 for s in spec.statistics},
        hist_scale=hist[0] if hist else None,
        hist_epsilon=hist[1] if hist else None,
    )
    return seal_epsilon(plan, _compositor(plan), spec)


def _total_chain(l1: int) -> Any:
    """The total count over the region (one number; L1 sensitivity ``l1``), before noise."""
    return gathered(lambda agg: np.array([exact_total(agg["tree_count"][0])], dtype=np.int64), l1)


def _fit(chain: Any, target: float) -> tuple[float, float]:
    """Noise scale for ``target`` ε on ``chain`` (discrete Laplace), and OpenDP's ε."""

    def eps_of(sc: float) -> float:
        return laplace_epsilon(chain, sc)

    scale = fit_scale(eps_of(1.0) / target, target, eps_of)
    return scale, eps_of(scale)


def _compositor(plan: GridPlan) -> Any:
    stats = plan.spec.statistics
    d_mids = [plan.total_epsilon] if plan.total_epsilon is not None else []
    d_mids += [plan.decision_epsilon]
    d_mids += [plan.first_epsilons[s] for s in stats] + [plan.epsilons[s] for s in stats]
    if plan.hist_epsilon is not None:  # asked last, on the drawn second-level cells
        d_mids.append(plan.hist_epsilon)
    return adaptive_compositor(d_mids)


def grid_noise_plan(plan: GridPlan) -> Any:
    """The release-level summary (a :class:`~dpmap._privacy.noise.NoisePlan`) of a grid plan.

    With a fixed first level its entries are named ``<stat>_internal@<resolution>``; with
    an automatic one ``<stat>_internal@first`` (the resolution is in the manifest's
    ``adaptive.first_resolution`` once drawn) and ``count_total``."""

    sens = sensitivities(plan.spec)
    # the first level at its resolution (the coarsest possible one when it is chosen later:
    # L2 and L∞ only grow as cells merge; L1, which the noise is calibrated to, is the same)
    first = level_sensitivities(plan.spec, plan.root)
    per: dict[str, Any] = {}
    for s in plan.spec.statistics:
        per[s] = statistic_noise(s, s, sens[s], Mechanism.LAPLACE, plan.scales[s], plan.epsilons[s])
    for s in plan.spec.statistics:
        key = first_key(s, plan.first)
        per[key] = statistic_noise(
            key, s, first[s], Mechanism.LAPLACE, plan.first_scales[s], plan.first_epsilons[s]
        )
    key = decision_key(plan.first)
    per[key] = statistic_noise(
        key, "count", first["count"], Mechanism.LAPLACE, plan.decision_scale, plan.decision_epsilon
    )
    if plan.total_scale is not None and plan.total_epsilon is not None:
        l1 = sens["count"].l1  # one number: all of a person's records can land in it
        per[TOTAL_KEY] = statistic_noise(
            TOTAL_KEY,
            "count",
            Sensitivity(l0=1, l1=l1, l2=float(l1), linf=l1),
            Mechanism.LAPLACE,
            plan.total_scale,
            plan.total_epsilon,
        )
    if plan.hist_scale is not None:
        per |= leaf_histogram_noise(plan.spec, plan.root, plan.hist_scale, plan.hist_epsilon)
    what = (
        ("total, " if plan.total_scale is not None else "")
        + "decision, first- and second-level counts"
        + (" + value histogram of the published cells" if plan.hist_scale is not None else "")
    )
    return pure_dp_plan(plan, per, what, _compositor(plan))


def first_key(stat: str, resolution: int | None) -> str:
    """Name of a statistic's first-level entry in the manifest."""
    return internal_key(stat, resolution) if resolution is not None else f"{stat}_internal@first"


def decision_key(resolution: int | None) -> str:
    """Name of the first-level decision counts' entry in the manifest."""
    return f"count_decision@{resolution if resolution is not None else 'first'}"


@dataclass(frozen=True)
class GridOutput:
    """What a grid release drew (all noisy or public)."""

    leaves: list[tuple[int, int]]  # (depth, index in tree.levels[depth]), sorted
    parent: np.ndarray  # each leaf's first-level cell (index in tree.levels[first_depth])
    first: dict[str, np.ndarray]  # statistic -> noisy first-level values
    second: dict[str, np.ndarray]  # statistic -> noisy second-level values (leaves order)
    first_depth: int = 0  # depth of the first level in the tree
    total: float | None = None  # the noisy total count (automatic first level)
    decision: np.ndarray | None = None  # the noisy first-level counts that chose the cuts
    hist: np.ndarray | None = None  # the noisy value histogram of the leaves (flattened)

    def first_resolution(self, tree: hierarchy.Tree) -> int:
        return tree.resolutions[self.first_depth]


def second_level(
    tree: hierarchy.Tree, first_depth: int, cut: np.ndarray
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The second-level cells: every first-level cell's descendants ``cut`` levels down
    (itself for 0), as (leaves, their first-level cell)."""
    anc = [np.arange(len(tree.levels[first_depth]))]
    for d in range(first_depth + 1, len(tree.levels)):
        p = tree.parent[d]
        assert p is not None
        anc.append(anc[-1][p])
    leaves: list[tuple[int, int]] = []
    parents: list[np.ndarray] = []
    for j, a in enumerate(anc):
        here = np.flatnonzero(cut[a] == j)
        leaves += [(first_depth + j, int(i)) for i in here]
        parents.append(a[here])
    return leaves, np.concatenate(parents)


def run_grid(
    plan: GridPlan,
    tree: hierarchy.Tree,
    level_counts: list[np.ndarray],
    level_sums: list[np.ndarray] | None,
    hist: FinestHistogram | None = None,
) -> GridOutput:
    """The total (if the first level is automatic), the first-level decision counts and the
    cuts they choose, the first level, the second level, and (with ``hist``, the finest
    cells' exact value histogram) the second level's value histogram. ``tree`` starts at
    ``plan.root``. Draws noise."""
    data: dict[str, Any] = {"tree_count": level_counts}
    if level_sums is not None:
        data["tree_sum"] = level_sums
    if hist is not None:
        data["tree_hist"] = hist
    check_noise_inputs(data)
    stats = plan.spec.statistics
    try:
        queryable = _compositor(plan)(data)
        total = None
        if plan.total_scale is not None:
            noisy = queryable(then_laplace(_total_chain(plan._sens["count"]), plan.total_scale))
            total = float(noisy[0])
            r1 = plan.choose_first(total, tree)
        else:
            assert plan.first is not None
            r1 = plan.first
        d1 = r1 - plan.root
        roots = [(d1, i) for i in range(len(tree.levels[d1]))]
        decision = np.asarray(
            queryable(leaf_chain("count", plan._sens["count"], plan.decision_scale, roots)),
            dtype=np.int64,
        )
        first = {
            s: np.asarray(
                queryable(leaf_chain(s, plan._sens[s], plan.first_scales[s], roots)),
                dtype=np.int64,
            )
            for s in stats
        }
        cut = plan.cut_depths(decision, plan.spec.finest - r1)
        leaves, parent = second_level(tree, d1, cut)
        second = {
            s: np.asarray(
                queryable(leaf_chain(s, plan._sens[s], plan.scales[s], leaves)), dtype=np.int64
            )
            for s in stats
        }
        noisy_hist = None
        if plan.hist_scale is not None:
            assert hist is not None
            chain = histogram_chain(plan.spec, tree, leaves, plan.hist_scale)
            noisy_hist = np.asarray(queryable(chain), dtype=np.int64)
    except OpenDPException as exc:  # pragma: no cover
        raise MechanismError(f"OpenDP failed while adding noise: {exc}") from exc
    return GridOutput(
        leaves,
        parent,
        first,
        second,
        first_depth=d1,
        total=total,
        decision=decision,
        hist=noisy_hist,
    )


def grid_consistent(plan: GridPlan, out: GridOutput, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares second-level estimates of ``stat`` (``out.leaves`` order) and their exact
    variances: every first-level cell equals the sum of its second-level cells
    (:func:`dpmap.designs.hierarchy.consistent_forest`). Post-processing.

    Only draws whose noise is independent of the choice of cells enter: the first-level
    values ``v`` and the second-level values. The decision counts and the total chose the
    cells, so given that choice their noise is not centred on zero; used here they would
    bias the estimates (see :data:`DECISION_SHARE`)."""
    v = np.asarray(out.first[stat], dtype=np.float64)
    u = np.asarray(out.second[stat], dtype=np.float64)
    parent: list[np.ndarray | None] = [None, out.parent]
    y = [v, u]
    var = [np.full(len(v), plan.first_variance(stat)), np.full(len(u), plan.variance(stat))]
    x, P = hierarchy.consistent_forest(parent, y, var)
    return x[-1], P[-1]


def grid_forest(
    m: dict[str, Any], ids: np.ndarray, res: np.ndarray, stats: tuple[str, ...]
) -> ForestCorrelation:
    """An adaptive grid's forest, rebuilt from its (public) cells: two depths, its first-level
    cells (the cells' parents at the first resolution, every one measured) and the cells."""

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
            np.full(len(first), manifest_noise_variance(first_entry)),
            np.full(len(ids), manifest_noise_variance(m["statistics"][s])),
        ]
    return ForestCorrelation(
        parent=[None, np.zeros(len(first), dtype=np.int64), np.searchsorted(first, up)],
        depth=np.full(len(ids), 2, dtype=np.int64),
        pos=np.arange(len(ids)),
        node_var=node_var,
    )


class AdaptiveGrid(Adaptive):
    """The two-level adaptive grid (Qardaji, Yang, Li 2013) on H3's index tree: every cell
    of a first level is counted, cut by its noisy count and counted again at the finer level;
    least squares makes the levels consistent (see the module docstring)."""

    kind = "grid"

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return options.adaptive == "grid"

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> AdaptiveGrid:
        reg = cls.check(spec, region)
        internal = options.internal_share
        if internal is not None and (
            isinstance(internal, bool) or internal != DEFAULT_INTERNAL_SHARE
        ):
            raise SpecError(
                'internal_share applies to PrivTree releases (adaptive=True); adaptive="grid" '
                "always counts its first level: set its share with tree_share"
            )
        share = DEFAULT_FIRST_SHARE if options.tree_share is None else options.tree_share
        gplan = plan_grid(spec, root=options.adaptive_from, share=share)
        return cls(spec, reg, grid_noise_plan(gplan), gplan)

    def explain_lines(self) -> list[str]:
        a = self.aplan.describe()
        first = a["first_resolution"]
        where = (
            f"resolution {first}"
            if isinstance(first, int)
            else f"the resolution (from {a['root_resolution']} up) that AG's rule picks from "
            "a noisy total count ('count_total')"
        )
        return [
            f"  adaptive grid: every cell at {where} is counted (the '_internal@' lines "
            f"above), then cut by its noisy count down to at most {a['finest_resolution']} "
            "and counted again (the lines without '@'); the published cells carry "
            "least-squares estimates of all of them (smaller margins than above)",
            *self.distribution_lines(),
        ]

    def run(
        self, tree: hierarchy.Tree, counts: Any, sums: Any, hist: FinestHistogram | None
    ) -> LeafRun:
        out = run_grid(self.aplan, tree, counts, sums, hist)
        drawn = {"first_resolution": out.first_resolution(tree)}
        noisy = out.second if out.hist is None else {**out.second, "hist": out.hist}
        return out.leaves, noisy, drawn, lambda stat: grid_consistent(self.aplan, out, stat)

    def selection_rule(self, measured: Measured) -> str:
        return (
            f"adaptive grid: every cell at resolution {measured.drawn['first_resolution']} over "
            f"the region, cut down to at most {self.spec.finest} where its noisy first-level "
            "count is large; the possible cells are the H3 parents of the cells overlapping the "
            "region"
        )

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        return (manifest.get("adaptive") or {}).get("kind") == "grid"

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        if not len(rows.ids):
            return Correlation(forest=None)
        forest = grid_forest(manifest, rows.ids, rows.resolutions, rows.stats)
        return Correlation(forest=forest, laplace_ls=True)
