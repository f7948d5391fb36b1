"""The continual release of a panel: ``release(..., running_totals=True, through=, previous=)``.

What is checked here:

* the privacy map of the planned measurement, exactly: the node vector's L1 (L2) follows
  from the per-period bounds (``max_cells``, not ``max_cells × max_periods``) times the tree
  factor of ``max_periods`` periods, enumerated by hand, and a hand-built OpenDP measurement
  gives the plan's ε (δ);
* the bound under one extra person with records in every period and far too many cells and
  records: the change of the exact node vector is within the planned sensitivities, and it
  lies only in the nodes over the person's EARLIEST ``max_periods`` periods;
* the margins: exact ones against an independent convolution, and the coverage of every
  period's value and running total by simulation with OpenDP's noise (calibrated below);
* monthly publication: each month extends the previous release, earlier published rows
  never change, the ledger is charged once for the whole horizon;
* bad input: one-line errors naming the value and the fix.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest
import shapely

import dpmap
from common import MONTHS, REGION, RESOLUTION, cell_centre, interior_cells, panel_spec, vector_i64
from dpmap import SpecError
from dpmap.designs import DesignOptions, design_for
from dpmap.designs.continual import measure_continual, node_totals
from dpmap.designs.continual_release import (
    ContinualRelease,
    exact_margin,
    period_margins,
    weighted_margin,
)
from dpmap.engines import local
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec

dp.enable_features("contrib")

DOMAIN = region_to_cells(to_region(REGION), RESOLUTION)
CELLS = interior_cells(6)
VEC_I64 = vector_i64()


def spec_of(**kw: Any) -> ReleaseSpec:
    return panel_spec(**{"max_periods": 2, "running_totals": True, **kw})


def planned(spec: ReleaseSpec, **options: Any) -> ContinualRelease:
    design = design_for(spec, to_region(REGION), DesignOptions(**options))
    assert isinstance(design, ContinualRelease)
    return design


def hand_factors(nodes: list[tuple[int, int]], periods: int, m: int) -> tuple[int, int]:
    """max over sets S of ≤ m periods of Σ_n |n ∩ S| and Σ_n |n ∩ S|², by enumeration."""
    f1 = f2 = 0
    for k in range(1, m + 1):
        for s in itertools.combinations(range(periods), k):
            c = [sum(lo <= p < hi for p in s) for lo, hi in nodes]
            f1, f2 = max(f1, sum(c)), max(f2, sum(x * x for x in c))
    return f1, f2


# =========================================================================================
# privacy map


@pytest.mark.parametrize(
    ("m", "c", "r", "bounds"), [(1, 1, 1, None), (2, 2, 3, (-7, 5)), (6, 3, 1, (0, 1000))]
)
def test_laplace_privacy_map_of_the_plan(m: int, c: int, r: int, bounds: Any) -> None:
    value = {"value": "amount", "bounds": bounds} if bounds else {}
    spec = spec_of(max_periods=m, max_cells=c, max_records_per_cell=r, **value)
    design = planned(spec)
    nodes = [tuple(n) for n in design.tree_plan.nodes]
    f1, _ = hand_factors(nodes, 6, m)
    mag = 1 if bounds is None else max(abs(b) for b in bounds)
    l1 = {"count": c * r * f1} | ({"sum": c * r * mag * f1} if bounds else {})
    shares = {"count": 1.0} if bounds is None else {"count": 0.5, "sum": 0.5}
    hand = []
    for stat, st in design.noise.statistics.items():
        assert st.sensitivity.l1 == l1[stat], stat
        assert st.scale == pytest.approx(l1[stat] / (shares[stat] * 1.0), rel=1e-12)
        chain = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=st.scale)
        hand.append(float(chain.map(l1[stat])))
    assert design.noise.epsilon == pytest.approx(sum(hand), rel=1e-12)
    assert design.noise.epsilon <= 1.0


def test_gaussian_privacy_map_of_the_plan() -> None:
    spec = spec_of(max_periods=3, max_cells=2, max_records_per_cell=2, mechanism="gaussian",
                   delta=1e-6)  # fmt: skip
    design = planned(spec)
    nodes = [tuple(n) for n in design.tree_plan.nodes]
    _, f2 = hand_factors(nodes, 6, 3)
    st = design.noise.statistics["count"]
    l2 = math.sqrt(2 * 2 * 2 * f2)
    assert st.sensitivity.l2 == pytest.approx(l2, rel=1e-15)
    g = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=st.scale)
    hand = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(g), 1e-6)
    eps, delta = hand.map(l2)
    assert design.noise.epsilon == pytest.approx(float(eps), rel=1e-9) and eps <= 1.0
    assert design.noise.delta == float(delta)


# =========================================================================================
# one extra person, earliest periods


def register(n: int = 200) -> pd.DataFrame:
    rows = []
    for i in range(n):
        lat, lng = cell_centre(CELLS[i % 4])
        for month in (1 + i % 6, 1 + (i + 2) % 6, 1 + (i + 3) % 6):
            rows.append({"lat": lat, "lng": lng, "pid": f"p{i}", "amount": 10.0 * (i % 50),
                         "date": pd.Timestamp(2026, month, 3 + i % 20)})  # fmt: skip
    return pd.DataFrame(rows)


def adversary() -> pd.DataFrame:
    """Records in every month (latest first in the file), 5 cells, 4 records each, huge values."""
    rows = []
    for month in range(6, 0, -1):
        for cell in CELLS[:5]:
            lat, lng = cell_centre(cell)
            for k in range(4):
                rows.append({"lat": lat, "lng": lng, "pid": "extra", "date":
                             pd.Timestamp(2026, month, 1 + k), "amount": 1e12 * (-1) ** k})  # fmt: skip
    return pd.DataFrame(rows)


def node_vectors(df: pd.DataFrame, spec: ReleaseSpec, design: ContinualRelease) -> dict[str, Any]:
    agg = local.bound_and_aggregate(df, spec, DOMAIN)
    dense = agg.densify(DOMAIN, spec.rows_per_key)
    out = {}
    for s, v in dense.items():
        mat = v.reshape(len(DOMAIN), 6, -1).transpose(0, 2, 1).reshape(-1, 6)
        out[s] = node_totals(mat, 6, design.tree_plan.tree)
    return out


@pytest.mark.parametrize("place", ["first", "last", "shuffled"])
def test_the_extra_person_is_within_the_node_sensitivity(place: str) -> None:
    spec = spec_of(max_periods=2, max_cells=2, max_records_per_cell=2, value="amount",
                   bounds=(-500, 2000), selection="hash", seed=5)  # fmt: skip
    design = planned(spec)
    base, extra = register(), adversary()
    both = {"first": [extra, base], "last": [base, extra], "shuffled": [base, extra]}[place]
    d2 = pd.concat(both).reset_index(drop=True)
    if place == "shuffled":
        d2 = d2.iloc[np.random.default_rng(3).permutation(len(d2))].reset_index(drop=True)
    a, b = node_vectors(base, spec, design), node_vectors(d2, spec, design)
    nodes = design.tree_plan.nodes
    for stat, st in design.noise.statistics.items():
        change = (b[stat] - a[stat]).astype(np.float64)
        assert np.abs(change).sum() <= st.sensitivity.l1
        assert math.sqrt((change**2).sum()) <= st.sensitivity.l2 * (1 + 1e-12)
        # only the nodes over the earliest two months (January, February) moved
        moved = {nodes[i] for i in np.flatnonzero(np.abs(change).sum(axis=0))}
        assert moved and all(lo < 2 for lo, _hi in moved), moved
    # the count's L1 is fully used: 2 cells × 2 records in each of 2 months, over the nodes
    f1 = sum(sum(lo <= p < hi for p in (0, 1)) for lo, hi in nodes)
    assert np.abs(b["count"] - a["count"]).sum() == 2 * 2 * f1


# =========================================================================================
# margins


def convolved(pmf: np.ndarray, k: int) -> np.ndarray:
    out = np.array([1.0])
    for _ in range(k):
        out = np.convolve(out, pmf)
    return out


@pytest.mark.parametrize(("mech", "scale"), [("laplace", 5.0), ("laplace", 1.3), ("gaussian", 4.0)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_exact_margins_are_the_smallest_that_cover(mech: str, scale: float, k: int) -> None:
    """Against a direct convolution (np.convolve, not the FFT) of the node pmf on ±60 scales:
    the margin covers ≥ 95% and one less covers < 95%."""
    x = np.arange(-int(60 * scale), int(60 * scale) + 1)
    logp = -np.abs(x) / scale if mech == "laplace" else -(x**2) / (2 * scale**2)
    pmf = np.exp(logp) / np.exp(logp).sum()
    dist = convolved(pmf, k)
    centre = len(dist) // 2
    m = exact_margin(mech, scale, k)
    assert m is not None and m == int(m)

    def cover(mm: int) -> float:
        return float(dist[centre - mm : centre + mm + 1].sum())

    assert cover(int(m)) >= 0.95 > cover(int(m) - 1)
    assert weighted_margin(mech, scale, np.array([1.0] * k + [0.0, -0.0])) == m


def coverage_check(design: ContinualRelease, rows: int, exact: bool) -> None:
    """Every period's value and running total, on ``rows`` rows of pure noise (OpenDP's).

    Per period, the covered share of n rows is Binomial(n, p)/n. Exact margins: p is known
    (the exact coverage, from an independent np.convolve), so the check is two-sided,
    |share − p| ≤ 6.5·√(p(1−p)/n): a correct margin fails with probability < 8.1e-11 per
    check, and with 2 × 6 checks per call < 1e-9. Chernoff margins are bounds with no
    nominal value: share ≥ 0.95 − 6.5·√(0.95·0.05/n), one-sided.
    """
    plan = design.tree_plan
    est = measure_continual(plan, {"count": np.zeros((rows, 6), np.int64)})["count"]
    m = period_margins(plan, "count", 6)
    scale = design.noise.statistics["count"].scale
    w = dpmap.designs.continual.estimator_weights(6, plan.tree, plan.estimator)
    d = np.diff(w, axis=0, prepend=np.zeros((1, w.shape[1])))
    for name, values, margins, weights in (
        ("value", est.values, m["value0.95"], d),
        ("total", est.totals, m["total0.95"], w),
    ):
        for t in range(6):
            share = float((np.abs(values[:, t]) <= margins[t] + 1e-9).mean())
            if exact:
                k = int(np.count_nonzero(weights[t]))
                x = np.arange(-int(60 * scale), int(60 * scale) + 1)
                pmf = np.exp(-np.abs(x) / scale)
                dist = convolved(pmf / pmf.sum(), k)
                c, mm = len(dist) // 2, int(margins[t])
                p = float(dist[c - mm : c + mm + 1].sum())
                assert p >= 0.95
                assert abs(share - p) <= 6.5 * math.sqrt(p * (1 - p) / rows), (name, t, share, p)
            else:
                assert share >= 0.95 - 6.5 * math.sqrt(0.95 * 0.05 / rows), (name, t, share)


@pytest.mark.slow
def test_exact_margins_cover_as_stated_with_opendp_noise() -> None:
    design = planned(spec_of(max_periods=2))
    assert (design.tree_plan.tree, design.tree_plan.estimator) == ("binary", "prefix")
    coverage_check(design, 100_000, exact=True)


@pytest.mark.slow
def test_chernoff_margins_cover_at_least_95_percent() -> None:
    design = planned(spec_of(max_periods=1, epsilon=2.0))
    plan = design.tree_plan
    if plan.estimator == "prefix":  # the least-squares weights are not ±1: Chernoff
        design.tree_plan = dpmap.designs.continual.plan_continual(
            plan.spec, 6, 1, tree="full", estimator="ls"
        )
        design.noise = design.tree_plan.noise
    coverage_check(design, 50_000, exact=False)


# =========================================================================================
# monthly publication


def month_points() -> pd.DataFrame:
    return register(300)


KW: dict[str, Any] = {"region": REGION, "resolution": RESOLUTION, "epsilon": 1.0,
                      "person": "pid", "time": "date", "periods": MONTHS, "max_periods": 2,
                      "value": "amount", "bounds": (0, 500), "running_totals": True,
                      "suppress_below": False}  # fmt: skip


def test_monthly_sequence_never_changes_what_was_published(tmp_path: Any) -> None:
    ledger = dpmap.Ledger.init(tmp_path / "l.sqlite", "d", epsilon=5.0)
    df = month_points()
    releases = []
    previous = None
    for i, label in enumerate(["2026-01", "2026-02", "2026-03", "2026-05", "2026-06"]):
        upto = df[df["date"] < (pd.Period(label, "M") + 1).start_time]
        rel = dpmap.release(upto, through=label, previous=previous, ledger=ledger, dataset="d",
                            **KW)  # fmt: skip
        table = rel.cells.drop(columns="geometry")
        assert set(table["period"]) == {str(p) for p in MONTHS[: MONTHS.get_loc(label) + 1]}
        for old in releases:  # every row published before is published again, unchanged
            merged = old.merge(table, on=["cell", "period"], suffixes=("", "_new"))
            assert len(merged) == len(old)
            for col in ("count", "count_to_date", "sum", "sum_to_date", "count_moe"):
                np.testing.assert_array_equal(merged[col], merged[f"{col}_new"], err_msg=col)
        releases.append(table)
        assert rel.manifest["continual"]["continued"] == (i > 0)
        previous = rel
    charged, *claims = ledger.history("d")
    assert charged.claim is None  # charged once, for the whole horizon
    assert float(charged.epsilon) == pytest.approx(1.0, rel=1e-9)
    assert previous.manifest["ledger"]["entry_id"] == charged.id
    # each continuation: an entry of ε = 0 claiming the release it extended
    froms = ["2026-01", "2026-02", "2026-03", "2026-05"]
    assert [e.claim for e in claims] == [f"continual:{charged.id}:from:{f}" for f in froms]
    assert all(e.epsilon == 0 and e.delta == 0 and e.status == "spent" for e in claims)
    assert previous.manifest["ledger"]["claim_entry_id"] == claims[-1].id
    assert float(ledger.spent("d").epsilon) <= 1.0
    # the per-period values add up to the running totals
    last = releases[-1].sort_values(["cell", "period"])
    for _cell, g in last.groupby("cell"):
        np.testing.assert_allclose(np.cumsum(g["count"].astype(float)), g["count_to_date"])


def test_a_fresh_start_charges_the_whole_horizon(tmp_path: Any) -> None:
    ledger = dpmap.Ledger.init(tmp_path / "l.sqlite", "d", epsilon=5.0)
    df = month_points()
    rel = dpmap.release(df, through="2026-03", ledger=ledger, dataset="d", **KW)
    again = dpmap.release(df, through="2026-04", ledger=ledger, dataset="d", **KW)
    assert len(ledger.history("d")) == 2
    assert not again.manifest["continual"]["continued"]
    assert rel.manifest["ledger"]["entry_id"] != again.manifest["ledger"]["entry_id"]


# =========================================================================================
# each release is extended once: the ledger records the continuation (a claim, ε = 0)


def test_a_release_is_extended_once_and_only_the_latest_is_continued(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = ledger_with(tmp_path)
    led = {"ledger": ledger, "dataset": "d"}
    df = month_points()
    march = dpmap.release(df, through="2026-03", **led, **KW)
    charged = ledger.spent("d")
    april = dpmap.release(df, through="2026-04", previous=march, **led, **KW)
    assert ledger.spent("d") == charged  # nothing more charged
    first, claim = ledger.history("d")
    assert claim.claim == f"continual:{first.id}:from:2026-03"
    assert (claim.epsilon, claim.delta, claim.status) == (0, 0, "spent")
    assert claim.details["through"] == "2026-04" and claim.fingerprint == april.fingerprint
    assert april.manifest["ledger"] == {"dataset": "d", "entry_id": first.id,
                                        "claim_entry_id": claim.id}  # fmt: skip

    noised: list[int] = []  # a refused continuation must never reach the noise
    measure = ContinualRelease.measure
    monkeypatch.setattr(ContinualRelease, "measure",
                        lambda self, agg: noised.append(1) or measure(self, agg))  # fmt: skip
    before = [e.to_dict() for e in ledger.history("d")]
    with pytest.raises(dpmap.ClaimTakenError) as e:  # march -> april a second time
        dpmap.release(df, through="2026-04", previous=march, **led, **KW)
    one_line(e, "periods after 2026-03", f"ledger entry {claim.id}", "through=2026-04")
    assert noised == [] and [e.to_dict() for e in ledger.history("d")] == before

    may = dpmap.release(df, through="2026-05", previous=april, **led, **KW)  # the latest: fine
    assert noised == [1] and may.manifest["continual"]["continued"]
    assert ledger.history("d")[-1].claim == f"continual:{first.id}:from:2026-04"
    before = [e.to_dict() for e in ledger.history("d")]
    for earlier, words in ((march, "2026-03"), (april, "2026-04")):  # skipping ahead too
        with pytest.raises(dpmap.ClaimTakenError) as e:
            dpmap.release(df, through="2026-06", previous=earlier, **led, **KW)
        one_line(e, f"periods after {words}", "through=2026-05", "not from an earlier one")
    assert noised == [1] and [e.to_dict() for e in ledger.history("d")] == before
    assert ledger.spent("d") == charged


def test_a_continuation_needs_the_ledger_that_charged_the_horizon(tmp_path: Any) -> None:
    df = month_points()
    ledger = ledger_with(tmp_path)
    march = dpmap.release(df, through="2026-03", ledger=ledger, dataset="d", **KW)
    with pytest.raises(SpecError) as e:  # no ledger: nothing could record the continuation
        dpmap.release(df, through="2026-04", previous=march, **KW)
    one_line(e, "previous=", "ledger=", "dataset=")
    unledgered = dpmap.release(df, through="2026-03", **KW)
    with pytest.raises(SpecError) as e:
        dpmap.release(df, through="2026-04", previous=unledgered, ledger=ledger, dataset="d",
                      **KW)  # fmt: skip
    one_line(e, "previous=", "without a ledger", "ledger=")
    other = dpmap.Ledger.init(tmp_path / "other.sqlite", "d", epsilon=5.0)  # same dataset name
    with pytest.raises(dpmap.BudgetError) as e:
        dpmap.release(df, through="2026-04", previous=march, ledger=other, dataset="d", **KW)
    one_line(e, "previous=", f"entry {march.manifest['ledger']['entry_id']}", "ledger")
    assert other.history("d") == [] and len(ledger.history("d")) == 1


# =========================================================================================
# bad input


def one_line(exc: pytest.ExceptionInfo[Any], *words: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for w in words:
        assert w in text, text


def test_running_totals_needs_a_panel() -> None:
    with pytest.raises(SpecError) as e:
        ReleaseSpec(resolution=7, epsilon=1.0, person="pid", running_totals=True)
    one_line(e, "running_totals=True", "time=")
    with pytest.raises(SpecError) as e:
        spec_of(running_totals="yes")
    one_line(e, "running_totals", "'yes'")
    with pytest.raises(SpecError) as e:
        spec_of(value="amount", bounds=(0, 10), quantiles=(0.5,))
    one_line(e, "quantiles=")


def test_through_and_previous_need_running_totals() -> None:
    kw = {k: v for k, v in KW.items() if k != "running_totals"}
    with pytest.raises(SpecError) as e:
        dpmap.release(month_points(), through="2026-02", **kw)
    one_line(e, "through=", "running_totals=True")


def test_through_must_be_a_period() -> None:
    with pytest.raises(SpecError) as e:
        dpmap.release(month_points(), through="2026-13", **KW)
    one_line(e, "through='2026-13'", "2026-01")
    with pytest.raises(SpecError) as e:
        dpmap.explain(**{k: v for k, v in KW.items() if k != "suppress_below"}, through="2027-01")
    one_line(e, "through='2027-01'")


def test_previous_of_another_spec_or_later_is_refused(tmp_path: Any) -> None:
    df = month_points()
    book = ledger_with(tmp_path)
    led = {"ledger": book, "dataset": "d"}
    march = dpmap.release(df, through="2026-03", **led, **KW)
    for change, words in (
        ({"epsilon": 0.5}, ("previous=", "fingerprint")),
        ({"max_periods": 3}, ("previous=", "fingerprint")),
        ({"through": "2026-02"}, ("through='2026-02'", "before")),
    ):
        with pytest.raises(SpecError) as e:
            dpmap.release(df, previous=march, **led, **{"through": "2026-04", **KW, **change})
        one_line(e, *words)
    with pytest.raises(SpecError) as e:
        dpmap.release(df, previous={"not": "a release"}, through="2026-04", **led, **KW)
    one_line(e, "previous=", "running_totals=True")
    # another ledger dataset than the one the horizon was charged to
    with pytest.raises(SpecError) as e:
        dpmap.release(df, previous=march, through="2026-04", ledger=book, dataset="other",
                      **KW)  # fmt: skip
    one_line(e, "previous=", "fingerprint")
    assert len(book.history("d")) == 1 and book.history("other") == []  # nothing recorded


def ledger_with(tmp_path: Any) -> Any:
    ledger = dpmap.Ledger.init(tmp_path / "l.sqlite", "other", epsilon=5.0)
    ledger.create("d", epsilon=5.0)
    return ledger


# =========================================================================================
# the command line


def test_command_line_release_month_by_month(tmp_path: Any, capsys: Any) -> None:
    """``--running-totals --through``, then ``--previous FILE``: the second file keeps the
    first one's rows; a bad ``--through`` or a second ``--previous`` of the same file exits 2
    with a one-line error and no file."""
    from dpmap.cli.app import main

    pts = tmp_path / "points.csv"
    month_points().to_csv(pts, index=False)
    region = tmp_path / "region.geojson"
    region.write_text(json.dumps(shapely.geometry.mapping(REGION)))
    args = ["release", pts, "--region", region, "--resolution", str(RESOLUTION),
            "--epsilon", "1", "--person", "pid", "--time", "date", "--periods",
            "2026-01..2026-06", "--max-periods", "2", "--running-totals", "--no-suppress",
            "--ledger", ledger_with(tmp_path).path, "--dataset", "d"]  # fmt: skip
    feb, mar = tmp_path / "feb.geojson", tmp_path / "mar.geojson"
    assert main([str(a) for a in [*args, "--through", "2026-02", "--out", feb]]) == 0
    code = main([str(a) for a in [*args, "--through", "2026-03", "--previous", feb, "--out", mar]])
    assert code == 0, capsys.readouterr().err
    a, b = dpmap.read_release(feb).cells, dpmap.read_release(mar).cells
    merged = a.merge(b.drop(columns="geometry"), on=["cell", "period"], suffixes=("", "_b"))
    assert len(merged) == len(a) > 0
    np.testing.assert_array_equal(merged["count_to_date"], merged["count_to_date_b"])
    assert dpmap.read_release(mar).manifest["continual"]["continued"]
    bad = tmp_path / "bad.geojson"
    code = main([str(a) for a in [*args, "--through", "2026-13", "--out", bad]])
    err = capsys.readouterr().err
    assert code == 2 and "--through 2026-13" in err and "Traceback" not in err
    assert not bad.exists()
    again = [*args, "--through", "2026-04", "--previous", feb, "--out", bad]
    assert main([str(a) for a in again]) == 2
    err = capsys.readouterr().err
    assert "already published" in err and "--through 2026-03" in err and "Traceback" not in err
    assert not bad.exists()


def test_default_suppression_hides_the_running_total_too() -> None:
    """The default rule: each row against a map-wide multiple of its own standard deviation
    (as stated in the manifest); a hidden row hides its running total too."""
    kw = {k: v for k, v in KW.items() if k != "suppress_below"} | {"epsilon": 8.0}
    rel = dpmap.release(month_points(), through="2026-04", **kw)
    assert "standard deviation" in rel.manifest["suppression"]["rule"]
    cells = rel.cells
    hidden = cells["suppressed"].to_numpy(bool)
    assert 0 < hidden.sum() < len(cells)  # most of the region is empty; the register is not
    assert cells.loc[hidden, ["count", "count_to_date", "sum_to_date"]].isna().all().all()
    assert cells.loc[~hidden, "count_to_date"].notna().all()
