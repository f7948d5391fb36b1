"""Tests of the public release API: schema, public cell set, inputs, manifest, files, privacy of diagnostics.

Noisy outputs differ from run to run, so exact comparisons are made on what is *public*
(the cell set, the schema, the manifest) or on the exact bounded aggregates computed by
the engine (``dpmap.engines.local.bound_and_aggregate``), never on noisy numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd
import polars as pl
import pytest
import shapely

import dpmap
from common import (
    CATEGORIES,
    LEAK_CUT,
    LEAK_MISSING_COORDS,
    LEAK_OUTSIDE,
    LEAK_PERSONS,
    LEAK_ROWS,
    REGION,
    REGION_BOUNDS,
    RESOLUTION,
    as_geodataframe,
    as_lazy,
    as_polars,
    border_case,
    debtors,
    interior_cells,
    leaky_debtors,
    list_folder,
    overlap_cells,
    region_gdf,
    region_geojson,
    region_geoseries,
    write_csv,
    write_parquet,
    write_region_geojson,
)
from dpmap.engines.local import bound_and_aggregate
from dpmap.grid import region_to_cells, to_region
from dpmap.spec import ReleaseSpec

BASE = dict(region=REGION, resolution=RESOLUTION, epsilon=1.0)
NUMERIC = ["count", "count_moe", "sum", "sum_moe", "mean", "mean_moe"]
HEX_CELL = re.compile(r"^[0-9a-f]{15}$")


def _release(points: Any = None, **kw: Any) -> dpmap.Release:
    params = {**BASE, **kw}
    return dpmap.release(debtors() if points is None else points, **params)


def _table(rel: dpmap.Release) -> pd.DataFrame:
    """The published numbers without geometry, as a plain DataFrame."""
    return pd.DataFrame(rel.cells.drop(columns="geometry"))


# ---------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("kw", "columns"),
    [
        ({}, ["cell", "resolution", "count", "count_moe", "suppressed", "geometry"]),
        (
            dict(person="pid", value="amount", bounds=(0, 2000)),
            [
                "cell",
                "resolution",
                "count",
                "count_moe",
                "sum",
                "sum_moe",
                "mean",
                "mean_moe",
                "suppressed",
                "geometry",
            ],
        ),
        (
            dict(
                value="amount", bounds=(0, 2000), category="creditor", categories=list(CATEGORIES)
            ),
            [
                "cell",
                "resolution",
                "category",
                "count",
                "count_moe",
                "sum",
                "sum_moe",
                "mean",
                "mean_moe",
                "suppressed",
                "geometry",
            ],
        ),
    ],
    ids=["count", "value", "value+category"],
)
def test_output_schema_columns_and_dtypes(kw: dict[str, Any], columns: list[str]) -> None:
    rel = _release(**kw)
    cells = rel.cells
    assert list(cells.columns) == columns
    assert rel.manifest["columns"] == columns
    assert str(cells.crs) == "EPSG:4326"
    assert cells.geometry.name == "geometry"
    assert (cells.geom_type == "Polygon").all()

    assert str(cells["count"].dtype) == "Int64"
    assert cells["suppressed"].dtype == np.dtype(bool)
    assert cells["resolution"].dtype == np.dtype("int64")
    assert (cells["resolution"] == RESOLUTION).all()
    assert cells["count_moe"].dtype == np.dtype("float64")
    if "sum" in columns:
        assert str(cells["sum"].dtype) == "Int64"
        for col in ("sum_moe", "mean", "mean_moe"):
            assert cells[col].dtype == np.dtype("float64")
    assert all(isinstance(c, str) and HEX_CELL.match(c) for c in cells["cell"])
    assert all(h3.is_valid_cell(c) and h3.get_resolution(c) == RESOLUTION for c in cells["cell"])
    # each hexagon is the cell's own boundary
    first = cells.iloc[0]
    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(first["cell"])]
    assert first.geometry.equals_exact(shapely.Polygon(ring), tolerance=1e-9)


def test_category_release_has_one_row_per_cell_and_category_including_other() -> None:
    rel = _release(
        value="amount", bounds=(0, 2000), category="creditor", categories=list(CATEGORIES)
    )
    cells = rel.cells
    expected_cats = [*CATEGORIES, "other"]
    public = overlap_cells()
    assert len(cells) == len(public) * len(expected_cats)
    pairs = set(zip(cells["cell"], cells["category"], strict=True))
    assert pairs == {(c, k) for c in public for k in expected_cats}
    assert sorted(set(cells["cell"])) == public
    assert rel.manifest["categories"] == expected_cats


def test_suppressed_rows_have_null_numbers_and_published_rows_do_not() -> None:
    rel = _release(debtors(200, 1, 4), value="amount", bounds=(0, 2000))
    cells = rel.cells
    threshold = rel.manifest["suppression"]["threshold"]
    sup = cells[cells["suppressed"]]
    pub = cells[~cells["suppressed"]]
    assert len(sup) > 0 and len(pub) > 0  # 183 empty cells vs 4 cells with 50 persons each
    for col in NUMERIC:
        assert sup[col].isna().all(), col
    for col in ("count", "count_moe", "sum", "sum_moe"):
        assert pub[col].notna().all(), col
    assert (pub["count"].astype(float) >= threshold).all()
    # the four cells with 50 persons are far above any plausible threshold
    assert set(interior_cells(4)) <= set(pub["cell"])


def test_suppress_below_false_publishes_every_value() -> None:
    rel = _release(suppress_below=False, value="amount", bounds=(0, 2000))
    cells = rel.cells
    assert not cells["suppressed"].any()
    for col in ("count", "count_moe", "sum", "sum_moe"):
        assert cells[col].notna().all(), col
    # ~183 empty cells get symmetric noise: some noisy counts are negative
    assert (cells["count"] < 0).any()
    # the mean is only undefined where the noisy count is below 1
    assert cells["mean"].isna().equals(cells["count"].astype(float) < 1)
    assert rel.manifest["suppression"]["threshold"] is None
    assert "none" in rel.manifest["suppression"]["rule"]


def test_default_threshold_is_map_wide() -> None:
    """The default hides noisy counts below the smallest k whose chance of showing in an
    empty cell is at most min(2.5%, 1/rows): with discrete Laplace noise of scale b that is
    the smallest k with e^(−k/b)/(1 + e^(−1/b)) ≤ α (computed here independently)."""
    rel = _release()
    m = rel.manifest
    rows = len(rel.cells)
    b = m["statistics"]["count"]["scale"]
    alpha = min(0.025, 1 / rows)
    k = next(k for k in range(1, 1000) if math.exp(-k / b) / (1 + math.exp(-1 / b)) <= alpha)
    assert m["suppression"]["threshold"] == k
    assert m["suppression"]["default"] is True
    expected = rows * math.exp(-k / b) / (1 + math.exp(-1 / b))
    assert m["suppression"]["expected_phantom_rows"] == pytest.approx(expected)
    assert expected <= 1
    assert (rel.cells.loc[~rel.cells["suppressed"], "count"] >= k).all()
    assert (rel.cells.loc[rel.cells["suppressed"], "count"].isna()).all()
    plan = dpmap.explain(region=REGION, resolution=RESOLUTION, epsilon=1.0).as_dict()
    assert plan["suppression_threshold"] == k
    assert plan["phantom_rows_expected"] == pytest.approx(expected)
    text = str(dpmap.explain(region=REGION, resolution=RESOLUTION, epsilon=1.0))
    assert f"smallest count shown is {k}" in text and "by chance" in text


def test_explicit_threshold_is_applied_to_noisy_counts() -> None:
    rel = _release(suppress_below=20)
    cells = rel.cells
    assert rel.manifest["suppression"]["threshold"] == 20
    assert rel.manifest["suppression"]["default"] is False
    assert (cells.loc[~cells["suppressed"], "count"] >= 20).all()


# ------------------------------------------------------------------ public cell set


def test_public_cell_set_does_not_depend_on_the_data() -> None:
    a = _release(debtors(120, 3, 4))
    b = _release(debtors(7, 1, 2, first_id=900))
    c = _release(pd.DataFrame({"lat": [39.1], "lng": [116.1]}))
    assert list(a.cells["cell"]) == list(b.cells["cell"]) == list(c.cells["cell"])
    assert list(a.cells["cell"]) == overlap_cells()
    assert a.manifest["cell_selection"]["cells"] == len(overlap_cells())
    assert a.manifest["cell_selection"]["method"] == "public region"


def test_border_cell_is_public_and_a_point_just_inside_the_border_is_counted() -> None:
    case = border_case()
    centre_lat, centre_lng = h3.cell_to_latlng(case.cell)
    assert not REGION.contains(shapely.Point(centre_lng, centre_lat))
    assert REGION.contains(shapely.Point(case.lng, case.lat))

    points = pd.DataFrame({"lat": [case.lat], "lng": [case.lng]})
    diag = dpmap.Diagnostics()
    rel = _release(points, diagnostics=diag, suppress_below=False)
    assert case.cell in set(rel.cells["cell"])
    assert diag.rows_outside_region == 0
    assert diag.records_used == 1

    spec = ReleaseSpec(resolution=RESOLUTION, epsilon=1.0)
    agg = bound_and_aggregate(points, spec, region_to_cells(to_region(REGION), RESOLUTION))
    assert [h3.int_to_str(int(c)) for c in agg.cells] == [case.cell]
    assert agg.count.tolist() == [1]


def test_no_point_inside_the_region_is_lost() -> None:
    rng = np.random.default_rng(20260101)
    lo_lng, lo_lat, hi_lng, hi_lat = REGION_BOUNDS
    inner = rng.uniform([lo_lng, lo_lat], [hi_lng, hi_lat], size=(5000, 2))
    e = 1e-9  # just inside each edge
    t = np.linspace(0, 1, 400)
    edges = np.concatenate(
        [
            np.c_[np.full_like(t, lo_lng + e), lo_lat + t * (hi_lat - lo_lat)],
            np.c_[np.full_like(t, hi_lng - e), lo_lat + t * (hi_lat - lo_lat)],
            np.c_[lo_lng + t * (hi_lng - lo_lng), np.full_like(t, lo_lat + e)],
            np.c_[lo_lng + t * (hi_lng - lo_lng), np.full_like(t, hi_lat - e)],
        ]
    )
    xy = np.concatenate([inner, edges])
    diag = dpmap.Diagnostics()
    _release(pd.DataFrame({"lat": xy[:, 1], "lng": xy[:, 0]}), diagnostics=diag)
    assert diag.rows_read == len(xy)
    assert diag.rows_outside_region == 0


# ------------------------------------------------------------------------ input forms

_HASH: dict[str, Any] = dict(
    person="pid",
    value="amount",
    bounds=(0, 2000),
    max_cells=2,
    max_records_per_cell=1,
    category="creditor",
    categories=list(CATEGORIES),
    selection="hash",
    seed=7,
)

_INPUTS = {
    "pandas": lambda df, tmp: df,
    "polars": lambda df, tmp: as_polars(df),
    "polars-lazy": lambda df, tmp: as_lazy(df),
    "geopandas-4326": lambda df, tmp: as_geodataframe(df, "EPSG:4326"),
    "geopandas-3857": lambda df, tmp: as_geodataframe(df, "EPSG:3857"),
    "csv-path": lambda df, tmp: write_csv(df, tmp),
    "csv-str": lambda df, tmp: str(write_csv(df, tmp)),
    "parquet-path": lambda df, tmp: write_parquet(df, tmp),
}


@pytest.mark.parametrize("form", list(_INPUTS))
def test_every_input_form_gives_the_same_cells_and_bounded_totals(
    form: str, tmp_path: Path
) -> None:
    df = debtors(120, 3, 4)  # 360 records, each person in 3 cells, max_cells=2 cuts 120
    points = _INPUTS[form](df, tmp_path)
    spec = ReleaseSpec(
        resolution=RESOLUTION, epsilon=1.0, **{**_HASH, "categories": tuple(CATEGORIES)}
    )
    domain = region_to_cells(to_region(REGION), RESOLUTION)

    ref = bound_and_aggregate(df, spec, domain)
    got = bound_and_aggregate(points, spec, domain)
    assert int(got.count.sum()) == int(ref.count.sum()) == 240
    assert got.sum is not None and ref.sum is not None
    assert int(got.sum.sum()) == int(ref.sum.sum())
    np.testing.assert_array_equal(got.cells, ref.cells)
    np.testing.assert_array_equal(got.category, ref.category)
    np.testing.assert_array_equal(got.count, ref.count)
    np.testing.assert_array_equal(got.sum, ref.sum)

    diag_ref, diag = dpmap.Diagnostics(), dpmap.Diagnostics()
    rel_ref = _release(df, suppress_below=False, diagnostics=diag_ref, **_HASH)
    rel = _release(points, suppress_below=False, diagnostics=diag, **_HASH)
    assert list(rel.cells["cell"]) == list(rel_ref.cells["cell"])
    assert list(rel.cells["category"]) == list(rel_ref.cells["category"])
    assert diag.as_dict() == diag_ref.as_dict()
    assert diag.records_used == 240 and diag.records_cut_by_bounding == 120


_REGIONS = {
    "shapely": lambda tmp: REGION,
    "geodataframe": lambda tmp: region_gdf(),
    "geoseries": lambda tmp: region_geoseries(),
    "geojson-feature": lambda tmp: region_geojson(),
    "geojson-geometry": lambda tmp: region_geojson()["geometry"],
    "geojson-path": lambda tmp: write_region_geojson(tmp),
    "geojson-str": lambda tmp: str(write_region_geojson(tmp)),
}


@pytest.mark.parametrize("form", list(_REGIONS))
def test_every_region_form_gives_the_same_fingerprint_and_cells(form: str, tmp_path: Path) -> None:
    region = _REGIONS[form](tmp_path)
    expected = to_region(REGION).fingerprint
    assert expected.startswith("sha256:")
    rel = dpmap.release(debtors(10, 1, 2), region=region, resolution=RESOLUTION, epsilon=1.0)
    assert rel.manifest["cell_selection"]["region"]["fingerprint"] == expected
    assert list(rel.cells["cell"]) == overlap_cells()
    plan = dpmap.explain(region=region, resolution=RESOLUTION, epsilon=1.0)
    assert plan.region is not None and plan.region.fingerprint == expected


# --------------------------------------------------------------------------- manifest


def test_manifest_is_json_and_tells_the_truth() -> None:
    rel = _release(person="pid", value="amount", bounds=(0, 2000), max_cells=2, title="debt map")
    m = rel.manifest
    assert json.loads(json.dumps(m)) == m

    assert "pid" in m["privacy"]["unit"]
    assert m["contribution_bounds"]["bounds"] == [0, 2000]
    assert m["contribution_bounds"]["max_cells"] == 2
    assert m["contribution_bounds"]["max_records_per_cell"] == 1
    assert m["resolution"] == RESOLUTION
    assert m["privacy"]["epsilon"] == pytest.approx(1.0)
    assert m["privacy"]["delta"] == 0
    assert set(m["statistics"]) == {"count", "sum"}
    for name, sens_l1 in (("count", 2), ("sum", 2 * 2000)):
        st = m["statistics"][name]
        assert st["distribution"] == "discrete Laplace"
        assert st["sensitivity"]["l1"] == sens_l1
        assert st["scale"] == pytest.approx(sens_l1 / 0.5)  # share 0.5 of ε = 1
        assert st["epsilon"] == pytest.approx(0.5)
        assert st["budget_share"] == pytest.approx(0.5)
        assert st["moe_95"] > 0
    assert m["parameters"]["mechanism"] == "laplace"
    assert m["cell_selection"]["region"]["fingerprint"] == to_region(REGION).fingerprint
    assert m["suppression"]["rule"]
    # map-wide: stricter than one cell's own margin
    assert m["suppression"]["threshold"] > m["statistics"]["count"]["moe_95"]
    assert m["suppression"]["expected_phantom_rows"] <= 1
    assert m["versions"]["dpmap"] == dpmap.__version__
    assert m["versions"]["opendp"] == version("opendp")
    created = dt.datetime.fromisoformat(m["created"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 600
    assert m["title"] == "debt map"
    assert "ε = 1" in m["privacy"]["statement"]
    assert rel.epsilon == pytest.approx(1.0) and rel.delta == 0
    assert rel.fingerprint.startswith("sha256:")


@pytest.mark.parametrize(
    "kw",
    [dict(mechanism="laplace"), dict(mechanism="gaussian", delta=1e-6)],
    ids=["laplace", "gaussian"],
)
def test_manifest_gives_epsilon_and_delta_per_statistic(kw: dict[str, Any]) -> None:
    """DESIGN §2.8: 'epsilon/delta per statistic and in total'."""
    m = _release(value="amount", bounds=(0, 2000), **kw).manifest
    for name, st in m["statistics"].items():
        assert "epsilon" in st and "delta" in st, (
            f"statistic {name!r} lacks epsilon/delta: {sorted(st)}"
        )
        assert isinstance(st["epsilon"], float) and st["epsilon"] > 0, name
        assert 0 <= st["delta"] <= m["privacy"]["delta"], name
        assert st["epsilon"] <= m["privacy"]["epsilon"] * (1 + 1e-9), name


# ------------------------------------------------------------------------------ files


@pytest.mark.parametrize("suffix", [".geojson", ".parquet", ".csv"])
@pytest.mark.parametrize("suppress_below", [None, False], ids=["suppressed", "all-values"])
def test_to_file_and_read_release_round_trip(
    suffix: str, suppress_below: Any, tmp_path: Path
) -> None:
    rel = _release(
        debtors(200, 2, 4),
        person="pid",
        value="amount",
        bounds=(0, 2000),
        category="creditor",
        categories=list(CATEGORIES),
        suppress_below=suppress_below,
    )
    path = tmp_path / f"debt-map{suffix}"
    assert Path(rel.to_file(path)) == path
    assert path.is_file()
    mpath = tmp_path / "debt-map.manifest.json"
    assert mpath.is_file()
    assert list_folder(tmp_path) == sorted([path.name, mpath.name])  # no temporary files left
    assert json.loads(mpath.read_text(encoding="utf-8")) == rel.manifest

    back = dpmap.read_release(path)
    pd.testing.assert_frame_equal(_table(back), _table(rel), check_dtype=True)
    assert back.manifest == rel.manifest
    assert str(back.cells.crs) == "EPSG:4326"
    # CSV carries WKT, which geopandas writes with 6 decimals (≈ 0.1 m); the cell id is exact
    tolerance = 1e-6 if suffix == ".csv" else 1e-12
    assert back.cells.geometry.geom_equals_exact(rel.cells.geometry, tolerance=tolerance).all()
    assert back.fingerprint == rel.fingerprint


# ---------------------------------------------------------------------------- immutable


def test_release_is_immutable() -> None:
    rel = _release(value="amount", bounds=(0, 2000))
    for name in ("cells", "manifest", "epsilon", "anything_new"):
        with pytest.raises(AttributeError):
            setattr(rel, name, None)
    with pytest.raises(AttributeError):
        del rel.cells
    before = _table(rel)
    manifest_before = rel.manifest

    cells = rel.cells
    cells.loc[cells.index[0], "count"] = 999_999
    cells["suppressed"] = True
    del cells["sum"]
    m = rel.manifest
    m["privacy"]["epsilon"] = 1000.0
    m["statistics"].clear()

    pd.testing.assert_frame_equal(_table(rel), before)
    assert rel.manifest == manifest_before
    assert rel.epsilon == pytest.approx(1.0)


# ------------------------------------------------------------- private diagnostics


def _secret_numbers(diag: dpmap.Diagnostics) -> dict[str, int]:
    return {k: v for k, v in diag.as_dict().items() if isinstance(v, int) and v >= 100}


def test_diagnostics_are_filled_and_never_written(tmp_path: Path) -> None:
    points = leaky_debtors()
    diag = dpmap.Diagnostics()
    rel = _release(points, person="pid", diagnostics=diag, title="leak check")

    assert diag.rows_read == LEAK_ROWS == 5306
    assert diag.rows_missing_coordinates == LEAK_MISSING_COORDS
    assert diag.rows_outside_region == LEAK_OUTSIDE
    assert diag.records_cut_by_bounding == LEAK_CUT
    assert diag.records_used == LEAK_PERSONS
    assert diag.persons == LEAK_PERSONS
    assert "PRIVATE" in str(diag)
    secrets = _secret_numbers(diag)
    assert set(secrets.values()) == {5306, 987, 1234, 2468, 617}

    for suffix in (".geojson", ".parquet", ".csv"):
        rel.to_file(tmp_path / f"map{suffix}")
    written = sorted(tmp_path.iterdir())
    assert len(written) == 4  # three tables + one manifest (same stem)
    texts = {p.name: p.read_bytes().decode("utf-8", errors="replace") for p in written}
    texts["<manifest>"] = json.dumps(rel.manifest, ensure_ascii=False)
    texts["<repr>"] = repr(rel) + rel.privacy_statement

    raw = points.dropna(subset=["lat", "lng"])
    coord_strings = {repr(float(v)) for v in pd.concat([raw["lat"], raw["lng"]]).unique()}
    person_ids = set(points["pid"])
    for name, text in texts.items():
        for key, value in secrets.items():
            assert not re.search(rf"(?<![\w.]){value}(?!\w)", text), (
                f"{key}={value} appears in {name}"
            )
        for key in diag.as_dict():
            assert key not in text, f"diagnostic field {key!r} appears in {name}"
        assert "debtor-" not in text and "-zq" not in text, f"a person id appears in {name}"
        leaked = [s for s in coord_strings if s in text]
        assert not leaked, f"raw coordinates {leaked[:3]} appear in {name}"
        assert not any(pid in text for pid in list(person_ids)[:50])


@pytest.mark.parametrize("frame", ["pandas-nan", "pandas-none", "polars-null"])
def test_rows_with_missing_coordinates_are_dropped_and_counted(frame: str) -> None:
    df = debtors(40, 1, 2)
    lat = df["lat"].astype(object).tolist()
    lng = df["lng"].astype(object).tolist()
    gone = None if frame == "pandas-none" else float("nan")
    lat[0], lng[1], lat[2], lng[2] = gone, gone, gone, gone
    if frame == "polars-null":
        points: Any = pl.DataFrame(
            {
                "lat": [None if isinstance(v, float) and np.isnan(v) else v for v in lat],
                "lng": [None if isinstance(v, float) and np.isnan(v) else v for v in lng],
            },
            schema={"lat": pl.Float64, "lng": pl.Float64},
        )
    else:
        points = pd.DataFrame({"lat": lat, "lng": lng})
    diag = dpmap.Diagnostics()
    rel = _release(points, diagnostics=diag)
    assert diag.rows_read == 40
    assert diag.rows_missing_coordinates == 3
    assert diag.records_used == 37
    assert len(rel.cells) == len(overlap_cells())


# ------------------------------------------------------------ discovery, explain, gaussian


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_release_without_region_publishes_only_occupied_cells(mechanism: str) -> None:
    df = debtors(400, 1, 4)  # 100 persons in each of 4 cells
    far = pd.DataFrame(
        {"lat": [-33.9] * 3, "lng": [18.4] * 3}
    )  # 3 rows elsewhere: below any threshold
    points = pd.concat([df[["lat", "lng"]], far], ignore_index=True)
    occupied = {
        h3.latlng_to_cell(a, b, RESOLUTION)
        for a, b in zip(points["lat"], points["lng"], strict=True)
    }
    rel = dpmap.release(points, resolution=RESOLUTION, epsilon=1.0, delta=1e-6, mechanism=mechanism)
    published = set(rel.cells["cell"])
    assert published <= occupied
    assert published == set(interior_cells(4))  # 100 persons per cell clear the threshold
    m = rel.manifest
    assert m["cell_selection"]["method"] == "private discovery"
    assert m["cell_selection"]["region"] is None
    assert m["cell_selection"]["threshold"] >= 1
    assert 0 < m["privacy"]["delta"] <= 1e-6
    assert m["privacy"]["epsilon"] <= 1.0 + 1e-9
    assert list(rel.cells.columns) == [
        "cell",
        "resolution",
        "count",
        "count_moe",
        "suppressed",
        "geometry",
    ]


def test_explain_works_without_points() -> None:
    plan = dpmap.explain(
        region=REGION, resolution=RESOLUTION, epsilon=1.0, value="amount", bounds=(0, 2000)
    )
    d = plan.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["cells"] == len(overlap_cells())
    assert d["epsilon"] == pytest.approx(1.0)
    assert set(d["statistics"]) == {"count", "sum"}
    text = str(plan)
    assert "187 public cells" in text and "discrete Laplace" in text
    # the plan is what a release with the same parameters uses
    rel = _release(value="amount", bounds=(0, 2000))
    for name in ("count", "sum"):
        assert rel.manifest["statistics"][name]["scale"] == pytest.approx(
            d["statistics"][name]["scale"]
        )
        assert rel.manifest["statistics"][name]["moe_95"] == pytest.approx(
            d["statistics"][name]["moe_95"]
        )

    discovery = dpmap.explain(resolution=RESOLUTION, epsilon=1.0, delta=1e-6).as_dict()
    assert discovery["cells"] is None
    assert discovery["discovery_threshold"] >= 1


def test_gaussian_release_with_delta() -> None:
    rel = _release(mechanism="gaussian", delta=1e-6, value="amount", bounds=(0, 2000))
    m = rel.manifest
    assert m["privacy"]["accounting"] == "zcdp"
    assert m["privacy"]["delta"] == pytest.approx(1e-6)
    assert m["privacy"]["epsilon"] <= 1.0 + 1e-9
    assert m["privacy"]["rho"] > 0
    for st in m["statistics"].values():
        assert st["distribution"] == "discrete Gaussian"
        assert st["rho"] > 0
    assert sum(st["rho"] for st in m["statistics"].values()) == pytest.approx(m["privacy"]["rho"])
    assert list(rel.cells["cell"].unique()) == overlap_cells()


def test_rows_with_categories_outside_the_list_go_to_other() -> None:
    df = debtors(90, 1, 3)  # each row is a person; creditor cycles bank/utility/telecom
    spec = ReleaseSpec(
        resolution=RESOLUTION, epsilon=1.0, category="creditor", categories=CATEGORIES
    )
    assert spec.categories == (*CATEGORIES, "other")
    agg = bound_and_aggregate(df, spec, region_to_cells(to_region(REGION), RESOLUTION))
    assert agg.category is not None

    expected = (
        df.assign(creditor=df["creditor"].where(df["creditor"].isin(CATEGORIES), "other"))
        .groupby([df["lat"].round(9), df["lng"].round(9), "creditor"])
        .size()
    )
    got = {
        (h3.int_to_str(int(c)), spec.categories[k]): int(n)
        for c, k, n in zip(agg.cells, agg.category, agg.count, strict=True)
    }
    assert sum(got.values()) == 90
    assert (
        sum(n for (_, k), n in got.items() if k == "other")
        == int((df["creditor"] == "telecom").sum())
        == 30
    )
    assert sorted(got.values()) == sorted(expected.tolist())

    diag = dpmap.Diagnostics()
    rel = _release(df, category="creditor", categories=list(CATEGORIES), diagnostics=diag)
    assert diag.rows_other_category == 30
    assert set(rel.cells["category"]) == {*CATEGORIES, "other"}
    assert "telecom" not in set(rel.cells["category"])


@pytest.mark.parametrize("ahead_max", [10**9, 0])
def test_each_cell_gets_its_own_polygon_whether_drawn_ahead_or_after(
    ahead_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The polygons drawn on a thread while the data is read, and those drawn with the table
    (a cell set above POLYGONS_AHEAD_MAX), are each cell's own, categories repeating them."""
    import importlib

    pipeline = importlib.import_module("dpmap.releases.pipeline")
    grid = importlib.import_module("dpmap.grid")
    monkeypatch.setattr(pipeline, "POLYGONS_AHEAD_MAX", ahead_max)
    started: list[int] = []
    real = grid.DomainPolygons

    def spy(domain: np.ndarray) -> Any:
        started.append(len(domain))
        return real(domain)

    monkeypatch.setattr(grid, "DomainPolygons", spy)
    pts = debtors(100).assign(creditor="bank")
    rel = dpmap.release(
        pts, region=REGION, resolution=7, epsilon=1.0, category="creditor", categories=CATEGORIES
    )
    cells = rel.cells
    assert started == ([] if ahead_max == 0 else [len(cells) // (len(CATEGORIES) + 1)])
    want = grid.cells_to_polygons(grid.hex_to_cells(cells["cell"]))
    assert all(
        shapely.equals_exact(a, b, tolerance=0) for a, b in zip(cells.geometry, want, strict=True)
    )
