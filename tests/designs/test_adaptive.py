"""Adaptive (PrivTree) releases: exact accounting, a partition of the region, refinement."""

from __future__ import annotations

import math

import h3
import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest
from scipy import stats

import dpmap
from common import (
    ADAPTIVE_REGION,
    check_dlap_noise,
    check_linear_estimate,
    cluster_points,
    dlap_moments,
    opendp_laplace_draws,
)
from dpmap._privacy.postprocess import Z95_LAPLACE
from dpmap.designs import hierarchy
from dpmap.designs.privtree import (
    BETA,
    AdaptiveOutput,
    adaptive_consistent,
    adaptive_forest,
    adaptive_noise_plan,
    plan_adaptive,
    record_epsilon,
    run_adaptive,
)
from dpmap.spec import ReleaseSpec

REGION = ADAPTIVE_REGION
_points = cluster_points


@pytest.mark.parametrize(
    "l0,linf,eps,share", [(1, 1, 1.0, 0.5), (2, 3, 0.5, 0.3), (1, 1, 2.0, 0.7)]
)
def test_adaptive_accounting_is_exact(l0: int, linf: int, eps: float, share: float) -> None:
    spec = ReleaseSpec(
        resolution=8,
        epsilon=eps,
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        value="a",
        bounds=(0, 10),
        count_share=0.6,
    )
    plan = plan_adaptive(spec, root=None, tree_share=share)
    k = l0 * linf
    # the tree's ε per person, by the bound of docs/adaptive-privacy.md, is the tree budget
    lam = plan.lam
    per_record = (1 / lam) * (1 + math.exp(1 / lam) * BETA / (BETA - 1))
    assert k * per_record <= share * eps
    assert k * per_record == pytest.approx(share * eps, rel=1e-6)  # and λ is no larger than needed
    assert record_epsilon(lam) >= per_record
    assert lam > (2 * BETA - 1) / (BETA - 1) * k / (share * eps)  # above the continuous bound
    assert plan.bias == math.ceil(plan.lam * math.log(BETA))
    assert plan.tree_epsilon == pytest.approx(share * eps)
    leaves = (1 - share) * eps
    assert plan.epsilons["count"] == pytest.approx(0.6 * leaves, rel=1e-9)
    assert plan.epsilons["sum"] == pytest.approx(0.4 * leaves, rel=1e-9)
    assert plan.scales["count"] == pytest.approx(k / (0.6 * leaves), rel=1e-9)
    assert plan.scales["sum"] == pytest.approx(10 * k / (0.4 * leaves), rel=1e-9)
    assert plan.epsilon <= eps and plan.epsilon == pytest.approx(eps, rel=1e-9)
    assert plan.root == 4


def test_adaptive_release_partitions_the_region_and_refines_dense_areas() -> None:
    rel = dpmap.release(
        _points(),
        region=REGION,
        resolution=8,
        epsilon=1.0,
        adaptive=True,
        person="pid",
        value="amount",
        bounds=(0, 100),
        suppress_below=False,
    )
    cells = rel.cells
    m = rel.manifest
    assert m["privacy"]["epsilon"] == pytest.approx(1.0)
    assert m["adaptive"]["root_resolution"] == 4 and m["adaptive"]["finest_resolution"] == 8
    assert cells["resolution"].between(4, 8).all()
    # every public finest cell lies under exactly one leaf (the leaves partition the tree)
    shape = h3.geo_to_h3shape(REGION.__geo_interface__)
    finest = h3.h3shape_to_cells_experimental(shape, 8, contain="overlap")
    leaves = set(cells["cell"])
    for c in finest:
        ancestors = [h3.cell_to_parent(c, r) for r in range(4, 9)]
        assert sum(a in leaves for a in ancestors) == 1
    # the dense cluster (4000 people in ~1 km) is refined to the finest resolution
    centre = h3.latlng_to_cell(39.3, 116.4, 8)
    assert centre in leaves
    # and the released leaves are mostly coarse where nobody lives
    assert (cells["resolution"] < 8).sum() > 0
    # the total estimates the 4,300 people in the region: the leaves' noise is independent
    # discrete Laplace of the stated scale, so the total's sd is √(leaves · Var) exactly;
    # Chernoff's bound for a sum of n ≥ 50 i.i.d. Laplace, min over t of
    # e^{−7.5·t·√(2n)}(1 − t²)^{−n}, is < 1e-10 per tail at 7.5 sd. (One total cannot
    # tell the noise's size; test_adaptive_release_noise_has_the_stated_scale does.)
    var = dlap_moments(math.exp(-1 / m["statistics"]["count"]["scale"]))[0]
    assert len(cells) >= 50
    assert abs(cells["count"].sum() - 4300) <= 7.5 * math.sqrt(len(cells) * var)


def _truth_by_cell(pts: pd.DataFrame, resolutions: range) -> dict[str, int]:
    """Exact count of points under every cell at ``resolutions`` (each point its own person)."""
    out: dict[str, int] = {}
    for lat, lng in zip(pts["lat"], pts["lng"], strict=True):
        finest = h3.latlng_to_cell(lat, lng, resolutions[-1])
        for r in resolutions:
            key = h3.cell_to_parent(finest, r)
            out[key] = out.get(key, 0) + 1
    return out


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
def test_adaptive_release_noise_has_the_stated_scale() -> None:
    """Published leaf counts (``internal_share=0``: the raw noisy leaves) minus the exact
    count under each leaf, over as many releases as give ≥ 20,000 leaves: mean 0 and mean square =
    the discrete Laplace variance at the manifest's scale, both two-sided
    (:func:`common.check_dlap_noise`: < 2e-10 false failure; catches 0.85× / 1.15× the
    scale, and a noiseless release). Deliberately broken (and restored): the leaf noise
    of ``run_adaptive`` at 0.85×, 1.15× and 0× the scale — each fails here."""
    pts = _points()
    truth = _truth_by_cell(pts, range(4, 9))
    errs: list[np.ndarray] = []
    scale = None
    # the number of leaves of a release is itself random (PrivTree's splits are noisy): draw
    # releases until there are 20,000 leaves (about 130 releases), never a fixed number
    while sum(len(e) for e in errs) < 20_000 and len(errs) < 400:
        rel = dpmap.release(
            pts,
            region=REGION,
            resolution=8,
            epsilon=1.0,
            adaptive=True,
            person="pid",
            suppress_below=False,
        )
        cells = rel.cells
        scale = rel.manifest["statistics"]["count"]["scale"]
        true = np.array([truth.get(c, 0) for c in cells["cell"]], dtype=np.float64)
        errs.append(cells["count"].to_numpy(dtype=np.float64) - true)
    assert scale == pytest.approx(1 / 0.7, rel=1e-9)  # the count gets (1 − 0.3)·ε, L1 = 1
    err = np.concatenate(errs)
    assert len(err) >= 20_000
    check_dlap_noise(err, scale, "adaptive leaf counts")


def test_adaptive_refuses_what_it_cannot_do() -> None:
    pts = _points(100)
    with pytest.raises(dpmap.SpecError, match="region"):
        dpmap.release(pts, resolution=8, epsilon=1.0, delta=1e-6, adaptive=True)
    with pytest.raises(dpmap.SpecError, match="laplace"):
        dpmap.release(
            pts,
            region=REGION,
            resolution=8,
            epsilon=1.0,
            delta=1e-6,
            adaptive=True,
            mechanism="gaussian",
        )
    with pytest.raises(dpmap.SpecError, match="adaptive_from"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive=True, adaptive_from=8)
    with pytest.raises(dpmap.SpecError, match="resolution of 1 or more"):
        dpmap.release(pts, region=REGION, resolution=0, epsilon=1.0, adaptive=True)
    with pytest.raises(dpmap.SpecError, match="adaptive=True"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive_from=5)
    with pytest.raises(dpmap.SpecError, match="adaptive=True"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, internal_share=0.2)
    with pytest.raises(dpmap.SpecError, match="tree_share"):
        dpmap.release(pts, region=REGION, resolution=8, epsilon=1.0, adaptive=True, tree_share=1.0)


def test_adaptive_release_round_trips_through_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rel = dpmap.release(
        _points(500), region=REGION, resolution=7, epsilon=1.0, adaptive=True, adaptive_from=5
    )
    rel.to_file(tmp_path / "a.parquet")
    back = dpmap.read_release(tmp_path / "a.parquet")
    assert back.manifest["adaptive"]["root_resolution"] == 5
    pd.testing.assert_frame_equal(
        back.cells.drop(columns="geometry"), rel.cells.drop(columns="geometry")
    )


# ---------------------------------------------------------------------------------------
# internal nodes: accounting, consistency on the mixed-depth tree, unbiasedness, variance

VEC_I64 = dp.vector_domain(dp.atom_domain(T="i64"))


@pytest.mark.parametrize(
    "l0,linf,eps,tree,internal",
    [
        (1, 1, 1.0, 0.3, 0.4),
        (2, 3, 0.5, 0.2, (0.1, 0.0, 0.2, 0.05)),  # one internal depth not measured
        (3, 1, 2.0, 0.5, (0.3, 0.3, 0.3, 0.0)),
    ],
)
def test_internal_accounting_is_exact(
    l0: int, linf: int, eps: float, tree: float, internal: float | tuple[float, ...]
) -> None:
    """ε of every noisy vector, derived by hand from the bounds and the budget split, is
    what OpenDP's maps report, and OpenDP's compositor adds them up to ε."""
    spec = ReleaseSpec(
        resolution=8,
        epsilon=eps,
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        value="a",
        bounds=(-3, 10),
        count_share=0.6,
    )
    plan = plan_adaptive(spec, root=None, tree_share=tree, internal_share=internal)
    shares = (internal / 4,) * 4 if isinstance(internal, float) else internal
    assert plan.internal == pytest.approx(shares, rel=1e-15)
    k, m = l0 * linf, 10  # records per person; M = max(|lo|, |hi|)
    rest = (1 - tree) * eps
    total = k * record_epsilon(plan.lam)  # the split decisions (user measurement)
    assert total == pytest.approx(tree * eps, rel=1e-6)
    for stat, share, sens in (("count", 0.6, k), ("sum", 0.4, k * m)):
        leaf_target = share * rest * (1 - sum(shares))
        assert plan.scales[stat] == pytest.approx(sens / leaf_target, rel=1e-9)
        hand = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=plan.scales[stat])
        assert plan.epsilons[stat] == float(hand.map(sens))
        assert plan.epsilons[stat] <= leaf_target
        total += plan.epsilons[stat]
        for d, w in enumerate(shares):
            if w == 0:
                assert plan.internal_scales[stat][d] is None
                assert plan.internal_epsilons[stat][d] is None
                continue
            # the internal nodes of one depth are disjoint cells: the flat sensitivity
            scale = plan.internal_scales[stat][d]
            assert scale == pytest.approx(sens / (share * rest * w), rel=1e-9)
            hand = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=scale)
            assert plan.internal_epsilons[stat][d] == float(hand.map(sens))
            total += float(hand.map(sens))
    assert plan.epsilon == pytest.approx(total, rel=1e-12)
    assert plan.epsilon <= eps * (1 + 1e-12) and plan.epsilon == pytest.approx(eps, rel=1e-9)
    # the release-level plan and its manifest entry state the same split
    noise = adaptive_noise_plan(plan)
    assert noise.epsilon == plan.epsilon
    for d, w in enumerate(shares):
        key = f"count_internal@{plan.root + d}"
        assert (key in noise.statistics) == (w > 0)
        if w > 0:
            assert noise.statistics[key].epsilon == plan.internal_epsilons["count"][d]
    split = plan.describe()["budget_split"]
    assert split["tree"] == k * record_epsilon(plan.lam)
    assert split["internal_share"] == {str(plan.root + d): w for d, w in enumerate(shares)}


def test_internal_share_zero_is_the_leaf_only_release() -> None:
    spec = ReleaseSpec(resolution=8, epsilon=1.0)
    old = plan_adaptive(spec, root=None, tree_share=0.3, internal_share=0.0)
    assert not old.has_internal and old.epsilons["count"] == pytest.approx(0.7, rel=1e-9)
    assert set(adaptive_noise_plan(old).statistics) == {"count"}
    rel = dpmap.release(
        _points(300), region=REGION, resolution=7, epsilon=1.0, adaptive=True, internal_share=0
    )
    assert "consistency" not in rel.manifest["adaptive"]
    assert rel.cells["count"].dtype == "Int64"  # raw integer noisy leaves, as before
    assert rel.estimates["count_var"].nunique() == 1


@pytest.mark.parametrize(
    "bad", [-0.1, 1.0, True, (0.5, 0.6, 0.0, 0.0), (0.1, 0.1), (0.1, -0.1, 0.0, 0.0), "x"]
)
def test_internal_share_is_validated(bad: object) -> None:
    with pytest.raises(dpmap.SpecError, match="internal_share"):
        dpmap.explain(region=REGION, resolution=8, epsilon=1.0, adaptive=True, internal_share=bad)


def _drawn_tree(internal: float | tuple[float, ...] = 0.4):  # type: ignore[no-untyped-def]
    """A plan, the public tree, exact level counts and one drawn PrivTree (noise included)."""
    from dpmap import grid
    from dpmap.engines import local

    pts = _points(2500, seed=3)
    spec = ReleaseSpec(resolution=7, epsilon=1.0, person="pid")
    plan = plan_adaptive(spec, root=4, tree_share=0.3, internal_share=internal)
    domain = grid.region_to_cells(grid.to_region(REGION), 7)
    agg = local.bound_and_aggregate(pts, spec, domain, None).densify(domain, 1)
    tree = hierarchy.build_tree(domain, (4, 5, 6, 7))
    counts = hierarchy.level_totals(tree, agg["count"])
    for _ in range(20):  # a tree with internal nodes at every depth (almost always the first)
        out = run_adaptive(plan, tree, counts, None)
        if all(len(a) for a in out.internal):
            return plan, tree, counts, out
    raise AssertionError("the dense cluster was never split down to resolution 7")


def test_adaptive_estimates_are_consistent_on_the_mixed_tree() -> None:
    """Every split node's estimate is the sum of its children's (to rounding), leaves lie at
    several depths, and the published leaf values are those of the consistent tree."""
    plan, tree, _counts, out = _drawn_tree()
    assert len({d for d, _ in out.leaves}) >= 2
    parent, y, var, where = adaptive_forest(plan, tree, out, "count")
    x, P = hierarchy.consistent_forest(parent, y, var)
    for j in range(1, len(x)):
        n = len(x[j - 1])
        split = np.bincount(parent[j], minlength=n) > 0
        np.testing.assert_array_equal(
            np.flatnonzero(split),
            np.searchsorted(
                np.sort(
                    np.concatenate([out.internal[j - 1], [i for d, i in out.leaves if d == j - 1]])
                ),
                out.internal[j - 1],
            ),
        )
        sums = np.bincount(parent[j], weights=x[j], minlength=n)
        np.testing.assert_allclose(sums[split], x[j - 1][split], rtol=1e-12, atol=1e-9)
    est, est_var = adaptive_consistent(plan, tree, out, "count")
    for d in range(len(x)):
        here = [i for i, (dd, _) in enumerate(out.leaves) if dd == d]
        np.testing.assert_array_equal(est[here], x[d][where[d]])
        np.testing.assert_array_equal(est_var[here], P[d][where[d]])
    # the total over the region is the sum of the roots' estimates
    assert est.sum() == pytest.approx(x[0].sum(), rel=1e-12)


@pytest.mark.slow
def test_adaptive_estimates_are_unbiased_with_the_stated_variance() -> None:
    """Conditional on a drawn tree, each leaf's least-squares estimate has mean = truth and
    variance = the stated one.

    Exact part: the estimate is linear in the noisy values, e = Σ a_j η_j; its coefficients
    (one consistency run per unit input) give Var = Σ a_j² Var(η_j), which must equal the
    stated variance to rounding. Statistical part: N = 6,000 fresh OpenDP draws of every
    noisy vector at the plan's scales; per leaf |mean error| ≤ 6.5·√(P/N) and
    |mean(e²) − P| ≤ 7.5·√((E[e⁴] − P²)/N), with E[e⁴] = 3P² + Σ a_j⁴ (E[η_j⁴] − 3Var_j²)
    computed exactly from the discrete Laplace moments (see test_noise_statistics.py). Both
    are tails of means of N i.i.d. draws with finite moments. e is symmetric, so its mean is
    normal to high accuracy (P(|Z| > 6.5) = 8e-11); e² is skewed (≤ 6.6, a single Laplace),
    so its mean has skewness ≤ 0.085 and the Cornish–Fisher shift at 7.5 SE is ≤ 0.8 SE:
    still beyond 6.5 SE. Each check fails a correct implementation with probability
    < 1e-10; there are two per leaf (at most 2 × 1,356, the public cells at resolution 7:
    < 3e-7 in all).
    """
    plan, tree, counts, out = _drawn_tree()
    ndraws = 6000
    true_leaf = np.array([counts[d][i] for d, i in out.leaves], dtype=np.float64)
    true_int = [counts[d][idx] for d, idx in enumerate(out.internal)]

    def opendp_noise(values: np.ndarray, scale: float) -> np.ndarray:
        return opendp_laplace_draws(values, scale, ndraws)

    noisy = AdaptiveOutput(
        leaves=out.leaves,
        internal=out.internal,
        noisy={"count": opendp_noise(true_leaf, plan.scales["count"])},
        noisy_internal={
            "count": [
                None if sc is None else opendp_noise(true_int[d], sc)
                for d, sc in enumerate(plan.internal_scales["count"])
            ]
        },
    )
    est, est_var = adaptive_consistent(plan, tree, noisy, "count")
    err = est - true_leaf[:, None]
    P = adaptive_consistent(plan, tree, out, "count")[1]
    assert np.all(np.ptp(est_var, axis=1) == 0)
    np.testing.assert_allclose(est_var[:, 0], P)

    # coefficients of each leaf estimate on every noisy value (leaves, then depths)
    nodes = [("leaf", i) for i in range(len(out.leaves))] + [
        (d, i)
        for d in range(plan.depths)
        for i in range(len(out.internal[d]))
        if plan.internal_scales["count"][d] is not None
    ]
    unit = np.eye(len(nodes))
    basis = AdaptiveOutput(
        leaves=out.leaves,
        internal=out.internal,
        noisy={"count": unit[: len(out.leaves)]},
        noisy_internal={"count": [None] * plan.depths},
    )
    pos = len(out.leaves)
    for d in range(plan.depths):
        if plan.internal_scales["count"][d] is not None:
            n_d = len(out.internal[d])
            basis.noisy_internal["count"][d] = unit[pos : pos + n_d]
            pos += n_d
    coef, _ = adaptive_consistent(plan, tree, basis, "count")  # (leaves, nodes)
    scales = [plan.scales["count"]] * len(out.leaves) + [
        plan.internal_scales["count"][d] for d, _ in nodes[len(out.leaves) :]
    ]
    check_linear_estimate(err, P, coef, scales, ndraws)
    # and the estimates are better than the raw leaves where internal nodes help
    assert P.min() < plan.variance("count")


def test_adaptive_release_with_internal_nodes_publishes_consistent_leaves() -> None:
    rel = dpmap.release(
        _points(),
        region=REGION,
        resolution=8,
        epsilon=1.0,
        adaptive=True,
        internal_share=0.4,
        person="pid",
        value="amount",
        bounds=(0, 100),
        suppress_below=False,
    )
    m = rel.manifest
    assert m["privacy"]["epsilon"] == pytest.approx(1.0) and m["privacy"]["epsilon"] <= 1 + 1e-12
    assert "consistency" in m["adaptive"] and "least-squares" in m["margins"]
    split = m["adaptive"]["budget_split"]
    assert set(split["internal"]) == {"4", "5", "6", "7"}
    assert {f"count_internal@{r}" for r in range(4, 8)} <= set(m["statistics"])
    parts = [split["tree"]] + [
        v
        for s in ("count", "sum")
        for v in [split["leaves"][s]] + [split["internal"][r][s] for r in split["internal"]]
    ]
    assert sum(parts) == pytest.approx(m["privacy"]["epsilon"], rel=1e-12)
    cells = rel.cells
    est = rel.estimates
    # least-squares values (not integers), margins from their own exact variances
    assert not np.allclose(est["count"], np.round(est["count"]))
    np.testing.assert_allclose(
        cells["count_moe"].to_numpy(dtype=float), Z95_LAPLACE * np.sqrt(est["count_var"].to_numpy())
    )
    assert est["count_var"].max() <= adaptive_noise_plan_var(rel) + 1e-9
    # (that the estimates are centred on the truth with these variances:
    # test_adaptive_internal_release_has_the_stated_variances, on many releases)


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
def test_adaptive_internal_release_has_the_stated_variances() -> None:
    """With internal nodes the leaves are least-squares estimates with stated variances
    (``count_var``, from which the margins come). Over R = 160 releases, z = (estimate −
    exact count)/√count_var has E[z] = 0 and E[z²] = 1 for every leaf, whatever the tree;
    the leaves of one release are correlated (they share internal nodes), so the unit of
    independence is the release: S_r = mean of z² over its leaves and M_r = mean of z are
    i.i.d. over releases with E[S_r] = 1 and E[M_r] = 0 exactly. Two-sided t-tests on R
    releases, |S̄ − 1| ≤ 7.5·sd(S)/√R and |M̄| ≤ 7.5·sd(M)/√R: for R = 160 the Student
    tail at 7.5 is < 1e-11, and S_r (a mean of ≈ 100 z² with finite moments) has skewness
    ≲ 1, so the mean's Cornish–Fisher shift at 7.5 SE is ≲ 0.7 SE: < 1e-9 per check.
    Power: S̄'s standard error is ≤ 0.02 (measured sd(S): 0.13 at 0.85×, 0.25 at 1.15×),
    the window ≤ ±0.15,
    while noise at 0.85× / 1.15× the stated scales gives E[S] = 0.72 / 1.32. Deliberately
    broken (and restored): the internal and leaf noise of run_adaptive at 0.85× and 1.15×
    (each fails here)."""
    pts = _points()
    truth = _truth_by_cell(pts, range(4, 9))
    s_r, m_r = [], []
    for _ in range(160):
        rel = dpmap.release(
            pts,
            region=REGION,
            resolution=8,
            epsilon=1.0,
            adaptive=True,
            internal_share=0.4,
            person="pid",
            suppress_below=False,
        )
        est = rel.estimates
        true = np.array([truth.get(c, 0) for c in rel.cells["cell"]], dtype=np.float64)
        z = (est["count"].to_numpy(dtype=np.float64) - true) / np.sqrt(
            est["count_var"].to_numpy(dtype=np.float64)
        )
        s_r.append(float((z**2).mean()))
        m_r.append(float(z.mean()))
    s, m = np.array(s_r), np.array(m_r)
    r = len(s)
    assert abs(s.mean() - 1) <= 7.5 * s.std(ddof=1) / math.sqrt(r), (s.mean(), s.std(ddof=1))
    assert abs(m.mean()) <= 7.5 * m.std(ddof=1) / math.sqrt(r), (m.mean(), m.std(ddof=1))
    assert s.std(ddof=1) / math.sqrt(r) < 0.03  # the window is narrow enough to have power


def adaptive_noise_plan_var(rel) -> float:  # type: ignore[no-untyped-def]
    """The raw noise variance of one leaf, from the manifest (the estimates do no worse)."""
    from dpmap._privacy.noise import noise_variance
    from dpmap.spec import Mechanism

    return noise_variance(Mechanism.LAPLACE, rel.manifest["statistics"]["count"]["scale"])


# ---------------------------------------------------------------------------------------
# the split decisions: each node splits with the probability the noise implies


def split_probability(b: np.ndarray, lam: float, threshold: int = 0) -> np.ndarray:
    """P(b + η > θ) for OpenDP's discrete Laplace η of scale λ (P(η = j) ∝ α^{|j|},
    α = e^{−1/λ}): with m = θ − b + 1, P(η ≥ m) = α^m/(1 + α) for m ≥ 1 and
    1 − α^{1−m}/(1 + α) for m ≤ 0 (docs/adaptive-privacy.md, "Proof")."""
    alpha = math.exp(-1.0 / lam)
    m = threshold - np.asarray(b, dtype=np.float64) + 1
    return np.where(m >= 1, alpha**m / (1 + alpha), 1 - alpha ** (1 - m) / (1 + alpha))


#: the false-failure budget of one tail of one checked value (≤ 48 tails here: < 1e-8)
SPLIT_TAIL = 2e-10


def _split_tree() -> tuple[hierarchy.Tree, list[np.ndarray]]:
    """A public tree over the whole globe: the 122 resolution-0 cells, all their children,
    and below each child a single chain (its centre child at resolution 2, that one's at 3),
    so every resolution-1 node has one child and the tree stays small (122 + 3 × 842)."""
    kids = [c for r0 in h3.get_res0_cells() for c in h3.cell_to_children(r0, 1)]
    finest = [h3.cell_to_center_child(h3.cell_to_center_child(c, 2), 3) for c in kids]
    tree = hierarchy.build_tree(
        np.sort(np.array([h3.str_to_int(c) for c in finest], dtype=np.int64)), (0, 1, 2, 3)
    )
    return tree, [np.zeros(len(level), dtype=np.int64) for level in tree.levels]


def test_split_decisions_have_the_mechanisms_probabilities() -> None:
    """Drive the real split (``run_adaptive``, OpenDP's noise) many times on nodes whose
    biased count b = max(c − d·δ, θ − δ) is set to chosen values around the threshold θ = 0
    — at depth 0 (no bias), depth 1 (b = c − δ) and depth 2 (where c − 2δ < θ − δ is floored)
    — and check that each value's split frequency is the probability the mechanism implies,
    P(b + η > θ) (:func:`split_probability`, exact).

    A node is under test only where every ancestor has count 10⁶, so it is visited with
    probability 1 − O(α^{10⁶}); the decisions of different nodes and runs are independent
    draws, so the number of splits among the n trials of one b is Binomial(n, p(b)). The
    acceptance region is its exact two-sided [F⁻¹(t), F̄⁻¹(t)], t = 2e-10 per tail, for
    each of ≤ 24 (depth, b) pairs: a correct implementation fails with probability < 1e-8.

    Deliberately broken (and restored) in src/dpmap/designs/privtree.py: deciding on the exact
    biased count (no noise) fails every value; so do dropping the depth bias or the floor
    (the values at depth 1 or 2), and a decision scale 0.85× or 1.15× the plan's fails
    several of the values with many trials.
    """
    tree, counts = _split_tree()
    spec = ReleaseSpec(resolution=3, epsilon=2.0)
    plan = plan_adaptive(spec, root=0, tree_share=0.3)
    lam, delta = plan.lam, plan.bias
    assert plan.threshold == 0 and 3 < lam < 6 and delta == math.ceil(lam * math.log(BETA))
    big = 10**6
    n0 = len(tree.levels[0])
    p1, p2 = tree.parent[1], tree.parent[2]
    assert p1 is not None and p2 is not None
    # roots: a third are under test at depth 0, the others always split
    role = np.arange(n0) % 3
    c0 = np.array([0, 1, 2, 3, 5, 8, 13, 20])
    counts[0][:] = big
    test0 = np.flatnonzero(role == 0)
    counts[0][test0] = c0[np.arange(len(test0)) % len(c0)]
    # depth 1: the children of role-1 roots are under test (b = c − δ, from −δ to +12)
    off1 = np.array([-delta, -delta + 1, -6, -3, -2, -1, 0, 1, 2, 4, 12])
    test1 = np.flatnonzero(role[p1] == 1)
    counts[1][:] = big
    counts[1][test1] = delta + off1[np.arange(len(test1)) % len(off1)]
    counts[1][role[p1] == 0] = 0  # children of the depth-0 tests: not tallied
    # depth 2: under the role-2 roots' children (which always split); c = 0 and c = δ are
    # floored to b = θ − δ, c = 2δ + x gives b = x
    off2 = np.array([0, delta, 2 * delta - 3, 2 * delta, 2 * delta + 1, 2 * delta + 3])
    test2 = np.flatnonzero(role[p1[p2]] == 2)
    counts[2][test2] = off2[np.arange(len(test2)) % len(off2)]
    tests = [
        (0, test0, counts[0][test0]),
        (1, test1, counts[1][test1] - delta),
        (2, test2, np.maximum(counts[2][test2] - 2 * delta, -delta)),
    ]
    runs = 250
    trials: dict[tuple[int, int], list[int]] = {}
    for _ in range(runs):
        out = run_adaptive(plan, tree, counts, None)
        for depth, nodes, b in tests:
            visited = np.union1d(out.internal[depth], [i for d, i in out.leaves if d == depth])
            assert np.isin(nodes, visited).all()  # every ancestor had 10⁶ and split
            split = np.isin(nodes, out.internal[depth])
            for value in np.unique(b):
                tally = trials.setdefault((depth, int(value)), [0, 0])
                tally[0] += int((b == value).sum())
                tally[1] += int(split[b == value].sum())
    assert len(trials) <= 24
    bad = []
    for (depth, b), (n, k) in sorted(trials.items()):
        p = float(split_probability(np.array([b]), lam)[0])
        lo, hi = stats.binom.ppf(SPLIT_TAIL, n, p), stats.binom.isf(SPLIT_TAIL, n, p)
        if not lo <= k <= hi:
            bad.append(f"depth {depth}, b = {b}: {k}/{n} = {k / n:.4f} split, expected {p:.4f}")
    assert not bad, "; ".join(bad)
    # the values span the threshold: from rarely to almost surely split
    probs = [float(split_probability(np.array([b]), lam)[0]) for _d, b in trials]
    assert min(probs) < 0.1 and max(probs) > 0.9
