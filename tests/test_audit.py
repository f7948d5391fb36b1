"""The empirical privacy audit (:func:`dpmap.audit`) tested on itself.

* Every dpmap mode (flat Laplace with a value column and suppression, Gaussian, discovery
  with δ, hierarchical, adaptive) must NOT be flagged. The audit's lower bound exceeds the
  true ε of a correct mechanism with probability ≤ α = 1e-6 by construction (one-sided
  Clopper–Pearson bounds at α/(2F) for F families, events chosen on runs that are not used
  to measure them), so each "not flagged" assertion fails spuriously with probability
  ≤ 1e-6.
* Deliberately broken releases MUST be caught: no contribution bounding, and half the
  noise (at the mechanism level, where thousands of runs take a second or two, and end to
  end through ``dpmap.release``). Each "caught" assertion states the expected ε_lb; the
  figures come from exact binomial calculations (scipy) for the optimal event, at the
  median and at the 0.1% worst case of the evaluation counts.

OpenDP's noise cannot be seeded: every audit here is a fresh random experiment.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from typing import Any

import numpy as np
import pytest
from scipy.stats import beta, binom

import dpmap
from dpmap import SpecError
from dpmap.audit import (
    AuditReport,
    _cp_bisect,
    audit,
    clopper_pearson_lower,
    clopper_pearson_upper,
)
from dpmap.cli import main
from dpmap.mechanisms import plan_noise

ALPHA = 1e-6


def _not_flagged(report: AuditReport) -> None:
    assert report.passed, str(report)
    assert report.epsilon_lb <= report.claimed_epsilon
    assert report.alpha == ALPHA
    assert not report.notes, report.notes  # the manifests state the planned ε
    json.dumps(report.as_dict())  # the report is JSON


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
# the mechanism level: thousands of runs of the noise step


def test_mechanism_laplace_is_not_flagged_and_the_audit_is_not_vacuous() -> None:
    report = audit(
        resolution=7, epsilon=1.0, level="mechanism", runs=20_000, batch=256, alpha=ALPHA
    )
    _not_flagged(report)
    # power: the optimal event (count of the adversary's cell ≥ its D count + 1) has
    # p = 0.731 vs 0.269 (ratio e); with 10 000 evaluation runs the bound is ≈ 0.89 at the
    # median, 0.82 at the 0.1% worst case (exact binomial calculation); 0.5 leaves room for
    # a slightly worse event being chosen
    assert report.epsilon_lb > 0.5, str(report)
    assert report.level == "mechanism" and report.runs == 20_000


def _half_noise(spec: Any) -> Any:
    """BROKEN on purpose: noise calibrated to 2ε while the release claims ε."""
    return plan_noise(dataclasses.replace(spec, epsilon=2 * spec.epsilon)).run_dense


def test_mechanism_with_half_the_noise_is_caught() -> None:
    report = audit(
        resolution=7, epsilon=1.0, level="mechanism", runs=5000, noise_fn=_half_noise, alpha=ALPHA
    )
    # true ε = 2: the optimal event has p = 0.881 vs 0.119 (ratio e²); with 2500 evaluation
    # runs ε_lb ≈ 1.71 at the median and 1.54 at the 0.1% worst case (exact binomial
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


# ---------------------------------------------------------------------------------------
# end to end: dpmap.release in every mode


def _no_bounding(points: Any, **kwargs: Any) -> dpmap.Release:
    """BROKEN on purpose: forgets the person column, so each of the adversary's rows counts."""
    return dpmap.release(points, **{**kwargs, "person": None})


def test_release_without_contribution_bounding_is_caught() -> None:
    report = audit(
        resolution=7,
        epsilon=1.0,
        suppress_below=False,
        runs=200,
        release_fn=_no_bounding,
        alpha=ALPHA,
    )
    # the adversary's 50 rows add 25 to each of its two cells (noise scale 1): every
    # threshold between the two count distributions separates all runs, P(miss) ≈ 1e-5 per
    # run; 100 / 100 vs 0 / 100 evaluation runs give ε_lb = ln(0.865 / 0.135) = 1.86
    assert not report.passed, str(report)
    assert report.epsilon_lb > 1.4
    assert report.best is not None and report.best.family == "count"


def _half_noise_release(points: Any, **kwargs: Any) -> dpmap.Release:
    """BROKEN on purpose: a release at 2ε while the audit holds it to the planned ε."""
    return dpmap.release(points, **{**kwargs, "epsilon": 2 * kwargs["epsilon"]})


@pytest.mark.slow
def test_release_with_half_the_noise_is_caught_end_to_end() -> None:
    report = audit(
        resolution=7,
        epsilon=1.0,
        suppress_below=False,
        runs=900,
        selection_fraction=1 / 3,
        adversary_cells=1,  # the adversary always lands in the same (empty) cell
        release_fn=_half_noise_release,
        alpha=ALPHA,
    )
    # true ε = 2, one family (count): 600 evaluation runs of the optimal event
    # (p = 0.881 vs 0.119) give ε_lb > 1 except with probability 4e-9 (exact binomial
    # calculation); the median is ≈ 1.45
    assert not report.passed, str(report)
    assert any("manifests state ε = 2" in n for n in report.notes)


MODES = {
    "flat-laplace-sum-suppressed": ({"bounds": (0, 2000), "max_records_per_cell": 2}, 150),
    "flat-hash-selection": ({"selection": "hash", "seed": 11, "max_cells": 3}, 100),
    "gaussian-sum": ({"mechanism": "gaussian", "delta": 1e-6, "bounds": (0, 500)}, 100),
    "discovery-laplace": ({"delta": 1e-6, "discovery": True}, 150),
    "discovery-gaussian-sum": (
        {"mechanism": "gaussian", "delta": 1e-5, "discovery": True, "bounds": (-10, 10)},
        100,
    ),
    "hierarchical": ({"resolution": [5, 6, 7], "bounds": (0, 100)}, 100),
    "hierarchical-gaussian-integers": (
        {"resolution": [6, 7], "mechanism": "gaussian", "delta": 1e-6, "integers": True},
        100,
    ),
    "adaptive": ({"adaptive": True, "max_cells": 2}, 150),
    "adaptive-sum": ({"adaptive": True, "adaptive_from": 5, "bounds": (0, 10)}, 100),
    "adaptive-internal-sum": ({"adaptive": True, "internal_share": 0.4, "bounds": (0, 10)}, 100),
    "adaptive-grid-sum": ({"adaptive": "grid", "max_cells": 2, "bounds": (0, 10)}, 100),
}


@pytest.fixture
def cached_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan each distinct release once (the noise is still drawn afresh in every release).

    A plan is a deterministic function of the public parameters (checked by
    test_privacy_maps.py::test_plan_is_deterministic_and_public), but calibrating a Gaussian
    or hierarchical plan takes 0.1–1.4 s (a bisection over OpenDP's privacy maps), which
    would dominate hundreds of releases. Binning, bounding, noise and post-processing run
    exactly as in production; test_gaussian_end_to_end_without_caching runs a few releases
    without the cache.
    """
    module = sys.modules["dpmap.release"]
    cache = functools.lru_cache(maxsize=None)(module.plan_noise)
    monkeypatch.setattr(
        module, "plan_noise", lambda spec, *, discovery=False: cache(spec, discovery=discovery)
    )


def _run_mode(params: dict[str, Any], runs: int) -> AuditReport:
    params = {"resolution": 7, "epsilon": 1.0, **params}
    return audit(runs=runs, alpha=ALPHA, **params)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_is_not_flagged(mode: str, cached_plans: None) -> None:
    params, runs = MODES[mode]
    report = _run_mode(params, runs)
    _not_flagged(report)
    assert report.level == "release" and report.runs == runs
    assert ("sum" in {f.family for f in report.families}) == ("bounds" in params)


@pytest.mark.slow
def test_gaussian_end_to_end_without_caching() -> None:
    _not_flagged(_run_mode({"mechanism": "gaussian", "delta": 1e-6}, 12))


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
    d = report.as_dict()
    assert d["claimed_epsilon"] == pytest.approx(0.7)
    assert d["runs"] == 12 and d["selection_runs"] + d["evaluation_runs"] == 12
    assert d["passed"] is True
    assert set(d) >= {"epsilon_lb", "best_event", "families", "seconds", "adversary", "dataset"}
    for fam in d["families"]:
        assert 0 <= fam["hits_likelier"] <= fam["runs"]
        assert fam["epsilon_lb"] >= 0
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
    code = main(
        [
            "audit",
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
    assert d["parameters"]["bounds"] == [0, 100]


def test_cli_audit_exits_1_when_the_release_leaks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = sys.modules["dpmap.release"].release
    monkeypatch.setattr(
        sys.modules["dpmap.release"],
        "release",
        lambda points, **kw: real(points, **{**kw, "person": None}),
    )
    code = main(["audit", "--resolution", "7", "--epsilon", "1", "--runs", "120", "--no-suppress"])
    out = capsys.readouterr().out
    # as test_release_without_contribution_bounding_is_caught, with 60 evaluation runs:
    # 60 / 60 vs 0 / 60 gives ε_lb = ln(0.785 / 0.215) = 1.30 > 1
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
