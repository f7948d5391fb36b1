"""Panels over time: ``release(time=, periods=, max_periods=)``.

What is checked here (engine parity of panels is in tests/engines, the extra person inserted
first / in the middle / last in tests/test_neighbours.py):

* the privacy map, exactly: a panel's count vector has L1 = max_periods·max_cells·L∞ and
  L2 = √(max_periods·max_cells)·L∞ (sums × M), and OpenDP's map of the planned noise gives
  the requested ε (Laplace) or ρ (Gaussian) for those sensitivities;
* bounding, by property: the local engine keeps exactly what a plain-Python reference of the
  rule keeps (per person the ``max_periods`` periods whose best record has the smallest
  priority, ``max_cells`` cells in each, ``max_records_per_cell`` records per (cell,
  period)), and one added person moves the aggregates by at most the sensitivities;
* the periods are public: a period with no data has its rows, records outside every period
  or without a time are dropped and counted only in the PRIVATE diagnostics;
* the release's rows, its periods, ``at``, files, series/trend/compare on a panel;
* bad input: one-line errors, nothing spent or written.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import common
import dpmap
from common import MONTHS, REGION, RESOLUTION, cell_centre, interior_cells, region_gdf, vector_i64
from dpmap import Diagnostics, InputError, SpecError
from dpmap._privacy.bounding import sensitivities
from dpmap._privacy.noise import plan_noise
from dpmap.cli.app import main
from dpmap.engines import frames, local
from dpmap.grid import hex_to_cells, region_to_cells, to_region
from dpmap.periods import Periods, check_periods
from dpmap.spec import ReleaseSpec

DOMAIN = region_to_cells(to_region(REGION), RESOLUTION)
CELLS = interior_cells(6)
VEC_I64 = vector_i64()


def panel_spec(**kw: Any) -> ReleaseSpec:
    return common.panel_spec(**{"max_periods": 3, **kw})


def points(n_persons: int = 40, months: int = 6, seed: int = 0) -> pd.DataFrame:
    """Each person has a record in two cells in each month up to ``months``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_persons):
        for m in range(1, months + 1):
            for j in rng.choice(len(CELLS), 2, replace=False):
                lat, lng = cell_centre(CELLS[j])
                rows.append(
                    {
                        "lat": lat,
                        "lng": lng,
                        "pid": f"p{i}",
                        "amount": float(rng.integers(0, 900)),
                        "date": pd.Timestamp(2026, m, int(rng.integers(1, 28))),
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- privacy map


@pytest.mark.parametrize(
    ("max_periods", "l0", "linf", "bounds"),
    [(1, 1, 1, None), (3, 1, 1, None), (6, 2, 3, (0, 500)), (12, 3, 2, (-100, 50))],
)
def test_panel_sensitivities_and_laplace_map(
    max_periods: int, l0: int, linf: int, bounds: Any
) -> None:
    kw = {"value": "v", "bounds": bounds} if bounds else {}
    spec = panel_spec(max_periods=max_periods, max_cells=l0, max_records_per_cell=linf, **kw)
    p = min(max_periods, len(MONTHS))  # max_periods beyond the periods cannot be used
    m = max(abs(bounds[0]), abs(bounds[1])) if bounds else 1
    sens = sensitivities(spec)
    assert sens["count"].l1 == p * l0 * linf
    assert sens["count"].l2 == pytest.approx(math.sqrt(p * l0) * linf, rel=1e-15)
    assert sens["count"].l2 >= math.sqrt(p * l0) * linf  # rounded up, never down
    if bounds:
        assert sens["sum"].l1 == p * l0 * linf * m
    plan = plan_noise(spec)
    assert plan.epsilon <= 1.0 and plan.epsilon == pytest.approx(1.0, rel=1e-9)
    total = 0.0
    for stat, entry in plan.statistics.items():
        hand = dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=entry.scale)
        assert entry.epsilon == float(hand.map(sens[stat].l1))
        total += entry.epsilon
    assert plan.epsilon == pytest.approx(total, rel=1e-12)


def test_panel_gaussian_map_uses_the_square_root_of_periods() -> None:
    spec = panel_spec(max_periods=6, max_cells=2, mechanism="gaussian", delta=1e-6)
    plan = plan_noise(spec)
    entry = plan.statistics["count"]
    assert entry.sensitivity.l2 == pytest.approx(math.sqrt(12), rel=1e-15)
    hand = dp.m.make_gaussian(VEC_I64, dp.l2_distance(T="f64"), scale=entry.scale)
    assert entry.rho == pytest.approx(float(hand.map(entry.sensitivity.l2)), rel=1e-12)
    # √periods, not periods: six months cost (in σ) √6 times one month, not 6 times
    one = plan_noise(panel_spec(max_periods=1, max_cells=2, mechanism="gaussian", delta=1e-6))
    ratio = entry.scale / one.statistics["count"].scale
    assert ratio == pytest.approx(math.sqrt(6), rel=1e-6)


def test_rows_as_persons_touch_one_period() -> None:
    spec = panel_spec(person=None, max_periods=None)
    assert sensitivities(spec)["count"].l1 == 1


# ---------------------------------------------------------------------------- bounding


def reference(rows: list[tuple[str, int, int, int, int]], spec: ReleaseSpec) -> dict[Any, int]:
    """Counts per (cell, period) kept by the rule, from (person, period, cell, value,
    priority) rows: plain Python, written for clarity."""
    by_person: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    for person, period, cell, value, prio in rows:
        by_person[person].append((period, cell, value, prio))
    counts: dict[Any, int] = defaultdict(int)
    for recs in by_person.values():
        periods: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for period, cell, value, prio in recs:
            periods[period].append((cell, value, prio))
        best = sorted(periods, key=lambda p: (min(r[2] for r in periods[p]), p))
        for period in best[: spec.periods_per_person]:
            cells: dict[int, list[int]] = defaultdict(list)
            for cell, _value, prio in periods[period]:
                cells[cell].append(prio)
            order = sorted(cells, key=lambda c: (min(cells[c]), c))
            for cell in order[: spec.max_cells]:
                counts[(cell, period)] += min(len(cells[cell]), spec.max_records_per_cell)
    return dict(counts)


ROWS = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, len(CELLS) - 1)),
    min_size=0,
    max_size=60,
)


def frame_of(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    out = []
    for person, month, cell in rows:
        lat, lng = cell_centre(CELLS[cell])
        out.append(
            {
                "lat": lat,
                "lng": lng,
                "pid": f"p{person}",
                "date": pd.Timestamp(2026, month + 1, 10),
            }
        )
    return pd.DataFrame(out, columns=["lat", "lng", "pid", "date"])


def engine_counts(df: pd.DataFrame, spec: ReleaseSpec) -> dict[Any, int]:
    agg = local.bound_and_aggregate(df, spec, DOMAIN)
    assert spec.categories is None  # the row within a cell is then the period
    return {
        (int(c), int(p)): int(n) for c, p, n in zip(agg.cells, agg.category, agg.count, strict=True)
    }


def priorities_of(df: pd.DataFrame, spec: ReleaseSpec) -> list[tuple[str, int, int, int, int]]:
    """The rows as the reference reads them, with the engine's own hash priorities."""
    lf = frames.project(pl.from_pandas(df).lazy(), spec)
    prepared, _ = frames.prepare_rows(lf.collect(), spec, DOMAIN)
    prio = frames.priorities(prepared, spec).to_numpy()
    return [
        (str(p), int(t), int(c), 0, int(q))
        for p, t, c, q in zip(
            prepared[frames.PERSON],
            prepared[frames.PERIOD],
            prepared[frames.CELL],
            prio,
            strict=True,
        )
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=ROWS,
    max_periods=st.integers(1, 4),
    l0=st.integers(1, 3),
    linf=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_engine_keeps_what_the_rule_says(
    rows: list[Any], max_periods: int, l0: int, linf: int, seed: int
) -> None:
    spec = panel_spec(
        max_periods=max_periods,
        max_cells=l0,
        max_records_per_cell=linf,
        selection="hash",
        seed=seed,
    )
    df = frame_of(rows)
    assert engine_counts(df, spec) == reference(priorities_of(df, spec), spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=ROWS,
    extra=st.lists(st.tuples(st.integers(0, 5), st.integers(0, len(CELLS) - 1)), max_size=40),
    place=st.floats(0, 1),
    max_periods=st.integers(1, 4),
    l0=st.integers(1, 3),
    linf=st.integers(1, 3),
)
def test_one_added_person_moves_at_most_the_sensitivity(
    rows: list[Any], extra: list[Any], place: float, max_periods: int, l0: int, linf: int
) -> None:
    spec = panel_spec(
        max_periods=max_periods,
        max_cells=l0,
        max_records_per_cell=linf,
        selection="hash",
        seed=7,
        value="amount",
        bounds=(-50, 80),
    )
    base = frame_of(rows)
    base["amount"] = np.resize([-1e9, 75.0, 3.0, 1e9], len(base))
    add = frame_of([(99, m, c) for m, c in extra])
    add["amount"] = np.resize([1e12, -1e12], len(add))
    cut = int(place * len(base))
    both = pd.concat([base.iloc[:cut], add, base.iloc[cut:]], ignore_index=True)
    d = local.bound_and_aggregate(base, spec, DOMAIN).densify(DOMAIN, spec.rows_per_key)
    d2 = local.bound_and_aggregate(both, spec, DOMAIN).densify(DOMAIN, spec.rows_per_key)
    sens = sensitivities(spec)
    for stat in ("count", "sum"):
        change = d2[stat] - d[stat]
        assert int(np.abs(change).sum()) <= sens[stat].l1
        assert int(np.abs(change).max(initial=0)) <= sens[stat].linf
        assert np.count_nonzero(change) <= sens[stat].l0


def test_the_bound_is_attained_and_no_more() -> None:
    """One person in six months, four cells a month, three records each: exactly
    max_periods·max_cells·L∞ records survive."""
    rows = [(0, m, c) for m in range(6) for c in range(4) for _ in range(3)]
    spec = panel_spec(max_periods=4, max_cells=2, max_records_per_cell=2)
    counts = engine_counts(frame_of(rows), spec)
    assert sum(counts.values()) == 4 * 2 * 2
    assert len({p for _c, p in counts}) == 4


# -------------------------------------------------------------------- public periods


def test_periods_are_public_and_outside_rows_are_counted_privately() -> None:
    df = points(30, months=4)  # nobody in May and June
    late = df.iloc[:7].assign(date=pd.Timestamp("2027-02-01"))
    undated = df.iloc[:5].assign(date=pd.NaT)
    diag = Diagnostics()
    rel = dpmap.release(
        pd.concat([df, late, undated]),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1.0,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=6,
        max_cells=2,
        diagnostics=diag,
        suppress_below=False,
    )
    cells = rel.cells
    assert rel.periods == [str(p) for p in MONTHS]
    assert list(cells["period"].unique()) == rel.periods  # May and June have their rows
    assert len(cells) == len(DOMAIN) * 6
    assert (cells.groupby("period").size() == len(DOMAIN)).all()
    assert diag.rows_outside_periods == 7 and diag.rows_missing_time == 5
    text = json.dumps(rel.manifest)
    assert "outside" not in text.lower() or "rows_outside" not in text  # never published
    assert rel.manifest["contribution_bounds"]["max_periods"] == 6
    assert "6 period(s), 2 cell(s) per period" in rel.privacy_statement


@pytest.mark.parametrize(
    "dates",
    [
        pd.Series(pd.to_datetime(["2026-01-31 23:59:59", "2026-02-01 00:00:00"])),
        pd.Series(["2026-01-31T23:59:59", "2026-02-01"]),
        pd.Series(pd.to_datetime(["2026-01-31 23:59:59", "2026-02-01 00:00:00"]).date),
        pd.Series(
            pd.to_datetime(["2026-01-31 23:59:59", "2026-02-01 00:00:00"]).tz_localize(
                "Asia/Shanghai"
            )
        ),
    ],
    ids=["datetime", "iso-text", "date", "tz-aware-wall-clock"],
)
def test_time_columns_fall_in_their_period(dates: pd.Series) -> None:
    lat, lng = cell_centre(CELLS[0])
    df = pd.DataFrame({"lat": [lat, lat], "lng": [lng, lng], "pid": ["a", "b"], "date": dates})
    spec = panel_spec(max_periods=1)
    cell = int(hex_to_cells(np.array([CELLS[0]], dtype=object))[0])
    assert engine_counts(df, spec) == {(cell, 0): 1, (cell, 1): 1}  # January, then February


def test_explicit_edges_and_gaps() -> None:
    p = check_periods(["2026-01-01", "2026-04-01", "2026-07-01"])
    assert p.labels == ("2026-01-01", "2026-04-01") and p.freq is None
    t = np.array(["2025-12-31", "2026-01-01", "2026-06-30T23:59", "2026-07-01"], "datetime64[us]")
    np.testing.assert_array_equal(p.index_of(t.astype(np.int64)), [-1, 0, 1, -1])
    q = check_periods([pd.Period("2026-01", "M"), pd.Period("2026-03", "M")])  # a gap
    t = np.array(["2026-02-10", "2026-03-10"], "datetime64[us]").astype(np.int64)
    np.testing.assert_array_equal(q.index_of(t), [-1, 1])
    assert Periods.from_manifest(q.describe()) == q


# ----------------------------------------------------------------------- the release


@pytest.fixture(scope="module")
def panel() -> Any:
    return dpmap.release(
        points(60),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=2.0,
        person="pid",
        value="amount",
        bounds=(0, 1000),
        time="date",
        periods=MONTHS,
        max_periods=6,
        max_cells=2,
        title="Debtors",
    )


def test_at_is_one_period_of_the_same_measurement(panel: Any) -> None:
    march = panel.at("2026-03")
    assert "period" not in march.cells.columns
    assert march.manifest["period"] == "2026-03" and "periods" not in march.manifest
    assert march.manifest["panel"]["fingerprint"] == panel.fingerprint
    rows = panel.cells[panel.cells["period"] == "2026-03"]
    np.testing.assert_array_equal(march.cells["count"].to_numpy(), rows["count"].to_numpy())
    assert march.estimates is not None and len(march.estimates) == len(march.cells)
    assert panel.at(pd.Period("2026-03", "M")).fingerprint == march.fingerprint
    assert "6 periods 2026-01 to 2026-06" in repr(panel) and "period 2026-03" in repr(march)
    with pytest.raises(SpecError, match="not one of this panel's 6 periods"):
        panel.at("2026-07")
    with pytest.raises(SpecError, match="covers one period"):
        march.at("2026-03")


def test_panel_files_round_trip(panel: Any, tmp_path: Path) -> None:
    path = panel.to_file(tmp_path / "panel.parquet", include_unbiased=True)
    back = dpmap.read_release(path)
    assert back.periods == panel.periods and back.fingerprint == panel.fingerprint
    assert back.at("2026-02").fingerprint == panel.at("2026-02").fingerprint


def test_series_trend_and_compare_on_a_panel(panel: Any) -> None:
    s = panel.series()
    assert list(s["period"].unique()) == panel.periods
    views = [panel.at(p) for p in panel.periods]
    pd.testing.assert_frame_equal(
        panel.trend().drop(columns="geometry"),
        dpmap.trend(views, periods=list(MONTHS)).drop(columns="geometry"),
    )
    c = dpmap.compare(panel, periods=("2026-01", "2026-06"))
    pd.testing.assert_frame_equal(c, dpmap.compare(views[0], views[-1]))
    with pytest.raises(SpecError, match="two of its periods"):
        dpmap.compare(panel, periods=("2026-01",))
    with pytest.raises(SpecError, match="one row per cell and period"):
        panel.aggregate_to(region_gdf().assign(name="all"))
    with pytest.raises(SpecError, match="periods= compares two periods"):
        dpmap.compare(views[0], views[1], periods=("2026-01", "2026-02"))


def test_zone_panel_with_categories_and_people() -> None:
    import geopandas as gpd
    from shapely.geometry import box

    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[box(116.0, 39.0, 116.15, 39.2), box(116.15, 39.0, 116.3, 39.2)],
        crs="EPSG:4326",
    )
    df = points(30).assign(kind=lambda d: np.where(d.index % 3 == 0, "bank", "utility"))
    rel = dpmap.release(
        df,
        zones=zones,
        by="name",
        epsilon=1.0,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=2,
        max_records_per_cell=2,
        category="kind",
        categories=["bank", "utility"],
        people=True,
    )
    cells = rel.cells
    assert len(cells) == 2 * 6 * 3  # zones × periods × categories (with "other")
    assert set(cells["period"]) == set(rel.periods)
    entry = rel.manifest["statistics"]["count"]["sensitivity"]
    assert entry["l1"] == 2 * 1 * 2
    west = rel.at("2026-04").cells
    assert len(west) == 2 * 3 and "people" in west.columns


# -------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_periods": None}, "needs max_periods"),
        ({"periods": None}, "needs the PUBLIC periods"),
        ({"time": None}, "applies to a panel release over time"),
        ({"periods": ["2026-03-01", "2026-01-01"]}, "not sorted"),
        ({"periods": [pd.Period("2026-01", "M"), pd.Period("2026-01", "M")]}, "appears twice"),
        ({"periods": [pd.Period("2026Q1", "Q"), pd.Period("2026-02", "M")]}, "mix frequencies"),
        ({"periods": []}, "periods is empty"),
        ({"periods": "2026-01"}, "must be a list of periods"),
        ({"periods": ["2026-01-01", "not a date"]}, "cannot read the edges"),
        ({"resolution": [6, 7]}, "one resolution or over zones"),
        ({"max_periods": 0}, "max_periods must be ≥ 1"),
        ({"time": "lat"}, "the same column is used for two roles"),
    ],
)
def test_bad_panel_parameters(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        panel_spec(**kw)
    assert "\n" not in str(err.value)


def test_overlapping_edges_are_refused() -> None:
    with pytest.raises(SpecError, match="overlap"):
        check_periods(
            Periods(
                ("a", "b"),
                np.array([0, 5], dtype=np.int64),
                np.array([10, 20], dtype=np.int64),
            )
        )


def test_panels_refuse_adaptive_and_discovery_and_period_label() -> None:
    df = points(5)
    common = {"epsilon": 1.0, "person": "pid", "time": "date", "periods": MONTHS}
    with pytest.raises(SpecError, match="public region at one resolution"):
        dpmap.release(df, region=REGION, resolution=7, adaptive=True, max_periods=2, **common)
    with pytest.raises(SpecError, match="public region at one resolution"):
        dpmap.release(df, resolution=7, delta=1e-6, max_periods=2, **common)
    with pytest.raises(SpecError, match="drop period="):
        dpmap.release(df, region=REGION, resolution=7, max_periods=2, period="2026-01", **common)


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (["2026-01-05", "yesterday"], "1 value\\(s\\) of the time column 'date' are not dates"),
        ([20260105, 20260106], "is not a date \\(dtype Int64\\)"),
    ],
)
def test_bad_time_columns(dates: list[Any], message: str, tmp_path: Path) -> None:
    lat, lng = cell_centre(CELLS[0])
    df = pd.DataFrame({"lat": [lat, lat], "lng": [lng, lng], "pid": ["a", "b"], "date": dates})
    ledger = dpmap.Ledger.init(tmp_path / "l.sqlite", "d", epsilon=5.0)
    with pytest.raises(InputError, match=message) as err:
        dpmap.release(
            df,
            region=REGION,
            resolution=7,
            ledger=ledger,
            dataset="d",
            **{"epsilon": 1.0, "person": "pid", "time": "date", "periods": MONTHS},
            max_periods=2,
        )
    assert "\n" not in str(err.value)
    assert ledger.spent("d").epsilon == 0  # refused before any budget was reserved
    assert ledger.history("d") == []


def test_cli_panel_release_and_bad_periods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pts = tmp_path / "points.csv"
    points(10).to_csv(pts, index=False)
    region = tmp_path / "region.geojson"
    region_gdf().to_file(region)
    out = tmp_path / "panel.geojson"
    args = ["release", pts, "--region", region, "--resolution", "7", "--epsilon", "1"]
    args += ["--person", "pid", "--time", "date", "--max-periods", "3", "--out", out]
    args += ["--include-unbiased"]
    code = main([str(a) for a in [*args, "--periods", "2026-01..2026-06"]])
    assert code == 0, capsys.readouterr().err
    assert dpmap.read_release(out).periods == [str(p) for p in MONTHS]
    trend_csv, series_csv = tmp_path / "trend.csv", tmp_path / "series.csv"
    assert main(["trend", str(out), "--out", str(trend_csv)]) == 0
    assert main(["series", str(out), "--out", str(series_csv)]) == 0
    assert list(pd.read_csv(series_csv)["period"].unique()) == [str(p) for p in MONTHS]
    assert len(pd.read_csv(trend_csv)) == len(DOMAIN)
    code = main(["series", str(out), "--out", str(tmp_path / "x.csv"), "--periods", "a"])
    assert code == 2 and not (tmp_path / "x.csv").exists()
    capsys.readouterr()
    # two periods of the panel file, compared on the command line as in Python
    change_csv = tmp_path / "change.csv"
    cmd = ["compare", str(out), "--periods", "2026-01,2026-06", "--out", str(change_csv)]
    assert main(cmd) == 0, capsys.readouterr().err
    want = dpmap.compare(dpmap.read_release(out), periods=("2026-01", "2026-06"))
    got = pd.read_csv(change_csv)
    np.testing.assert_allclose(got["change"], want["change"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["change_moe"], want["change_moe"].to_numpy(), rtol=1e-12)
    for bad, words in (
        (["--periods", "2026-01"], "FIRST,SECOND"),
        (["--periods", "2026-01,2027-01"], "2027-01"),
        ([str(out), "--periods", "2026-01,2026-06"], "drop B"),
        ([], "two files"),
    ):
        bad_csv = tmp_path / "bad.csv"
        capsys.readouterr()
        code = main(["compare", str(out), *bad, "--out", str(bad_csv)])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, (bad, err)
        assert not bad_csv.exists()
    out.unlink()
    code = main([str(a) for a in [*args, "--periods", "2026-01..soon"]])
    err = capsys.readouterr().err
    assert code == 2 and "--periods" in err and "Traceback" not in err
    assert not out.exists()


def test_explain_and_the_manifest_say_what_a_panel_counts() -> None:
    plan = dpmap.explain(
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1.0,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=4,
        max_cells=2,
    )
    text = str(plan)
    assert f"{len(DOMAIN)} public cells × 6 public periods (2026-01 to 2026-06)" in text
    assert f"{len(DOMAIN) * 6:,} rows" in text
    assert "at most once per cell and period, in at most 4 period(s) and 2 cell(s)" in text
    assert "sensitivity L1 8 " in text and "at most 1 per panel" in text


def test_the_slider_map_of_a_panel_says_one_guarantee_for_all_periods(
    panel: Any, tmp_path: Path
) -> None:
    page = panel.to_html(tmp_path / "panel.html").read_text(encoding="utf-8")
    assert "for all 6 periods together (one panel release)" in page
    views = [panel.at(p) for p in panel.periods]
    from dpmap.maps.periods import explore_periods

    separate = [dpmap.Release(v.cells, {**v.manifest, "panel": None}) for v in views]
    page2 = explore_periods(separate, path=tmp_path / "sep.html")
    assert page2 is not None
    assert "per period" in (tmp_path / "sep.html").read_text(encoding="utf-8")


def test_plan_epsilon_for_a_panel() -> None:
    one = dpmap.plan_epsilon(target_moe=20, resolution=7, person="pid")
    plan = dpmap.plan_epsilon(
        target_moe=20, resolution=7, person="pid", time="date", periods=MONTHS, max_periods=6
    )
    # Laplace: six periods per person, six times the sensitivity, six times the ε
    assert plan.epsilon == pytest.approx(6 * one.epsilon, rel=1e-5)
    assert plan.periods == 6 and "in each of the panel's 6 periods" in str(plan)
    assert one.periods is None and "panel" not in str(one)


def test_a_continual_release_trends_with_the_covariance_of_its_shared_nodes() -> None:
    """A continual release's period values share tree nodes: the trend uses generalised
    least squares with σ²·D Dᵀ (D: differenced estimator weights), rebuilt here from the
    public design functions independently of the analysis code."""
    from dpmap.designs.continual import period_values
    from dpmap.designs.continual_release import period_covariance

    rel = dpmap.release(
        points(40),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=2.0,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=6,
        running_totals=True,
        through="2026-05",
    )
    assert rel.periods == [str(p) for p in MONTHS[:5]]  # published through May
    m = rel.manifest
    entry = m["continual"]
    n_nodes = len(entry["node_intervals"])
    d = period_values(
        np.eye(n_nodes), entry["horizon"], tree=entry["tree"], estimator=entry["estimator"]
    )[0].T[:5]
    node_var = period_covariance(m)["count"][0, 0] / float(d[0] @ d[0])
    np.testing.assert_allclose(period_covariance(m)["count"], node_var * d @ d.T, rtol=1e-12)
    est = rel.estimates
    assert est is not None
    first_cell = est[est["cell"] == est["cell"].iloc[0]]
    np.testing.assert_allclose(
        first_cell["count_var"].to_numpy(), np.diag(period_covariance(m)["count"]), rtol=1e-9
    )
    t = rel.trend()
    assert "covariance" in t.attrs["method"]
    subset = dpmap.trend([rel.at(p) for p in rel.periods[1:4]])
    assert len(subset) == len(t)


def test_compare_two_periods_of_a_continual_release_counts_their_shared_nodes() -> None:
    from dpmap.designs.continual_release import period_covariance

    rel = dpmap.release(
        points(20),
        region=REGION,
        resolution=RESOLUTION,
        epsilon=2.0,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=6,
        running_totals=True,
    )
    cov = period_covariance(rel.manifest)["count"]
    c = dpmap.compare(rel, periods=("2026-02", "2026-04"))
    var = cov[1, 1] + cov[3, 3] - 2 * cov[1, 3]
    np.testing.assert_allclose(c["change_moe"].to_numpy(), 1.959963984540054 * math.sqrt(var))
    assert cov[1, 3] != 0  # the two months share a node: the margin differs from independent


def test_series_margins_are_exact_for_single_values(panel: Any) -> None:
    """A cell's value in one period is one noisy value: its series margin is OpenDP's exact
    margin (as the table shows), not 1.96·sd, which is short for Laplace noise; a roll-up
    over several cells keeps 1.96·sd of its exact variance."""
    s = panel.series()
    exact = panel.manifest["statistics"]["count"]["moe_95"]
    sd = math.sqrt(panel.estimates["count_var"].iloc[0])
    assert exact > 1.96 * sd * 1.05  # Laplace: the normal margin would be short
    np.testing.assert_allclose(s["count_moe"].to_numpy(), exact)
    shown = panel.cells[~panel.cells["suppressed"]]
    np.testing.assert_allclose(shown["count_moe"].to_numpy(), exact)
    rolled = panel.series(zones=region_gdf().assign(name="all"), by="name")
    assert (rolled["count_moe"] > exact).all()
    assert not np.isclose(rolled["count_moe"].to_numpy(), exact).any()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize("with_categories", [False, True])
def test_quantiles_of_a_panel_are_per_cell_and_period(with_categories: bool) -> None:
    """One value histogram per (cell, period[, category]) row: with noise made negligible
    (ε = 10⁶), each row's median lies between the two middle values of that row's own
    records (within two bands) (a histogram laid out per cell only would mix the periods, or crash)."""
    import h3

    df = points(40)
    df["kind"] = np.where(df.index % 2 == 0, "bank", "x")
    kw: dict[str, Any] = {"category": "kind", "categories": ["bank"]} if with_categories else {}
    rel = dpmap.release(
        df,
        region=REGION,
        resolution=RESOLUTION,
        epsilon=1e6,
        person="pid",
        time="date",
        periods=MONTHS,
        max_periods=6,
        max_cells=2,
        value="amount",
        bounds=(0, 1000),
        quantiles=[0.5],
        suppress_below=False,
        **kw,
    )
    cells = rel.cells
    assert rel.histogram is not None and len(rel.histogram) == len(cells)
    hexes = np.array(
        [h3.latlng_to_cell(a, b, RESOLUTION) for a, b in zip(df.lat, df.lng, strict=True)]
    )
    month = df["date"].dt.to_period("M").astype(str).to_numpy()
    checked = 0
    for _, row in cells[cells["count"] >= 3].head(20).iterrows():
        mine = (hexes == row["cell"]) & (month == row["period"])
        if with_categories:
            mine &= (
                (df["kind"] == row["category"]).to_numpy()
                if row["category"] == "bank"
                else (df["kind"] != "bank").to_numpy()
            )
        values = df["amount"].to_numpy()[mine]
        if len(values) != int(row["count"]):  # bounding cut records of this row: skip it
            continue
        ordered = np.sort(values)  # any point between the two middle values is a median
        lo, hi = ordered[(len(values) - 1) // 2], ordered[len(values) // 2]
        assert lo - 2 <= row["q50"] <= hi + 2, row.to_dict()
        checked += 1
    assert checked >= 5
