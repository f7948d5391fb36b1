"""Bad input ends in a dpmap error whose one-line message names the value and says the fix.

Every case checks: the error is a :class:`dpmap.DpmapError` subclass *and* the matching
builtin (``ValueError`` for spec/input/region problems, ``OSError`` for files), the
message is a single line, and it contains key words naming the offending value and the
way out. Nothing may be left behind in the output folder when writing fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

import dpmap
from common import (
    CATEGORIES,
    REGION,
    RESOLUTION,
    debtors,
    list_folder,
    overlap_cells,
    region_gdf,
    write_parquet,
)
from dpmap import DataFileError, DpmapError, InputError, RegionError, SpecError

NAN, INF = float("nan"), float("inf")


def _points() -> pd.DataFrame:
    return debtors(12, 1, 2)


@dataclass
class Case:
    """``make(tmp_path)`` returns (points, keyword arguments) for :func:`dpmap.release`."""

    id: str
    make: Callable[[Path], tuple[Any, dict[str, Any]]]
    error: type[DpmapError]
    words: list[str] = field(default_factory=list)  # all must appear (case-insensitive)
    any_of: list[str] = field(default_factory=list)  # at least one must appear (the fix)


def kw(**params: Any) -> Callable[[Path], tuple[Any, dict[str, Any]]]:
    """Default points, region, resolution and epsilon, with ``params`` overriding."""
    return lambda tmp: (
        _points(),
        {"region": REGION, "resolution": RESOLUTION, "epsilon": 1.0, **params},
    )


def pts(
    make_points: Callable[[Path], Any], **params: Any
) -> Callable[[Path], tuple[Any, dict[str, Any]]]:
    return lambda tmp: (
        make_points(tmp),
        {"region": REGION, "resolution": RESOLUTION, "epsilon": 1.0, **params},
    )


def _with(**cols: Any) -> Callable[[Path], pd.DataFrame]:
    return lambda tmp: _points().assign(**cols)


def _file(name: str, content: bytes | str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    return make


def _truncated_parquet(tmp: Path) -> Path:
    full = write_parquet(debtors(200, 1, 4), tmp, "full.parquet").read_bytes()
    path = tmp / "truncated.parquet"
    path.write_bytes(full[: len(full) // 2])
    return path


def _random_bytes(name: str) -> Callable[[Path], Path]:
    return _file(name, np.random.default_rng(5).bytes(4096))


def region_file(make_path: Callable[[Path], Path]) -> Callable[[Path], tuple[Any, dict[str, Any]]]:
    return lambda tmp: (
        _points(),
        {"region": make_path(tmp), "resolution": RESOLUTION, "epsilon": 1.0},
    )


BOWTIE = shapely.Polygon([(116.0, 39.0), (116.3, 39.2), (116.3, 39.0), (116.0, 39.2)])
METRES = shapely.box(12_913_000.0, 4_721_000.0, 12_946_000.0, 4_750_000.0)

CASES = [
    # ------------------------------------------------------------------ columns
    Case(
        "missing-lat", kw(lat="latitude"), InputError, ["'latitude'", "not in the points"], ["lat="]
    ),
    Case("missing-lng", kw(lng="lon"), InputError, ["'lon'", "not in the points"], ["lng="]),
    Case("missing-person", kw(person="debtor_id"), InputError, ["'debtor_id'"], ["person="]),
    Case("missing-value", kw(value="owed", bounds=(0, 100)), InputError, ["'owed'"], ["value="]),
    Case(
        "missing-category",
        kw(category="kind", categories=["a"]),
        InputError,
        ["'kind'"],
        ["category="],
    ),
    # ------------------------------------------------------------- coordinates
    Case(
        "string-coordinates",
        pts(_with(lat="39.1", lng="116.1")),
        InputError,
        ["'lat'", "not numeric"],
        ["convert", "to_numeric"],
    ),
    Case(
        "latitude-above-90",
        pts(_with(lat=95.5)),
        InputError,
        ["latitude", "95.5", "[-90, 90]"],
        ["fix or drop"],
    ),
    Case(
        "latitude-below-minus-90",
        pts(_with(lat=-91.25)),
        InputError,
        ["latitude", "-91.25"],
        ["fix or drop"],
    ),
    Case(
        "longitude-above-180",
        pts(_with(lng=181.5)),
        InputError,
        ["longitude", "181.5", "[-180, 180]"],
        ["fix or drop"],
    ),
    Case(
        "longitude-below-minus-180",
        pts(_with(lng=-200.0)),
        InputError,
        ["longitude", "-200"],
        ["fix or drop"],
    ),
    Case(
        "projected-metres",
        pts(_with(lat=4.5e6, lng=1.29e7)),
        InputError,
        ["projected", "1.29e+07"],
        ["EPSG:4326", "reproject"],
    ),
    Case(
        "projected-latitude-only",
        pts(_with(lat=4.5e6)),
        InputError,
        ["projected", "4.5e+06"],
        ["reproject"],
    ),
    Case(
        "inf-latitude",
        pts(lambda tmp: _points().assign(lat=[INF] + [39.1] * 11)),
        InputError,
        ["latitude", "inf"],
        ["fix or drop"],
    ),
    Case(
        "minus-inf-longitude",
        pts(lambda tmp: _points().assign(lng=[-INF] + [116.1] * 11)),
        InputError,
        ["longitude", "-inf"],
        ["fix or drop"],
    ),
    # ------------------------------------------------------------------- empty
    # (inputs with no usable row are not refused: see test_no_free_answers.py)
    Case(
        "empty-csv-file",
        pts(_file("empty.csv", "")),
        InputError,
        ["empty.csv", "empty"],
        ["header and rows", "at least one row"],
    ),
    # ----------------------------------------------------------------- epsilon
    Case("epsilon-zero", kw(epsilon=0), SpecError, ["epsilon", "got 0"], ["> 0", "e.g. epsilon="]),
    Case("epsilon-negative", kw(epsilon=-0.5), SpecError, ["epsilon", "-0.5"], ["> 0"]),
    Case("epsilon-nan", kw(epsilon=NAN), SpecError, ["epsilon", "nan"], ["finite"]),
    Case("epsilon-inf", kw(epsilon=INF), SpecError, ["epsilon", "inf"], ["finite"]),
    Case("epsilon-string", kw(epsilon="one"), SpecError, ["epsilon", "'one'"], ["a number"]),
    # ------------------------------------------------------------------- delta
    Case("delta-negative", kw(delta=-1e-6), SpecError, ["delta", "-1e-06"], ["[0, 1)", "delta=0"]),
    Case("delta-one", kw(delta=1.0), SpecError, ["delta", "got 1.0"], ["[0, 1)", "1e-6"]),
    Case("delta-above-one", kw(delta=2), SpecError, ["delta", "got 2"], ["[0, 1)"]),
    Case("delta-nan", kw(delta=NAN), SpecError, ["delta", "nan"], ["finite"]),
    Case(
        "gaussian-delta-zero",
        kw(mechanism="gaussian"),
        SpecError,
        ["gaussian", "delta"],
        ["delta=1e-6", "laplace"],
    ),
    Case(
        "unknown-mechanism",
        kw(mechanism="uniform"),
        SpecError,
        ["'uniform'"],
        ["'laplace'", "'gaussian'"],
    ),
    # -------------------------------------------------------------- resolution
    Case("resolution-minus-1", kw(resolution=-1), SpecError, ["resolution", "-1"], ["from 0 to 9"]),
    Case("resolution-10", kw(resolution=10), SpecError, ["resolution", "10"], ["from 0 to 9"]),
    Case("resolution-15", kw(resolution=15), SpecError, ["resolution", "15"], ["from 0 to 9"]),
    Case(
        "resolution-float",
        kw(resolution=7.5),
        SpecError,
        ["resolution", "7.5"],
        ["whole number", "resolution=7"],
    ),
    Case(
        "resolution-string", kw(resolution="7"), SpecError, ["resolution", "'7'"], ["whole number"]
    ),
    Case(
        "resolution-bool", kw(resolution=True), SpecError, ["resolution", "true"], ["whole number"]
    ),
    # a list is a hierarchical release (where supported): a bad level or an empty list is refused
    Case(
        "resolution-list-with-bad-level",
        kw(resolution=[7, 12]),
        SpecError,
        ["resolution", "12"],
        ["from 0 to 9"],
    ),
    Case(
        "resolution-empty-list",
        kw(resolution=[]),
        SpecError,
        ["resolution", "[]"],
        ["from 0 to 9", "resolution=["],
    ),
    # ------------------------------------------------------------ value/bounds
    Case(
        "value-without-bounds",
        kw(value="amount"),
        SpecError,
        ["'amount'", "bounds"],
        ["bounds=(lo, hi)"],
    ),
    Case(
        "bounds-without-value",
        kw(bounds=(0, 10)),
        SpecError,
        ["bounds", "value"],
        ["value='<column>'"],
    ),
    Case(
        "bounds-reversed",
        kw(value="amount", bounds=(500, 10)),
        SpecError,
        ["500", "10", "lo ≤ hi"],
        ["swap"],
    ),
    Case(
        "bounds-inf", kw(value="amount", bounds=(0, INF)), SpecError, ["bound", "inf"], ["finite"]
    ),
    Case(
        "bounds-nan", kw(value="amount", bounds=(NAN, 10)), SpecError, ["bound", "nan"], ["finite"]
    ),
    Case(
        "bounds-fractional",
        kw(value="amount", bounds=(0, 99.5)),
        SpecError,
        ["99.5", "whole units"],
        ["cents", "smaller unit"],
    ),
    Case(
        "bounds-not-a-pair",
        kw(value="amount", bounds=(0, 10, 20)),
        SpecError,
        ["bounds", "(0, 10, 20)"],
        ["pair (lo, hi)"],
    ),
    Case(
        "values-not-numeric",
        pts(_with(amount="lots"), value="amount", bounds=(0, 10)),
        InputError,
        ["'amount'", "not numeric"],
        ["to_numeric", "convert"],
    ),
    # ------------------------------------------------------- contribution bounds
    Case("max-cells-zero", kw(person="pid", max_cells=0), SpecError, ["max_cells", "0"], ["≥ 1"]),
    Case(
        "max-cells-float",
        kw(person="pid", max_cells=1.5),
        SpecError,
        ["max_cells", "1.5"],
        ["whole number"],
    ),
    Case(
        "max-records-zero",
        kw(person="pid", max_records_per_cell=0),
        SpecError,
        ["max_records_per_cell", "0"],
        ["≥ 1"],
    ),
    Case(
        "max-records-negative",
        kw(person="pid", max_records_per_cell=-3),
        SpecError,
        ["max_records_per_cell", "-3"],
        ["≥ 1"],
    ),
    Case(
        "max-records-string",
        kw(person="pid", max_records_per_cell="2"),
        SpecError,
        ["max_records_per_cell", "'2'"],
        ["whole number"],
    ),
    # -------------------------------------------------------------- categories
    Case(
        "categories-without-category",
        kw(categories=list(CATEGORIES)),
        SpecError,
        ["categories"],
        ["category='<column>'"],
    ),
    Case(
        "category-without-categories",
        kw(category="creditor"),
        SpecError,
        ["'creditor'"],
        ["categories=["],
    ),
    Case(
        "duplicate-categories",
        kw(category="creditor", categories=["bank", "utility", "bank"]),
        SpecError,
        ["duplicates", "'bank'"],
        ["once"],
    ),
    Case(  # the (cell, category) key keeps the category index in 18 bits of the H3 index
        "too-many-categories",
        kw(category="creditor", categories=[f"c{i}" for i in range(10_000)]),
        SpecError,
        ["10001", "10000"],
        ["coarser"],
    ),
    # ------------------------------------------------------------------ region
    Case(
        "region-empty", kw(region=shapely.Polygon()), RegionError, ["empty"], ["pass the polygon"]
    ),
    Case(
        "region-bowtie",
        kw(region=BOWTIE),
        RegionError,
        ["not a valid polygon", "self-intersection"],
        ["make_valid"],
    ),
    Case(
        "region-linestring",
        kw(region=shapely.LineString([(116.0, 39.0), (116.3, 39.2)])),
        RegionError,
        ["linestring"],
        ["polygon or multipolygon"],
    ),
    Case(
        "region-point", kw(region=shapely.Point(116.1, 39.1)), RegionError, ["point"], ["polygon"]
    ),
    Case(
        "region-in-metres",
        kw(region=METRES),
        RegionError,
        ["1.29", "not lon/lat degrees"],
        ["EPSG:4326", "to_crs"],
    ),
    Case(
        "region-geodataframe-without-crs",
        kw(region=gpd.GeoDataFrame(geometry=[REGION])),
        RegionError,
        ["no crs"],
        ["set_crs"],
    ),
    Case(
        "region-empty-geodataframe",
        kw(region=region_gdf().iloc[:0]),
        RegionError,
        ["empty"],
        ["at least one polygon"],
    ),
    Case(
        "region-wrong-type",
        kw(region=[116.0, 39.0, 116.3, 39.2]),
        RegionError,
        ["list"],
        ["shapely polygon", "geojson"],
    ),
    Case(
        "region-bad-geojson",
        kw(region={"type": "Polygon", "coordinates": "nonsense"}),
        RegionError,
        ["geojson"],
        ["pass a geojson"],
    ),
    Case(
        "no-region-delta-zero",
        kw(region=None),
        SpecError,
        ["no region", "delta"],
        ["region=", "delta="],
    ),
    # ------------------------------------------------------------- point files
    Case(
        "points-file-missing",
        pts(lambda tmp: tmp / "nowhere.csv"),
        DataFileError,
        ["nowhere.csv", "does not exist"],
        ["check the path"],
    ),
    Case(
        "points-parquet-random-bytes",
        pts(_random_bytes("noise.parquet")),
        DataFileError,
        ["noise.parquet", "cannot read"],
        ["valid", "check", "re-export"],
    ),
    Case(
        "points-parquet-truncated",
        pts(_truncated_parquet),
        DataFileError,
        ["truncated.parquet", "cannot read"],
        ["valid", "check", "re-export"],
    ),
    Case(
        "points-xlsx",
        pts(_file("debts.xlsx", b"PK\x03\x04 not really a workbook")),
        DataFileError,
        ["debts.xlsx", "'.xlsx'"],
        [".csv or .parquet"],
    ),
    Case(
        "points-txt",
        pts(_file("debts.txt", "lat,lng\n39.1,116.1\n")),
        DataFileError,
        ["debts.txt", "'.txt'"],
        [".csv or .parquet"],
    ),
    # ------------------------------------------------------------ region files
    Case(
        "region-file-missing",
        region_file(lambda tmp: tmp / "nowhere.geojson"),
        DataFileError,
        ["nowhere.geojson", "does not exist"],
        ["check the path"],
    ),
    Case(
        "region-parquet-random-bytes",
        region_file(_random_bytes("area.parquet")),
        DataFileError,
        ["area.parquet"],
        ["valid", "check", "re-export"],
    ),
    Case(
        "region-parquet-truncated",
        region_file(_truncated_parquet),
        DataFileError,
        ["truncated.parquet"],
        ["valid", "check", "re-export"],
    ),
    Case(
        "region-geojson-random-bytes",
        region_file(_random_bytes("area.geojson")),
        DataFileError,
        ["area.geojson", "geojson"],
        ["valid geojson"],
    ),
    Case(
        "region-xlsx",
        region_file(_file("area.xlsx", b"PK\x03\x04")),
        DataFileError,
        ["area.xlsx", "unsupported"],
        [".geojson"],
    ),
    Case(
        "region-txt",
        region_file(_file("area.txt", "116 39 116.3 39.2")),
        DataFileError,
        ["area.txt", "unsupported"],
        [".geojson"],
    ),
    # ------------------------------------------------------------------ ledger
    Case(
        "ledger-without-dataset",
        lambda tmp: (
            _points(),
            {
                "region": REGION,
                "resolution": RESOLUTION,
                "epsilon": 1.0,
                "ledger": tmp / "budget.db",
            },
        ),
        SpecError,
        ["ledger", "dataset"],
        ["pass both"],
    ),
    Case(
        "dataset-without-ledger",
        kw(dataset="debts-2026"),
        SpecError,
        ["ledger", "dataset"],
        ["pass both"],
    ),
]

BUILTIN = {
    SpecError: ValueError,
    InputError: ValueError,
    RegionError: ValueError,
    DataFileError: OSError,
}


def _check_message(exc: BaseException, case_words: list[str], any_of: list[str]) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    low = msg.lower()
    missing = [w for w in case_words if w.lower() not in low]
    assert not missing, f"message lacks {missing}: {msg!r}"
    if any_of:
        assert any(w.lower() in low for w in any_of), (
            f"message gives no fix (one of {any_of}): {msg!r}"
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_clear_dpmap_error(case: Case, tmp_path: Path) -> None:
    points, params = case.make(tmp_path)
    before = list_folder(tmp_path)
    with pytest.raises(DpmapError) as info:
        dpmap.release(points, **params)
    exc = info.value
    assert isinstance(exc, case.error), f"{type(exc).__name__} is not {case.error.__name__}: {exc}"
    assert isinstance(exc, BUILTIN[case.error])
    _check_message(exc, case.words, case.any_of)
    assert list_folder(tmp_path) == before  # a failed release writes nothing


# ------------------------------------------------------------ accepted, not refused


def test_region_geodataframe_in_web_mercator_is_reprojected() -> None:
    rel = dpmap.release(
        _points(), region=region_gdf("EPSG:3857"), resolution=RESOLUTION, epsilon=1.0
    )
    assert list(rel.cells["cell"]) == overlap_cells()
    bbox = rel.manifest["cell_selection"]["region"]["bbox"]
    assert bbox == pytest.approx([116.0, 39.0, 116.3, 39.2], abs=1e-6)


def test_points_geodataframe_without_crs_is_refused() -> None:
    gdf = gpd.GeoDataFrame(
        _points(), geometry=gpd.points_from_xy(_points()["lng"], _points()["lat"])
    )
    with pytest.raises(InputError) as info:
        dpmap.release(gdf, region=REGION, resolution=RESOLUTION, epsilon=1.0)
    assert isinstance(info.value, ValueError)
    _check_message(info.value, ["no crs"], ["set_crs"])


def test_explain_refuses_bad_parameters_the_same_way() -> None:
    with pytest.raises(SpecError) as info:
        dpmap.explain(region=REGION, resolution=12, epsilon=1.0)
    _check_message(info.value, ["resolution", "12"], ["from 0 to 9"])
    with pytest.raises(SpecError) as info:
        dpmap.explain(resolution=RESOLUTION, epsilon=1.0)
    _check_message(info.value, ["no region", "delta"], ["region=", "delta="])


# ------------------------------------------------------------ failed writes leave nothing


@pytest.fixture(scope="module")
def small_release() -> dpmap.Release:
    return dpmap.release(_points(), region=REGION, resolution=RESOLUTION, epsilon=1.0)


def _blocked_manifest(out: Path) -> Path:
    (out / "map.manifest.json").mkdir()  # the manifest cannot be renamed onto a folder
    return out / "map.csv"


def _blocked_table(out: Path) -> Path:
    (out / "map.geojson").mkdir()  # the table cannot be renamed onto a folder
    return out / "map.geojson"


WRITE_FAILURES = {
    "unsupported-suffix-xlsx": (
        lambda out: out / "map.xlsx",
        ["'.xlsx'"],
        [".geojson, .parquet or .csv"],
    ),
    "no-suffix": (lambda out: out / "map", ["no suffix"], [".geojson, .parquet or .csv"]),
    "missing-folder": (
        lambda out: out / "not-there" / "map.geojson",
        ["not-there", "does not exist"],
        ["create it"],
    ),
    "manifest-target-is-a-folder": (
        _blocked_manifest,
        ["map.manifest.json"],
        ["remove", "choose another"],
    ),
    "table-target-is-a-folder": (_blocked_table, ["map.geojson"], ["remove", "choose another"]),
}


@pytest.mark.parametrize("failure", list(WRITE_FAILURES))
def test_failed_to_file_leaves_nothing_behind(
    failure: str, small_release: dpmap.Release, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "unrelated.txt").write_text("keep me", encoding="utf-8")
    make_path, words, any_of = WRITE_FAILURES[failure]
    target = make_path(out)
    before = list_folder(out)
    try:
        with pytest.raises(DpmapError) as info:
            small_release.to_file(target)
        assert isinstance(info.value, DataFileError) and isinstance(info.value, OSError)
        _check_message(info.value, words, any_of)
    finally:
        after = list_folder(out)
        assert after == before, f"left behind: {sorted(set(after) - set(before))}"
    assert (out / "unrelated.txt").read_text(encoding="utf-8") == "keep me"


def test_read_release_of_a_missing_or_foreign_file_is_a_dpmap_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as info:
        dpmap.read_release(tmp_path / "nothing.geojson")
    _check_message(info.value, ["nothing.geojson", "does not exist"], ["check the path"])
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DpmapError) as info2:
        dpmap.read_release(foreign)
    assert isinstance(info2.value, ValueError)
    assert "\n" not in str(info2.value)
    assert os.path.basename(foreign) in str(info2.value)
