"""Zone releases (``zones=``, ``by=``): a public partition released directly, one row per zone.

What is checked here: point-in-zone assignment (shared borders, holes, an island in a hole,
outside), every bad input as a one-line SpecError before any data is read or budget spent,
the privacy map (exactly the flat design's for the same bounds, and the hand-derived scales),
bounding with one person inserted anywhere (hypothesis), and that the release table, its
files, press tables, ``compare``, maps and the command line work on zone rows. Engine parity
(local, streaming, Spark) is in ``tests/engines/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Polygon, box

import dpmap
from dpmap import DataFileError, Diagnostics, SpecError
from dpmap.cli.app import main
from dpmap.designs import design_of
from dpmap.designs.zones import ZoneRelease
from dpmap.engines import local
from dpmap.grid import to_zones
from dpmap.spec import ReleaseSpec
from parity import parity_zones, zone_points

ZONES = parity_zones()
BOX = box(116.0, 39.0, 116.3, 39.2)  # the zones' outline (a flat release's region)


def zone_of(lat: float, lng: float) -> str | None:
    z = to_zones(ZONES, "name")
    i = int(z.assign(np.array([lat]), np.array([lng]))[0])
    return None if i < 0 else z.names[i]


# ------------------------------------------------------------------------- assignment


@pytest.mark.parametrize(
    ("lat", "lng", "zone"),
    [
        (39.05, 116.02, "south-west"),  # interior
        (39.15, 116.25, "north-east"),
        (39.05, 116.15, "south-east"),  # shared border south-east | south-west: first by name
        (39.10, 116.05, "north-west"),  # shared border north-west | south-west
        (39.10, 116.15, "north-east"),  # the corner of all four: first by name
        (39.00, 116.10, "south-west"),  # the outer edge belongs to its zone
        (39.065, 116.075, None),  # in the hole, off the island: no zone
        (39.05, 116.075, "island"),  # on the island inside the hole
        (39.03, 116.07, "south-west"),  # on the hole's rim: the zone's boundary
        (39.04, 116.07, "island"),  # the island's rim (inside the hole)
        (39.25, 116.10, None),  # north of everything
        (-39.05, -116.02, None),  # the antipode's neighbourhood
    ],
)
def test_each_point_goes_to_the_zone_that_covers_it(lat: float, lng: float, zone: str) -> None:
    assert zone_of(lat, lng) == zone


def test_assignment_does_not_depend_on_row_order_or_the_other_rows() -> None:
    z = to_zones(ZONES, "name")
    df = zone_points(2000, seed=11)
    lat, lng = df["lat"].to_numpy(), df["lng"].to_numpy()
    whole = z.assign(lat, lng)
    perm = np.random.default_rng(0).permutation(len(df))
    np.testing.assert_array_equal(z.assign(lat[perm], lng[perm]), whole[perm])
    one_by_one = np.array([z.assign(lat[i : i + 1], lng[i : i + 1])[0] for i in range(50)])
    np.testing.assert_array_equal(one_by_one, whole[:50])


def test_zones_are_sorted_by_name_in_any_crs() -> None:
    z = to_zones(ZONES.iloc[::-1].to_crs("EPSG:3857"), "name")
    assert z.names == tuple(sorted(ZONES["name"]))
    assert z.fingerprint != to_zones(ZONES.iloc[:4], "name").fingerprint
    # reprojected back to degrees: the same assignment as the original
    assert z.names[int(z.assign(np.array([39.05]), np.array([116.02]))[0])] == "south-west"


def test_a_geoseries_is_named_by_its_index() -> None:
    series = gpd.GeoSeries(ZONES.geometry.values, index=ZONES["name"], crs="EPSG:4326")
    assert to_zones(series, None).names == tuple(sorted(ZONES["name"]))


# ------------------------------------------------------------------------- bad inputs


def _bowtie() -> Polygon:
    return Polygon([(116.0, 39.0), (116.1, 39.1), (116.1, 39.0), (116.0, 39.1)])


def _frame(names: list[Any], geoms: list[Any], crs: Any = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"name": names}, geometry=geoms, crs=crs)


BAD_ZONES = {
    "overlap": (
        _frame(["a", "b"], [box(116.0, 39.0, 116.2, 39.1), box(116.1, 39.0, 116.3, 39.1)]),
        "name",
        "zones 'a' and 'b' overlap",
    ),
    "inside-another": (
        _frame(["big", "small"], [box(116.0, 39.0, 116.3, 39.2), box(116.1, 39.1, 116.2, 39.15)]),
        "name",
        "zones 'big' and 'small' overlap",
    ),
    "duplicate-names": (
        _frame(["a", "b", "a"], [box(116, 39, 116.1, 39.1), box(116.1, 39, 116.2, 39.1),
                                 box(116.2, 39, 116.3, 39.1)]),
        "name",
        "repeats the names 'a'",
    ),
    "missing-by-column": (ZONES, "nom", "the zones have no column 'nom' (columns: 'name')"),
    "by-is-the-geometry": (ZONES, "geometry", "the zones have no column 'geometry'"),
    "no-by": (ZONES, None, "zones= needs by="),
    "missing-name": (_frame([None, "b"], [box(116, 39, 116.1, 39.1), box(116.1, 39, 116.2, 39.1)]),
                     "name", "missing names"),
    "empty-geometry": (_frame(["a", "b"], [box(116, 39, 116.1, 39.1), Polygon()]), "name",
                       "zone 'b' has an empty geometry"),
    "null-geometry": (_frame(["a", "b"], [box(116, 39, 116.1, 39.1), None]), "name",
                      "zone 'b' has an empty geometry"),
    "invalid-geometry": (_frame(["bow"], [_bowtie()]), "name", "zone 'bow' is not a valid polygon"),
    "a-line": (_frame(["road"], [LineString([(116, 39), (116.1, 39.1)])]), "name",
               "zone 'road' is a LineString, not an area"),
    "no-crs": (_frame(["a"], [box(116, 39, 116.1, 39.1)], crs=None), "name", "have no CRS"),
    "no-rows": (ZONES.iloc[:0], "name", "the zones are empty"),
    "degrees-that-are-metres": (_frame(["a"], [box(450_000, 4_400_000, 460_000, 4_410_000)]),
                                "name", "not lon/lat degrees"),
    "not-geo": (pd.DataFrame({"name": ["a"]}), "name", "zones must be a GeoDataFrame"),
    "geoseries-with-by": (ZONES.geometry, "name", "the zones are a GeoSeries"),
    "column-clash": (ZONES.rename(columns={"name": "count"}), "count", "clashes with a column"),
    "quantile-clash": (ZONES.rename(columns={"name": "q50"}), "q50", "clashes with a column"),
    "band-clash": (ZONES.rename(columns={"name": "band_0_10"}), "band_0_10",
                   "clashes with a column"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_ZONES))
def test_bad_zones_are_one_line_errors_before_any_data_or_budget(case: str, tmp_path: Path) -> None:
    zones, by, message = BAD_ZONES[case]
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", dataset="debts", epsilon=10.0)
    missing_points = tmp_path / "never-read.csv"  # reading it would be an InputError/DataFileError
    with pytest.raises(SpecError) as err:
        dpmap.release(
            missing_points, zones=zones, by=by, epsilon=1.0, ledger=ledger, dataset="debts"
        )
    text = str(err.value)
    assert message in text and "\n" not in text
    assert ledger.spent("debts").epsilon == 0  # nothing reserved
    with pytest.raises(SpecError, match=message.split("(")[0][:20]):
        dpmap.explain(zones=zones, by=by, epsilon=1.0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"resolution": 7}, "zones= and resolution=7 exclude each other"),
        ({"region": BOX}, "zones= and region= exclude each other"),
        ({"adaptive": True}, "adaptive releases refine H3 cells, not zones"),
    ],
)
def test_zones_exclude_region_resolution_and_adaptive(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        dpmap.release(zone_points(50), zones=ZONES, by="name", epsilon=1.0, **kw)


def test_by_without_zones_and_no_resolution_are_refused() -> None:
    with pytest.raises(SpecError, match="by='name' names the zones' column"):
        dpmap.release(zone_points(50), region=BOX, resolution=7, by="name", epsilon=1.0)
    with pytest.raises(SpecError, match="resolution is missing"):
        dpmap.release(zone_points(50), region=BOX, epsilon=1.0)


def test_a_missing_zones_file_is_a_data_file_error() -> None:
    with pytest.raises(DataFileError, match=r"zones file 'nope\.geojson' does not exist"):
        dpmap.explain(zones="nope.geojson", by="name", epsilon=1.0)


# ------------------------------------------------------------------------- privacy map


SETTINGS = [
    {"epsilon": 1.0},
    {"epsilon": 0.5, "person": "pid", "value": "amount", "bounds": (0, 50_000)},
    {"epsilon": 1.0, "person": "pid", "value": "amount", "bounds": (-200, 1000), "max_cells": 3,
     "max_records_per_cell": 4, "count_share": 0.3},
    {"epsilon": 2.0, "person": "pid", "category": "c", "categories": ["x", "y"], "max_cells": 2},
    {"epsilon": 1.0, "delta": 1e-6, "mechanism": "gaussian", "person": "pid", "value": "amount",
     "bounds": (0, 100), "max_cells": 4, "max_records_per_cell": 2},
]  # fmt: skip


@pytest.mark.parametrize("kw", SETTINGS, ids=range(len(SETTINGS)))
def test_privacy_map_is_the_flat_designs(kw: dict[str, Any]) -> None:
    """ε (δ, ρ) and every statistic's scale and sensitivity equal the flat design's."""
    zoned = dpmap.explain(zones=ZONES, by="name", **kw)
    flat = dpmap.explain(region=BOX, resolution=7, **kw)
    assert isinstance(zoned.design, ZoneRelease)
    assert (zoned.plan.epsilon, zoned.plan.delta, zoned.plan.rho) == (
        flat.plan.epsilon,
        flat.plan.delta,
        flat.plan.rho,
    )
    assert zoned.plan.epsilon <= kw["epsilon"]
    for name, noise in zoned.plan.statistics.items():
        other = flat.plan.statistics[name]
        assert noise.describe() == other.describe(), name
    assert zoned.rows == 5 * (len(kw.get("categories", [])) + 1 if "categories" in kw else 1)


@pytest.mark.parametrize("kw", SETTINGS[:4], ids=range(4))
def test_laplace_scales_are_the_hand_derived_ones(kw: dict[str, Any]) -> None:
    """count: L0·L∞ / (share·ε); sum: L0·L∞·M / ((1 − share)·ε); total ε as asked."""
    plan = dpmap.explain(zones=ZONES, by="name", **kw).plan
    l0 = kw.get("max_cells", 1) if "person" in kw else 1
    linf = kw.get("max_records_per_cell", 1) if "person" in kw else 1
    share = kw.get("count_share", 0.5) if "value" in kw else 1.0
    eps = kw["epsilon"]
    assert math.isclose(plan.statistics["count"].scale, l0 * linf / (share * eps), rel_tol=1e-9)
    if "value" in kw:
        m = max(abs(b) for b in kw["bounds"])
        expected = l0 * linf * m / ((1 - share) * eps)
        assert math.isclose(plan.statistics["sum"].scale, expected, rel_tol=1e-9)
    assert math.isclose(plan.epsilon, eps, rel_tol=1e-9)


# ------------------------------------------------------------------------- bounding


def _population(n_persons: int, seed: int) -> pd.DataFrame:
    """Persons with 1..6 records each, inside and around the zones."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, n_persons)
    pid = np.repeat(np.arange(n_persons), counts).astype(str)
    n = len(pid)
    return pd.DataFrame(
        {
            "lat": rng.uniform(38.99, 39.21, n),
            "lng": rng.uniform(115.99, 116.31, n),
            "pid": pid,
            "amount": rng.integers(0, 1500, n).astype(float),
        }
    )


def _aggregates(df: pd.DataFrame, spec: ReleaseSpec) -> tuple[np.ndarray, np.ndarray]:
    assert spec.zones is not None
    agg = local.bound_and_aggregate(df, spec, spec.zones.domain, Diagnostics())
    dense = agg.densify(spec.zones.domain, 1)
    return dense["count"], dense["sum"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_extra=st.integers(1, 40),
    l0=st.integers(1, 3),
    linf=st.integers(1, 3),
    where=st.sampled_from(["first", "middle", "last", "shuffled"]),
    seed=st.integers(0, 10_000),
)
def test_one_person_moves_each_zone_by_at_most_the_bounds(
    n_extra: int, l0: int, linf: int, where: str, seed: int
) -> None:
    """Adding one person (``n_extra`` records anywhere) changes at most L0 zones' counts, each
    by at most L∞ records (sums by at most L∞·M), wherever their rows are inserted."""
    spec = ReleaseSpec(
        zones=to_zones(ZONES, "name"),
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 1000),
        max_cells=l0,
        max_records_per_cell=linf,
        selection="hash",
        seed=seed,
    )
    base = _population(60, seed)
    rng = np.random.default_rng(seed + 1)
    extra = pd.DataFrame(
        {
            "lat": rng.uniform(39.0, 39.2, n_extra),
            "lng": rng.uniform(116.0, 116.3, n_extra),
            "pid": "newcomer",
            "amount": rng.integers(0, 5000, n_extra).astype(float),
        }
    )
    if where == "first":
        both = pd.concat([extra, base], ignore_index=True)
    elif where == "middle":
        k = len(base) // 2
        both = pd.concat([base.iloc[:k], extra, base.iloc[k:]], ignore_index=True)
    elif where == "last":
        both = pd.concat([base, extra], ignore_index=True)
    else:
        both = pd.concat([base, extra], ignore_index=True).sample(frac=1.0, random_state=seed)
    c0, s0 = _aggregates(base, spec)
    c1, s1 = _aggregates(both, spec)
    dc, ds = c1 - c0, s1 - s0
    assert (dc >= 0).all() and dc.max() <= linf
    assert int((dc != 0).sum()) <= l0
    assert int(dc.sum()) <= l0 * linf
    assert np.abs(ds).max() <= linf * 1000 and int(np.abs(ds).sum()) <= l0 * linf * 1000
    # and exactly so: min(L0, their zones) zones, each with min(their records there, L∞)
    zone = to_zones(ZONES, "name").assign(extra["lat"].to_numpy(), extra["lng"].to_numpy())
    per_zone = np.bincount(zone[zone >= 0], minlength=5)
    changed = np.flatnonzero(dc)
    assert len(changed) == min(l0, int((per_zone > 0).sum()))
    np.testing.assert_array_equal(dc[changed], np.minimum(per_zone[changed], linf))


# ------------------------------------------------------------------------- the release


@pytest.fixture(scope="module")
def released() -> tuple[dpmap.Release, Diagnostics]:
    diag = Diagnostics()
    rel = dpmap.release(
        zone_points(3000),
        zones=ZONES,
        by="name",
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 2000),
        diagnostics=diag,
        title="zone test",
    )
    return rel, diag


def test_every_zone_is_one_row_with_its_polygon(released: Any) -> None:
    rel, diag = released
    cells = rel.cells
    assert list(cells["name"]) == sorted(ZONES["name"])
    assert list(cells.columns) == [
        "name", "count", "count_moe", "sum", "sum_moe", "mean", "mean_moe", "suppressed",
        "geometry",
    ]  # fmt: skip
    assert cells.crs.to_epsg() == 4326
    by_name = ZONES.set_index("name").geometry
    for name, geom in zip(cells["name"], cells.geometry, strict=True):
        assert geom.equals(by_name[name])
    m = rel.manifest
    assert m["design"] == "zones" and design_of(m) is ZoneRelease
    assert m["cell_selection"]["method"] == "public zones"
    assert m["cell_selection"]["zones"] == 5
    assert m["cell_selection"]["fingerprint"] == to_zones(ZONES, "name").fingerprint
    assert m["resolution"] is None and m["parameters"]["zones"]["by"] == "name"
    # the points around the zones were dropped, counted only in the PRIVATE diagnostics
    assert diag.rows_outside_region > 0
    assert "outside_region" not in json.dumps(m)


def test_an_empty_zone_is_published_like_any_other() -> None:
    """No point in a zone is not a refusal nor a missing row: it gets its noisy numbers."""
    far = gpd.GeoDataFrame({"name": ["far away"]}, geometry=[box(120, 30, 120.1, 30.1)], crs=4326)
    zones = pd.concat([ZONES, far], ignore_index=True)
    rel = dpmap.release(zone_points(500), zones=zones, by="name", epsilon=1.0, suppress_below=False)
    assert list(rel.cells["name"]) == sorted(zones["name"])
    assert rel.cells.set_index("name").loc["far away", "count"] is not pd.NA
    assert rel.manifest["rows"] == 6


@pytest.mark.parametrize("suffix", [".geojson", ".parquet", ".csv"])
def test_files_round_trip(released: Any, tmp_path: Path, suffix: str) -> None:
    rel, _ = released
    path = tmp_path / f"zones{suffix}"
    rel.to_file(path, include_unbiased=True)
    back = dpmap.read_release(path)
    pd.testing.assert_frame_equal(
        pd.DataFrame(back.cells.drop(columns="geometry")),
        pd.DataFrame(rel.cells.drop(columns="geometry")),
    )
    pairs = zip(back.cells.geometry, rel.cells.geometry, strict=True)
    assert all(a.equals_exact(b, 1e-9) for a, b in pairs)
    assert back.estimates is not None and rel.estimates is not None
    pd.testing.assert_frame_equal(back.estimates, rel.estimates, check_dtype=False)
    assert back.manifest["cell_selection"] == rel.manifest["cell_selection"]


def test_names_stay_text_in_csv(tmp_path: Path) -> None:
    zones = ZONES.assign(code=["007", "010", "1e3", "NaN", "0"])
    rel = dpmap.release(zone_points(200), zones=zones, by="code", epsilon=1.0)
    rel.to_file(tmp_path / "codes.csv")
    back = dpmap.read_release(tmp_path / "codes.csv")
    assert list(back.cells["code"]) == sorted(zones["code"])


def test_press_table_on_zone_rows(released: Any) -> None:
    rel, _ = released
    table = rel.table().table
    assert list(table["name"]) == sorted(ZONES["name"])
    assert "lat" not in table.columns  # zones have no H3 centre
    shown = ~table["suppressed"].to_numpy()
    assert (table.loc[shown, "count_display"].astype(int) >= 0).all()


def test_press_table_with_categories_adds_a_total_per_zone() -> None:
    df = zone_points(1500).assign(c=lambda d: np.where(d.amount > 500, "high", "low"))
    rel = dpmap.release(
        df, zones=ZONES, by="name", epsilon=1.0, category="c", categories=["high", "low"]
    )
    table = rel.table().table
    assert len(table) == 5 * 4  # high, low, other, total
    totals = table[table["category"] == "total"]
    assert list(totals["name"]) == sorted(ZONES["name"])
    parts = table[table["category"] != "total"].groupby("name")["count_unbiased"].sum()
    np.testing.assert_allclose(totals.set_index("name")["count_unbiased"], parts)


def test_compare_two_zone_releases_by_name(released: Any) -> None:
    rel, _ = released
    other = dpmap.release(
        zone_points(3000, seed=5),
        zones=ZONES.iloc[::-1],  # the same zones in another order
        by="name",
        epsilon=1.0,
        person="pid",
        value="amount",
        bounds=(0, 2000),
    )
    change = dpmap.compare(rel, other)
    assert list(change["name"]) == sorted(ZONES["name"])
    a = rel.estimates.set_index("name")["count"]
    b = other.estimates.set_index("name")["count"]
    np.testing.assert_allclose(change["change"], (b - a)[change["name"]].to_numpy())
    np.testing.assert_allclose(change["count_a"], a[change["name"]].to_numpy())
    flat = dpmap.release(zone_points(300), region=BOX, resolution=6, epsilon=1.0)
    with pytest.raises(SpecError, match="one release is of zones and the other of H3 cells"):
        dpmap.compare(rel, flat)
    fewer = dpmap.release(zone_points(300), zones=ZONES.iloc[:4], by="name", epsilon=1.0)
    with pytest.raises(SpecError, match="use different zones"):
        dpmap.compare(rel, fewer)


def test_maps_draw_the_zones(released: Any, tmp_path: Path) -> None:
    rel, _ = released
    rel.plot(tmp_path / "zones.png")
    assert (tmp_path / "zones.png").stat().st_size > 10_000
    rel.to_html(tmp_path / "zones.html")
    page = (tmp_path / "zones.html").read_text(encoding="utf-8")
    for name in ZONES["name"]:
        assert f'"cell":"{name}"' in page
    assert '"placeLabel":"zone"' in page and "5 public zones" in page
    assert "H3 resolution" not in page


def test_a_zone_release_is_charged_to_the_ledger(tmp_path: Path) -> None:
    ledger = dpmap.Ledger.init(tmp_path / "budget.db", dataset="debts", epsilon=2.0)
    rel = dpmap.release(
        zone_points(200), zones=ZONES, by="name", epsilon=0.5, ledger=ledger, dataset="debts"
    )
    assert ledger.spent("debts").epsilon == 0.5
    entry = ledger.entry(rel.manifest["ledger"]["entry_id"])
    assert entry.resolution is None and entry.status == "spent"


def test_roll_ups_and_around_refuse_a_zone_release(released: Any) -> None:
    rel, _ = released
    with pytest.raises(SpecError, match="already one row per zone"):
        rel.aggregate_to(ZONES, by="name")
    with pytest.raises(SpecError, match="already one row per zone"):
        rel.around(39.1, 116.1, 1000)


def test_explain_names_the_zones() -> None:
    text = str(dpmap.explain(zones=ZONES, by="name", epsilon=1.0))
    assert "5 public zones (one row each, named by 'name')" in text
    assert "H3 resolution" not in text


# ------------------------------------------------------------------------- command line


def test_cli_release_and_explain_with_zones(tmp_path: Path, capsys: Any) -> None:
    zone_points(500).to_csv(tmp_path / "points.csv", index=False)
    ZONES.to_crs("EPSG:3857").to_file(tmp_path / "zones.gpkg")
    code = main(["explain", "--zones", str(tmp_path / "zones.gpkg"), "--by", "name",
                 "--epsilon", "1"])  # fmt: skip
    assert code == 0 and "5 public zones" in capsys.readouterr().out
    out = tmp_path / "table.csv"
    code = main(["release", str(tmp_path / "points.csv"), "--zones", str(tmp_path / "zones.gpkg"),
                 "--by", "name", "--epsilon", "1", "--person", "pid", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert list(dpmap.read_release(out).cells["name"]) == sorted(ZONES["name"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--by", "nom"], "the zones have no column 'nom'"),
        ([], "zones= needs --by"),
        (["--by", "name", "--resolution", "7"], "exclude each other"),
        (["--by", "name", "--region", "{zones}"], "zones= and region= exclude each other"),
    ],
)
def test_cli_bad_zones_exit_2_with_one_line_and_no_file(
    tmp_path: Path, capsys: Any, extra: list[str], message: str
) -> None:
    zone_points(100).to_csv(tmp_path / "points.csv", index=False)
    zones = tmp_path / "zones.geojson"
    ZONES.to_file(zones)
    out = tmp_path / "table.geojson"
    args = [a.replace("{zones}", str(zones)) for a in extra]
    code = main(["release", str(tmp_path / "points.csv"), "--zones", str(zones), "--epsilon", "1",
                 "--out", str(out), *args])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv", "zones.geojson"]


def test_cli_overlapping_zones_name_them(tmp_path: Path, capsys: Any) -> None:
    zone_points(100).to_csv(tmp_path / "points.csv", index=False)
    zones = tmp_path / "zones.geojson"
    BAD_ZONES["overlap"][0].to_file(zones)
    code = main(["release", str(tmp_path / "points.csv"), "--zones", str(zones), "--by", "name",
                 "--epsilon", "1", "--out", str(tmp_path / "t.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "zones 'a' and 'b' overlap" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "t.manifest.json").exists()


def test_a_zone_release_says_zones_in_its_repr() -> None:
    rel = dpmap.release(zone_points(50), zones=ZONES, by="name", epsilon=1.0, person="pid")
    assert repr(rel).startswith(f"<dpmap.Release: {len(ZONES)} zones (by 'name'), ε = 1,")
    assert "resolution" not in repr(rel)
