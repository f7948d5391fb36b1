"""``people=True``: distinct persons per row beside the record count.

* the privacy map of the new statistic, hand-derived (scale from its sensitivity and share);
* the budget split (``people_share`` of what the histogram leaves);
* releases (flat, zones, categories) publish ``people`` and ``people_moe``, hidden with the row;
* the command line option, and bad input refused in one line (exit 2, no file);
* a statistical test of the people margins' coverage, calibrated to < 1e-8 false failures.

The bounding property tests (one person inserted first/middle/last moves the people counts
by at most the declared sensitivity, the reference, the sensitivity attained) are in
tests/test_bounding.py; engine parity in tests/engines (datasets in tests/parity.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
import pytest

import dpmap
from common import REGION, debtors
from dpmap import grid
from dpmap._privacy.noise import plan_noise
from dpmap.cli.app import main
from dpmap.designs import DesignOptions, design_for
from dpmap.engines import local
from dpmap.errors import SpecError
from dpmap.spec import ReleaseSpec
from parity import clustered, parity_zones

dp.enable_features("contrib")

VEC_I64 = dp.vector_domain(dp.atom_domain(T="i64"))
REL = 1e-12


def spec_of(**kw: Any) -> ReleaseSpec:
    base: dict[str, Any] = {
        "resolution": 7,
        "epsilon": 1.0,
        "person": "pid",
        "max_cells": 2,
        "max_records_per_cell": 3,
        "people": True,
    }
    return ReleaseSpec(**{**base, **kw})


# =========================================================================================
# privacy map and budget split


def hand_shares(
    value: bool, people_share: float, count_share: float, hist: float | None
) -> dict[str, float]:
    """The split stated in the docs: the histogram takes its share of ε, people its share of
    what is left, count and sum split the rest."""
    h = hist or 0.0
    p = people_share * (1 - h)
    rest = 1 - h - p
    out = (
        {"count": count_share * rest, "sum": (1 - count_share) * rest} if value else {"count": rest}
    )
    out["people"] = p
    if hist:
        out["hist"] = h
    return out


CASES = [
    # (l0, linf, categories, value, people_share, count_share, eps)
    (1, 2, None, False, 0.5, 0.5, 1.0),
    (3, 2, None, True, 0.3, 0.6, 0.7),
    (2, 3, ("a", "b"), True, 0.5, 0.5, 2.0),  # k = 3 with "other": min(3, 3) = 3
    (4, 5, ("a",), False, 0.8, 0.5, 0.1),  # k = 2: min(5, 2) = 2
]


@pytest.mark.parametrize(("l0", "linf", "cats", "value", "pshare", "cshare", "eps"), CASES)
def test_laplace_people_privacy_map(
    l0: int, linf: int, cats: Any, value: bool, pshare: float, cshare: float, eps: float
) -> None:
    """scale = t / (share·ε) with t = L0·min(L∞, k); OpenDP's map gives back share·ε."""
    spec = spec_of(
        max_cells=l0, max_records_per_cell=linf, epsilon=eps, people_share=pshare,
        count_share=cshare, category="c" if cats else None, categories=cats,
        value="v" if value else None, bounds=(0, 100) if value else None,
    )  # fmt: skip
    k = len(cats) + 1 if cats else 1
    t = l0 * min(linf, k)
    shares = hand_shares(value, pshare, cshare, None)
    assert spec.shares() == pytest.approx(shares, rel=1e-15)
    plan = plan_noise(spec)
    st = plan.statistics["people"]
    assert (st.sensitivity.l0, st.sensitivity.l1, st.sensitivity.linf) == (t, t, 1)
    expected_scale = t / (shares["people"] * eps)
    assert st.scale == pytest.approx(expected_scale, rel=REL)
    assert st.scale >= expected_scale * (1 - 1e-15)  # never less noise than derived
    hand = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=st.scale)
    assert st.epsilon == float(hand.map(t))
    assert st.epsilon == pytest.approx(shares["people"] * eps, rel=REL)
    assert plan.epsilon <= eps and plan.epsilon == pytest.approx(eps, rel=REL)
    assert plan.epsilon == pytest.approx(sum(s.epsilon for s in plan.statistics.values()), rel=REL)
    assert st.moe95 == dp.discrete_laplacian_scale_to_accuracy(scale=st.scale, alpha=0.05)


@pytest.mark.parametrize("delta", [1e-6, 1e-9])
def test_gaussian_people_privacy_map(delta: float) -> None:
    """ρ_people = t / (2σ²) with L2 = √t, and the people's ρ is its share of the total ρ."""
    spec = spec_of(max_cells=3, max_records_per_cell=2, mechanism="gaussian", delta=delta)
    t = 3  # L0·min(L∞, k) = 3·min(2, 1) without categories
    plan = plan_noise(spec)
    st = plan.statistics["people"]
    assert st.sensitivity.l2 == pytest.approx(math.sqrt(t), rel=1e-15)
    assert st.rho == pytest.approx(t / (2 * st.scale**2), rel=REL)
    assert st.rho == pytest.approx(0.5 * plan.rho, rel=REL)  # people_share 0.5
    hand = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=st.scale)
    assert st.rho == pytest.approx(float(hand.map(math.sqrt(t))), rel=REL)
    assert plan.epsilon <= 1.0


def test_shares_with_a_histogram_and_without_people_are_unchanged() -> None:
    """people_share is taken from what the histogram leaves; without people the split of
    existing releases is bit-for-bit the same."""
    kw = {"value": "v", "bounds": (0, 1000), "quantiles": [0.5], "histogram_share": 0.4}
    with_people = spec_of(**kw, people_share=0.25, count_share=0.7)
    assert with_people.shares() == pytest.approx(hand_shares(True, 0.25, 0.7, 0.4), rel=1e-15)
    assert sum(with_people.shares().values()) == pytest.approx(1.0, rel=1e-15)
    without = ReleaseSpec(resolution=7, epsilon=1.0, count_share=0.7, **kw)
    assert without.shares() == {"count": 0.7 * 0.6, "sum": (1 - 0.7) * 0.6, "hist": 0.4}
    assert ReleaseSpec(resolution=7, epsilon=1.0).shares() == {"count": 1.0}


def test_manifest_and_explain_state_split_scale_and_sensitivity() -> None:
    kw: dict[str, Any] = {"resolution": 7, "epsilon": 1.0, "person": "pid", "max_cells": 2,
                          "max_records_per_cell": 3, "people": True, "people_share": 0.4}  # fmt: skip
    rel = dpmap.release(clustered(), region=REGION, **kw)
    entry = rel.manifest["statistics"]["people"]
    assert entry["budget_share"] == pytest.approx(0.4, rel=1e-12)
    assert entry["sensitivity"] == {"l0": 2, "l1": 2, "l2": pytest.approx(math.sqrt(2)), "linf": 1}
    assert entry["scale"] == pytest.approx(2 / 0.4, rel=REL)
    assert rel.manifest["parameters"]["people"] is True
    assert rel.manifest["parameters"]["people_share"] == 0.4
    text = str(dpmap.explain(region=REGION, **kw))
    assert "people: discrete Laplace noise, scale 5," in text and "(share 0.4)" in text
    assert "people counts distinct persons" in text


# =========================================================================================
# releases


def test_flat_release_publishes_people_hidden_with_the_row(tmp_path: Path) -> None:
    rel = dpmap.release(
        clustered(), region=REGION, resolution=7, epsilon=1.0, person="pid", max_cells=2,
        max_records_per_cell=3, people=True, value="amount", bounds=(0, 2000),
    )  # fmt: skip
    cells = rel.cells
    assert {"people", "people_moe"} <= set(cells.columns)
    hidden = cells["suppressed"].to_numpy(dtype=bool)
    assert cells.loc[hidden, "people"].isna().all() and cells.loc[hidden, "people_moe"].isna().all()
    assert cells.loc[~hidden, "people"].notna().all()
    assert str(cells["people"].dtype) == "Int64" and cells["people_moe"].dtype == np.float64
    est = rel.estimates
    assert est is not None and {"people", "people_var"} <= set(est.columns)
    path = rel.to_file(tmp_path / "r.geojson", include_unbiased=True)
    back = dpmap.read_release(path)
    assert list(back.cells.columns) == list(cells.columns)
    assert back.estimates is not None
    np.testing.assert_array_equal(back.estimates["people"], est["people"])


def test_zone_release_with_categories_publishes_people() -> None:
    df = clustered()
    rel = dpmap.release(
        df, zones=parity_zones(), by="name", epsilon=1.0, person="pid", max_records_per_cell=3,
        category="creditor", categories=["bank", "utility"], people=True, suppress_below=False,
    )  # fmt: skip
    cells = rel.cells
    assert len(cells) == 5 * 3 and cells["people"].notna().all()
    assert rel.manifest["statistics"]["people"]["sensitivity"]["l1"] == 3  # L0·min(3, 3)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"resolution": [6, 7]}, "one resolution"),
        ({"adaptive": True}, "drop adaptive="),
        ({"region": None, "delta": 1e-6}, "public region"),
    ],
)
def test_designs_without_people_refuse_in_one_line(kw: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"region": REGION, "resolution": 7, "epsilon": 1.0, "person": "pid",
                            "max_records_per_cell": 3, "people": True, **kw}  # fmt: skip
    with pytest.raises(SpecError, match="people=True") as err:
        dpmap.explain(**args)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kw", "needles"),
    [
        ({"person": None}, ["person='<column>'", "people equals count"]),
        ({"max_records_per_cell": 1}, ["max_records_per_cell=1", "max_records_per_cell > 1"]),
        ({"people": "yes"}, ["'yes'", "True or False"]),
        ({"people_share": 1.0}, ["people_share", "1.0", "strictly between 0 and 1"]),
        ({"people_share": "x"}, ["people_share", "'x'"]),
    ],
)
def test_bad_people_parameters_one_line(kw: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        spec_of(**kw)
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_cli_people_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clustered().to_csv(tmp_path / "points.csv", index=False)
    feature = {"type": "Feature", "properties": {}, "geometry": REGION.__geo_interface__}
    (tmp_path / "region.geojson").write_text(json.dumps(feature))
    base = ["release", str(tmp_path / "points.csv"), "--region", str(tmp_path / "region.geojson"),
            "--resolution", "7", "--epsilon", "1", "--person", "pid",
            "--out", str(tmp_path / "map.geojson")]  # fmt: skip
    code = main([*base, "--max-records-per-cell", "3", "--people", "--people-share", "0.4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    manifest = json.loads((tmp_path / "map.manifest.json").read_text())
    assert manifest["statistics"]["people"]["budget_share"] == pytest.approx(0.4)
    props = json.loads((tmp_path / "map.geojson").read_text())["features"][0]["properties"]
    assert "people" in props and "people_moe" in props
    # bad input: one line, exit 2, no traceback, no file
    (tmp_path / "map.geojson").unlink()
    (tmp_path / "map.manifest.json").unlink()
    code = main([*base, "--people"])
    out = capsys.readouterr()
    assert code == 2
    assert "--max-records-per-cell 1" in out.err and "drop --people" in out.err
    assert "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == 1
    assert not (tmp_path / "map.geojson").exists() and not (tmp_path / "map.manifest.json").exists()


# =========================================================================================
# statistics: the people margins cover as stated


def test_people_margins_cover_at_their_exact_nominal_rate() -> None:
    """|noisy people − true people| ≤ people_moe on each row with the exact probability of
    the discrete Laplace noise, P(|X| ≤ a) = 1 − 2q^(⌊a⌋+1)/(1+q), q = e^(−1/scale) (≥ 95%).

    Data: 400 persons, 3 records each in their home cell (20 cells): people 20, count 60 per
    cell, so a release that counted records as people would miss by 40 (> the margin). The
    noise is drawn R times on the engine's fixed aggregates through the flat design; the n =
    20·R occupied rows are independent Bernoulli trials. Hoeffding: P(|p̂ − p| ≥ t) ≤
    2·exp(−2nt²) = 1e-8 for t = √(ln(2e8)/(2n)) (0.0155 with R = 2000): two-sided, so too
    little noise (coverage → 1) fails as well as a wrong centre or too much noise.
    """
    df = debtors(400, 3, 20, spread=False)
    spec = ReleaseSpec(resolution=7, epsilon=1.0, person="pid", max_records_per_cell=3,
                       people=True, suppress_below=False)  # fmt: skip
    design = design_for(spec, grid.to_region(REGION), DesignOptions())
    agg = local.bound_and_aggregate(df, spec, design.domain)
    truth = agg.densify(design.domain, 1)["people"]
    occupied = truth > 0
    assert occupied.sum() == 20 and set(truth[occupied].tolist()) == {20}
    runs = 2000
    covered = 0
    for _ in range(runs):
        est = design.measure(agg).estimates
        assert est.people is not None and est.people_moe is not None
        covered += int((np.abs(est.people[occupied] - truth[occupied]) <= est.people_moe).sum())
    n = runs * int(occupied.sum())
    st = design.noise.statistics["people"]
    q = math.exp(-1.0 / st.scale)
    p = 1 - 2 * q ** (math.floor(st.moe95) + 1) / (1 + q)
    assert p >= 0.95
    t = math.sqrt(math.log(2e8) / (2 * n))
    assert abs(covered / n - p) <= t, (covered / n, p, t)


def test_people_do_not_depend_on_a_value_histogram() -> None:
    """With quantiles the engines group per (key, leaf): a person with records in several
    leaves of one row is still one person of that row (same bounding, same people)."""
    kw: dict[str, Any] = {"value": "amount", "bounds": (0, 2000), "selection": "hash", "seed": 5}
    plain, hist = spec_of(**kw), spec_of(**kw, quantiles=[0.5])
    domain = grid.region_to_cells(grid.to_region(REGION), 7)
    a = local.bound_and_aggregate(clustered(), plain, domain)
    b = local.bound_and_aggregate(clustered(), hist, domain)
    assert a.people is not None and b.people is not None
    np.testing.assert_array_equal(a.people, b.people)
    assert (b.people < b.count).any()
