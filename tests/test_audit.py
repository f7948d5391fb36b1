"""The empirical privacy audit (:func:`dpmap.audit`) tested on itself, with its power shown.

* **No false flags.** Every dpmap mode must NOT be flagged. The audit's lower bound
  exceeds the true ε of a correct mechanism with probability ≤ α by construction
  (one-sided Clopper–Pearson bounds at α/(2F) for F families, events and pooled scores
  chosen on selection runs that are not used to measure them). Here α = 1e-8, so each
  "not flagged" assertion fails spuriously with probability ≤ 1e-8.
* **Power, shown per mode.** The same audit (same parameters; the same number of runs
  for ¼ of the noise, and without bounding, where every run separates, the fewest runs
  whose ceiling exceeds the claim: ``NO_BOUNDING_RUNS``) must flag the mode when it is
  broken on purpose, in two ways, by monkeypatching the library in the test (never in src):

  - ``quarter_noise``: every OpenDP noise constructor dpmap uses (``make_laplace``,
    ``make_gaussian`` and the two threshold mechanisms) draws at ¼ of the scale it was
    asked for, while its privacy map still answers for the planned scale — so the plan,
    the claim and the manifests are unchanged and only the noise shrinks (true ε ≈ 4×);
  - ``no_bounding``: the engine's bound step (``dpmap.engines.bounding.bound``) returns its
    input, so the adversary's 199 records in one cell all count.

  A missed detection is a false failure of these tests; each mode's run count is sized
  so that it is below ≈1e-8 (see MODES). The audit reports the most its runs could ever
  certify (``epsilon_ceiling``): that must exceed the claim, or no violation can be seen.
* **Why the counts concentrate ε.** An audit at level 1 − 1e-8 with n evaluation runs
  can never certify more than ≈ ln(n / 21) (the ceiling), and ¼ noise raises the ε an
  observer sees in one statistic to 4× its share. A statistic with most of the budget
  (a count with ``count_share=0.9``, the finest level with 0.9 of a hierarchy) then
  separates D from D′ in ≈ 85–98% / 1–5% of the runs, which 300–400 evaluation runs
  turn into ε_lb ≈ 1.5–2.3 > 1 except with probability ≤ 6e-10 (exact binomial sums at
  the rates seen; see MODES). With the budget split evenly between count and sum (or
  between levels) the same power needs ≈ 600 runs, so the modes here concentrate ε (the
  mutations still apply to every statistic); even splits are audited, not flagged, at
  the mechanism level (``laplace-sum-L0-2-Linf-3``, ``gaussian-sum``).
* **Gaussian modes and ¼ noise.** A discrete Gaussian planned for (ε, δ) = (1, 1e-6) has
  ρ ≈ 0.024, i.e. it separates D from D′ like N(0, 1) from N(0.22, 1); at ¼ of the noise,
  N(0.88, 1). That mechanism is (1, 0.087)-DP — it breaks the claim only through a
  probability mass of 0.087 — and certifying ε_lb > 1 from it takes ≈ 10⁴ evaluation
  runs (``test_gaussian_quarter_noise_needs_thousands_of_runs`` computes this). At the
  release level (≈ 20 ms per release) that is out of reach, so the Gaussian modes show
  their power against missing bounding here, and the ¼-noise Gaussian is caught at the
  mechanism level (``test_mechanism_gaussian_with_a_quarter_of_the_noise_is_caught``),
  which runs the same OpenDP chains 40 000 times in seconds.

OpenDP's noise cannot be seeded: every audit here is a fresh random experiment. The
audit's own randomness (where the adversary's rows go among D's) is fixed by
``data_seed`` so that a failure can be replayed with the same data.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import opendp.measurements
import opendp.prelude as dp
import pytest
from scipy.stats import beta, binom, norm

import dpmap
import dpmap.engines.bounding
import dpmap.engines.local
from dpmap import SpecError
from dpmap._privacy.noise import plan_noise
from dpmap.auditing import (
    AuditReport,
    _cp_bisect,
    _neighbours,
    audit,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_ceiling,
    runs_needed,
)
from dpmap.cli import main

ALPHA = 1e-8
#: the audit's synthetic-data randomness (positions of the adversary's rows): fixed, so a
#: failure can be replayed with the same data; the noise is never seeded
DATA_SEED = 20261206


def _not_flagged(report: AuditReport) -> None:
    assert report.passed, str(report)
    assert report.epsilon_lb <= report.claimed_epsilon
    assert report.alpha == ALPHA
    assert not report.notes, report.notes  # the manifests state the planned ε
    json.dumps(report.as_dict())  # the report is JSON


def _flagged(report: AuditReport) -> None:
    assert not report.passed, str(report)
    assert report.epsilon_lb > report.claimed_epsilon
    assert not report.notes, report.notes  # the claim is unchanged: only the noise/bounding


# ---------------------------------------------------------------------------------------
# Clopper–Pearson


@pytest.mark.parametrize(
    ("k", "n", "a"),
    [
        (0, 10, 0.05),
        (10, 10, 0.05),
        (3, 10, 1e-3),
        (517, 1000, 5e-7),
        (1, 20000, 1e-7),
        (9999, 10000, 2.5e-7),
    ],
)
def test_clopper_pearson_matches_the_beta_quantiles(k: int, n: int, a: float) -> None:
    lo, hi = clopper_pearson_lower(k, n, a), clopper_pearson_upper(k, n, a)
    assert lo == (0.0 if k == 0 else pytest.approx(beta.ppf(a, k, n - k + 1), rel=1e-12))
    assert hi == (1.0 if k == n else pytest.approx(beta.ppf(1 - a, k + 1, n - k), rel=1e-12))
    # the scipy-free fallback (bisection on the exact binomial tail) agrees
    if k > 0:
        assert _cp_bisect(k, n, a, lower=True) == pytest.approx(lo, rel=1e-7, abs=1e-12)
    if k < n:
        assert _cp_bisect(k, n, a, lower=False) == pytest.approx(hi, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("p", [0.003, 0.1, 0.5, 0.93])
def test_clopper_pearson_coverage_is_exact(p: float) -> None:
    """P(lower bound > p) ≤ a and P(upper bound < p), summed exactly over Binomial(n, p)."""
    n, a = 200, 0.01
    k = np.arange(n + 1)
    w = binom.pmf(k, n, p)
    lo = np.array([clopper_pearson_lower(int(i), n, a) for i in k])
    hi = np.array([clopper_pearson_upper(int(i), n, a) for i in k])
    assert w[lo > p].sum() <= a
    assert w[hi < p].sum() <= a


def test_clopper_pearson_refuses_impossible_counts() -> None:
    with pytest.raises(SpecError):
        clopper_pearson_lower(5, 4, 0.1)
    with pytest.raises(SpecError):
        clopper_pearson_upper(1, 4, 0.0)


# ---------------------------------------------------------------------------------------
# the power ceiling


@pytest.mark.parametrize(
    ("n", "a", "delta"), [(12, 1e-7, 0.0), (225, 5e-10, 0.0), (90, 1e-7, 1e-6)]
)
def test_ceiling_is_the_bound_of_a_perfect_separation(n: int, a: float, delta: float) -> None:
    """The ceiling is what _measure reports for n hits against 0: the largest possible."""
    perfect = math.log((clopper_pearson_lower(n, n, a) - delta) / clopper_pearson_upper(0, n, a))
    # closed form a^(1/n) vs scipy's beta quantiles (accurate to ~1e-9 relative)
    assert epsilon_ceiling(n, a, delta) == pytest.approx(max(0.0, perfect), rel=1e-7)
    # any other outcome gives less
    assert math.log(clopper_pearson_lower(n - 1, n, a) / clopper_pearson_upper(0, n, a)) < perfect
    assert math.log(clopper_pearson_lower(n, n, a) / clopper_pearson_upper(1, n, a)) < perfect


@pytest.mark.parametrize(("eps", "fraction"), [(1.0, 0.25), (0.5, 0.5), (2.0, 0.25)])
def test_runs_needed_is_the_fewest_runs_that_can_exceed_the_claim(
    eps: float, fraction: float
) -> None:
    a = ALPHA / 10
    runs = runs_needed(eps, a, 0.0, fraction)

    def ceiling(r: int) -> float:
        return epsilon_ceiling(r - max(2, min(r - 2, round(r * fraction))), a)

    assert ceiling(runs) > eps >= ceiling(runs - 1)


def test_report_warns_when_the_runs_cannot_detect_a_violation() -> None:
    report = audit(resolution=7, epsilon=0.7, runs=12, alpha=ALPHA, suppress_below=False)
    assert report.epsilon_ceiling < report.claimed_epsilon and not report.can_detect
    text = str(report)
    assert "WARNING" in text and "CANNOT detect a violation" in text
    assert f"at least {report.runs_needed} runs are needed" in text
    d = report.as_dict()
    assert d["can_detect"] is False and d["epsilon_ceiling"] == report.epsilon_ceiling
    # with the runs it asks for, the warning goes away
    enough = audit(
        resolution=7, epsilon=0.7, runs=report.runs_needed, alpha=ALPHA, suppress_below=False
    )
    assert enough.can_detect and "WARNING" not in str(enough), str(enough)


# ---------------------------------------------------------------------------------------
# the adversary's rows


def test_the_adversary_sits_at_random_positions_drawn_from_data_seed() -> None:
    ex = dpmap.explain(resolution=7, epsilon=1.0, person="pid", region=None, delta=1e-6)

    def setup(seed: int, shuffle: bool = False) -> Any:
        return _neighbours(
            ex.spec,
            discovery=False,
            threshold=None,
            centre=(39.1, 116.15),
            background=None,
            adversary_records=200,
            adversary_cells=None,
            rng=np.random.default_rng(seed),
            shuffle=shuffle,
        )

    a, b, c = setup(1), setup(1), setup(2)
    assert a.d_prime.equals(b.d_prime)  # the seed fixes the data
    positions = [np.flatnonzero(s.d_prime["pid"] == "adversary") for s in (a, c)]
    assert not np.array_equal(positions[0], positions[1])
    assert positions[0][0] < len(a.d) and positions[0][-1] > 0  # not all at the end
    # D′ is D, in the same order, plus the adversary's rows
    for s in (a, c):
        rest = s.d_prime[s.d_prime["pid"] != "adversary"].reset_index(drop=True)
        assert rest.equals(s.d)
        assert (s.d_prime["pid"] == "adversary").sum() == 200
    shuffled = setup(1, shuffle=True)
    assert not shuffled.d.equals(a.d)
    assert (
        shuffled.d.sort_values(list(a.d.columns))
        .reset_index(drop=True)
        .equals(a.d.sort_values(list(a.d.columns)).reset_index(drop=True))
    )


def test_data_seed_is_recorded_and_validated() -> None:
    report = audit(resolution=7, epsilon=1.0, runs=6, alpha=ALPHA, data_seed=7, shuffle=True)
    assert report.parameters["data_seed"] == 7 and report.parameters["shuffle"] is True
    fresh = audit(resolution=7, epsilon=1.0, runs=6, alpha=ALPHA)
    assert isinstance(fresh.parameters["data_seed"], int)  # drawn from the OS, recorded
    with pytest.raises(SpecError, match="data_seed"):
        audit(resolution=7, epsilon=1.0, runs=6, data_seed=-1)


# ---------------------------------------------------------------------------------------
# the mechanism level: thousands of runs of the noise step


def test_mechanism_laplace_is_not_flagged_and_the_audit_is_not_vacuous() -> None:
    report = audit(
        resolution=7, epsilon=1.0, level="mechanism", runs=20_000, batch=256, alpha=ALPHA
    )
    _not_flagged(report)
    # power: the optimal event (count of the adversary's cell ≥ its D count + 1) has
    # p = 0.731 vs 0.269 (ratio e); with 16 000 evaluation runs and α/(2F) = 2.5e-9 the
    # bound is ≈ 0.90 at the median, 0.79 at the 1e-9 worst case (exact binomial
    # calculation); 0.5 leaves room for a slightly worse event being chosen
    assert report.epsilon_lb > 0.5, str(report)
    assert report.level == "mechanism" and report.runs == 20_000


def _half_noise(spec: Any) -> Any:
    """BROKEN on purpose: noise calibrated to 2ε while the release claims ε."""
    return plan_noise(dataclasses.replace(spec, epsilon=2 * spec.epsilon)).run_dense


def test_mechanism_with_half_the_noise_is_caught() -> None:
    report = audit(
        resolution=7, epsilon=1.0, level="mechanism", runs=5000, noise_fn=_half_noise, alpha=ALPHA
    )
    # true ε = 2: the optimal event has p = 0.881 vs 0.119 (ratio e²); with 4000 evaluation
    # runs ε_lb ≈ 1.72 at the median and 1.48 at the 1e-9 worst case (exact binomial
    # calculation), far above the claimed 1
    assert not report.passed, str(report)
    assert report.claimed_epsilon == 1.0
    assert report.epsilon_lb > 1.2


@pytest.mark.parametrize(
    "params",
    [
        {"mechanism": "gaussian", "delta": 1e-6},
        {"bounds": (-50, 1000), "max_cells": 2, "max_records_per_cell": 3},
        {"bounds": (0, 1000), "mechanism": "gaussian", "delta": 1e-5, "count_share": 0.3},
    ],
    ids=["gaussian", "laplace-sum-L0-2-Linf-3", "gaussian-sum"],
)
def test_mechanism_level_other_configurations_are_not_flagged(params: dict[str, Any]) -> None:
    report = audit(
        resolution=7, epsilon=1.0, level="mechanism", runs=6000, batch=256, alpha=ALPHA, **params
    )
    _not_flagged(report)
    families = {f.family for f in report.families}
    assert "count" in families and (("sum" in families) == ("bounds" in params))


def test_gaussian_quarter_noise_needs_thousands_of_runs() -> None:
    """Why the release-level Gaussian modes are not given a ¼-noise mutation test.

    OpenDP's ρ for (ε, δ) = (1, 1e-6) makes the Gaussian mechanism separate D from D′ like
    N(0, 1) from N(μ, 1) with μ = √(2ρ) ≈ 0.22 (L2 sensitivity / σ); ¼ of the noise gives
    μ ≈ 0.88. The best event (a threshold, Neyman–Pearson) then needs ≈ 10⁴ evaluation runs
    before the Clopper–Pearson bound at level 1e-9 exceeds ε = 1.
    """
    rho = plan_noise(
        dpmap.explain(
            resolution=7, epsilon=1.0, delta=1e-6, mechanism="gaussian", region=_box()
        ).spec
    ).rho
    assert rho is not None
    mu = 4 * math.sqrt(2 * rho)
    assert 0.8 < mu < 1.0

    def best(n: int) -> float:
        out = 0.0
        for t in np.linspace(-1, 4, 201):
            k1, k0 = round(norm.sf(t - mu) * n), round(norm.sf(t) * n)
            lo, hi = beta.ppf(1e-9, k1, n - k1 + 1), beta.ppf(1 - 1e-9, k0 + 1, n - k0)
            out = max(out, math.log(lo / hi))
        return out

    assert best(1000) < 0.8 and best(3000) < 1.0 < best(20_000)


def _box() -> Any:
    import shapely

    return shapely.box(116.14, 39.09, 116.16, 39.11)


# ---------------------------------------------------------------------------------------
# the mutations (monkeypatched in the tests, never in src)

_NOISE_CONSTRUCTORS = (
    "make_laplace",
    "make_gaussian",
    "make_laplace_threshold",
    "make_gaussian_threshold",
)


def _quarter(real: Callable[..., Any]) -> Callable[..., Any]:
    """BROKEN on purpose: a measurement whose privacy map is the planned one but whose
    noise is drawn at ¼ of the planned scale."""

    def make(input_domain: Any, input_metric: Any, scale: float, *args: Any, **kw: Any) -> Any:
        honest = real(input_domain, input_metric, scale, *args, **kw)
        noisy = real(input_domain, input_metric, scale / 4, *args, **kw)
        return dp.m.make_user_measurement(
            honest.input_domain,
            honest.input_metric,
            honest.output_measure,
            function=lambda x: noisy(x),
            privacy_map=lambda d: honest.map(d),
        )

    return make


@pytest.fixture
def quarter_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every noise draw at ¼ of its planned scale (OpenDP's ``then_*`` partials call these
    constructors by name, so flat, hierarchical, discovery, PrivTree and grid releases are
    all affected); plans, claims and manifests are unchanged."""
    for name in _NOISE_CONSTRUCTORS:
        monkeypatch.setattr(opendp.measurements, name, _quarter(getattr(opendp.measurements, name)))


@pytest.fixture
def no_bounding(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKEN on purpose: the engine keeps every record of every person."""
    monkeypatch.setattr(dpmap.engines.bounding, "bound", lambda df, spec: df)


def test_quarter_noise_fixture_draws_a_quarter_of_the_noise(quarter_noise: None) -> None:
    """The mutation is real: same plan and claim, ¼ of the noise. Discrete Laplace with
    scale s = 8 (count, L1 = 1, ε = 0.125) has sd 11.3, at s/4 = 2 it has sd 2.77. Over
    n = 40 000 draws the sample sd has relative sd √((κ − 1)/n)/2 = 0.566% (κ = 6.128,
    the exact kurtosis at scale 2), so ±4% is 7.07 of its sd: the normal tail is 1.6e-12,
    and the mean of X²'s skewness (≤ 6.62/√n = 0.033) shifts the upper tail by a
    Cornish–Fisher (z² − 1)·γ/6 ≤ 0.27 sd, still beyond 6.8 sd (< 1e-11). The former ±3%
    was 5.3 sd: a false failure with chance 1.2e-7. Full noise (sd 11.3) is 4× off."""
    spec = dpmap.explain(resolution=7, epsilon=0.125, region=_box()).spec
    plan = plan_noise(spec)
    assert plan.epsilon == pytest.approx(0.125) and plan.statistics["count"].scale == 8
    noisy = plan.run_dense({"count": np.zeros(40_000, dtype=np.int64)})["count"]
    q = math.exp(-1 / 2)
    assert np.std(noisy) == pytest.approx(math.sqrt(2 * q) / (1 - q), rel=0.04)


def test_no_bounding_fixture_keeps_every_record(no_bounding: None) -> None:
    ex = dpmap.explain(resolution=7, epsilon=1.0, person="pid", region=_box())
    from dpmap import grid

    s = _neighbours(
        ex.spec,
        discovery=False,
        threshold=None,
        centre=(39.1, 116.15),
        background=None,
        adversary_records=200,
        adversary_cells=None,
        rng=np.random.default_rng(0),
        shuffle=False,
    )
    domain = grid.region_to_cells(grid.to_region(s.region), 7)
    agg = [
        dpmap.engines.local.bound_and_aggregate(df, ex.spec, domain).densify(domain, 1)["count"]
        for df in (s.d, s.d_prime)
    ]
    assert agg[1].sum() - agg[0].sum() == 200  # every record of the adversary counted


# ---------------------------------------------------------------------------------------
# end to end: dpmap.release in every mode, honest and broken


#: mode → (release parameters, runs per dataset, whether the ¼-noise mutation is tested).
#: Runs: a fifth of them choose events; 375 leave 300 evaluation runs (ceiling ε ≈ 2.65 at
#: α/(2F) = 1e-9). The chosen ¼-noise events, measured while sizing these (two audits per
#: mode), were in 85–98% of the D′ runs and 1–5% of the D runs, and ε_lb was 1.46–2.29;
#: the probability that ε_lb ≤ 1 at the rates seen (exact binomial sums over the
#: Clopper–Pearson bounds) is ≤ 6e-10 per mode at 300 evaluation runs, except for the
#: weakest events (flat with sum: 0.85 vs 0.037; adaptive grid: 0.86 vs 0.04: 5e-8), which
#: get 450 runs (360 evaluation runs: 6e-12). With two cells per person (hash selection,
#: max_cells=2) each cell sees half of the count's ε; the best events were 0.785 vs 0.03,
#: and 500 runs (400 evaluation runs) miss with probability 1e-12. Without bounding, 199
#: records land in one cell: every run separates and ε_lb is the ceiling. The Gaussian
#: modes (no ¼-noise test, see the module docstring) need only the ceiling: 150 runs
#: (120 evaluation runs) give 1.67 > 1.
MODES: dict[str, tuple[dict[str, Any], int, bool]] = {
    "flat-laplace-sum-suppressed": (
        {"bounds": (0, 2000), "max_records_per_cell": 2, "count_share": 0.9},
        450,
        True,
    ),
    "flat-hash-selection-seeded-L0-2": (
        {"selection": "hash", "seed": 11, "max_cells": 2},
        500,
        True,
    ),
    "gaussian-sum": ({"mechanism": "gaussian", "delta": 1e-6, "bounds": (0, 500)}, 150, False),
    "discovery-laplace": ({"delta": 1e-6, "discovery": True}, 375, True),
    "discovery-gaussian-sum": (
        {"mechanism": "gaussian", "delta": 1e-5, "discovery": True, "bounds": (-10, 10)},
        150,
        False,
    ),
    "hierarchical": (
        {"resolution": [6, 7], "bounds": (0, 100), "count_share": 0.9, "level_split": [0.1, 0.9]},
        375,
        True,
    ),
    "hierarchical-hash-seeded": (
        {"resolution": [6, 7], "selection": "hash", "seed": 5, "level_split": [0.1, 0.9]},
        375,
        True,
    ),
    "hierarchical-gaussian-integers": (
        {"resolution": [6, 7], "mechanism": "gaussian", "delta": 1e-6, "integers": True},
        150,
        False,
    ),
    "adaptive": ({"adaptive": True, "tree_share": 0.1}, 375, True),
    "adaptive-sum": (
        {
            "adaptive": True,
            "adaptive_from": 5,
            "bounds": (0, 10),
            "count_share": 0.9,
            "tree_share": 0.1,
        },
        375,
        True,
    ),
    "adaptive-internal-sum": (
        {
            "adaptive": True,
            "internal_share": 0.1,
            "bounds": (0, 10),
            "count_share": 0.9,
            "tree_share": 0.1,
        },
        375,
        True,
    ),
    "adaptive-grid-sum": (
        {"adaptive": "grid", "bounds": (0, 10), "count_share": 0.9, "tree_share": 0.1},
        450,
        True,
    ),
}
QUARTER = [m for m, (_p, _r, q) in MODES.items() if q]


#: runs of the no-bounding audits. Without bounding the adversary's 199 records land in one
#: cell. The finest cells' count noise is at most a discrete Gaussian of σ ≈ 7 or a discrete
#: Laplace of scale ≈ 1.4 in every mode (``explain``, per mode), so a threshold halfway
#: between D and D′ is ≥ 14 σ (or ≥ 70 scales) from both: every run separates them and ε_lb
#: is the ceiling (the test asserts > 0.95 × it). The ceiling grows with the runs, so the
#: fewest runs whose ceiling exceeds the claim show the same power: 150 (120 evaluation
#: runs) give a ceiling ≥ 1.64 > 1 at α/(2F) for F ≤ 8 families, as the Gaussian modes use.
NO_BOUNDING_RUNS = 150


def _run_mode(mode: str, runs: int | None = None) -> AuditReport:
    params, mode_runs, _ = MODES[mode]
    runs = mode_runs if runs is None else runs
    report = audit(
        runs=runs, alpha=ALPHA, data_seed=DATA_SEED, **{"resolution": 7, "epsilon": 1.0, **params}
    )
    assert report.level == "release" and report.runs == runs
    assert report.can_detect, str(report)  # the runs can certify more than the claim
    return report


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_is_not_flagged(mode: str, cached_plans: None) -> None:
    report = _run_mode(mode)
    _not_flagged(report)
    assert ("sum" in {f.family for f in report.families}) == ("bounds" in MODES[mode][0])


@pytest.mark.slow
@pytest.mark.parametrize("mode", QUARTER)
def test_every_mode_with_a_quarter_of_the_noise_is_flagged(
    mode: str, quarter_noise: None, cached_plans: None
) -> None:
    _flagged(_run_mode(mode))


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_without_bounding_is_flagged(
    mode: str, no_bounding: None, cached_plans: None
) -> None:
    report = _run_mode(mode, runs=min(NO_BOUNDING_RUNS, MODES[mode][1]))
    _flagged(report)
    # 199 records in one cell: every evaluation run separates, the bound is the ceiling
    assert report.epsilon_lb > 0.95 * report.epsilon_ceiling, str(report)


@pytest.mark.slow
def test_mechanism_gaussian_with_a_quarter_of_the_noise_is_caught(quarter_noise: None) -> None:
    """The Gaussian chains at ¼ noise, caught where runs are cheap (see the docstring):
    count only, μ ≈ 0.88 per run; 32 000 evaluation runs give ε_lb ≈ 1.6 at the median
    (``test_gaussian_quarter_noise_needs_thousands_of_runs``'s calculation)."""
    report = audit(
        resolution=7,
        epsilon=1.0,
        delta=1e-6,
        mechanism="gaussian",
        level="mechanism",
        runs=40_000,
        batch=1024,
        alpha=ALPHA,
        data_seed=DATA_SEED,
    )
    _flagged(report)


@pytest.mark.slow
def test_gaussian_end_to_end_without_caching() -> None:
    report = audit(
        resolution=7, epsilon=1.0, mechanism="gaussian", delta=1e-6, runs=12, alpha=ALPHA
    )
    _not_flagged(report)


def test_discovery_observes_which_cells_are_published() -> None:
    report = audit(resolution=7, epsilon=1.0, delta=1e-6, discovery=True, runs=60, alpha=ALPHA)
    _not_flagged(report)
    assert report.claimed_delta > 0
    assert "discovery" in report.mode
    # D's cells hold about the threshold, so publication varies from run to run
    assert "cells" in {f.family for f in report.families}, str(report)


# ---------------------------------------------------------------------------------------
# the report and the parameters


def test_report_text_and_dict() -> None:
    report = audit(resolution=7, epsilon=0.7, runs=12, alpha=ALPHA, suppress_below=False)
    text = str(report)
    assert "claimed ε = 0.7" in text and "ε lower bound" in text and "PASS" in text
    assert "power: the most these 10 evaluation runs could certify" in text
    d = report.as_dict()
    assert d["claimed_epsilon"] == pytest.approx(0.7)
    assert d["runs"] == 12 and d["selection_runs"] + d["evaluation_runs"] == 12
    assert d["passed"] is True
    assert set(d) >= {
        "epsilon_lb",
        "epsilon_ceiling",
        "can_detect",
        "runs_needed",
        "best_event",
        "families",
        "seconds",
        "adversary",
        "dataset",
    }
    for fam in d["families"]:
        assert 0 <= fam["hits_likelier"] <= fam["runs"]
        assert 0 <= fam["epsilon_lb"] <= d["epsilon_ceiling"]
        assert math.isfinite(fam["p_other_upper"])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"resolution": 7, "epsilon": 1, "region": None}, "does not take"),
        ({"resolution": 7, "epsilon": 1, "person": "pid"}, "does not take"),
        ({"epsilon": 1}, "resolution"),
        ({"resolution": 7, "epsilon": 1, "runs": 3}, "runs"),
        ({"resolution": 7, "epsilon": 1, "alpha": 0}, "alpha"),
        ({"resolution": 7, "epsilon": 1, "level": "noise"}, "level"),
        ({"resolution": 7, "epsilon": 1, "adversary_cells": 8}, "adversary_cells"),
        ({"resolution": 7, "epsilon": 1, "adversary_records": 1}, "adversary_records"),
        ({"resolution": 7, "epsilon": 1, "level": "mechanism", "adaptive": True}, "mechanism"),
        ({"resolution": 7, "epsilon": 1, "discovery": True}, "delta"),
        ({"resolution": 7, "epsilon": -1}, "epsilon"),
    ],
)
def test_bad_audit_parameters_are_spec_errors(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as info:
        audit(**kwargs)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_a_misspelt_audit_parameter_gets_a_did_you_mean() -> None:
    with pytest.raises(SpecError) as info:
        audit(resolution=7, epsilon=1, max_cell=2, runs=4)
    message = str(info.value)
    assert "unknown parameter 'max_cell'" in message and "did you mean 'max_cells'?" in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------
# the CLI


def test_cli_audit_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--resolution", "7", "--epsilon", "1", "--runs", "16"]) == 0
    out = capsys.readouterr().out
    assert "dpmap audit" in out and "claimed ε = 1" in out and "PASS" in out
    grid = ["audit", "--resolution", "7", "--epsilon", "1", "--runs", "16", "--json"]
    assert main([*grid, "--adaptive", "--adaptive-method", "grid"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["parameters"]["adaptive"] == "grid" and d["passed"] is True


def test_cli_audit_json_at_the_mechanism_level(capsys: pytest.CaptureFixture[str]) -> None:
    """400 runs can certify up to ε ≈ 3 > 0.5, so a correct mechanism is flagged with chance
    up to the audit's α: the CLI's default 1e-6 is too high for a test, so --alpha 1e-9."""
    code = main(
        [
            "audit",
            "--alpha",
            "1e-9",
            "--resolution",
            "7",
            "--epsilon",
            "0.5",
            "--runs",
            "400",
            "--level",
            "mechanism",
            "--bounds",
            "0",
            "100",
            "--json",
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["claimed_epsilon"] == pytest.approx(0.5)
    assert d["level"] == "mechanism" and d["passed"] is True
    assert d["alpha"] == 1e-9 and d["epsilon_ceiling"] > 0.5  # the audit could fail
    assert d["parameters"]["bounds"] == [0, 100]


def test_cli_audit_exits_1_when_the_release_leaks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = importlib.import_module("dpmap.releases.pipeline")  # `import dpmap` is lazy
    real = pipeline.release
    monkeypatch.setattr(
        pipeline,
        "release",
        lambda points, **kw: real(points, **{**kw, "person": None}),
    )
    code = main(["audit", "--resolution", "7", "--epsilon", "1", "--runs", "120", "--no-suppress"])
    out = capsys.readouterr().out
    # without the person column each of the adversary's 199 rows in its main cell counts
    # (noise scale 1): every run separates; with 96 evaluation runs at the CLI's α = 1e-6,
    # 96 / 96 vs 0 / 96 gives ε_lb = the ceiling ≈ 1.7 > 1
    assert code == 1, out
    assert "FAIL" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--resolution", "7"],
        ["audit", "--resolution", "12", "--epsilon", "1"],
        ["audit", "--resolution", "7", "--epsilon", "1", "--mechanism", "gaussian"],
        ["audit", "--resolution", "7", "--epsilon", "1", "--runs", "1"],
        ["audit", "--resolution", "7", "--epsilon", "1", "--no-suppress", "--suppress-below", "3"],
        ["audit", "--resolution", "7", "--epsilon", "1", "--adaptive-method", "grid"],
        ["audit", "--resolution", "7", "--epsilon", "1", "--adaptive", "--adaptive-method", "kd"],
    ],
)
def test_cli_audit_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpmap: error:") and err.count("\n") == 1
