"""The only module that imports OpenDP: measurements, composition, accounting, accuracy.

A release is privatized by **one composed OpenDP measurement** whose input is the
engine's exact bounded aggregates and whose input metric counts persons added or
removed (``d_in = 1``). Each statistic is a chain

    user transformation (pick the statistic's vector; stability = sensitivity from the bounds)
      >> OpenDP noise (discrete Laplace / discrete Gaussian on int64, or the threshold
         mechanisms for private cell discovery)

and the chains are composed with OpenDP's composition combinators. The ε (and δ, ρ)
that dpmap reports is what OpenDP's privacy map returns for ``d_in = 1``. The
stability maps are the sensitivities of :func:`dpmap._privacy.bounding.sensitivities` — the
single place they are derived, checked by property tests against the engines.

OpenDP features enabled: ``contrib`` (OpenDP's vetted-but-not-yet-proven components)
and ``honest-but-curious`` (needed for user-defined transformations; the stability map
we declare is our claim, tested). ``floating-point`` and ``idealized-numerics`` are not
used: all noise is sampled exactly on integers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import opendp.prelude as dp

from dpmap._privacy.bounding import Sensitivity, level_sensitivities, sensitivities
from dpmap.aggregates import in_range
from dpmap.errors import MechanismError
from dpmap.spec import Mechanism, ReleaseSpec

__all__ = ["NoisePlan", "StatisticNoise", "opendp_version", "plan_noise", "plan_vectors"]

dp.enable_features("contrib", "honest-but-curious")

#: Input metric of every dpmap measurement: how many persons were added or removed.
PERSONS = dp.user_distance("dpmap.AddRemovePersons")
#: Input domain: the dict of exact aggregates an engine produced for this release.
AGGREGATES = dp.user_domain("dpmap.BoundedAggregates", member=lambda x: isinstance(x, dict))

#: Coordinates per chunk of the parallel dense noise (see :meth:`NoisePlan.run_dense`).
NOISE_CHUNK = 1 << 18
#: Vectors shorter than this are noised in one call (threads would cost more than they save).
NOISE_PARALLEL_FROM = 1 << 14


def noise_workers() -> int:
    """Threads for the dense noise: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


#: Low bits of an H3 index that are all ones for resolutions ≤ 9 (digits 10..15 unused).
_UNUSED_DIGIT_BITS = (1 << 18) - 1


def opendp_version() -> str:
    from importlib.metadata import version

    return version("opendp")


def encode_keys(cells: np.ndarray, category: np.ndarray | None) -> np.ndarray:
    """Pack (cell, category index) into one int64 key for OpenDP's map domains.

    For resolution ≤ 9 the lowest 18 bits of an H3 index are always ones, so they can
    carry the category index and be restored exactly by :func:`decode_keys`.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if category is None:
        return cells
    return (cells & ~np.int64(_UNUSED_DIGIT_BITS)) | np.asarray(category, dtype=np.int64)


def decode_keys(keys: np.ndarray, categorized: bool) -> tuple[np.ndarray, np.ndarray | None]:
    keys = np.asarray(keys, dtype=np.int64)
    if not categorized:
        return keys, None
    return keys | np.int64(_UNUSED_DIGIT_BITS), keys & np.int64(_UNUSED_DIGIT_BITS)


@dataclass(frozen=True)
class StatisticNoise:
    """The noise added to one statistic, as planned (public)."""

    name: str
    distribution: str
    sensitivity: Sensitivity
    scale: float
    epsilon: float | None  # this statistic's ε from OpenDP's map (pure DP), if meaningful
    rho: float | None  # this statistic's ρ from OpenDP's map (zCDP), if Gaussian
    moe95: float  # 95% margin of error of one published value (noise only)
    moe975: float  # 97.5% margin, used for the conservative margin of a mean
    variance: float = 0.0  # variance of the noise on one value
    delta: float = 0.0  # this statistic's δ (threshold δ in discovery; see describe())

    def describe(self) -> dict[str, Any]:
        return {
            "distribution": self.distribution,
            "scale": self.scale,
            "sensitivity": {
                "l0": self.sensitivity.l0,
                "l1": self.sensitivity.l1,
                "l2": self.sensitivity.l2,
                "linf": self.sensitivity.linf,
            },
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "moe_95": self.moe95,
        }


@dataclass(frozen=True)
class NoisePlan:
    """A calibrated, composed OpenDP measurement for one release (no data touched)."""

    spec: ReleaseSpec
    statistics: dict[str, StatisticNoise]
    epsilon: float
    delta: float
    rho: float | None
    measure: str
    accounting: str
    discovery: bool
    threshold: int | None
    _measurement: Any = field(repr=False, compare=False)
    _sum_chain: Callable[[np.ndarray], Any] | None = field(default=None, repr=False, compare=False)
    _count_query: Any = field(default=None, repr=False, compare=False)

    def run_dense(
        self, vectors: dict[str, np.ndarray], *, workers: int | None = None
    ) -> dict[str, np.ndarray]:
        """Noise every coordinate of the public domain's vectors. Draws noise.

        Vectors of :data:`NOISE_PARALLEL_FROM` coordinates or more are cut into at least
        ``workers`` chunks of at most :data:`NOISE_CHUNK` coordinates that this same OpenDP
        measurement noises on ``workers`` threads (default: every core this
        process may use; OpenDP's samplers run in Rust without Python's lock). The
        measurement adds independent noise of one fixed distribution to each coordinate,
        so the concatenated chunks have exactly the distribution of one call on the whole
        vectors — the one whose privacy OpenDP's map accounts (docs/noise-at-scale.md).
        """
        assert not self.discovery
        check_noise_inputs(vectors)
        vecs = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in vectors.items()}
        longest = max((len(v) for v in vecs.values()), default=0)
        workers = noise_workers() if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        parts = -(-longest // NOISE_CHUNK)
        if longest >= NOISE_PARALLEL_FROM:
            parts = max(parts, workers)  # at least one chunk per thread
        if parts <= 1 or workers == 1:
            out = [np.asarray(v, dtype=np.int64) for v in self._invoke(vecs)]
        else:
            bounds = {
                k: np.linspace(0, len(v), parts + 1).astype(np.int64) for k, v in vecs.items()
            }
            chunks = [
                {k: v[bounds[k][i] : bounds[k][i + 1]] for k, v in vecs.items()}
                for i in range(parts)
            ]
            with ThreadPoolExecutor(max_workers=min(workers, parts)) as pool:
                noised = list(pool.map(self._invoke, chunks))
            out = [
                np.concatenate([np.asarray(c[j], dtype=np.int64) for c in noised])
                for j in range(len(vecs))
            ]
        return dict(zip(self.spec.queries(), out, strict=True))

    def _invoke(self, vectors: dict[str, np.ndarray]) -> list[Any]:
        try:
            return list(self._measurement(vectors))
        except dp.OpenDPException as exc:  # pragma: no cover - inputs are checked before
            raise MechanismError(f"OpenDP failed while adding noise: {exc}") from exc

    def run_discovery(
        self, keys: np.ndarray, counts: np.ndarray, sums: np.ndarray | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Threshold the occupied keys' counts, then noise sums on the kept keys. Draws noise."""
        assert self.discovery
        check_noise_inputs({"count": counts, "sum": sums})
        data = {"count": dict(zip(keys.tolist(), counts.tolist(), strict=True))}
        if sums is not None:
            data["sum"] = dict(zip(keys.tolist(), sums.tolist(), strict=True))
        try:
            queryable = self._measurement(data)
            noisy = queryable(self._count_query)
            kept = np.array(sorted(noisy), dtype=np.int64)
            out = {"count": np.array([noisy[k] for k in kept.tolist()], dtype=np.int64)}
            if sums is not None:
                assert self._sum_chain is not None
                out["sum"] = np.asarray(queryable(self._sum_chain(kept)), dtype=np.int64)
        except dp.OpenDPException as exc:  # pragma: no cover
            raise MechanismError(f"OpenDP failed while adding noise: {exc}") from exc
        return kept, out


def check_noise_inputs(vectors: Mapping[str, Any]) -> None:
    """Refuse (as a bug) any exact value outside ±SUM_LIMIT about to receive noise.

    ``vectors`` maps names to integer arrays, lists of them (tree levels) or ``None``.
    Engines and every total of a design saturate to that range
    (:mod:`dpmap.aggregates`); this is the last line, right before OpenDP.
    """
    for name, vec in vectors.items():
        for part in vec if isinstance(vec, list) else [vec]:
            if part is not None and not in_range(part):
                raise AssertionError(f"{name}: a value outside ±2**62 reached the noise step")


# ---------------------------------------------------------------------------------------
# building blocks


def _pick(
    name: str, output_domain: Any, output_metric: Any, stability: Callable[[int], Any]
) -> Any:
    """User transformation: select one statistic from the aggregates, with its stability."""
    return dp.t.make_user_transformation(
        AGGREGATES,
        PERSONS,
        output_domain,
        output_metric,
        function=lambda agg: agg[name],
        stability_map=stability,
    )


VEC_I64 = dp.vector_domain(dp.atom_domain(T="i64"))


def _dense_chain(name: str, sens: Sensitivity, mechanism: Mechanism, scale: float) -> Any:
    if mechanism is Mechanism.LAPLACE:
        t = _pick(name, VEC_I64, dp.l1_distance(T="i64"), lambda d: d * sens.l1)
        return t >> dp.m.then_laplace(scale=scale)
    t = _pick(name, VEC_I64, dp.l2_distance(T="f64"), lambda d: float(d) * sens.l2)
    return t >> dp.m.then_gaussian(scale=scale)


def _map_domain() -> Any:
    return dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))


def _threshold_chain(sens: Sensitivity, mechanism: Mechanism, scale: float, threshold: int) -> Any:
    if mechanism is Mechanism.LAPLACE:
        metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
        t = _pick(
            "count", _map_domain(), metric, lambda d: (d * sens.l0, d * sens.l1, d * sens.linf)
        )
        return t >> dp.m.then_laplace_threshold(scale=scale, threshold=threshold)
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))
    # this metric carries integer distances: the L2 sensitivity is rounded UP (exact when max_cells = 1)
    l2 = math.ceil(sens.l2 - 1e-9)
    t = _pick("count", _map_domain(), metric, lambda d: (d * sens.l0, d * l2, d * sens.linf))
    return t >> dp.m.then_gaussian_threshold(scale=scale, threshold=threshold)


def _selected_sum_chain(
    sens: Sensitivity, mechanism: Mechanism, scale: float
) -> Callable[[np.ndarray], Any]:
    """Sums of the cells a threshold step kept: a Laplace/Gaussian vector chain on those keys."""

    def build(kept: np.ndarray) -> Any:
        keys = kept.tolist()
        if mechanism is Mechanism.LAPLACE:
            t = dp.t.make_user_transformation(
                AGGREGATES,
                PERSONS,
                VEC_I64,
                dp.l1_distance(T="i64"),
                function=lambda agg: np.array([agg["sum"].get(k, 0) for k in keys], dtype=np.int64),
                stability_map=lambda d: d * sens.l1,
            )
            return dp.c.make_approximate(t >> dp.m.then_laplace(scale=scale))
        t = dp.t.make_user_transformation(
            AGGREGATES,
            PERSONS,
            VEC_I64,
            dp.l2_distance(T="f64"),
            function=lambda agg: np.array([agg["sum"].get(k, 0) for k in keys], dtype=np.int64),
            stability_map=lambda d: float(d) * sens.l2,
        )
        return dp.c.make_approximate(t >> dp.m.then_gaussian(scale=scale))

    return build


#: above this σ, OpenDP's exact discrete-Gaussian accuracy (linear time in σ) is replaced
#: by a closed-form bound
_GAUSSIAN_EXACT_ACCURACY_LIMIT = 1e4


def accuracy(mechanism: Mechanism, scale: float, alpha: float) -> float:
    """Half-width a of the (1 − alpha) interval of the noise: P(|noise| ≥ a) ≤ alpha.

    From OpenDP's accuracy helpers; for a discrete Gaussian with σ > 1e4 (where OpenDP's
    exact sum takes time linear in σ) the bound ⌈1 + σ·z_{1−α/2}⌉, valid because the
    discrete Gaussian's normaliser is ≥ √(2π)σ and its tail from t is at most the normal
    tail from t − 1.
    """
    if mechanism is Mechanism.LAPLACE:
        a = float(dp.discrete_laplacian_scale_to_accuracy(scale=scale, alpha=alpha))
        if not math.isfinite(a) or a < 0:  # OpenDP gives -inf for scales below ~1e-2
            # P(|X| ≥ t) = 2qᵗ/(1+q), q = e^{-1/s}: the smallest whole t ≥ 1 with ≤ alpha
            q = math.exp(-1.0 / scale)
            a = float(max(1, math.ceil(scale * (math.log(2 / (1 + q)) - math.log(alpha)))))
        return a
    if scale > _GAUSSIAN_EXACT_ACCURACY_LIMIT:
        from statistics import NormalDist

        return float(math.ceil(1 + scale * NormalDist().inv_cdf(1 - alpha / 2)))
    return float(dp.discrete_gaussian_scale_to_accuracy(scale=scale, alpha=alpha))


def _search(build: Callable[[float], Any], d_out: Any, *, exact: float | None = None) -> float:
    """Largest budget parameter whose measurement satisfies ``d_out`` at d_in = 1.

    The parameter (ε-like or ρ) makes the measurement's loss grow monotonically. ``exact``:
    the ideal value, taken as is when OpenDP's map confirms it fits. Otherwise bisection,
    every step judged by OpenDP's own privacy map (``check``), so the result always fits.
    """

    def fits(x: float) -> bool:
        try:
            return bool(build(x).check(1, d_out))
        except dp.OpenDPException as exc:
            raise MechanismError(
                f"OpenDP could not calibrate the noise for {d_out!r}: {exc}"
            ) from exc

    if exact is not None and fits(exact):
        return exact
    eps = d_out[0] if isinstance(d_out, tuple) else d_out
    lo, hi = eps * 1e-3, eps  # ρ ≤ ε and ε-parameters ≤ ε
    while not fits(lo):
        lo /= 16
        if lo < 1e-300:
            raise MechanismError(f"no noise scale reaches {d_out!r}")
    while fits(hi):
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# ---------------------------------------------------------------------------------------
# planning


def within_budget(epsilon: float, requested: float) -> bool:
    """Whether OpenDP's ``epsilon`` (exactly, as a binary fraction) is at most the decimal
    the user wrote for ``requested`` (its ``repr``), which the ledger charges."""
    return Fraction(epsilon) <= Fraction(repr(requested))


def plan_noise(spec: ReleaseSpec, *, discovery: bool = False) -> NoisePlan:
    """Calibrate and compose the release's measurement (see :func:`_plan_noise`), never
    above the ε the user asked for (:func:`within_budget`). Touches no data."""
    plan = _plan_noise(spec, discovery=discovery)
    if not within_budget(plan.epsilon, spec.epsilon):  # pragma: no cover - a planner bug
        raise MechanismError(f"the planned epsilon {plan.epsilon!r} exceeds {spec.epsilon!r}")
    return plan


def _plan_noise(spec: ReleaseSpec, *, discovery: bool = False) -> NoisePlan:
    """Calibrate and compose the release's measurement. Touches no data.

    Privacy
    -------
    Unit: one person (all their records added or removed). Laplace: pure ε-DP with the
    budget split ``count_share`` / ``1 - count_share`` between count and sum. Gaussian:
    ρ-zCDP per statistic (split the same way), composed in zCDP and converted once to
    (ε, δ) by OpenDP. Discovery (no public region): OpenDP's threshold mechanism on the
    counts of occupied cells (δ from the threshold), then sums of the kept cells by
    adaptive composition.
    """
    if spec.time_levels:  # coarse time levels move more per person: their own sensitivities
        raise MechanismError(
            "a panel with time_levels is planned by its design with each level's "
            "sensitivity (plan_vectors); plan_noise would understate the coarse levels'"
        )
    sens = sensitivities(spec)
    if discovery:
        if spec.delta <= 0:
            raise MechanismError("private cell discovery needs delta > 0")  # checked earlier too
        return _plan_discovery(spec, sens, spec.shares())
    queries = spec.queries()  # key -> (statistic, resolution, share)
    ksens = _query_sensitivities(spec, queries)
    if spec.mechanism is Mechanism.LAPLACE:
        return _plan_dense_laplace(spec, queries, ksens)
    return _plan_dense_gaussian(spec, queries, ksens)


#: a release's noised vectors: key -> (statistic, resolution, share of the budget)
_Queries = dict[str, tuple[str, int, float]]


def _query_sensitivities(spec: ReleaseSpec, queries: _Queries) -> dict[str, Sensitivity]:
    """Each noised vector's own sensitivity (coarser levels of a hierarchy can move more)."""
    levels = {r: level_sensitivities(spec, r) for r in spec.levels}
    return {k: levels[r][st] for k, (st, r, _w) in queries.items()}


def _plan_dense_laplace(
    spec: ReleaseSpec, queries: _Queries, ksens: dict[str, Sensitivity]
) -> NoisePlan:
    """Laplace on the public domain: pure ε-DP, the budget split by each query's share; the
    common ε-parameter is searched with OpenDP's map judging the composed measurement."""
    mech = spec.mechanism

    def scales_for(t: float) -> dict[str, float]:
        return {k: ksens[k].l1 / (share * t) for k, (st, _r, share) in queries.items()}

    def build(t: float) -> Any:
        sc = scales_for(t)
        return dp.c.make_composition(
            [_dense_chain(k, ksens[k], mech, sc[k]) for k, (st, _r, _w) in queries.items()]
        )

    t = _search(build, spec.epsilon_budget, exact=spec.epsilon_budget)
    scales = scales_for(t)
    meas = build(t)
    per = {
        k: statistic_noise(
            k,
            st,
            ksens[k],
            mech,
            scales[k],
            float(_dense_chain(k, ksens[k], mech, scales[k]).map(1)),
        )
        for k, (st, _r, _w) in queries.items()
    }
    return NoisePlan(
        spec=spec,
        statistics=per,
        epsilon=float(meas.map(1)),
        delta=0.0,
        rho=None,
        measure="pure ε-differential privacy",
        accounting="pure-dp",
        discovery=False,
        threshold=None,
        _measurement=meas,
    )


def _plan_dense_gaussian(
    spec: ReleaseSpec, queries: _Queries, ksens: dict[str, Sensitivity]
) -> NoisePlan:
    """Gaussian on the public domain: per-vector ρ-zCDP, composed, converted once to (ε, δ)
    by OpenDP; ρ is searched with OpenDP's map judging the converted measurement."""
    mech = spec.mechanism

    def gscales(rho: float) -> dict[str, float]:
        return {
            k: ksens[k].l2 / math.sqrt(2 * share * rho) for k, (st, _r, share) in queries.items()
        }

    def zcdp(rho: float) -> Any:
        sc = gscales(rho)
        return dp.c.make_composition(
            [_dense_chain(k, ksens[k], mech, sc[k]) for k, (st, _r, _w) in queries.items()]
        )

    def build_g(rho: float) -> Any:
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(zcdp(rho)), spec.delta)

    rho = _search(build_g, (spec.epsilon_budget, spec.delta))
    meas = build_g(rho)
    eps, delta = meas.map(1)
    scales = gscales(rho)
    per = {}
    for k, (st, _r, _w) in queries.items():
        chain = _dense_chain(k, ksens[k], mech, scales[k])
        # this statistic alone, converted at the release's δ (the total is composed in ρ,
        # so these ε do not add up to the total ε)
        eps_k, delta_k = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(chain), spec.delta).map(1)
        per[k] = statistic_noise(
            k,
            st,
            ksens[k],
            mech,
            scales[k],
            float(eps_k),
            rho=float(chain.map(1)),
            delta=float(delta_k),
        )
    return NoisePlan(
        spec=spec,
        statistics=per,
        epsilon=float(eps),
        delta=float(delta),
        rho=float(zcdp(rho).map(1)),
        measure="(ε, δ)-differential privacy (ρ-zCDP converted by OpenDP)",
        accounting="zcdp",
        discovery=False,
        threshold=None,
        _measurement=meas,
    )


#: noise scales above this are refused (the noise would swamp any count)
_MAX_SCALE = 2.0**52


def statistic_noise(
    key: str,
    stat: str,
    sens: Sensitivity,
    mech: Mechanism,
    scale: float,
    epsilon: float | None,
    rho: float | None = None,
    delta: float = 0.0,
) -> StatisticNoise:
    if not scale <= _MAX_SCALE:
        raise MechanismError(
            f"the {key} noise would have scale {scale:.3g}, more than {_MAX_SCALE:.3g} per cell: "
            "epsilon is too small (or the bounds too large) to publish anything useful; raise "
            "epsilon or tighten the contribution bounds"
        )
    return StatisticNoise(
        name=key,
        distribution="discrete Laplace" if mech is Mechanism.LAPLACE else "discrete Gaussian",
        sensitivity=sens,
        scale=scale,
        epsilon=epsilon,
        rho=rho,
        moe95=accuracy(mech, scale, 0.05),
        moe975=accuracy(mech, scale, 0.025),
        variance=noise_variance(mech, scale),
        delta=delta,
    )


def noise_variance(mech: Mechanism, scale: float) -> float:
    """Variance of OpenDP's integer noise at ``scale``.

    Discrete Laplace with scale s (P(k) ∝ e^{-|k|/s}): 2·e^{-1/s} / (1 − e^{-1/s})².
    Discrete Gaussian with σ: at most σ² (used as a conservative value).
    """
    if mech is Mechanism.LAPLACE:
        q = math.exp(-1.0 / scale)
        return 2 * q / (1 - q) ** 2
    return scale**2


def _plan_discovery(
    spec: ReleaseSpec, sens: dict[str, Sensitivity], shares: dict[str, float]
) -> NoisePlan:
    """Private cell discovery (no public region): OpenDP's threshold mechanism on the counts
    of occupied cells, then sums of the kept cells, by adaptive composition."""
    if spec.mechanism is Mechanism.LAPLACE:
        return _plan_discovery_laplace(spec, sens, shares)
    return _plan_discovery_gaussian(spec, sens, shares)


def _laplace_threshold_count(
    spec: ReleaseSpec, sens: Sensitivity, eps_c: float
) -> tuple[float, int, Any]:
    """The count's scale (fitted to ``eps_c`` by OpenDP's map), the smallest threshold whose
    δ fits the release's δ, and the threshold measurement."""
    mech = spec.mechanism
    scale_c = fit_scale(
        sens.l1 / eps_c,
        eps_c,
        lambda sc: _threshold_chain(sens, mech, sc, 2**40).map(1)[0],
    )
    threshold = _threshold_for(
        lambda th: _threshold_chain(sens, mech, scale_c, th),
        spec.delta,
        sens.linf,
    )
    return scale_c, threshold, _threshold_chain(sens, mech, scale_c, threshold)


def _laplace_selected_sums(
    spec: ReleaseSpec, sens: Sensitivity, eps_s: float
) -> tuple[float, Callable[[np.ndarray], Any]]:
    """The sums' scale (fitted to ``eps_s`` by OpenDP's map) and their measurement builder
    (one per set of kept keys)."""
    mech = spec.mechanism
    empty = np.array([], dtype=np.int64)
    scale_s = fit_scale(
        sens.l1 / eps_s,
        eps_s,
        lambda sc: _selected_sum_chain(sens, mech, sc)(empty).map(1)[0],
    )
    return scale_s, _selected_sum_chain(sens, mech, scale_s)


def _plan_discovery_laplace(
    spec: ReleaseSpec, sens: dict[str, Sensitivity], shares: dict[str, float]
) -> NoisePlan:
    """Laplace discovery: (ε, δ)-DP, δ from the threshold; the sums get what the count's ε
    leaves of the budget."""
    mech = spec.mechanism
    has_sum = "sum" in spec.statistics
    eps_c = shares["count"] * spec.epsilon_budget
    scale_c, threshold, count_chain = _laplace_threshold_count(spec, sens["count"], eps_c)
    d_mids = [count_chain.map(1)]
    sum_build = None
    scale_s = None
    if has_sum:
        eps_s = spec.epsilon_parts_budget - float(d_mids[0][0])
        scale_s, sum_build = _laplace_selected_sums(spec, sens["sum"], eps_s)
        d_mids.append(sum_build(np.array([], dtype=np.int64)).map(1))
    meas = dp.c.make_adaptive_composition(
        AGGREGATES, PERSONS, dp.approximate(dp.max_divergence()), d_in=1, d_mids=d_mids
    )
    eps, delta = meas.map(1)
    per = {
        "count": statistic_noise(
            "count",
            "count",
            sens["count"],
            mech,
            scale_c,
            float(d_mids[0][0]),
            delta=float(d_mids[0][1]),
        )
    }
    if has_sum:
        assert scale_s is not None
        per["sum"] = statistic_noise("sum", "sum", sens["sum"], mech, scale_s, float(d_mids[1][0]))
    return NoisePlan(
        spec=spec,
        statistics=per,
        epsilon=float(eps),
        delta=float(delta),
        rho=None,
        measure="(ε, δ)-differential privacy (cells chosen by OpenDP's Laplace threshold)",
        accounting="approx-dp",
        discovery=True,
        threshold=threshold,
        _measurement=meas,
        _sum_chain=sum_build,
        _count_query=count_chain,
    )


def _gaussian_discovery(
    spec: ReleaseSpec, sens: dict[str, Sensitivity], shares: dict[str, float], rho: float
) -> tuple[Any, Any, Any, int, dict[str, float]]:
    """The Gaussian discovery measurement at total ρ: the threshold on the counts (its
    threshold found for half the release's δ), then the sums, composed in zCDP and converted
    once to (ε, δ); with the count measurement, sum builder, threshold and scales."""
    mech = spec.mechanism
    delta_thr = spec.delta / 2
    scale_c = sens["count"].l2 / math.sqrt(2 * shares["count"] * rho)
    th = _threshold_for(
        lambda x: _threshold_chain(sens["count"], mech, scale_c, x),
        delta_thr,
        sens["count"].linf,
    )
    cc = _threshold_chain(sens["count"], mech, scale_c, th)
    mids = [cc.map(1)]
    scales = {"count": scale_c}
    sb = None
    if "sum" in spec.statistics:
        scales["sum"] = sens["sum"].l2 / math.sqrt(2 * shares["sum"] * rho)
        sb = _selected_sum_chain(sens["sum"], mech, scales["sum"])
        mids.append(sb(np.array([], dtype=np.int64)).map(1))
    comp = dp.c.make_adaptive_composition(
        AGGREGATES,
        PERSONS,
        dp.approximate(dp.zero_concentrated_divergence()),
        d_in=1,
        d_mids=mids,
    )
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(comp), spec.delta), cc, sb, th, scales


def _plan_discovery_gaussian(
    spec: ReleaseSpec, sens: dict[str, Sensitivity], shares: dict[str, float]
) -> NoisePlan:
    """Gaussian discovery: zCDP with a δ for the threshold, converted once by OpenDP; ρ is
    searched with OpenDP's map judging the converted measurement."""
    stats = spec.statistics
    rho = _search(
        lambda r: _gaussian_discovery(spec, sens, shares, r)[0], (spec.epsilon_budget, spec.delta)
    )
    meas, count_chain, sum_build, threshold, scales = _gaussian_discovery(spec, sens, shares, rho)
    eps, delta = meas.map(1)
    rhos = {"count": float(count_chain.map(1)[0])}
    if "sum" in stats:
        rhos["sum"] = float(sum_build(np.array([], dtype=np.int64)).map(1)[0])
    deltas = {"count": float(count_chain.map(1)[1]), "sum": 0.0}
    per = {
        st: statistic_noise(
            st, st, sens[st], spec.mechanism, scales[st], None, rho=rhos[st], delta=deltas[st]
        )
        for st in stats
    }
    return NoisePlan(
        spec=spec,
        statistics=per,
        epsilon=float(eps),
        delta=float(delta),
        rho=sum(p.rho for p in per.values() if p.rho is not None),
        measure="(ε, δ)-differential privacy (cells chosen by OpenDP's Gaussian threshold, "
        "ρ-zCDP converted by OpenDP)",
        accounting="zcdp",
        discovery=True,
        threshold=threshold,
        _measurement=meas,
        _sum_chain=sum_build,
        _count_query=count_chain,
    )


def fit_scale(scale: float, limit: float, eps_of: Callable[[float], float]) -> float:
    """Widen ``scale`` by the few ulps OpenDP's conservative rounding may need to fit ``limit``."""
    for _ in range(64):
        if eps_of(scale) <= limit:
            return scale
        scale = math.nextafter(scale, math.inf)
    while eps_of(scale) > limit:
        scale *= 1 + 1e-9
    return scale


def _threshold_for(build: Callable[[int], Any], delta: float, start: int) -> int:
    """Smallest integer threshold ≥ ``start`` whose threshold mechanism has δ ≤ ``delta``.

    OpenDP refuses thresholds below the L∞ sensitivity, so the search starts there.
    """
    lo = hi = max(1, start)
    while build(hi).map(1)[1] > delta:
        lo, hi = hi + 1, hi * 2
        if hi > 2**40:
            raise MechanismError(f"no threshold reaches delta={delta!r}; pass a larger delta")
    while lo < hi:
        mid = (lo + hi) // 2
        if build(mid).map(1)[1] <= delta:
            hi = mid
        else:
            lo = mid + 1
    return hi


def plan_vectors(spec: ReleaseSpec, sens: Mapping[str, Sensitivity]) -> NoisePlan:
    """Calibrate the composed measurement of the spec's vectors (:meth:`ReleaseSpec.queries`)
    with sensitivities a design derived itself, e.g. the node vector of a tree over periods
    (:mod:`dpmap.designs.continual`). Same OpenDP chains, budget split and calibration as
    :func:`plan_noise` on the public domain (discrete Laplace with each vector's L1,
    discrete Gaussian with its L2), never above the ε asked for. Touches no data."""
    queries = spec.queries()
    if set(sens) != set(queries):
        raise ValueError(f"sensitivities for {sorted(sens)}, but the spec noises {sorted(queries)}")
    if spec.mechanism is Mechanism.LAPLACE:
        plan = _plan_dense_laplace(spec, queries, dict(sens))
    else:
        plan = _plan_dense_gaussian(spec, queries, dict(sens))
    if not within_budget(plan.epsilon, spec.epsilon):  # pragma: no cover - a planner bug
        raise MechanismError(f"the planned epsilon {plan.epsilon!r} exceeds {spec.epsilon!r}")
    return plan
