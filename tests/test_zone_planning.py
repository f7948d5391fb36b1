"""Planning and auditing a zone release: ``plan_epsilon(zones=...)``, ``plan_resolution``'s
refusal, and ``audit(zones=True)`` (honest: not flagged; broken: flagged).

The audit tests reuse tests/test_audit.py's mutations (¼ of the noise, no bounding; both
monkeypatched, never in src) and its calibration: a zone release has exactly the flat
design's noise and bounds, so the flat mode's run count (450 runs, 360 evaluation runs)
gives the same power (see ``MODES`` there).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

import dpmap
from dpmap import SpecError
from dpmap.auditing import AuditReport, audit
from parity import parity_zones
from test_audit import (  # noqa: F401 - the fixtures are used by name (usefixtures)
    ALPHA,
    DATA_SEED,
    NO_BOUNDING_RUNS,
    _flagged,
    _not_flagged,
    no_bounding,
    quarter_noise,
)

ZONES = parity_zones()
VALUE = {"person": "pid", "value": "amount", "bounds": (0, 50_000)}

# ------------------------------------------------------------------------- plan_epsilon


@pytest.mark.parametrize(
    ("statistic", "target", "extra"),
    [
        ("count", 5.0, {}),
        ("sum", 40_000.0, {}),
        ("count", 5.0, {"quantiles": [0.25, 0.5, 0.75]}),
        ("count", 3.0, {"mechanism": "gaussian", "delta": 1e-6}),
    ],
)
def test_plan_epsilon_per_zone_meets_the_target_and_no_less(
    statistic: str, target: float, extra: dict[str, Any]
) -> None:
    """The planned ε gives a zone margin ≤ the target (as explain plans the release) and
    a slightly smaller ε does not: the smallest ε, to ``rtol``."""
    plan = dpmap.plan_epsilon(
        target_moe=target, statistic=statistic, zones=ZONES, by="name", **VALUE, **extra
    )
    assert plan.resolution is None and plan.zones == len(ZONES) and plan.by == "name"
    assert plan.moe <= target

    def margin(eps: float) -> float:
        ex = dpmap.explain(zones=ZONES, by="name", epsilon=eps, **VALUE, **extra)
        return float(ex.plan.statistics[statistic].moe95)

    assert margin(plan.epsilon) <= target < margin(plan.epsilon * (1 - 1e-4))
    text = str(plan)
    assert f"on each zone's {statistic}" in text and "5 public zones named by 'name'" in text
    assert plan.as_dict()["resolution"] is None


def test_a_zone_plans_like_one_cell_and_the_histogram_takes_its_share() -> None:
    """Same sensitivities as the flat design: the ε for ±5 per zone is the ε for ±5 per
    cell; with quantiles the count gets half of ε (histogram_share 0.5), so ε doubles."""
    per_zone = dpmap.plan_epsilon(target_moe=5, zones=ZONES, by="name", **VALUE)
    per_cell = dpmap.plan_epsilon(target_moe=5, resolution=7, **VALUE)
    assert per_zone.epsilon == pytest.approx(per_cell.epsilon, rel=1e-5)
    with_q = dpmap.plan_epsilon(target_moe=5, zones=ZONES, by="name", quantiles=[0.5], **VALUE)
    assert with_q.epsilon == pytest.approx(2 * per_zone.epsilon, rel=1e-5)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"resolution": 6}, "zones= and resolution=6 exclude each other"),
        ({"resolution": None}, "zones= and resolution=None exclude each other"),
        ({"area_km2": 100}, "drop them"),
        ({"expected_total": 100}, "drop them"),
        ({"epsilon": 1}, "do not pass epsilon="),
        ({"by": "nom"}, "the zones have no column 'nom'"),
        ({"by": None}, "zones= needs by="),
    ],
)
def test_plan_epsilon_with_zones_refuses_what_does_not_apply(
    kw: dict[str, Any], words: str
) -> None:
    args: dict[str, Any] = {"target_moe": 5, "zones": ZONES, "by": "name", **VALUE, **kw}
    with pytest.raises(SpecError, match=words) as err:
        dpmap.plan_epsilon(**args)
    assert "\n" not in str(err.value)


def test_by_without_zones_and_plan_resolution_with_zones_are_refused() -> None:
    with pytest.raises(SpecError, match="names the zones' column"):
        dpmap.plan_epsilon(target_moe=5, by="name", **VALUE)
    with pytest.raises(SpecError, match="a zone release has none") as err:
        dpmap.plan_resolution(target_moe=5, epsilon=1, area_km2=100, zones=ZONES, by="name")
    assert "plan_epsilon(target_moe=..., zones=..., by=...)" in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------- audit

#: the flat mode's parameters and runs (tests/test_audit.py MODES), as a zone release
ZONE_MODE = {"bounds": (0, 2000), "max_records_per_cell": 2, "count_share": 0.9}
ZONE_RUNS = 450


def _run_zones(runs: int = ZONE_RUNS, **params: Any) -> AuditReport:
    report = audit(zones=True, runs=runs, alpha=ALPHA, data_seed=DATA_SEED, epsilon=1.0, **params)
    assert report.mode.startswith("zones") and report.runs == runs
    assert report.can_detect, str(report)
    assert "each cell released as a zone" in report.dataset
    return report


def test_audit_zones_reads_zone_rows_and_states_the_claim() -> None:
    report = audit(zones=True, epsilon=1.0, runs=40, bounds=(0, 100), data_seed=1)
    assert report.claimed_epsilon == pytest.approx(1.0) and not report.notes
    assert {f.family for f in report.families} >= {"count", "sum"}
    assert report.as_dict()["parameters"]["zones"].startswith("the 7 cells")
    assert math.isfinite(report.epsilon_lb)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"zones": True, "resolution": 7}, "not H3 cells; drop the resolution"),
        ({"zones": ZONES}, "zones must be True or False"),
        ({"zones": True, "discovery": True, "delta": 1e-6}, "publishes every zone"),
        ({"zones": True, "by": "name"}, "does not take ['by']"),
        ({"zones": True, "level": "mechanism"}, "level='mechanism'"),
    ],
)
def test_bad_zone_audits_are_one_line_errors(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as err:
        audit(epsilon=1.0, runs=8, **kw)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
@pytest.mark.parametrize("extra", [{}, {"quantiles": [0.5]}], ids=["count-sum", "quantiles"])
def test_audit_zones_honest_is_not_flagged(extra: dict[str, Any]) -> None:
    """With quantiles a release takes ~4× longer (the histogram's columns); 150 runs (120
    evaluation runs, ceiling ε ≈ 1.67 > 1) are enough to show no false alarm."""
    _not_flagged(_run_zones(runs=150 if extra else ZONE_RUNS, **ZONE_MODE, **extra))


@pytest.mark.slow
@pytest.mark.usefixtures("quarter_noise", "cached_plans")
def test_audit_zones_with_a_quarter_of_the_noise_is_flagged() -> None:
    _flagged(_run_zones(**ZONE_MODE))


@pytest.mark.slow
@pytest.mark.usefixtures("no_bounding", "cached_plans")
def test_audit_zones_without_bounding_is_flagged() -> None:
    """Every run separates (199 records in one zone), so the fewest runs whose ceiling
    exceeds the claim show the same power (``NO_BOUNDING_RUNS`` in tests/test_audit.py)."""
    report = _run_zones(runs=NO_BOUNDING_RUNS, **ZONE_MODE)
    _flagged(report)
    assert report.epsilon_lb > 0.95 * report.epsilon_ceiling, str(report)


@pytest.fixture
def heavy_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    """BROKEN on purpose, in the value histogram only: every kept record weighs 100 in it
    (as if the histogram kept 100 of a person's records where the bounds keep one); the
    counts, sums, plan and claim are unchanged."""
    from dpmap.designs import distribution

    real = distribution.with_histogram

    def heavy(*args: Any) -> dict[str, Any]:
        out = real(*args)
        if "hist" in out:
            out = {**out, "hist": out["hist"] * 100}
        return out

    monkeypatch.setattr(distribution, "with_histogram", heavy)


#: the histogram audits: 150 runs (120 evaluation runs: ceiling ε ≈ 1.67 > 1); two records
#: per person and zone kept, so that bounding keeps every background record (no selection
#: randomness, which the broken histogram would magnify too), and no suppression (the
#: audit's zones hold 20 records, near the threshold: hidden rows hide their bands too)
HIST_MODE = {
    "bounds": (0, 2000),
    "max_records_per_cell": 2,
    "suppress_below": False,
    "quantiles": [0.5],
    "value_bands": [0, 1000, 2000],
}


@pytest.mark.slow
@pytest.mark.usefixtures("heavy_histogram", "cached_plans")
def test_audit_sees_a_leak_in_the_value_histogram_alone() -> None:
    """The adversary's two kept records (clamped to 2000) land in band_1000_2000 of its
    zone: with the broken histogram that band moves by 200 instead of 2, far beyond its
    noise, which only the band and quantile observations can see."""
    report = _run_zones(runs=150, **HIST_MODE)
    _flagged(report)
    assert "band_1000_2000" in str(report) or "q50" in str(report), str(report)


@pytest.mark.slow
@pytest.mark.usefixtures("cached_plans")
def test_audit_of_the_value_histogram_honest_is_not_flagged() -> None:
    _not_flagged(_run_zones(runs=150, **HIST_MODE))


def test_cli_audit_zones(capsys: pytest.CaptureFixture[str]) -> None:
    from dpmap.cli import main

    assert main(["audit", "--zones", "--epsilon", "1", "--runs", "16", "--bounds", "0", "100"]) == 0
    out = capsys.readouterr().out
    assert "dpmap audit — zones" in out and "each cell released as a zone" in out
    assert main(["audit", "--zones", "--resolution", "7", "--epsilon", "1", "--runs", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpmap: error:") and err.count("\n") == 1
    assert "not H3 cells; drop the resolution" in err
