"""Small things a newcomer hit: GeoJSON regions in another CRS, "did you mean" for the
coordinate columns, and a warning when ε makes the noise negligible."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import pytest

import dpmap
from common import REGION, debtors, overlap_cells, region_gdf
from dpmap import grid
from dpmap.errors import InputError, NegligibleNoiseWarning, RegionError


def _geojson_in(crs: str, name: str, folder: Path) -> Path:
    """The test region, reprojected to ``crs``, as GeoJSON with a ``crs`` member ``name``."""
    obj = json.loads(region_gdf(crs).to_json())
    obj["crs"] = {"type": "name", "properties": {"name": name}}
    path = folder / "region.geojson"
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("crs", "name"),
    [
        ("EPSG:4269", "EPSG:4269"),  # NAD83, degrees: refused on the old code
        ("EPSG:4269", "urn:ogc:def:crs:EPSG::4269"),
        ("EPSG:3857", "urn:ogc:def:crs:EPSG::3857"),  # metres
        ("EPSG:32650", "EPSG:32650"),  # UTM zone 50N, metres
        ("EPSG:4326", "urn:ogc:def:crs:OGC:1.3:CRS84"),
        ("EPSG:4326", "urn:ogc:def:crs:EPSG::4326"),
    ],
)
def test_a_geojson_region_in_another_crs_is_reprojected(
    crs: str, name: str, tmp_path: Path
) -> None:
    path = _geojson_in(crs, name, tmp_path)
    from_file = grid.to_region(path)
    from_gdf = grid.to_region(region_gdf(crs))  # the same region as a GeoDataFrame
    assert from_file.geometry.equals_exact(from_gdf.geometry, 1e-9)
    assert from_file.geometry.symmetric_difference(REGION).area < 1e-9 * REGION.area
    cells = grid.cells_to_hex(grid.region_to_cells(from_file, 7))
    assert sorted(cells) == overlap_cells()


def test_a_geojson_region_in_another_crs_releases_like_a_geopackage(tmp_path: Path) -> None:
    gpkg = tmp_path / "region.gpkg"
    region_gdf("EPSG:4269").to_file(gpkg)
    geojson = _geojson_in("EPSG:4269", "urn:ogc:def:crs:EPSG::4269", tmp_path)
    params = {"resolution": 7, "epsilon": 1.0, "person": "pid"}
    a = dpmap.release(debtors(), region=geojson, **params)
    b = dpmap.release(debtors(), region=gpkg, **params)
    assert list(a.cells["cell"]) == list(b.cells["cell"])


def test_an_unknown_crs_is_a_one_line_error(tmp_path: Path) -> None:
    path = _geojson_in("EPSG:4326", "EPSG:999999", tmp_path)
    with pytest.raises(RegionError, match=r"EPSG:999999.*not a known coordinate reference"):
        grid.to_region(path)


@pytest.mark.parametrize(
    ("renames", "role", "guess"),
    [
        ({"lat": "latitude", "lng": "longitude"}, "lat", "latitude"),
        ({"lat": "Latitude", "lng": "Longitude"}, "lat", "Latitude"),
        ({"lat": "y", "lng": "lon"}, "lat", "y"),
    ],
)
def test_did_you_mean_for_the_coordinate_columns(
    renames: dict[str, str], role: str, guess: str
) -> None:
    points = debtors().rename(columns=renames)
    with pytest.raises(InputError, match=rf"did you mean '{guess}'\? pass {role}='{guess}'"):
        dpmap.release(points, region=REGION, resolution=7, epsilon=1.0)


@pytest.mark.parametrize("name", ["lon", "long", "longitude"])
def test_did_you_mean_for_the_longitude(name: str) -> None:
    """Only the longitude is renamed: the suggestion is that column."""
    points = debtors().rename(columns={"lng": name})
    with pytest.raises(InputError, match=rf"did you mean '{name}'\? pass lng='{name}'"):
        dpmap.release(points, region=REGION, resolution=7, epsilon=1.0)


def test_did_you_mean_for_a_misspelt_column() -> None:
    with pytest.raises(InputError, match=r"did you mean 'pid'\? pass person='pid'"):
        dpmap.release(debtors(), region=REGION, resolution=7, epsilon=1.0, person="pidd")
    with pytest.raises(InputError, match=r"pass person='<column>'$"):
        dpmap.release(debtors(), region=REGION, resolution=7, epsilon=1.0, person="zzz")


def test_a_huge_epsilon_warns_that_the_noise_is_negligible() -> None:
    with pytest.warns(NegligibleNoiseWarning, match=r"ε = 1e\+06 gives a 95% margin of ±0\.00"):
        dpmap.release(debtors(), region=REGION, resolution=7, epsilon=1e6)
    with pytest.warns(NegligibleNoiseWarning, match=r"use ε ≤ 10"):
        dpmap.release(debtors(), region=REGION, resolution=[6, 7], epsilon=50)
    with pytest.warns(NegligibleNoiseWarning, match=r"ε = 1e\+06"):  # before any data, too
        dpmap.explain(region=REGION, resolution=7, epsilon=1e6)


@pytest.mark.parametrize(
    "params",
    [
        {"epsilon": 10.0},  # at most 10: no warning, however small the noise
        {"epsilon": 1.0},
        # ε = 20 but each person may add 60 records: a count's noise is not negligible
        {"epsilon": 20.0, "person": "pid", "max_cells": 3, "max_records_per_cell": 20},
    ],
)
def test_no_warning_where_the_noise_is_not_negligible(params: dict[str, object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NegligibleNoiseWarning)
        dpmap.release(debtors(), region=REGION, resolution=7, **params)  # type: ignore[arg-type]


def test_the_geodataframe_region_path_is_unchanged() -> None:
    r = grid.to_region(gpd.GeoDataFrame(geometry=[REGION], crs="EPSG:4326").to_crs("EPSG:4269"))
    assert r.geometry.symmetric_difference(REGION).area < 1e-9 * REGION.area


def test_explain_and_manifest_say_what_a_count_counts() -> None:
    params = {"region": REGION, "resolution": 7, "epsilon": 1.0, "person": "pid"}
    many = dpmap.explain(**params, max_records_per_cell=3)
    assert "count counts records, not people" in str(many)
    one = dpmap.explain(**params)
    assert "count counts people" in str(one)
    rel = dpmap.release(debtors(), **params, max_records_per_cell=3)
    assert rel.manifest["contribution_bounds"]["count_counts"].startswith("records, not people")
    rows = dpmap.release(debtors(), region=REGION, resolution=7, epsilon=1.0)
    assert rows.manifest["contribution_bounds"]["count_counts"].startswith("rows")
