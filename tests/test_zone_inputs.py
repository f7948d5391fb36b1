"""Issue 16's bad input for district tables, in Python AND on the command line.

Each case is a one-line error naming the value and the fix; the CLI exits 2 without a
traceback and writes no file. Decided from public inputs only (the zones, the parameters,
a published release), never from the points: "these zones cover none of the data" would be
a free answer about the data, so a zone release over zones far from every point is simply a
table of noisy zeros (tests/designs/test_zones.py covers the rest of the zone checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box

import dpmap
from common import REGION, RESOLUTION
from dpmap import SpecError
from dpmap.cli.app import main
from parity import parity_zones, zone_points

ZONES = parity_zones()
#: zones far from the region (a CRS mix-up: the same boxes shifted by 10 degrees)
FAR = gpd.GeoDataFrame(
    {"name": ["a", "b"]},
    geometry=[box(126.0, 49.0, 126.1, 49.1), box(126.1, 49.0, 126.2, 49.1)],
    crs="EPSG:4326",
)


def _bowtie() -> Polygon:
    return Polygon([(116.0, 39.0), (116.1, 39.1), (116.1, 39.0), (116.0, 39.1)])


def _frame(names: list[str], geoms: list[Any]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"name": names}, geometry=geoms, crs="EPSG:4326")


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


# ----------------------------------------------------------------- roll-ups that cover nothing


@pytest.fixture(scope="module")
def flat() -> dpmap.Release:
    return dpmap.release(
        zone_points(300), region=REGION, resolution=RESOLUTION, epsilon=1.0, person="pid"
    )


def test_polygons_that_cover_no_released_cell_are_refused(flat: dpmap.Release) -> None:
    with pytest.raises(SpecError) as err:
        flat.aggregate_to(FAR, "name")
    text = str(err.value)
    assert "none of the 2 polygons overlaps a released cell" in text and "\n" not in text
    assert "(126, 49, 126.2, 49.1)" in text and "check the polygons' CRS" in text
    with pytest.raises(SpecError, match="none of the 2 polygons"):
        flat.table(FAR)
    # one polygon inside is enough: the far one is a null row, as documented
    mixed = pd_concat(FAR, ZONES.iloc[:1])
    out = flat.aggregate_to(mixed, "name").set_index("name")
    assert out.loc["a", "cells"] == 0 and out.loc[ZONES["name"].iloc[0], "cells"] > 0


def pd_concat(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    import pandas as pd

    return gpd.GeoDataFrame(pd.concat([a, b], ignore_index=True), crs="EPSG:4326")


@pytest.mark.parametrize("command", ["aggregate", "table"])
def test_cli_polygons_that_cover_nothing_exit_2(
    flat: dpmap.Release, tmp_path: Path, capsys: Any, command: str
) -> None:
    rel = tmp_path / "map.geojson"
    flat.to_file(rel)
    zones = tmp_path / "far.geojson"
    FAR.to_file(zones)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out.csv"
    code = main([command, str(rel), "--zones", str(zones), "--by", "name", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and one_line(err), err
    assert "none of the 2 polygons overlaps a released cell" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ------------------------------------------------------------------ zone releases, Python


def test_a_zone_release_with_a_region_is_refused_even_when_they_do_not_meet() -> None:
    """zones= with region=: refused whatever the geometry (the zones are the public area)."""
    for zones in (ZONES, FAR):
        with pytest.raises(SpecError, match="zones= and region= exclude each other") as err:
            dpmap.explain(zones=zones, by="name", region=REGION, epsilon=1.0)
        assert "drop the region" in str(err.value) and "\n" not in str(err.value)


def test_zones_far_from_the_points_are_a_table_of_noisy_zeros_not_an_error() -> None:
    """Only public inputs are checked: refusing here would tell whether any point is near."""
    rel = dpmap.release(
        zone_points(200), zones=FAR, by="name", epsilon=1.0, person="pid", suppress_below=False
    )
    assert list(rel.cells["name"]) == ["a", "b"]
    assert rel.cells["count"].notna().all() and rel.cells["count_moe"].notna().all()


@pytest.mark.parametrize("q", [[0.0], [1.0], [1.5], [-0.25], [0.5, 100]])
def test_quantiles_outside_0_1_with_zones(q: list[float]) -> None:
    with pytest.raises(SpecError, match="strictly between 0 and 1") as err:
        dpmap.explain(
            zones=ZONES, by="name", epsilon=1.0, person="pid", value="amount",
            bounds=(0, 50_000), quantiles=q,
        )  # fmt: skip
    assert "\n" not in str(err.value)


# -------------------------------------------------------------- zone releases, command line

BAD_ZONE_FILES = {
    "duplicate-names": (
        _frame(["a", "b", "a"], [box(116, 39, 116.1, 39.1), box(116.1, 39, 116.2, 39.1),
                                 box(116.2, 39, 116.3, 39.1)]),
        "repeats the names 'a'",
    ),
    "empty-geometry": (_frame(["a", "b"], [box(116, 39, 116.1, 39.1), None]),
                       "zone 'b' has an empty geometry"),
    "invalid-geometry": (_frame(["bow"], [_bowtie()]), "zone 'bow' is not a valid polygon"),
    "missing-by": (ZONES.rename(columns={"name": "district"}),
                   "the zones have no column 'name' (columns: 'district')"),
}  # fmt: skip


def cli_release(tmp_path: Path, zones: Path, *extra: str) -> int:
    points = tmp_path / "points.csv"
    if not points.exists():
        zone_points(100).to_csv(points, index=False)
    return main(["release", str(points), "--zones", str(zones), "--epsilon", "1", "--person",
                 "pid", "--out", str(tmp_path / "table.csv"), *extra])  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_ZONE_FILES))
def test_cli_bad_zone_files_exit_2_with_one_line_and_no_file(
    tmp_path: Path, capsys: Any, case: str
) -> None:
    frame, message = BAD_ZONE_FILES[case]
    zones = tmp_path / "zones.geojson"
    frame.to_file(zones)
    code = cli_release(tmp_path, zones, "--by", "name")
    err = capsys.readouterr().err
    assert code == 2 and message in err and one_line(err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv", "zones.geojson"]
    # and the same file in Python
    with pytest.raises(SpecError, match=message.split("(")[0][:20]):
        dpmap.explain(zones=zones, by="name", epsilon=1.0)


@pytest.mark.parametrize("q", ["1.5", "0", "0.5,1", "-0.1"])
def test_cli_quantiles_outside_0_1_exit_2(tmp_path: Path, capsys: Any, q: str) -> None:
    zones = tmp_path / "zones.geojson"
    ZONES.to_file(zones)
    code = cli_release(
        tmp_path, zones, "--by", "name", "--value", "amount", "--bounds", "0", "50000",
        "--quantiles", q,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "strictly between 0 and 1" in err and one_line(err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv", "zones.geojson"]
