"""EXACT privacy-map tests: the ε / δ / ρ dpmap reports and its noise scales are hand-derived.

For every combination of contribution bounds, value bounds, budget and budget split, the
numbers returned by :func:`dpmap._privacy.noise.plan_noise` (and shown by :func:`dpmap.explain`)
are recomputed here from the DESIGN's sensitivity table:

    L0 = max_cells, L∞ = max_records_per_cell (both 1 when person=None), M = max(|lo|, |hi|)
    count:  Δ1 = L0·L∞      Δ2 = √L0·L∞
    sum:    Δ1 = L0·L∞·M    Δ2 = √L0·L∞·M

* Laplace (pure ε-DP): scale_s = Δ1_s / (share_s · ε); OpenDP's discrete-Laplace map is
  Δ1 / scale, so ε_s = share_s · ε and the composed ε = Σ ε_s = ε.
* Gaussian (ρ-zCDP → (ε, δ)): ρ_s = Δ2_s² / (2 σ_s²), ρ = Σ ρ_s, and (ε, δ) is OpenDP's
  zCDP → approx-DP conversion at δ = target; the ε is the largest that fits (tight).
* Discovery (no public region): OpenDP's threshold mechanisms; the threshold is the smallest
  integer whose δ fits.

Every expected number is either derived by hand (closed form) or by hand-building the same
OpenDP measurement from ``opendp.prelude`` — never by calling dpmap's own helpers.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from typing import Any

import numpy as np
import opendp.prelude as dp
import pytest
import shapely

import dpmap
import dpmap._privacy.noise as mech_mod
from dpmap import grid
from dpmap._privacy.bounding import sensitivities
from dpmap._privacy.noise import _threshold_chain, plan_noise
from dpmap.errors import MechanismError, SpecError
from dpmap.spec import OTHER_CATEGORY, Mechanism, ReleaseSpec

dp.enable_features("contrib")

REL = 1e-12  # the loosest tolerance used for numbers that are not bit-exact

# (L0, L∞, bounds or None, ε, count_share)
COMBOS = [
    (1, 1, None, 1.0, 0.5),
    (3, 2, None, 0.1, 0.5),
    (3, 2, (-7, 5), 1.1, 0.3),
    (5, 4, (0, 1000), 3.7, 0.7),
    (2, 3, (-1_000_000, 10_000), 0.25, 0.5),
    (7, 1, (3, 9), 2.0, 0.9),  # lo > 0: M is still hi (add/remove)
    (1, 10, (-100, -20), 0.5, 0.05),  # both negative: M = |lo|
    (12, 6, (-1, 1), 0.01, 0.5),
]
COMBO_IDS = [f"L0={c[0]}-Linf={c[1]}-b={c[2]}-eps={c[3]}-w={c[4]}" for c in COMBOS]
# Gaussian planning computes OpenDP's discrete-Gaussian accuracy, whose cost grows linearly with
# σ: keep σ moderate here (large bounds have their own test below)
GAUSS_COMBOS = [c for c in COMBOS if c[2] is None or max(map(abs, c[2])) <= 1000]
GAUSS_IDS = [i for c, i in zip(COMBOS, COMBO_IDS, strict=True) if c in GAUSS_COMBOS]

DELTAS = [1e-6, 1e-9, 1e-3]

VEC_I64 = dp.vector_domain(dp.atom_domain(T="i64"))


def make_spec(
    l0: int,
    linf: int,
    bounds: Any,
    eps: float,
    share: float,
    *,
    person: str | None = "p",
    **kw: Any,
) -> ReleaseSpec:
    value = "v" if bounds is not None else None
    return ReleaseSpec(
        resolution=7,
        epsilon=eps,
        person=person,
        value=value,
        bounds=bounds,
        max_cells=l0,
        max_records_per_cell=linf,
        count_share=share,
        **kw,
    )


def hand_magnitude(bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    return max(abs(lo), abs(hi))


def hand_l1(l0: int, linf: int, bounds: Any) -> dict[str, int]:
    out = {"count": l0 * linf}
    if bounds is not None:
        out["sum"] = l0 * linf * hand_magnitude(bounds)
    return out


def hand_l2(l0: int, linf: int, bounds: Any) -> dict[str, float]:
    out = {"count": math.sqrt(l0) * linf}
    if bounds is not None:
        out["sum"] = math.sqrt(l0) * linf * hand_magnitude(bounds)
    return out


def hand_shares(bounds: Any, share: float) -> dict[str, float]:
    return {"count": 1.0} if bounds is None else {"count": share, "sum": 1.0 - share}


def exact_ceil_sqrt(n: int) -> int:
    r = math.isqrt(n)
    return r if r * r == n else r + 1


# =========================================================================================
# the sensitivity table


@pytest.mark.parametrize("person", ["p", None])
@pytest.mark.parametrize(
    "categories", [None, ("a",), ("a", "b"), ("a", "b", "c", "d", "e", "f", "g")]
)
@pytest.mark.parametrize(("l0", "linf", "bounds", "eps", "share"), COMBOS, ids=COMBO_IDS)
def test_sensitivity_table(
    l0: int, linf: int, bounds: Any, eps: float, share: float, categories: Any, person: str | None
) -> None:
    kw: dict[str, Any] = {}
    if categories is not None:
        kw = {"category": "c", "categories": categories}
    spec = make_spec(l0, linf, bounds, eps, share, person=person, **kw)
    sens = sensitivities(spec)
    # person=None: each row is a person, whatever max_cells / max_records_per_cell say
    L0, Linf = (l0, linf) if person is not None else (1, 1)
    # "other" is added to the public list unless already there
    k = 1 if categories is None else len(set(categories) | {OTHER_CATEGORY})
    touched = L0 * min(Linf, k)
    assert set(sens) == ({"count", "sum"} if bounds is not None else {"count"})

    c = sens["count"]
    assert (c.l1, c.linf, c.l0) == (L0 * Linf, Linf, touched)
    assert isinstance(c.l1, int) and isinstance(c.linf, int) and isinstance(c.l0, int)
    assert c.l2 == pytest.approx(math.sqrt(L0) * Linf, rel=1e-15)
    if bounds is not None:
        m = hand_magnitude(bounds)
        s = sens["sum"]
        assert (s.l1, s.linf, s.l0) == (L0 * Linf * m, Linf * m, touched)
        assert isinstance(s.l1, int) and isinstance(s.linf, int)
        assert s.l2 == pytest.approx(math.sqrt(L0) * Linf * m, rel=1e-15)


@pytest.mark.parametrize(
    ("l0", "linf", "m"),
    [
        (1, 1, 1),
        (2, 1, 1),
        (3, 1, 1),
        (3, 2, 7),
        (6, 1, 1),
        (11, 5, 1),
        (12, 6, 1000),
        (13, 1, 3),
        (18, 3, 10**6),
    ],
)
def test_l2_sensitivity_is_never_rounded_down(l0: int, linf: int, m: int) -> None:
    """The L2 sensitivity handed to OpenDP must be ≥ the true √(L0·L∞²·M²), exactly.

    OpenDP rounds its own arithmetic conservatively, but it cannot repair a d_in that is
    already too small: a plain ``math.sqrt(3)`` is *below* √3 (so are √6, √11, √12, √13, √18),
    which would calibrate the Gaussian noise to a sensitivity one ulp smaller than the true one.
    Every number that enters a privacy map must be rounded in the safe direction.
    """
    bounds = (-m, m) if m > 1 else None
    spec = make_spec(l0, linf, bounds if bounds else (0, 1), 1.0, 0.5)
    sens = sensitivities(spec)
    true_sq = {"count": l0 * linf**2, "sum": l0 * linf**2 * m**2}
    for stat, sq in true_sq.items():
        assert Fraction(sens[stat].l2) ** 2 >= sq, (
            f"{stat}: L2 sensitivity {sens[stat].l2!r} is below √{sq} (float sqrt rounded down)"
        )


# =========================================================================================
# Laplace (pure ε-DP)


@pytest.mark.parametrize(("l0", "linf", "bounds", "eps", "share"), COMBOS, ids=COMBO_IDS)
def test_laplace_privacy_map(l0: int, linf: int, bounds: Any, eps: float, share: float) -> None:
    spec = make_spec(l0, linf, bounds, eps, share)
    plan = plan_noise(spec)
    l1 = hand_l1(l0, linf, bounds)
    shares = hand_shares(bounds, share)

    assert plan.accounting == "pure-dp" and not plan.discovery and plan.threshold is None
    assert plan.delta == 0.0 and plan.rho is None
    assert plan.epsilon <= eps
    assert plan.epsilon == pytest.approx(eps, rel=REL)
    assert set(plan.statistics) == set(l1)

    eps_sum = 0.0
    for stat, st in plan.statistics.items():
        expected_scale = l1[stat] / (shares[stat] * eps)
        if plan.epsilon == eps:  # the exact calibration was accepted by OpenDP's map: bit-exact
            assert st.scale == expected_scale
        assert st.scale == pytest.approx(expected_scale, rel=REL)
        assert st.scale >= expected_scale * (1 - 1e-15)  # never less noise than derived
        assert st.distribution == "discrete Laplace"
        assert st.rho is None
        assert (st.sensitivity.l1, st.sensitivity.linf) == (l1[stat], l1[stat] // l0)
        # per-statistic ε: the hand formula and a hand-built OpenDP discrete Laplace
        assert st.epsilon == pytest.approx(shares[stat] * eps, rel=REL)
        assert st.epsilon == pytest.approx(l1[stat] / st.scale, rel=REL)
        hand = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=st.scale)
        assert st.epsilon == float(hand.map(l1[stat]))
        # margins come from OpenDP's accuracy helper at that scale
        assert st.moe95 == dp.discrete_laplacian_scale_to_accuracy(scale=st.scale, alpha=0.05)
        assert st.moe975 == dp.discrete_laplacian_scale_to_accuracy(scale=st.scale, alpha=0.025)
        eps_sum += st.epsilon
    # pure-DP composition adds the ε's
    assert plan.epsilon == pytest.approx(eps_sum, rel=REL)


@pytest.mark.parametrize(("l0", "linf", "bounds", "eps", "share"), COMBOS, ids=COMBO_IDS)
def test_laplace_each_row_a_person(
    l0: int, linf: int, bounds: Any, eps: float, share: float
) -> None:
    """person=None: sensitivity 1 (·M), whatever max_cells / max_records_per_cell say."""
    spec = make_spec(l0, linf, bounds, eps, share, person=None)
    plan = plan_noise(spec)
    shares = hand_shares(bounds, share)
    assert plan.statistics["count"].sensitivity.l1 == 1
    assert plan.statistics["count"].scale == pytest.approx(1 / (shares["count"] * eps), rel=REL)
    if bounds is not None:
        m = hand_magnitude(bounds)
        assert plan.statistics["sum"].sensitivity.l1 == m
        assert plan.statistics["sum"].scale == pytest.approx(m / (shares["sum"] * eps), rel=REL)
    assert plan.epsilon <= eps and plan.epsilon == pytest.approx(eps, rel=REL)


def test_laplace_count_only_is_exact() -> None:
    """The brief's headline case, bit for bit: scale = L0·L∞/ε, ε = Δ1/scale."""
    for l0, linf, eps in [(1, 1, 1.0), (4, 3, 0.5), (10, 1, 2.0), (2, 2, 0.125)]:
        plan = plan_noise(make_spec(l0, linf, None, eps, 0.5))
        st = plan.statistics["count"]
        assert st.scale == l0 * linf / eps
        assert st.epsilon == eps
        assert plan.epsilon == eps


def test_count_share_moves_budget_between_statistics() -> None:
    lo = plan_noise(make_spec(2, 2, (0, 100), 1.0, 0.2))
    hi = plan_noise(make_spec(2, 2, (0, 100), 1.0, 0.8))
    assert lo.statistics["count"].scale == pytest.approx(4 * hi.statistics["count"].scale, rel=REL)
    assert hi.statistics["sum"].scale == pytest.approx(4 * lo.statistics["sum"].scale, rel=REL)
    assert lo.epsilon == pytest.approx(hi.epsilon, rel=REL)


# =========================================================================================
# Gaussian (ρ-zCDP converted to (ε, δ))


def hand_gaussian_epsilon(
    scales: dict[str, float], l2: dict[str, float], delta: float
) -> tuple[float, float]:
    """(ε, δ) of the composed Gaussian measurement, hand-built from opendp.prelude.

    Each statistic: make_gaussian on i64 vectors with the L2 metric. To compose them on one
    input, each is rescaled to unit sensitivity (scale σ/Δ2, d_in = 1): the same ρ_s.
    """
    if len(scales) == 1:
        (stat,) = scales
        g = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=scales[stat])
        m = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(g), delta)
        eps, d = m.map(l2[stat])
        return float(eps), float(d)
    parts = [
        dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=scales[s] / l2[s])
        for s in scales
    ]
    m = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.c.make_composition(parts)), delta)
    eps, d = m.map(1.0)
    return float(eps), float(d)


@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize(("l0", "linf", "bounds", "eps", "share"), GAUSS_COMBOS, ids=GAUSS_IDS)
def test_gaussian_privacy_map(
    l0: int, linf: int, bounds: Any, eps: float, share: float, delta: float
) -> None:
    spec = make_spec(l0, linf, bounds, eps, share, mechanism="gaussian", delta=delta)
    plan = plan_noise(spec)
    l2 = hand_l2(l0, linf, bounds)
    l1 = hand_l1(l0, linf, bounds)
    shares = hand_shares(bounds, share)
    assert plan.accounting == "zcdp" and not plan.discovery
    assert set(plan.statistics) == set(l2)

    rho_sum = 0.0
    for stat, st in plan.statistics.items():
        assert st.distribution == "discrete Gaussian"
        assert st.sensitivity.l1 == l1[stat]
        assert st.sensitivity.l2 == pytest.approx(l2[stat], rel=1e-15)
        # ρ_s = Δ2² / (2σ²), and the split follows count_share
        assert st.rho == pytest.approx(l2[stat] ** 2 / (2 * st.scale**2), rel=REL)
        assert st.rho == pytest.approx(shares[stat] * plan.rho, rel=REL)
        # ... which is what a hand-built OpenDP discrete Gaussian says at that scale
        hand = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=st.scale)
        assert st.rho == pytest.approx(float(hand.map(l2[stat])), rel=REL)
        for moe, alpha in ((st.moe95, 0.05), (st.moe975, 0.025)):
            exact = dp.discrete_gaussian_scale_to_accuracy(scale=st.scale, alpha=alpha)
            if st.scale <= 1e4:  # OpenDP's exact accuracy
                assert moe == exact
            else:  # the closed-form bound ⌈1 + σ·z⌉: never narrower, at most 2 wider
                assert exact <= moe <= exact + 2
        # this statistic alone, converted at the release's δ (reported for information)
        e_k, d_k = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(hand), delta).map(l2[stat])
        assert st.epsilon == pytest.approx(float(e_k), rel=REL) and st.delta == float(d_k) == delta
        assert st.epsilon <= plan.epsilon
        rho_sum += st.rho
    assert plan.rho == pytest.approx(rho_sum, rel=REL)

    # (ε, δ): the same conversion, hand-built
    scales = {s: st.scale for s, st in plan.statistics.items()}
    h_eps, h_delta = hand_gaussian_epsilon(scales, l2, delta)
    assert plan.epsilon == pytest.approx(h_eps, rel=1e-9)
    assert plan.delta == h_delta == delta
    # within budget, and tight: the search found the largest ρ that fits
    assert plan.epsilon <= eps
    assert plan.epsilon >= eps * (1 - 1e-6)
    bigger = {s: sc / math.sqrt(1 + 1e-6) for s, sc in scales.items()}  # ρ · (1 + 1e-6)
    assert hand_gaussian_epsilon(bigger, l2, delta)[0] > eps
    # the classic closed-form conversion is an upper bound of OpenDP's (tighter) one
    rho = plan.rho
    assert plan.epsilon <= rho + 2 * math.sqrt(rho * math.log(1 / delta))


@pytest.mark.parametrize("delta", DELTAS)
def test_gaussian_each_row_a_person(delta: float) -> None:
    spec = make_spec(9, 4, (-50, 20), 1.0, 0.5, person=None, mechanism="gaussian", delta=delta)
    plan = plan_noise(spec)
    assert plan.statistics["count"].sensitivity.l2 == 1.0
    assert plan.statistics["sum"].sensitivity.l2 == 50.0
    c, s = plan.statistics["count"], plan.statistics["sum"]
    assert c.rho == pytest.approx(1 / (2 * c.scale**2), rel=REL)
    assert s.rho == pytest.approx(50**2 / (2 * s.scale**2), rel=REL)
    # equal shares: the sum's σ is exactly M times the count's
    assert s.scale == pytest.approx(50 * c.scale, rel=REL)


def test_gaussian_count_only_matches_hand_built_measurement_exactly() -> None:
    spec = make_spec(4, 3, None, 0.8, 0.5, mechanism="gaussian", delta=1e-7)
    plan = plan_noise(spec)
    sigma = plan.statistics["count"].scale
    g = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=sigma)
    eps, delta = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(g), 1e-7).map(math.sqrt(4) * 3)
    assert (plan.epsilon, plan.delta) == (float(eps), float(delta))
    assert plan.rho == float(g.map(6.0))


def test_gaussian_plan_with_large_value_bounds_finishes() -> None:
    """Planning (and so explain() and release()) must not hang for large, allowed bounds.

    Bounds up to ±1e12 are accepted, so σ of a Gaussian sum can be ~1e9 or more. OpenDP's
    ``discrete_gaussian_scale_to_accuracy`` sums the pmf term by term, in time linear in σ
    (≈0.4 s at σ = 1e6, hours at σ = 1e10), and dpmap calls it twice per statistic.
    Run in a subprocess so a hang fails the test after a few seconds instead of blocking.
    """
    code = (
        "from dpmap.spec import ReleaseSpec\n"
        "from dpmap._privacy.noise import plan_noise\n"
        "s = ReleaseSpec(resolution=7, epsilon=0.5, delta=1e-6, mechanism='gaussian', person='p',"
        " max_cells=2, value='v', bounds=(0, 10**9))\n"
        "p = plan_noise(s)\n"
        "assert p.epsilon <= 0.5\n"
        "from statistics import NormalDist\n"
        "sd = p.statistics['sum'].scale\n"
        "assert p.statistics['sum'].moe95 >= sd * NormalDist().inv_cdf(0.975)\n"
    )
    src = os.path.dirname(os.path.dirname(os.path.abspath(dpmap.__file__)))
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=10, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(
            "plan_noise with mechanism='gaussian', bounds=(0, 1e9) did not finish in 10 s "
            "(OpenDP's discrete-Gaussian accuracy is linear in σ)"
        )


def test_gaussian_needs_delta() -> None:
    with pytest.raises(SpecError):
        make_spec(1, 1, None, 1.0, 0.5, mechanism="gaussian")


# =========================================================================================
# discovery (no public region): OpenDP threshold mechanisms


def _disc_specs() -> list[Any]:
    out = []
    for mech in ("laplace", "gaussian"):
        for (l0, linf, bounds, eps, share), cats in [
            ((1, 1, None, 1.0, 0.5), None),
            ((3, 2, None, 0.5, 0.5), None),
            ((3, 2, (-7, 5), 1.1, 0.3), None),
            ((3, 2, (0, 1000), 2.0, 0.7), ("a", "b")),
            ((2, 2, (-5, 5), 1.0, 0.5), ("a", "b", "c", "d")),
            # L∞ ≥ 3: the threshold search must start at L∞ (OpenDP refuses smaller thresholds)
            ((4, 3, (0, 1000), 2.0, 0.7), ("a", "b")),
            ((2, 5, None, 1.0, 0.5), ("a", "b", "c", "d", "e", "f", "g", "h")),
        ]:
            for delta in (1e-6, 1e-9):
                out.append(
                    pytest.param(
                        mech,
                        l0,
                        linf,
                        bounds,
                        eps,
                        share,
                        cats,
                        delta,
                        id=f"{mech}-L0={l0}-Linf={linf}-b={bounds}-k={cats}-d={delta}",
                    )
                )
    return out


@pytest.mark.parametrize(
    ("mech", "l0", "linf", "bounds", "eps", "share", "cats", "delta"), _disc_specs()
)
def test_discovery_privacy_map(
    mech: str, l0: int, linf: int, bounds: Any, eps: float, share: float, cats: Any, delta: float
) -> None:
    kw: dict[str, Any] = {"mechanism": mech, "delta": delta}
    if cats is not None:
        kw.update(category="c", categories=cats)
    spec = make_spec(l0, linf, bounds, eps, share, **kw)
    plan = plan_noise(spec, discovery=True)
    assert plan.discovery and isinstance(plan.threshold, int)
    assert plan.epsilon <= eps
    assert plan.delta <= delta
    k = 1 if cats is None else len(set(cats) | {OTHER_CATEGORY})
    touched, l1, linf_ = l0 * min(linf, k), l0 * linf, linf
    sc = plan.statistics["count"].scale
    th = plan.threshold
    chain = lambda t: _threshold_chain(sensitivities(spec)["count"], Mechanism(mech), sc, t)  # noqa: E731

    if mech == "laplace":
        # the threshold step: OpenDP's Laplace threshold with d_in = (L0·min(L∞,k), L0·L∞, L∞)
        hand = dp.m.make_laplace_threshold(
            dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64")),
            dp.l01inf_distance(dp.absolute_distance(T="i64")),
            scale=sc,
            threshold=th,
        )
        h_eps, h_delta = hand.map((touched, l1, linf_))
        assert chain(th).map(1) == (h_eps, h_delta)
        w = share if bounds is not None else 1.0
        assert sc == pytest.approx(l1 / (w * eps), rel=REL) and sc >= l1 / (w * eps)
        assert plan.statistics["count"].epsilon == float(h_eps)
        assert float(h_eps) == pytest.approx(w * eps, rel=REL)
        # the threshold is the smallest integer whose δ fits the whole δ budget
        thr_target = delta
        assert plan.delta == float(h_delta)  # the sums add no δ
        if bounds is not None:
            m = hand_magnitude(bounds)
            ss = plan.statistics["sum"]
            assert ss.scale == pytest.approx(l1 * m / ((1 - share) * eps), rel=1e-9)
            assert ss.epsilon == pytest.approx(l1 * m / ss.scale, rel=REL)
            assert plan.epsilon == pytest.approx(float(h_eps) + ss.epsilon, rel=REL)
    else:
        # Gaussian: the L2 part of d_in must be an integer ≥ √L0·L∞
        hand = dp.m.make_gaussian_threshold(
            dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64")),
            dp.l02inf_distance(dp.absolute_distance(T="i64")),
            scale=sc,
            threshold=th,
        )
        assert chain(th).map(1) == hand.map((touched, exact_ceil_sqrt(l0 * linf**2), linf_))
        # half of δ is reserved for the threshold, the other half for the zCDP conversion
        thr_target = delta / 2
        assert plan.delta == pytest.approx(delta, rel=REL)
        assert plan.rho == pytest.approx(sum(s.rho for s in plan.statistics.values()), rel=REL)
        rho = plan.rho
        assert plan.epsilon <= rho + 2 * math.sqrt(
            rho * math.log(1 / (delta - chain(th).map(1)[1]))
        )

    assert chain(th).map(1)[1] <= thr_target
    # one less does not fit (OpenDP refuses thresholds below the L∞ sensitivity outright)
    try:
        below = chain(th - 1).map(1)[1]
    except dp.OpenDPException:
        below = math.inf
    assert below > thr_target


def test_discovery_gaussian_threshold_l2_rounding_is_exact() -> None:
    """The Gaussian threshold's integer L2 distance is ⌈√(L0·L∞²)⌉, computed exactly.

    L0 = 2, L∞ = 225058681: 2·L∞² = 318281039² + 1, so √(2)·L∞ = 318281039.0000000016 and the
    integer sensitivity must be 318281040. The plain float ``math.sqrt(2) * L∞`` is exactly
    318281039.0 (rounded down), and ``ceil(x - 1e-9)`` of it would be one too small; it is only
    right if the float L2 itself is rounded up first.
    """
    l0, linf = 2, 225058681
    assert l0 * linf**2 == 318281039**2 + 1
    spec = make_spec(l0, linf, None, 1.0, 0.5, mechanism="gaussian", delta=1e-6)
    chain = _threshold_chain(sensitivities(spec)["count"], Mechanism.GAUSSIAN, 1e10, 10**12)
    hand = dp.m.make_gaussian_threshold(
        dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64")),
        dp.l02inf_distance(dp.absolute_distance(T="i64")),
        scale=1e10,
        threshold=10**12,
    )
    assert chain.map(1) == hand.map((l0, 318281040, linf))


# =========================================================================================
# hierarchical releases (several resolutions): every level is a noised vector


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_hierarchical_levels_are_calibrated_to_their_own_sensitivity(mechanism: str) -> None:
    """At a coarser level a person's L0 finest cells can all fall into ONE parent cell.

    With resolutions (5, 7) and L0 = 4 (a res-5 cell has 49 res-7 children), one person can
    add L0·L∞ records to a single res-5 cell. Per level: L1 = L0·L∞ (unchanged), but
    L2 = L0·L∞ and L∞ = L0·L∞ at the coarse level — not √L0·L∞ and L∞. The ρ of a Gaussian
    coarse level must therefore be ≥ (L0·L∞)²/(2σ²) (·M² for sums).
    """
    l0, linf, bounds = 4, 2, (-3, 10)
    m = hand_magnitude(bounds)
    delta = 1e-6 if mechanism == "gaussian" else 0.0
    spec = ReleaseSpec(
        resolution=[5, 7],
        epsilon=1.0,
        delta=delta,
        mechanism=mechanism,
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        value="v",
        bounds=bounds,
    )
    plan = plan_noise(spec)
    assert set(plan.statistics) == {"count@5", "count@7", "sum@5", "sum@7"}
    worst_l2 = {
        "count@7": math.sqrt(l0) * linf,
        "sum@7": math.sqrt(l0) * linf * m,
        "count@5": l0 * linf,
        "sum@5": l0 * linf * m,
    }
    worst_l1 = {
        "count@7": l0 * linf,
        "sum@7": l0 * linf * m,
        "count@5": l0 * linf,
        "sum@5": l0 * linf * m,
    }
    for key, st in plan.statistics.items():
        if mechanism == "laplace":
            assert st.epsilon >= worst_l1[key] / st.scale * (1 - REL)
        else:
            assert st.rho >= worst_l2[key] ** 2 / (2 * st.scale**2) * (1 - REL), (
                f"{key}: ρ = {st.rho} assumes L2 = {st.sensitivity.l2}, but one person can move "
                f"this level's vector by {worst_l2[key]} in L2"
            )
    if mechanism == "gaussian":
        true_rho = sum(worst_l2[k] ** 2 / (2 * st.scale**2) for k, st in plan.statistics.items())
        assert plan.rho >= true_rho * (1 - REL)
        g = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=1.0)
        true_eps, _ = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(g), delta).map(
            math.sqrt(2 * true_rho)
        )
        assert float(true_eps) <= spec.epsilon * (1 + 1e-9), f"true ε of this release is {true_eps}"


def test_discovery_refused_without_delta() -> None:
    spec = make_spec(1, 1, None, 1.0, 0.5)
    with pytest.raises(MechanismError):
        plan_noise(spec, discovery=True)
    with pytest.raises(SpecError, match="delta"):
        dpmap.explain(resolution=7, epsilon=1.0)  # no region, delta = 0


# =========================================================================================
# explain(): the same numbers, no data


REGION = shapely.box(13.30, 52.45, 13.50, 52.55)


@pytest.fixture
def no_data_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every path to the data plane explode."""

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("explain() touched the data plane")

    import dpmap.engines.local as local
    import dpmap.io as io

    # release.py calls ``local.bound_and_aggregate`` through the module, so this covers it
    monkeypatch.setattr(local, "bound_and_aggregate", boom)
    monkeypatch.setattr(local, "read_points", boom)
    monkeypatch.setattr(io, "read_points", boom)
    # and no noise may be drawn
    monkeypatch.setattr(mech_mod.NoisePlan, "run_dense", boom)
    monkeypatch.setattr(mech_mod.NoisePlan, "run_discovery", boom)


@pytest.mark.usefixtures("no_data_access")
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
@pytest.mark.parametrize(
    ("l0", "linf", "bounds", "eps", "share"), GAUSS_COMBOS[:5], ids=GAUSS_IDS[:5]
)
def test_explain_reports_the_plan(
    l0: int, linf: int, bounds: Any, eps: float, share: float, mechanism: str
) -> None:
    delta = 1e-6 if mechanism == "gaussian" else 0.0
    params: dict[str, Any] = dict(
        resolution=7,
        epsilon=eps,
        delta=delta,
        person="p",
        max_cells=l0,
        max_records_per_cell=linf,
        count_share=share,
        mechanism=mechanism,
    )
    if bounds is not None:
        params.update(value="v", bounds=bounds)
    ex = dpmap.explain(region=REGION, **params)
    plan = plan_noise(ReleaseSpec(**params))
    d = ex.as_dict()
    assert d["epsilon"] == plan.epsilon and d["delta"] == plan.delta and d["rho"] == plan.rho
    assert d["cells"] == len(grid.region_to_cells(grid.to_region(REGION), 7))
    shares = hand_shares(bounds, share)
    l1 = hand_l1(l0, linf, bounds)
    for stat, st in plan.statistics.items():
        got = d["statistics"][stat]
        assert got["scale"] == st.scale and got["epsilon"] == st.epsilon and got["rho"] == st.rho
        assert got["moe_95"] == st.moe95
        assert got["budget_share"] == pytest.approx(shares[stat], rel=REL)
        assert got["sensitivity"]["l1"] == l1[stat]
        if mechanism == "laplace":
            assert got["scale"] == pytest.approx(l1[stat] / (shares[stat] * eps), rel=REL)
    # the human-readable text carries the same ε
    assert f"{plan.epsilon:.6g}" in str(ex)


@pytest.mark.usefixtures("no_data_access")
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_explain_without_region_plans_discovery(mechanism: str) -> None:
    params: dict[str, Any] = dict(
        resolution=7,
        epsilon=1.0,
        delta=1e-6,
        person="p",
        max_cells=2,
        max_records_per_cell=2,
        value="v",
        bounds=(0, 100),
        mechanism=mechanism,
    )
    ex = dpmap.explain(**params)
    plan = plan_noise(ReleaseSpec(**params), discovery=True)
    d = ex.as_dict()
    assert d["cells"] is None
    assert d["discovery_threshold"] == plan.threshold
    assert d["epsilon"] == plan.epsilon <= 1.0
    assert d["delta"] == plan.delta <= 1e-6
    for stat, st in plan.statistics.items():
        assert d["statistics"][stat]["scale"] == st.scale


def test_plan_is_deterministic_and_public() -> None:
    """Planning twice gives identical numbers (nothing random, nothing data-dependent)."""
    spec = make_spec(3, 2, (-7, 5), 1.1, 0.3, mechanism="gaussian", delta=1e-6)
    a, b = plan_noise(spec), plan_noise(spec)
    assert (a.epsilon, a.delta, a.rho) == (b.epsilon, b.delta, b.rho)
    assert {k: v.scale for k, v in a.statistics.items()} == {
        k: v.scale for k, v in b.statistics.items()
    }
    assert np.isfinite(a.epsilon)
